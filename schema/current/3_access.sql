-- Who may read and write what. Grants are written out rather than left to
-- Supabase's default privileges (which hand anon and authenticated every
-- right on what postgres creates in public: taken back here):
--   anon               nothing;
--   authenticated      reads the contract's tables by policy, writes nothing;
--   service_role       bypasses row-level security and may do everything
--                      (the syncer's role where it connects as service_role);
--   portalsync_syncer  exactly what the syncer needs (below), and nothing on
--                      Supabase's auth schema: it links and bans only
--                      through link_members and apply_access (2_functions.sql);
--   supabase_auth_admin  reads what the access-token hook reads;
--   portalsync_console nothing but SET ROLE authenticated (the integration
--                      screen, 00028).
-- docs/ACCESS.md has the access matrix that e2e's TestAccessMatrix holds.

REVOKE ALL ON SCHEMA portalsync FROM PUBLIC;
GRANT USAGE ON SCHEMA portalsync TO authenticated, service_role, portalsync_syncer;
GRANT USAGE ON SCHEMA public TO portalsync_syncer, supabase_auth_admin;

-- The screen's role reads as authenticated, after SET ROLE (it is
-- NOINHERIT). Granting a role takes more than owning a schema: where the
-- migrating role may not, a superuser runs this GRANT by hand.
DO $$
BEGIN
  GRANT authenticated TO portalsync_console;
EXCEPTION WHEN insufficient_privilege THEN
  RAISE NOTICE 'portalsync: run GRANT authenticated TO portalsync_console; as a superuser (see migration 00028)';
END $$;

-- ---------------------------------------------------------------------
-- The contract's tables (public).
-- ---------------------------------------------------------------------
ALTER TABLE public.organizations ENABLE ROW LEVEL SECURITY;
ALTER TABLE public.profiles ENABLE ROW LEVEL SECURITY;
ALTER TABLE public.organization_memberships ENABLE ROW LEVEL SECURITY;
ALTER TABLE public.role_assignments ENABLE ROW LEVEL SECURITY;
ALTER TABLE public.portal_sync_log ENABLE ROW LEVEL SECURITY;

REVOKE ALL ON public.organizations, public.profiles, public.organization_memberships,
  public.role_assignments, public.portal_sync_log FROM PUBLIC, anon, authenticated;
REVOKE ALL ON SEQUENCE public.portal_sync_log_id_seq FROM PUBLIC, anon, authenticated;
GRANT SELECT ON public.organizations, public.profiles, public.organization_memberships,
  public.role_assignments, public.portal_sync_log TO authenticated;
GRANT ALL ON public.organizations, public.profiles, public.organization_memberships,
  public.role_assignments, public.portal_sync_log TO service_role;
-- The syncer upserts, never deletes (erasure goes through erase_member);
-- the sync log it appends to, and purges after its retention time.
GRANT SELECT, INSERT, UPDATE ON public.organizations, public.profiles,
  public.organization_memberships, public.role_assignments TO portalsync_syncer;
GRANT SELECT, INSERT, DELETE ON public.portal_sync_log TO portalsync_syncer;
GRANT SELECT ON public.organizations, public.profiles, public.organization_memberships,
  public.role_assignments TO supabase_auth_admin;

-- A member reads the organizations they belong to.
CREATE POLICY organizations_member_read ON public.organizations FOR SELECT TO authenticated
  USING (id IN (SELECT portalsync.my_org_ids()));

-- A member reads their own profile; coordinators and org admins read the
-- profiles of their organizations' members, inactive ones included.
-- my_profile_id() in a sub-select (00028) runs once per query rather than
-- once per row looked at (Supabase's advice for auth.uid() in policies).
-- The membership test is a correlated EXISTS (00029), so the planner
-- probes the membership's unique (profile_id, organization_id) (its
-- primary key until 00031) for the few profiles a page reads,
-- or hashes the whole set once for a read of many; the memberships it
-- finds are ones memberships_read lets the caller read, so that policy
-- takes none away.
CREATE POLICY profiles_read ON public.profiles FOR SELECT TO authenticated
  USING (id = (SELECT portalsync.my_profile_id())
         OR EXISTS (SELECT 1 FROM public.organization_memberships m
                    WHERE m.profile_id = profiles.id
                      AND m.organization_id = ANY (ARRAY(SELECT portalsync.my_org_ids(ARRAY['coordinator', 'org_admin'])))));

