-- One failed row per delivery sequence: a failure that is logged, then
-- redelivered because the acknowledgement was lost, is not logged twice.

-- +goose Up
CREATE UNIQUE INDEX portal_sync_log_failed_seq_idx ON public.portal_sync_log (stream_seq)
  WHERE status = 'failed' AND stream_seq IS NOT NULL;

-- +goose Down
DROP INDEX public.portal_sync_log_failed_seq_idx;
