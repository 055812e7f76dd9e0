-- public.portal_sync_log and portalsync.erased_members: which of the
-- batch's events ($1) the log holds as done, and which of its members
-- were erased before (tombstone hashes $2), in one round trip.
SELECT false, event_id, status FROM public.portal_sync_log
WHERE event_id = ANY ($1) AND status IN ('success', 'skipped')
UNION ALL
SELECT true, member_hash, '' FROM portalsync.erased_members WHERE member_hash = ANY ($2)
