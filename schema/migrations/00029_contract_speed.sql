-- The app's contract, fast (issue 21): every query the integration screen
-- makes answers in a few milliseconds with 1,000,000 log rows and 100,000
-- members, as the caller, under row-level security (docs/BENCHMARKS.md,
-- before and after). The same rows for everyone: the profiles policy reads
-- what it read before, only asked per row where that is cheaper; the rest
-- are indexes, planner estimates and conditions that an index serves.
--
--   profiles_read             "a member of one of my organizations as
--                             coordinator or org admin" as a correlated
--                             EXISTS rather than IN (the whole set)
--   my_org_ids                estimated at 5 rows rather than 1,000
--   organization_memberships_org_idx   (organization_id, profile_id)
--   profiles_name_idx, profiles_sort_name_idx   members in name order
--   organization_members      profile_id from profiles
--   sync_log                  the period and the cursor as index ranges
--
-- The indexes are built under a SHARE lock (writes wait): on a large
-- profiles table run the migration while the syncer is stopped.

-- +goose Up

-- The profiles policy of 00002 asked whether a profile was among
-- portalsync.managed_profile_ids(), the members of every organization
-- where the caller is coordinator or org admin: 11,000 ids built in every
-- request that read a single profile (a log page's 50 names, a search),
-- and half a request's time. A correlated EXISTS lets the planner choose
-- per query: a probe of the membership's primary key per profile read
-- (50 names) or, for a read of many profiles, the set once, hashed (by
-- organization_memberships_org_idx alone, without the table). The
-- memberships it finds are in the caller's coordinator or org admin
-- organizations, which memberships_read lets the caller read, so its own
-- row-level security takes none away: the same rows as before.
ALTER POLICY profiles_read ON public.profiles
  USING (id = (SELECT portalsync.my_profile_id())
         OR EXISTS (SELECT 1 FROM public.organization_memberships m
                    WHERE m.profile_id = profiles.id
                      AND m.organization_id = ANY (ARRAY(SELECT portalsync.my_org_ids(ARRAY['coordinator', 'org_admin'])))));
DROP FUNCTION portalsync.managed_profile_ids();

-- A member holds a role in a few organizations. At the default estimate
-- of 1,000 rows every policy looked a hundred times costlier than it is,
-- which pushed plans past jit_above_cost (30 ms of compiling for a 10 ms
-- search) and away from index scans.
ALTER FUNCTION portalsync.my_org_ids(text[]) ROWS 5;

-- "Members of my organization" with their ids, read from the index alone:
-- the set the profiles policy hashes, and the membership of each profile
-- when the members list walks profiles in name order. profile_id never
-- changes, so status changes stay HOT updates (00023).
DROP INDEX public.organization_memberships_org_idx;
CREATE INDEX organization_memberships_org_idx ON public.organization_memberships (organization_id, profile_id);

-- The members list in name order: a page walks profiles in this order and
-- keeps those of the organization (a tenth of the members in the
-- benchmark: 500 rows read for 50), rather than sorting all 10,000 of a
-- large organization. The first serves order=last_name,first_name (the
-- app, through PostgREST); the second the screen's keyset paging, which
-- sorts a missing name first. CASE rather than coalesce: under row-level
-- security a condition reaches an index only when PostgreSQL can tell it
-- leaks nothing, and it can of CASE but not of coalesce.
CREATE INDEX profiles_name_idx ON public.profiles (last_name, first_name, id);
CREATE INDEX profiles_sort_name_idx ON public.profiles (
  (CASE WHEN last_name IS NULL THEN '' ELSE last_name END),
  (CASE WHEN first_name IS NULL THEN '' ELSE first_name END), id);

-- profile_id from profiles rather than from the membership (equal by the
-- join): a keyset condition on (last_name, first_name, profile_id) then
-- names one table and becomes the start of the index scan.
CREATE OR REPLACE VIEW public.organization_members WITH (security_invoker = true) AS
SELECT m.organization_id, o.name AS organization_name, o.portal_org_id,
       p.id AS profile_id, p.portal_member_id,
       nullif(btrim(concat_ws(' ', p.first_name, p.last_name)), '') AS display_name,
       p.first_name, p.last_name, r.role,
       m.status AS membership_status, m.status = 'inactive' AS inactive,
       coalesce(m.status_portal_at, m.created_at) AS status_changed_at,
       m.deactivated_at
FROM public.organization_memberships m
JOIN public.organizations o ON o.id = m.organization_id
JOIN public.profiles p ON p.id = m.profile_id
LEFT JOIN public.role_assignments r ON r.profile_id = m.profile_id AND r.organization_id = m.organization_id;

-- The period and the cursor as ranges on portal_sync_log_org_newest_idx
-- (and the type and failure indexes) whatever the arguments are: "since
-- IS NULL OR processed_at >= since" served an index only when since was a
-- constant, so "a week, 30 days ago" read the 30,000 newer rows of a large
-- organization to skip them. A NULL bound is an infinite one (processed_at
-- is never NULL or infinite), CASE for the reason given above.
-- +goose StatementBegin
CREATE OR REPLACE FUNCTION public.sync_log(
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
      AND g.processed_at >= CASE WHEN sync_log.since IS NULL THEN '-infinity' ELSE sync_log.since END
      AND g.processed_at < CASE WHEN sync_log.until IS NULL THEN 'infinity' ELSE sync_log.until END
      AND (g.processed_at, g.id) < (CASE WHEN sync_log.before_processed_at IS NULL THEN 'infinity' ELSE sync_log.before_processed_at END,
                                    CASE WHEN sync_log.before_id IS NULL THEN 9223372036854775807 ELSE sync_log.before_id END)
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

-- +goose Down
-- +goose StatementBegin
CREATE OR REPLACE FUNCTION public.sync_log(
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
CREATE OR REPLACE VIEW public.organization_members WITH (security_invoker = true) AS
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
DROP INDEX public.profiles_sort_name_idx;
DROP INDEX public.profiles_name_idx;
DROP INDEX public.organization_memberships_org_idx;
CREATE INDEX organization_memberships_org_idx ON public.organization_memberships (organization_id);
ALTER FUNCTION portalsync.my_org_ids(text[]) ROWS 1000;
-- +goose StatementBegin
CREATE FUNCTION portalsync.managed_profile_ids() RETURNS SETOF uuid
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = '' AS $$
BEGIN
  RETURN QUERY SELECT m.profile_id FROM public.organization_memberships m
  WHERE m.organization_id IN (SELECT portalsync.my_org_ids(ARRAY['coordinator', 'org_admin']));
END $$;
-- +goose StatementEnd
REVOKE ALL ON FUNCTION portalsync.managed_profile_ids() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION portalsync.managed_profile_ids() TO authenticated;
ALTER POLICY profiles_read ON public.profiles
  USING (id = (SELECT portalsync.my_profile_id()) OR id IN (SELECT portalsync.managed_profile_ids()));
