-- public.portal_sync_log: one failed row ($1 event id, $2 type, $3 member,
-- $4 portal organization, $5 reason, $6 occurred, $7 received, $8 stream
-- sequence, $9 attempt, $10 source: NULL for none), once per stream
-- sequence. The organization is
-- linked when the app knows it, read FOR KEY SHARE as the log's foreign key
-- did before migration 00022: a concurrent deletion waits, and its trigger
-- clears the id.
INSERT INTO public.portal_sync_log
  (event_id, event_type, portal_member_id, portal_org_id, organization_id, status, detail,
   occurred_at, received_at, stream_seq, attempt, source)
VALUES ($1, $2, nullif($3, ''), nullif($4, ''),
        (SELECT id FROM public.organizations WHERE portal_org_id = $4 FOR KEY SHARE),
        'failed', $5, $6, $7, $8, $9, $10)
ON CONFLICT (stream_seq) WHERE status = 'failed' AND stream_seq IS NOT NULL DO NOTHING
