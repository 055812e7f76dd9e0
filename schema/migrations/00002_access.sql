-- Row-level security and grants for Supabase's roles, written out rather
-- than left to Supabase's default privileges:
--   anon           reads nothing;
--   authenticated  reads by policy (below), writes nothing;
--   service_role   bypasses RLS and may do everything (the syncer's role on
--                  Supabase; on plain PostgreSQL the owner role).
-- A caller counts only while their profile is active, so a deactivated
-- member whose access token is still valid reads nothing.

-- +goose Up
CREATE SCHEMA IF NOT EXISTS portalsync;
REVOKE ALL ON SCHEMA portalsync FROM PUBLIC;
GRANT USAGE ON SCHEMA portalsync TO authenticated, service_role;

-- The caller's organizations where they hold an active membership and,
-- when roles is not NULL, one of those roles. SECURITY DEFINER so that the
-- policies below can use it without recursing into each other's RLS.
-- +goose StatementBegin
CREATE FUNCTION portalsync.my_org_ids(roles text[] DEFAULT NULL) RETURNS SETOF uuid
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = '' AS $$
  SELECT m.organization_id
  FROM public.profiles p
  JOIN public.organization_memberships m ON m.profile_id = p.id AND m.status = 'active'
  LEFT JOIN public.role_assignments r ON r.profile_id = m.profile_id AND r.organization_id = m.organization_id
  WHERE p.auth_user_id = auth.uid()
    AND p.status = 'active'
    AND (roles IS NULL OR r.role = ANY (roles))
$$;
-- +goose StatementEnd

-- The caller's own profile id, while it is active.
-- +goose StatementBegin
CREATE FUNCTION portalsync.my_profile_id() RETURNS uuid
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = '' AS $$
  SELECT p.id FROM public.profiles p WHERE p.auth_user_id = auth.uid() AND p.status = 'active'
$$;
-- +goose StatementEnd

-- Profiles a coordinator or org admin may see: every member, active or
-- not, of the organizations where the caller holds such a role.
-- +goose StatementBegin
CREATE FUNCTION portalsync.managed_profile_ids() RETURNS SETOF uuid
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = '' AS $$
  SELECT m.profile_id FROM public.organization_memberships m
  WHERE m.organization_id IN (SELECT portalsync.my_org_ids(ARRAY['coordinator', 'org_admin']))
$$;
-- +goose StatementEnd

REVOKE ALL ON FUNCTION portalsync.my_org_ids(text[]), portalsync.my_profile_id(), portalsync.managed_profile_ids() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION portalsync.my_org_ids(text[]), portalsync.my_profile_id(), portalsync.managed_profile_ids() TO authenticated;

ALTER TABLE public.organizations ENABLE ROW LEVEL SECURITY;
ALTER TABLE public.profiles ENABLE ROW LEVEL SECURITY;
ALTER TABLE public.organization_memberships ENABLE ROW LEVEL SECURITY;
ALTER TABLE public.role_assignments ENABLE ROW LEVEL SECURITY;
ALTER TABLE public.portal_sync_log ENABLE ROW LEVEL SECURITY;

REVOKE ALL ON public.organizations, public.profiles, public.organization_memberships,
  public.role_assignments, public.portal_sync_log FROM PUBLIC, anon, authenticated;
GRANT SELECT ON public.organizations, public.profiles, public.organization_memberships,
  public.role_assignments, public.portal_sync_log TO authenticated;
GRANT ALL ON public.organizations, public.profiles, public.organization_memberships,
  public.role_assignments, public.portal_sync_log TO service_role;

-- A member reads the organizations they belong to.
CREATE POLICY organizations_member_read ON public.organizations FOR SELECT TO authenticated
  USING (id IN (SELECT portalsync.my_org_ids()));

-- A member reads their own profile; coordinators and org admins read the
-- profiles of their organizations' members, inactive ones included.
CREATE POLICY profiles_read ON public.profiles FOR SELECT TO authenticated
  USING (id = portalsync.my_profile_id() OR id IN (SELECT portalsync.managed_profile_ids()));

-- A member reads their own memberships and roles; coordinators and org
-- admins read all of their organizations'.
CREATE POLICY memberships_read ON public.organization_memberships FOR SELECT TO authenticated
  USING (profile_id = portalsync.my_profile_id()
         OR organization_id IN (SELECT portalsync.my_org_ids(ARRAY['coordinator', 'org_admin'])));
CREATE POLICY roles_read ON public.role_assignments FOR SELECT TO authenticated
  USING (profile_id = portalsync.my_profile_id()
         OR organization_id IN (SELECT portalsync.my_org_ids(ARRAY['coordinator', 'org_admin'])));

-- An org admin reads the sync log of their own organizations only.
CREATE POLICY sync_log_org_admin_read ON public.portal_sync_log FOR SELECT TO authenticated
  USING (organization_id IN (SELECT portalsync.my_org_ids(ARRAY['org_admin'])));

-- +goose Down
DROP POLICY sync_log_org_admin_read ON public.portal_sync_log;
DROP POLICY roles_read ON public.role_assignments;
DROP POLICY memberships_read ON public.organization_memberships;
DROP POLICY profiles_read ON public.profiles;
DROP POLICY organizations_member_read ON public.organizations;
ALTER TABLE public.portal_sync_log DISABLE ROW LEVEL SECURITY;
ALTER TABLE public.role_assignments DISABLE ROW LEVEL SECURITY;
ALTER TABLE public.organization_memberships DISABLE ROW LEVEL SECURITY;
ALTER TABLE public.profiles DISABLE ROW LEVEL SECURITY;
ALTER TABLE public.organizations DISABLE ROW LEVEL SECURITY;
DROP FUNCTION portalsync.managed_profile_ids();
DROP FUNCTION portalsync.my_profile_id();
DROP FUNCTION portalsync.my_org_ids(text[]);
