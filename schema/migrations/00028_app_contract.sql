-- The app's contract (issue 21): what the Likeperson app and the
-- integration screen (console/) read, in public, as Supabase developers
-- expect it. Everything here runs with the caller's rights (views with
-- security_invoker, a SQL function that is not SECURITY DEFINER), so the
-- row-level security of 00002 stays the only gate: a caller reads through
-- the contract exactly the rows the tables' policies let them read.
--
--   public.sync_log(...)          rpc: the sync log of the caller's
--                                 organizations (org admins), with the
--                                 organization's name and the member's
--                                 display name; filters, name search,
--                                 keyset paging, newest first
--   public.sync_health            view: per organization (org admins) the
--                                 last change applied, failures in the last
--                                 24 hours, and the syncer's state
--   public.organization_members   view: members per organization with role,
--                                 membership status and when it changed
--
-- New in portal_sync_log: source and changes, nullable and without a
-- default, so an INSERT that does not name them works as before (the
-- syncer's writer fills them in a follow-up). New table
-- portalsync.sync_health: where the syncer and the reconciler report their
-- state. New role portalsync_console: the screen's group role, which can
-- do nothing but SET ROLE authenticated. The log and the memberships join
-- Supabase's supabase_realtime publication where it exists. docs/APP.md
-- and docs/ACCESS.md describe all of it.

-- +goose Up

-- Where a log row's event came from. NULL: not recorded (rows written
-- before this migration, by a writer that does not set it yet, or by the
-- account-link trigger).
ALTER TABLE public.portal_sync_log ADD COLUMN source text;
ALTER TABLE public.portal_sync_log ADD CONSTRAINT portal_sync_log_source_check CHECK (
  source IN ('portal-webhook', 'dataverse-webhook', 'reconciliation', 'redrive', 'replay', 'erase-command')) NOT VALID;
ALTER TABLE public.portal_sync_log VALIDATE CONSTRAINT portal_sync_log_source_check;

