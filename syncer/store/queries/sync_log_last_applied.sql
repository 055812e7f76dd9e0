-- public.portal_sync_log: the newest success row's stream sequence and
-- time (no row when nothing was applied yet).
SELECT stream_seq, processed_at FROM public.portal_sync_log WHERE status = 'success'
ORDER BY processed_at DESC LIMIT 1
