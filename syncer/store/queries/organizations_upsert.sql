-- public.organizations: each organization the batch names ($1), with the
-- name of its newest event that carries one ($2; $3 and $4 that event's
-- portal time and id, NULL when no event carries a name: the row is only
-- created). The name is written when its event is newer than the row's
-- stamp (portalsync.newer). Rows in byte order of the id, so concurrent
-- batches lock them in the same order.
INSERT INTO public.organizations AS o (portal_org_id, name, portal_updated_at, portal_event_id)
SELECT * FROM unnest($1::text[], $2::text[], $3::timestamptz[], $4::text[]) AS t(k, n, a, e)
ORDER BY t.k COLLATE "C"
ON CONFLICT (portal_org_id) DO UPDATE
SET name = excluded.name, portal_updated_at = excluded.portal_updated_at,
    portal_event_id = excluded.portal_event_id, updated_at = now()
WHERE portalsync.newer(excluded.portal_updated_at, excluded.portal_event_id, o.portal_updated_at, o.portal_event_id,
                       o.name IS DISTINCT FROM excluded.name)
