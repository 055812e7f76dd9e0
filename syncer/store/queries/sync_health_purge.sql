-- portalsync.sync_health: rows not reported for $1 seconds (processes
-- gone without removing theirs: killed, or restarted under a new pid).
DELETE FROM portalsync.sync_health WHERE reported_at < now() - make_interval(secs => $1)
