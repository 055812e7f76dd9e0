-- public.portal_sync_log: how many events failed in the last 24 hours. An
-- event that failed and later succeeded (redriven after a fix, or applied
-- on a later delivery) is failed no more.
SELECT count(DISTINCT f.event_id) FROM public.portal_sync_log f
WHERE f.status = 'failed' AND f.processed_at > now() - interval '24 hours'
  AND NOT EXISTS (SELECT 1 FROM public.portal_sync_log s
                  WHERE s.event_id = f.event_id AND s.status IN ('success', 'skipped'))
