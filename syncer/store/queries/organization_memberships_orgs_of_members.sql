-- public.organization_memberships: the organizations each of the members
-- $1 (members to erase) has a membership in, for the erasure's log rows
-- (one per organization, so that each organization's admins see it). The
-- organizations are read FOR KEY SHARE, in key order, as organizationIDs
-- reads them: one deleted meanwhile waits, and its trigger clears the ids
-- logged.
SELECT p.portal_member_id, o.id::text, o.portal_org_id
FROM public.profiles p
JOIN public.organization_memberships m ON m.profile_id = p.id
JOIN public.organizations o ON o.id = m.organization_id
WHERE p.portal_member_id = ANY ($1::text[])
ORDER BY o.id
FOR KEY SHARE OF o
