-- portalsync.sync_health: one process's report (migration 00028), written
-- on every change of its state and at least every 30 s. $1 process, $2
-- kind, $3 state, $4 since, $5 reason (paused only), $6 oldest unapplied
-- event's arrival (catching_up only), $7 last successful reconciliation
-- (NULL keeps the one reported before). reported_at is the database's
-- clock, which public.sync_health compares with its own.
INSERT INTO portalsync.sync_health AS h
  (process, kind, state, since, reason, oldest_unapplied_at, last_success_at, reported_at)
VALUES ($1, $2, $3, $4, $5, $6, $7, now())
ON CONFLICT (process) DO UPDATE SET
  kind = EXCLUDED.kind,
  state = EXCLUDED.state,
  since = EXCLUDED.since,
  reason = EXCLUDED.reason,
  oldest_unapplied_at = EXCLUDED.oldest_unapplied_at,
  last_success_at = coalesce(EXCLUDED.last_success_at, h.last_success_at),
  reported_at = now()
