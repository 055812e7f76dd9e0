-- public.organization_memberships and public.role_assignments: the status
-- and role stamps of the memberships ($1 profile ids, $2 organization ids).
SELECT m.profile_id::text, m.organization_id::text, m.status_portal_at, m.status_event_id,
       r.portal_updated_at, r.portal_event_id
FROM unnest($1::text[]::uuid[], $2::text[]::uuid[]) AS k(profile_id, organization_id)
JOIN public.organization_memberships m ON m.profile_id = k.profile_id AND m.organization_id = k.organization_id
LEFT JOIN public.role_assignments r ON r.profile_id = m.profile_id AND r.organization_id = m.organization_id
