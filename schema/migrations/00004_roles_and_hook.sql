-- Least privilege and roles in tokens.
--
-- portalsync_syncer: the syncer's own role, with exactly what it needs (on
-- Supabase the documented alternative to connecting as service_role). Give
-- a login role its rights with: CREATE ROLE portalsync_app LOGIN PASSWORD
-- '…' IN ROLE portalsync_syncer; Migrations keep running as the owner.
--
-- custom_access_token_hook: Supabase's custom access token hook; it puts the
-- member's active organization roles into the JWT as the claim org_roles,
-- so a role change is what the member gets on their next session, and a
-- deactivated member gets none. Enable it in Supabase under Authentication
-- > Hooks (or [auth.hook.custom_access_token] in config.toml) with the URI
-- pg-functions://postgres/public/custom_access_token_hook.

-- +goose Up
-- +goose StatementBegin
DO $$
BEGIN
  CREATE ROLE portalsync_syncer NOLOGIN;
EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL;
END $$;
-- +goose StatementEnd

GRANT USAGE ON SCHEMA public, portalsync TO portalsync_syncer;
GRANT SELECT, INSERT, UPDATE ON public.organizations, public.profiles,
  public.organization_memberships, public.role_assignments TO portalsync_syncer;
-- The sync log is appended to, and purged after its retention time.
GRANT SELECT, INSERT, DELETE ON public.portal_sync_log TO portalsync_syncer;
GRANT SELECT ON portalsync.goose_db_version TO portalsync_syncer;

CREATE POLICY syncer_all ON public.organizations FOR ALL TO portalsync_syncer USING (true) WITH CHECK (true);
CREATE POLICY syncer_all ON public.profiles FOR ALL TO portalsync_syncer USING (true) WITH CHECK (true);
CREATE POLICY syncer_all ON public.organization_memberships FOR ALL TO portalsync_syncer USING (true) WITH CHECK (true);
CREATE POLICY syncer_all ON public.role_assignments FOR ALL TO portalsync_syncer USING (true) WITH CHECK (true);
CREATE POLICY syncer_all ON public.portal_sync_log FOR ALL TO portalsync_syncer USING (true) WITH CHECK (true);

-- The auth schema belongs to Supabase: these are grants on it, not changes
-- to it. Where the migrating role may not grant them (a hosted project
-- whose auth tables belong to supabase_auth_admin), say so and go on; an
-- administrator then runs the three GRANT statements below.
-- +goose StatementBegin
DO $$
BEGIN
  GRANT USAGE ON SCHEMA auth TO portalsync_syncer;
  GRANT SELECT (id, email, email_confirmed_at, banned_until, is_sso_user), UPDATE (banned_until, updated_at)
    ON auth.users TO portalsync_syncer;
  GRANT SELECT (id, user_id), DELETE ON auth.sessions TO portalsync_syncer;
EXCEPTION WHEN insufficient_privilege THEN
  RAISE NOTICE 'portalsync: grant portalsync_syncer its auth privileges by hand (see migration 00004)';
END $$;
-- +goose StatementEnd

-- +goose StatementBegin
CREATE FUNCTION public.custom_access_token_hook(event jsonb) RETURNS jsonb
LANGUAGE plpgsql STABLE SET search_path = '' AS $$
DECLARE
  claims jsonb := coalesce(event -> 'claims', '{}'::jsonb);
  uid uuid;
  roles jsonb := '[]'::jsonb;
BEGIN
  IF (event ->> 'user_id') ~* '^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$' THEN
    uid := (event ->> 'user_id')::uuid;
    SELECT coalesce(jsonb_agg(jsonb_build_object(
             'organization_id', o.id, 'portal_org_id', o.portal_org_id, 'role', r.role)
             ORDER BY o.portal_org_id), '[]'::jsonb)
      INTO roles
      FROM public.profiles p
      JOIN public.organization_memberships m ON m.profile_id = p.id AND m.status = 'active'
      JOIN public.role_assignments r ON r.profile_id = m.profile_id AND r.organization_id = m.organization_id
      JOIN public.organizations o ON o.id = m.organization_id
     WHERE p.auth_user_id = uid AND p.status = 'active';
  END IF;
  claims := jsonb_set(claims, '{org_roles}', roles);
  RETURN jsonb_set(event, '{claims}', claims);
END $$;
-- +goose StatementEnd

REVOKE EXECUTE ON FUNCTION public.custom_access_token_hook(jsonb) FROM PUBLIC, anon, authenticated;
GRANT EXECUTE ON FUNCTION public.custom_access_token_hook(jsonb) TO supabase_auth_admin;
GRANT USAGE ON SCHEMA public TO supabase_auth_admin;
GRANT SELECT ON public.organizations, public.profiles, public.organization_memberships,
  public.role_assignments TO supabase_auth_admin;
CREATE POLICY auth_admin_read ON public.organizations FOR SELECT TO supabase_auth_admin USING (true);
CREATE POLICY auth_admin_read ON public.profiles FOR SELECT TO supabase_auth_admin USING (true);
CREATE POLICY auth_admin_read ON public.organization_memberships FOR SELECT TO supabase_auth_admin USING (true);
CREATE POLICY auth_admin_read ON public.role_assignments FOR SELECT TO supabase_auth_admin USING (true);

-- +goose Down
DROP POLICY auth_admin_read ON public.role_assignments;
DROP POLICY auth_admin_read ON public.organization_memberships;
DROP POLICY auth_admin_read ON public.profiles;
DROP POLICY auth_admin_read ON public.organizations;
REVOKE SELECT ON public.organizations, public.profiles, public.organization_memberships,
  public.role_assignments FROM supabase_auth_admin;
DROP FUNCTION public.custom_access_token_hook(jsonb);
DROP POLICY syncer_all ON public.portal_sync_log;
DROP POLICY syncer_all ON public.role_assignments;
DROP POLICY syncer_all ON public.organization_memberships;
DROP POLICY syncer_all ON public.profiles;
DROP POLICY syncer_all ON public.organizations;
REVOKE ALL ON public.organizations, public.profiles, public.organization_memberships,
  public.role_assignments, public.portal_sync_log FROM portalsync_syncer;
REVOKE ALL ON portalsync.goose_db_version FROM portalsync_syncer;
REVOKE USAGE ON SCHEMA public, portalsync FROM portalsync_syncer;