-- What the event changed, in one documented shape that holds no personal
-- value (the constraint refuses anything else):
--   {"role":   {"old": "peer_mentor", "new": "coordinator"},   old null: no role before
--    "status": {"old": "active", "new": "inactive"},           the membership's status
--    "profile_fields": ["first_name", "phone"]}                names only, never values
-- Each key only when that part changed. NULL: not recorded.
ALTER TABLE public.portal_sync_log ADD COLUMN changes jsonb;
ALTER TABLE public.portal_sync_log ADD CONSTRAINT portal_sync_log_changes_check CHECK (
  changes IS NULL OR (
    jsonb_typeof(changes) = 'object'
    AND changes - ARRAY['role', 'status', 'profile_fields'] = '{}'::jsonb
    AND (NOT changes ? 'role' OR (
      jsonb_typeof(changes -> 'role') = 'object'
      AND (changes -> 'role') - ARRAY['old', 'new'] = '{}'::jsonb
      AND coalesce(changes #>> '{role,old}', 'peer_mentor') IN ('peer_mentor', 'coordinator', 'org_admin')
      AND coalesce(changes #>> '{role,new}', 'peer_mentor') IN ('peer_mentor', 'coordinator', 'org_admin')))
    AND (NOT changes ? 'status' OR (
      jsonb_typeof(changes -> 'status') = 'object'
      AND (changes -> 'status') - ARRAY['old', 'new'] = '{}'::jsonb
      AND coalesce(changes #>> '{status,old}', 'active') IN ('active', 'inactive')
      AND coalesce(changes #>> '{status,new}', 'active') IN ('active', 'inactive')))
    AND (NOT changes ? 'profile_fields' OR (
      jsonb_typeof(changes -> 'profile_fields') = 'array'
      AND (changes -> 'profile_fields') <@ '["email", "first_name", "last_name", "phone"]'::jsonb))
  )) NOT VALID;
ALTER TABLE public.portal_sync_log VALIDATE CONSTRAINT portal_sync_log_changes_check;

-- The screens' reads, each served by an index (docs/BENCHMARKS.md):
--   newest rows of one organization        portal_sync_log_org_newest_idx (00001)
--   ... of one event type                  portal_sync_log_org_type_idx
--   ... failed or skipped; failures in 24h portal_sync_log_org_unsuccessful_idx
--   ... of members found by name           portal_sync_log_member_idx (00001) after
--                                          profiles_first/last_name_search_idx
CREATE INDEX portal_sync_log_org_type_idx ON public.portal_sync_log (organization_id, event_type, processed_at DESC, id DESC);
CREATE INDEX portal_sync_log_org_unsuccessful_idx ON public.portal_sync_log (organization_id, processed_at DESC, id DESC)
  WHERE status <> 'success';
-- Name search is a prefix search per word on the lower-cased first and
-- last names, compared bytewise so that a range scan serves it with or
-- without a generic plan. Stored columns rather than indexes on
-- expressions: under row-level security an index serves a condition only
-- when its functions are leakproof, and lower() is not (text comparison
-- is). Adding them rewrites profiles once.
ALTER TABLE public.profiles
  ADD COLUMN first_name_search text COLLATE "C" GENERATED ALWAYS AS (lower(first_name)) STORED,
  ADD COLUMN last_name_search text COLLATE "C" GENERATED ALWAYS AS (lower(last_name)) STORED;
CREATE INDEX profiles_last_name_search_idx ON public.profiles (last_name_search);
CREATE INDEX profiles_first_name_search_idx ON public.profiles (first_name_search);

-- 00002's policies called portalsync.my_profile_id() once per row they
-- looked at (a STABLE function in a condition), 100,000 calls when a
-- coordinator's read joined profiles; in a sub-select it runs once per
-- query (Supabase's advice for auth.uid() in policies). Same rows.
ALTER POLICY profiles_read ON public.profiles
  USING (id = (SELECT portalsync.my_profile_id()) OR id IN (SELECT portalsync.managed_profile_ids()));
ALTER POLICY memberships_read ON public.organization_memberships
  USING (profile_id = (SELECT portalsync.my_profile_id())
         OR organization_id IN (SELECT portalsync.my_org_ids(ARRAY['coordinator', 'org_admin'])));
ALTER POLICY roles_read ON public.role_assignments
  USING (profile_id = (SELECT portalsync.my_profile_id())
         OR organization_id IN (SELECT portalsync.my_org_ids(ARRAY['coordinator', 'org_admin'])));

-- The profiles policy of 00002 asks whether a profile is among
-- portalsync.managed_profile_ids(): the members of the caller's
-- organizations as coordinator or org admin, 11,000 ids for an org admin of
-- an organization of 10,000 members. As a SQL function called in a select
-- list it handed them over one call per row (60 ms for those 11,000, in
-- every request that reads a profile: each page of the log, for the
-- members' names); as PL/pgSQL it returns them at once (18 ms). Same
-- result, same rights.
-- +goose StatementBegin
CREATE OR REPLACE FUNCTION portalsync.managed_profile_ids() RETURNS SETOF uuid
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = '' AS $$
BEGIN
  RETURN QUERY SELECT m.profile_id FROM public.organization_memberships m
  WHERE m.organization_id IN (SELECT portalsync.my_org_ids(ARRAY['coordinator', 'org_admin']));
END $$;
-- +goose StatementEnd

-- The syncer's own state, one row per reporting process: each syncer
-- replica ('syncer:<host>:<pid>') and the reconciler ('reconciler'). A
-- row not reported for two minutes no longer counts (public.sync_health
-- says 'unknown' when no syncer row counts). No personal data: reason is
-- a fixed phrase such as 'database unavailable'.
CREATE TABLE portalsync.sync_health (
  process text COLLATE "C" PRIMARY KEY,
  kind text NOT NULL CHECK (kind IN ('syncer', 'reconciler')),
  state text NOT NULL CHECK (state IN ('running', 'catching_up', 'paused')),
  -- When the process entered this state.
  since timestamptz NOT NULL,
  -- Why it is paused (NULL otherwise).
  reason text CHECK (length(reason) <= 200),
  -- catching_up: when the oldest event not applied yet was received.
  oldest_unapplied_at timestamptz,
  -- reconciler: when its last pass that succeeded ended.
  last_success_at timestamptz,
  reported_at timestamptz NOT NULL DEFAULT now()
);
REVOKE ALL ON portalsync.sync_health FROM PUBLIC;
ALTER TABLE portalsync.sync_health ENABLE ROW LEVEL SECURITY;
GRANT SELECT, INSERT, UPDATE, DELETE ON portalsync.sync_health TO portalsync_syncer;
CREATE POLICY syncer_all ON portalsync.sync_health FOR ALL TO portalsync_syncer USING (true) WITH CHECK (true);
-- Org admins read it (through public.sync_health); nobody else.
GRANT SELECT ON portalsync.sync_health TO authenticated;
CREATE POLICY org_admin_read ON portalsync.sync_health FOR SELECT TO authenticated
  USING (EXISTS (SELECT 1 FROM portalsync.my_org_ids(ARRAY['org_admin'])));

-- The sync log of the caller's organizations where they are org admin,
-- newest first. Arguments (all optional):
--   org_id               one organization (default: all of the caller's)
--   status_filter        'success', 'failed' or 'skipped'
--   type_filter          an event type, e.g. 'role-updated'
--   since, until         processed_at >= since, < until
--   search               words; each must begin the member's first or last
--                        name (case-insensitive)
--   before_processed_at, before_id   the cursor: the last row of the page
--                        before (keyset paging)
--   entry_id             one row (the detail view)
--   page_size            rows per page, 1 to 200 (default 50)
-- Not SECURITY DEFINER and without SET clauses, so that the planner inlines
-- it into the caller's query and plans it with the arguments' values (the
-- filters then pick their indexes); every name is schema-qualified.
-- member_name is the member's display name where the caller may read the
-- profile; an erased member has member_erased true and no id, no name.
-- +goose StatementBegin
CREATE FUNCTION public.sync_log(
  org_id uuid DEFAULT NULL, status_filter text DEFAULT NULL, type_filter text DEFAULT NULL,
  since timestamptz DEFAULT NULL, until timestamptz DEFAULT NULL, search text DEFAULT NULL,
  before_processed_at timestamptz DEFAULT NULL, before_id bigint DEFAULT NULL,
  entry_id bigint DEFAULT NULL, page_size integer DEFAULT 50)
RETURNS TABLE (
  id bigint, event_id text, event_type text, status text, source text, changes jsonb, detail text,
  member_created boolean, occurred_at timestamptz, received_at timestamptz, processed_at timestamptz,
  attempt integer, organization_id uuid, organization_name text, portal_org_id text,
  portal_member_id text, profile_id uuid, member_name text, member_erased boolean)
LANGUAGE sql STABLE AS $$
  SELECT l.id, l.event_id, l.event_type, l.status, l.source, l.changes, l.detail,
         l.member_created, l.occurred_at, l.received_at, l.processed_at, l.attempt,
         l.organization_id, o.name, o.portal_org_id,
         CASE WHEN l.portal_member_id LIKE 'erased:%' THEN NULL ELSE l.portal_member_id END,
         p.id,
         nullif(pg_catalog.btrim(pg_catalog.concat_ws(' ', p.first_name, p.last_name)), ''),
         coalesce(l.portal_member_id LIKE 'erased:%', false)
  FROM (SELECT DISTINCT x AS oid FROM portalsync.my_org_ids(ARRAY['org_admin']) AS x
        WHERE sync_log.org_id IS NULL OR x = sync_log.org_id) mine
  CROSS JOIN LATERAL (
    SELECT g.* FROM public.portal_sync_log g
    WHERE g.organization_id = mine.oid
      AND (sync_log.entry_id IS NULL OR g.id = sync_log.entry_id)
      AND (sync_log.status_filter IS NULL OR g.status = sync_log.status_filter)
      AND (sync_log.type_filter IS NULL OR g.event_type = sync_log.type_filter)
      AND (sync_log.since IS NULL OR g.processed_at >= sync_log.since)
      AND (sync_log.until IS NULL OR g.processed_at < sync_log.until)
      AND (sync_log.before_processed_at IS NULL
           OR (g.processed_at, g.id) < (sync_log.before_processed_at, coalesce(sync_log.before_id, 9223372036854775807)))
      AND (nullif(pg_catalog.btrim(sync_log.search), '') IS NULL OR g.portal_member_id IN (
        SELECT q.portal_member_id FROM public.profiles q,
          (SELECT pg_catalog.regexp_split_to_array(pg_catalog.lower(pg_catalog.btrim(sync_log.search)), '\s+') AS w) s
        WHERE ((q.last_name_search >= s.w[1] COLLATE "C" AND q.last_name_search < (s.w[1] || U&'\+10FFFF') COLLATE "C")
            OR (q.first_name_search >= s.w[1] COLLATE "C" AND q.first_name_search < (s.w[1] || U&'\+10FFFF') COLLATE "C"))
          AND NOT EXISTS (SELECT 1 FROM pg_catalog.unnest(s.w) AS v
                          WHERE NOT (pg_catalog.starts_with(coalesce(q.last_name_search, ''), v)
                                     OR pg_catalog.starts_with(coalesce(q.first_name_search, ''), v)))))
    ORDER BY g.processed_at DESC, g.id DESC
    LIMIT least(greatest(coalesce(sync_log.page_size, 50), 1), 200)) l
  JOIN public.organizations o ON o.id = l.organization_id
  LEFT JOIN public.profiles p ON p.portal_member_id = l.portal_member_id
  ORDER BY l.processed_at DESC, l.id DESC
  LIMIT least(greatest(coalesce(sync_log.page_size, 50), 1), 200)
$$;
-- +goose StatementEnd

-- Per organization where the caller is org admin: the newest change
-- applied, the events that failed in the last 24 hours (and did not
-- succeed later), and the syncer's state: 'running', 'catching_up' (with
-- when the oldest unapplied event was received), 'paused' (since when,
-- why), or 'unknown' when no syncer reported in the last two minutes; and
-- when reconciliation last succeeded.
CREATE VIEW public.sync_health WITH (security_invoker = true) AS
SELECT o.id AS organization_id, o.name AS organization_name, o.portal_org_id,
       coalesce(s.state, 'unknown') AS state, s.since AS state_since, s.reason AS paused_reason,
       s.oldest_unapplied_at, r.reconciled_at,
       (SELECT max(l.processed_at) FROM public.portal_sync_log l
        WHERE l.organization_id = o.id AND l.status = 'success') AS last_applied_at,
       (SELECT count(DISTINCT f.event_id) FROM public.portal_sync_log f
        WHERE f.organization_id = o.id AND f.status = 'failed' AND f.processed_at > now() - interval '24 hours'
          AND NOT EXISTS (SELECT 1 FROM public.portal_sync_log d
                          WHERE d.event_id = f.event_id AND d.status IN ('success', 'skipped')))::integer AS failed_last_24h,
       s.reported_at
FROM public.organizations o
LEFT JOIN LATERAL (
  -- The state of the process in the worst state among those that report.
  SELECT h.state, h.since, h.reason, h.reported_at,
         (SELECT min(h2.oldest_unapplied_at) FROM portalsync.sync_health h2
          WHERE h2.kind = 'syncer' AND h2.reported_at > now() - interval '2 minutes') AS oldest_unapplied_at
  FROM portalsync.sync_health h
  WHERE h.kind = 'syncer' AND h.reported_at > now() - interval '2 minutes'
  ORDER BY CASE h.state WHEN 'paused' THEN 0 WHEN 'catching_up' THEN 1 ELSE 2 END, h.since
  LIMIT 1) s ON true
LEFT JOIN LATERAL (
  SELECT max(h.last_success_at) AS reconciled_at FROM portalsync.sync_health h WHERE h.kind = 'reconciler') r ON true
WHERE o.id IN (SELECT portalsync.my_org_ids(ARRAY['org_admin']));

-- Members per organization, as the caller may read memberships (their own;
-- coordinators and org admins: all of their organizations', inactive ones
-- included). membership_status is the status in that organization: a member
-- deactivated here is inactive here even while active elsewhere (and so
-- while profiles.status is still 'active').
CREATE VIEW public.organization_members WITH (security_invoker = true) AS
SELECT m.organization_id, o.name AS organization_name, o.portal_org_id,
       m.profile_id, p.portal_member_id,
       nullif(btrim(concat_ws(' ', p.first_name, p.last_name)), '') AS display_name,
       p.first_name, p.last_name, r.role,
       m.status AS membership_status, m.status = 'inactive' AS inactive,
       coalesce(m.status_portal_at, m.created_at) AS status_changed_at,
       m.deactivated_at
FROM public.organization_memberships m
JOIN public.organizations o ON o.id = m.organization_id
JOIN public.profiles p ON p.id = m.profile_id
LEFT JOIN public.role_assignments r ON r.profile_id = m.profile_id AND r.organization_id = m.organization_id;

-- Supabase's default privileges hand every new function and view in public
-- to anon, authenticated and service_role: only authenticated keeps them.
REVOKE ALL ON FUNCTION public.sync_log(uuid, text, text, timestamptz, timestamptz, text, timestamptz, bigint, bigint, integer)
  FROM PUBLIC, anon, authenticated, service_role;
GRANT EXECUTE ON FUNCTION public.sync_log(uuid, text, text, timestamptz, timestamptz, text, timestamptz, bigint, bigint, integer)
  TO authenticated;
REVOKE ALL ON public.sync_health, public.organization_members FROM PUBLIC, anon, authenticated, service_role;
GRANT SELECT ON public.sync_health, public.organization_members TO authenticated;

-- The screen's database role: it can do nothing but SET ROLE
-- authenticated (NOINHERIT: it holds none of authenticated's rights
-- until it does). A login role joins it, as the syncer's does
-- portalsync_syncer: CREATE ROLE portalsync_screen LOGIN NOINHERIT
-- PASSWORD '…' IN ROLE portalsync_console.
-- +goose StatementBegin
DO $$
BEGIN
  CREATE ROLE portalsync_console NOLOGIN NOINHERIT;
EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL;
END $$;
-- +goose StatementEnd
-- +goose StatementBegin
DO $$
BEGIN
  GRANT authenticated TO portalsync_console;
EXCEPTION WHEN insufficient_privilege THEN
  RAISE NOTICE 'portalsync: run GRANT authenticated TO portalsync_console; as a superuser (see migration 00028)';
END $$;
-- +goose StatementEnd

-- Live changes (Supabase Realtime): the log and the memberships join the
-- supabase_realtime publication where it exists; on plain PostgreSQL there
-- is none and nothing happens. Realtime applies the subscriber's RLS.
-- +goose StatementBegin
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
-- +goose StatementEnd

-- +goose Down
-- +goose StatementBegin
CREATE OR REPLACE FUNCTION portalsync.managed_profile_ids() RETURNS SETOF uuid
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = '' AS $$
  SELECT m.profile_id FROM public.organization_memberships m
  WHERE m.organization_id IN (SELECT portalsync.my_org_ids(ARRAY['coordinator', 'org_admin']))
$$;
-- +goose StatementEnd
-- +goose StatementBegin
DO $$
DECLARE
  t text;
BEGIN
  FOREACH t IN ARRAY ARRAY['portal_sync_log', 'organization_memberships'] LOOP
    IF EXISTS (SELECT 1 FROM pg_catalog.pg_publication_tables
               WHERE pubname = 'supabase_realtime' AND schemaname = 'public' AND tablename = t) THEN
      EXECUTE pg_catalog.format('ALTER PUBLICATION supabase_realtime DROP TABLE public.%I', t);
    END IF;
  END LOOP;
END $$;
-- +goose StatementEnd
DROP VIEW public.organization_members;
DROP VIEW public.sync_health;
DROP FUNCTION public.sync_log(uuid, text, text, timestamptz, timestamptz, text, timestamptz, bigint, bigint, integer);
DROP TABLE portalsync.sync_health;
ALTER POLICY roles_read ON public.role_assignments
  USING (profile_id = portalsync.my_profile_id()
         OR organization_id IN (SELECT portalsync.my_org_ids(ARRAY['coordinator', 'org_admin'])));
ALTER POLICY memberships_read ON public.organization_memberships
  USING (profile_id = portalsync.my_profile_id()
         OR organization_id IN (SELECT portalsync.my_org_ids(ARRAY['coordinator', 'org_admin'])));
ALTER POLICY profiles_read ON public.profiles
  USING (id = portalsync.my_profile_id() OR id IN (SELECT portalsync.managed_profile_ids()));
ALTER TABLE public.profiles DROP COLUMN last_name_search, DROP COLUMN first_name_search;
DROP INDEX public.portal_sync_log_org_unsuccessful_idx;
DROP INDEX public.portal_sync_log_org_type_idx;
ALTER TABLE public.portal_sync_log DROP COLUMN changes;
ALTER TABLE public.portal_sync_log DROP COLUMN source;
