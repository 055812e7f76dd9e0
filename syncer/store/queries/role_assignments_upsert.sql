-- public.role_assignments: the newest role the batch gives each membership
-- ($1 and $2 the profile and organization ids, $3 the role, $4 and $5 its
-- event's portal time and id), written when its event is newer than the
-- stored role's stamp (portalsync.newer: or is the same event and the role
-- differs). Rows in key order. It returns the stamp of each row it wrote.
INSERT INTO public.role_assignments AS r (profile_id, organization_id, role, portal_updated_at, portal_event_id)
SELECT * FROM unnest($1::text[]::uuid[], $2::text[]::uuid[], $3::text[], $4::timestamptz[], $5::text[])
ORDER BY 1, 2
ON CONFLICT (profile_id, organization_id) DO UPDATE
SET role = excluded.role, portal_updated_at = excluded.portal_updated_at,
    portal_event_id = excluded.portal_event_id, updated_at = now()
WHERE portalsync.newer(excluded.portal_updated_at, excluded.portal_event_id, r.portal_updated_at, r.portal_event_id,
                       r.role <> excluded.role)
RETURNING profile_id::text, organization_id::text, portal_updated_at, portal_event_id
