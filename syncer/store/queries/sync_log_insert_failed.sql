-- public.portal_sync_log: one failed row ($1 event id, $2 type, $3 member,
-- $4 portal organization, $5 reason, $6 occurred, $7 received, $8 stream
-- sequence, $9 attempt, $10 source: NULL for none, $11 the member's
-- erasure hash), once per stream sequence. The organization is
-- linked when the app knows it, read FOR KEY SHARE as the log's foreign key
-- did before migration 00022: a concurrent deletion waits, and its trigger
-- clears the id. A member erased before (a tombstone of its hash) is named
-- by the hash, in the member column and in the reason, as
-- portalsync.erase_member left the member's earlier rows.
WITH erased AS (
  SELECT $3::text <> '' AND EXISTS (SELECT FROM portalsync.erased_members WHERE member_hash = $11) AS yes
)
INSERT INTO public.portal_sync_log
  (event_id, event_type, portal_member_id, portal_org_id, organization_id, status, detail,
   occurred_at, received_at, stream_seq, attempt, source)
SELECT $1, $2,
       CASE WHEN erased.yes THEN $11 ELSE nullif($3, '') END,
       nullif($4, ''),
       (SELECT id FROM public.organizations WHERE portal_org_id = $4 FOR KEY SHARE),
       'failed',
       CASE WHEN erased.yes THEN pg_catalog.replace($5, $3, $11) ELSE $5 END,
       $6, $7, $8, $9, $10
FROM erased
ON CONFLICT (stream_seq) WHERE status = 'failed' AND stream_seq IS NOT NULL DO NOTHING