-- A member reads their own memberships and roles; coordinators and org
-- admins read all of their organizations'. (my_profile_id() once per
-- query, as above.)
CREATE POLICY memberships_read ON public.organization_memberships FOR SELECT TO authenticated
  USING (profile_id = (SELECT portalsync.my_profile_id())
         OR organization_id IN (SELECT portalsync.my_org_ids(ARRAY['coordinator', 'org_admin'])));
CREATE POLICY roles_read ON public.role_assignments FOR SELECT TO authenticated
  USING (profile_id = (SELECT portalsync.my_profile_id())
         OR organization_id IN (SELECT portalsync.my_org_ids(ARRAY['coordinator', 'org_admin'])));

-- An org admin reads the sync log of their own organizations only.
CREATE POLICY sync_log_org_admin_read ON public.portal_sync_log FOR SELECT TO authenticated
  USING (organization_id IN (SELECT portalsync.my_org_ids(ARRAY['org_admin'])));

-- The syncer's role sees and writes every row its grants allow.
CREATE POLICY syncer_all ON public.organizations FOR ALL TO portalsync_syncer USING (true) WITH CHECK (true);
CREATE POLICY syncer_all ON public.profiles FOR ALL TO portalsync_syncer USING (true) WITH CHECK (true);
CREATE POLICY syncer_all ON public.organization_memberships FOR ALL TO portalsync_syncer USING (true) WITH CHECK (true);
CREATE POLICY syncer_all ON public.role_assignments FOR ALL TO portalsync_syncer USING (true) WITH CHECK (true);
CREATE POLICY syncer_all ON public.portal_sync_log FOR ALL TO portalsync_syncer USING (true) WITH CHECK (true);

-- Supabase Auth runs the access-token hook as supabase_auth_admin.
CREATE POLICY auth_admin_read ON public.organizations FOR SELECT TO supabase_auth_admin USING (true);
CREATE POLICY auth_admin_read ON public.profiles FOR SELECT TO supabase_auth_admin USING (true);
CREATE POLICY auth_admin_read ON public.organization_memberships FOR SELECT TO supabase_auth_admin USING (true);
CREATE POLICY auth_admin_read ON public.role_assignments FOR SELECT TO supabase_auth_admin USING (true);

-- Live changes (Supabase Realtime, 00028): the log and the memberships
-- join the supabase_realtime publication where it exists; on plain
-- PostgreSQL there is none and nothing happens. Realtime applies the
-- subscriber's row-level security, so it shows what the policies above
-- let them read.
DO $$
DECLARE
  t text;
BEGIN
  IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_publication WHERE pubname = 'supabase_realtime' AND NOT puballtables) THEN
    RETURN;
  END IF;
  FOREACH t IN ARRAY ARRAY['portal_sync_log', 'organization_memberships'] LOOP
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_publication_tables
                   WHERE pubname = 'supabase_realtime' AND schemaname = 'public' AND tablename = t) THEN
      EXECUTE pg_catalog.format('ALTER PUBLICATION supabase_realtime ADD TABLE public.%I', t);
    END IF;
  END LOOP;
EXCEPTION WHEN insufficient_privilege THEN
  RAISE NOTICE 'portalsync: add public.portal_sync_log and public.organization_memberships to supabase_realtime by hand (see migration 00028)';
END $$;

-- ---------------------------------------------------------------------
-- The private tables (portalsync): no API role reads them, but for
-- org admins' reads of sync_health (through the view public.sync_health).
-- ---------------------------------------------------------------------
REVOKE ALL ON portalsync.account_links FROM PUBLIC;
REVOKE ALL ON portalsync.erased_members FROM PUBLIC;
-- The syncer refuses events for erased members.
GRANT SELECT ON portalsync.erased_members TO portalsync_syncer;
-- The syncer and the reconciler report their state in sync_health.
REVOKE ALL ON portalsync.sync_health FROM PUBLIC;
ALTER TABLE portalsync.sync_health ENABLE ROW LEVEL SECURITY;
GRANT SELECT, INSERT, UPDATE, DELETE ON portalsync.sync_health TO portalsync_syncer;
CREATE POLICY syncer_all ON portalsync.sync_health FOR ALL TO portalsync_syncer USING (true) WITH CHECK (true);
-- Org admins read it (through public.sync_health); nobody else.
GRANT SELECT ON portalsync.sync_health TO authenticated;
CREATE POLICY org_admin_read ON portalsync.sync_health FOR SELECT TO authenticated
  USING (EXISTS (SELECT 1 FROM portalsync.my_org_ids(ARRAY['org_admin'])));
-- (And the syncer reads goose's version table, which goose creates:
-- GRANT SELECT ON portalsync.goose_db_version TO portalsync_syncer, 00004.)
