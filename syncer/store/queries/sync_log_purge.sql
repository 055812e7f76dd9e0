-- public.portal_sync_log: deletes at most $2 rows processed more than $1
-- seconds ago, oldest first.
DELETE FROM public.portal_sync_log WHERE id IN (
  SELECT id FROM public.portal_sync_log
  WHERE processed_at < now() - make_interval(secs => $1)
  ORDER BY id LIMIT $2)
