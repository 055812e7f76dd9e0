-- The functions and triggers: who a caller is (for the policies), linking
-- app accounts to members and keeping their access in line, erasure, the
-- sync log's promise about deleted organizations, the syncer's "newer than
-- stored" guard, and the app's contract in public (the sync_log rpc and
-- the views, which read with the caller's rights).
--
-- Supabase's auth tables belong to supabase_auth_admin and have row-level
-- security with no policies, so the syncer's role holds no right on them:
-- it calls the SECURITY DEFINER functions below, owned by the role that
-- migrates (postgres on Supabase; a superuser on plain PostgreSQL). Every
-- SECURITY DEFINER function pins search_path to '', so a caller's
-- search_path cannot redirect what it reads or writes.
-- `syncer migrate` checks the migrating role's rights on auth first
-- (schema.go, docs/ACCESS.md).

-- ---------------------------------------------------------------------
-- Who the caller is, for the policies (3_access.sql). SECURITY DEFINER so
-- that the policies can use them without recursing into each other's
-- row-level security. A caller counts only while their profile is active,
-- so a deactivated member whose access token is still valid reads nothing.
-- ---------------------------------------------------------------------

-- The caller's organizations where they hold an active membership and,
-- when roles is not NULL, one of those roles. A few: estimated at 5 rows
-- (00029; at the default 1,000 every policy looked a hundred times
-- costlier than it is, which pushed plans past jit_above_cost).
CREATE FUNCTION portalsync.my_org_ids(roles text[] DEFAULT NULL) RETURNS SETOF uuid
LANGUAGE sql STABLE SECURITY DEFINER ROWS 5 SET search_path = '' AS $$
  SELECT m.organization_id
  FROM public.profiles p
  JOIN public.organization_memberships m ON m.profile_id = p.id AND m.status = 'active'
  LEFT JOIN public.role_assignments r ON r.profile_id = m.profile_id AND r.organization_id = m.organization_id
  WHERE p.auth_user_id = auth.uid()
    AND p.status = 'active'
    AND (roles IS NULL OR r.role = ANY (roles))
$$;

-- The caller's own profile id, while it is active.
CREATE FUNCTION portalsync.my_profile_id() RETURNS uuid
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = '' AS $$
  SELECT p.id FROM public.profiles p WHERE p.auth_user_id = auth.uid() AND p.status = 'active'
$$;

REVOKE ALL ON FUNCTION portalsync.my_org_ids(text[]), portalsync.my_profile_id() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION portalsync.my_org_ids(text[]), portalsync.my_profile_id() TO authenticated;

-- Supabase's custom access token hook (enable it under Authentication >
-- Hooks with pg-functions://postgres/public/custom_access_token_hook). It
-- puts the member's active organization roles into the JWT as the claim
-- org_roles, so a role change is what the member gets on their next
-- session, and it refuses a token to an account whose member has no active
-- membership (Supabase answers the sign-in or refresh with the hook's
-- error), so no path issues a token to a deactivated member, even before
-- the ban lands. Only Supabase Auth may execute it.
CREATE FUNCTION public.custom_access_token_hook(event jsonb) RETURNS jsonb
LANGUAGE plpgsql STABLE SET search_path = '' AS $$
DECLARE
  claims jsonb := coalesce(event -> 'claims', '{}'::jsonb);
  uid uuid;
  roles jsonb := '[]'::jsonb;
BEGIN
  IF (event ->> 'user_id') ~* '^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$' THEN
    uid := (event ->> 'user_id')::uuid;
    IF EXISTS (SELECT 1 FROM public.profiles p WHERE p.auth_user_id = uid AND p.status = 'inactive') THEN
      RETURN jsonb_build_object('error', jsonb_build_object(
        'http_code', 403, 'message', 'Your membership is inactive; the app is not available to you.'));
    END IF;
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

-- Supabase's default privileges hand EXECUTE on what postgres creates in
-- public to anon, authenticated and service_role: taken back.
REVOKE ALL ON FUNCTION public.custom_access_token_hook(jsonb) FROM PUBLIC, anon, authenticated, service_role;
GRANT EXECUTE ON FUNCTION public.custom_access_token_hook(jsonb) TO supabase_auth_admin;

-- ---------------------------------------------------------------------
-- The syncer's "newer than stored" guard (00026, issue 20). The syncer
-- writes an event's values over a stored row, field group or status only
-- when the event is newer than the stamp stored with it — by portal time,
-- then by event id, so the outcome never depends on delivery order — or
-- is the very event stored and the values differ (values_differ: a replay
-- repairs a damaged row, applying an event twice writes nothing). A NULL
-- incoming time never wins; a NULL stored stamp is older than any event.
--
-- Inlinable, so the upserts (syncer/store/queries/*.sql) are planned as if
-- they held the expression (the store's TestNewerGuardInlined): SQL,
-- IMMUTABLE, one expression, no SECURITY DEFINER and no SET clause
-- (either stops inlining), hence no pinned search_path — its SQL-standard
-- body is resolved when it is created. Event ids compare as bytes
-- (COLLATE "C", as the id columns and the syncer's Go code). Only the
-- syncer's role may execute it (the planner inlines only for a role that
-- may).
-- ---------------------------------------------------------------------
CREATE FUNCTION portalsync.newer(incoming_at timestamptz, incoming_id text,
                                 stored_at timestamptz, stored_id text, values_differ boolean)
RETURNS boolean LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN incoming_at IS NOT NULL
   AND ((coalesce(stored_at, '-infinity'), coalesce(stored_id, '') COLLATE "C") < (incoming_at, incoming_id COLLATE "C")
        OR ((coalesce(stored_at, '-infinity'), coalesce(stored_id, '')) = (incoming_at, incoming_id) AND values_differ));
REVOKE ALL ON FUNCTION portalsync.newer(timestamptz, text, timestamptz, text, boolean) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION portalsync.newer(timestamptz, text, timestamptz, text, boolean) TO portalsync_syncer;

-- ---------------------------------------------------------------------
-- Linking app accounts (auth.users) to portal members.
--
-- When: when an account is created or its e-mail is confirmed or changed
-- (the trigger portalsync_link_account, Supabase's handle_new_user
-- pattern), and when the syncer applies events for a member (link_members).
-- To whom: the one portal member whose e-mail, compared without regard to
-- case, is the account's — never when several members have it (a shared
-- e-mail links nobody new and is logged, never the e-mail itself) — and
-- only an account the linking rule (email_accounts) lets link. A link is
-- never moved; an account that links to a member with no active
-- membership is banned at once (apply_access), with the sync's flag, so a
-- reactivation lifts it.
--
-- Supabase Auth stores e-mails in lower case, unique among non-SSO
-- accounts (users_email_partial_key): the portal's e-mail, lower-cased,
-- finds the account by that index; from an account, the members are found
-- by lower(email) (profiles_email_idx).
-- ---------------------------------------------------------------------

-- lock_emails serializes every linking decision about one e-mail (a
-- transaction-level advisory lock each), so that two transactions never
-- both see it unshared; in sorted order, so they cannot deadlock.
CREATE FUNCTION portalsync.lock_emails(emails text[]) RETURNS void
LANGUAGE plpgsql VOLATILE SET search_path = '' AS $$
DECLARE
  e text;
BEGIN
  FOR e IN SELECT DISTINCT pg_catalog.lower(x) FROM pg_catalog.unnest(emails) AS x WHERE x IS NOT NULL ORDER BY 1 LOOP
    PERFORM pg_catalog.pg_advisory_xact_lock(pg_catalog.hashtext('portalsync.email:' || e));
  END LOOP;
END $$;
REVOKE ALL ON FUNCTION portalsync.lock_emails(text[]) FROM PUBLIC;

-- The account-linking rule, in one place (00027): the accounts an e-mail
-- (as Supabase stores it) may link — a confirmed e-mail, never an SSO
-- account — each with whether a member is linked to it already, which
-- rules it out (a link is never moved). link_members and link_account
-- link only an account it returns unlinked; link_members' "shared" report
-- counts any it returns.
--
-- SQL, STABLE, SECURITY INVOKER and without SET clauses, so that the
-- planner inlines it into the callers' statements: the lookup stays a
-- probe of users_email_partial_key (is_sso_user = false is in the query
-- it sees), "not linked" an anti-join on account_links' unique key
-- (schema's TestLinkingRuleIsInlined). It needs no search_path of its
-- own: every name is qualified, only its owner may execute it, and it
-- runs inside the SECURITY DEFINER callers, which pin search_path.
CREATE FUNCTION portalsync.email_accounts(p_email text)
RETURNS TABLE (auth_user_id uuid, linked boolean)
LANGUAGE sql STABLE AS $$
  SELECT u.id, l.auth_user_id IS NOT NULL
  FROM auth.users u
  LEFT JOIN portalsync.account_links l ON l.auth_user_id = u.id
  WHERE u.email = p_email AND u.email_confirmed_at IS NOT NULL AND u.is_sso_user = false
$$;
REVOKE ALL ON FUNCTION portalsync.email_accounts(text) FROM PUBLIC;

-- link_members links the members member_ids (whose profiles exist) that
-- have no link yet; with none such, it does nothing more (the common case:
-- one primary-key probe per member, 00021). Besides a member's current
-- e-mail it tries the e-mails seen_emails[i] that the applied events of
-- member seen_members[i] carried (newest first), so that a member whose
-- e-mail changed within a batch is linked as applying the events one by
-- one, in any order, would link them. An e-mail counts only while no
-- other member's profile has it. It returns per member 'linked', or
-- 'shared' when an account has the member's e-mail but other members have
-- it too. The syncer calls apply_access right after, in the same
-- transaction, which writes the links onto the profiles and bans an
-- inactive member's account.
--
-- enable_seqscan = off (00021): a generic plan cached while the tables
-- were small would scan whole tables for every small batch once they have
-- grown; its statements read by key (syncer/store's
-- TestNoForcedCustomPlans holds the setting).
CREATE FUNCTION portalsync.link_members(member_ids text[], seen_members text[] DEFAULT '{}', seen_emails text[] DEFAULT '{}')
RETURNS TABLE (portal_member_id text, outcome text)
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = '' SET enable_seqscan = off AS $$
DECLARE
  unlinked text[];
  linked text[];
  cm text[];
  ce text[];
  co int[];
BEGIN
  SELECT coalesce(array_agg(m.id ORDER BY m.id), '{}') INTO unlinked
  FROM pg_catalog.unnest(member_ids) AS m(id)
  WHERE NOT EXISTS (SELECT 1 FROM portalsync.account_links l WHERE l.portal_member_id = m.id);
  IF pg_catalog.cardinality(unlinked) = 0 THEN
    RETURN;
  END IF;

  -- Candidate e-mails: the profile's own, then those the batch carried.
  SELECT coalesce(array_agg(c.m ORDER BY c.m, c.ord), '{}'), coalesce(array_agg(c.e ORDER BY c.m, c.ord), '{}'),
         coalesce(array_agg(c.ord ORDER BY c.m, c.ord), '{}')
    INTO cm, ce, co
  FROM (
    SELECT p.portal_member_id AS m, pg_catalog.lower(p.email) AS e, 0 AS ord
    FROM pg_catalog.unnest(unlinked) AS u(id) JOIN public.profiles p ON p.portal_member_id = u.id
    WHERE p.email IS NOT NULL
    UNION ALL
    SELECT x.m, pg_catalog.lower(x.e), x.ord::int
    FROM unnest(seen_members, seen_emails) WITH ORDINALITY AS x(m, e, ord)
    WHERE x.m = ANY (unlinked) AND x.e IS NOT NULL AND x.e <> '') c;
  PERFORM portalsync.lock_emails(ce);

  -- New links: per member the first candidate e-mail that no other member
  -- has and whose account the linking rule lets link; the lowest account
  -- id of several.
  WITH unshared AS (
    SELECT c.m, c.e, c.ord FROM unnest(cm, ce, co) AS c(m, e, ord)
    WHERE NOT EXISTS (SELECT 1 FROM public.profiles q
                      WHERE pg_catalog.lower(q.email) = c.e AND q.portal_member_id <> c.m)),
  acct AS (
    SELECT DISTINCT ON (s.m) s.m, a.auth_user_id AS u
    FROM unshared s CROSS JOIN LATERAL portalsync.email_accounts(s.e) a
    WHERE NOT a.linked
    ORDER BY s.m, s.ord, a.auth_user_id),
  ins AS (
    INSERT INTO portalsync.account_links (portal_member_id, auth_user_id)
    SELECT a.m, a.u FROM acct a ORDER BY a.m COLLATE "C"
    ON CONFLICT DO NOTHING
    RETURNING account_links.portal_member_id)
  SELECT coalesce(array_agg(ins.portal_member_id), '{}') INTO linked FROM ins;

  -- Shared: an account has the member's e-mail (linked or not), but other
  -- members have it too.
  RETURN QUERY
  SELECT x, 'linked'::text FROM pg_catalog.unnest(linked) AS x
  UNION ALL
  SELECT p.portal_member_id, 'shared'::text
  FROM pg_catalog.unnest(unlinked) AS u(id) JOIN public.profiles p ON p.portal_member_id = u.id
  WHERE p.email IS NOT NULL AND NOT (u.id = ANY (linked))
    AND EXISTS (SELECT 1 FROM public.profiles q
                WHERE pg_catalog.lower(q.email) = pg_catalog.lower(p.email) AND q.portal_member_id <> p.portal_member_id)
    AND EXISTS (SELECT 1 FROM portalsync.email_accounts(pg_catalog.lower(p.email)));
END $$;
REVOKE ALL ON FUNCTION portalsync.link_members(text[], text[], text[]) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION portalsync.link_members(text[], text[], text[]) TO portalsync_syncer;

-- apply_access brings the members' profiles and accounts in line with
-- their memberships, in one statement (00021): it reads each member's
-- profile, link and memberships once, derives the profile's status from
-- the memberships (active while one is; a member with none keeps the held
-- status), bans the account of an inactive member (unless already banned)
-- and deletes its sessions, lifts a ban the sync set from an active
-- member's, and writes each profile once, only where its status, its
-- mirror of the link or the sync's ban flag differs. It returns per
-- member 'revoked' or 'restored' where the ban changed. The syncer calls
-- it after link_members and the membership upserts, in the same
-- transaction; the account trigger after linking. enable_seqscan = off as
-- link_members.
CREATE FUNCTION portalsync.apply_access(member_ids text[])
RETURNS TABLE (portal_member_id text, change text)
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = '' SET enable_seqscan = off AS $$
BEGIN
  RETURN QUERY
  -- Per member: the profile as held, the status its memberships give it,
  -- and its link.
  WITH acc AS (
    SELECT p.id AS pid, x.id AS m, p.status AS held_status, p.deactivated_at AS held_deactivated_at,
           p.auth_user_id AS held_u, p.auth_banned_by_sync AS held_by_sync,
           coalesce(d.status, p.status) AS status,
           CASE WHEN d.status IS NULL THEN p.deactivated_at ELSE d.deactivated_at END AS deactivated_at,
           l.auth_user_id AS u, l.banned_by_sync AS by_sync
    FROM pg_catalog.unnest(member_ids) AS x(id)
    JOIN public.profiles p ON p.portal_member_id = x.id
    LEFT JOIN portalsync.account_links l ON l.portal_member_id = x.id
    LEFT JOIN LATERAL (
      SELECT CASE WHEN bool_or(ms.status = 'active') THEN 'active' ELSE 'inactive' END AS status,
             CASE WHEN bool_or(ms.status = 'active') THEN NULL ELSE max(ms.deactivated_at) END AS deactivated_at
      FROM public.organization_memberships ms WHERE ms.profile_id = p.id
      HAVING count(*) > 0) d ON true),
  banned AS (
    UPDATE auth.users u SET banned_until = now() + interval '876000 hours', updated_at = now()
    FROM acc WHERE u.id = acc.u AND acc.status = 'inactive'
      AND (u.banned_until IS NULL OR u.banned_until < now())
    RETURNING acc.m),
  lifted AS (
    UPDATE auth.users u SET banned_until = NULL, updated_at = now()
    FROM acc WHERE u.id = acc.u AND acc.status = 'active' AND acc.by_sync
    RETURNING acc.m),
  marked AS (
    UPDATE portalsync.account_links l SET banned_by_sync = (l.portal_member_id IN (SELECT m FROM banned))
    WHERE l.portal_member_id IN (SELECT m FROM banned UNION ALL SELECT m FROM lifted)),
  ended AS (
    DELETE FROM auth.sessions s USING acc WHERE s.user_id = acc.u AND acc.status = 'inactive'),
  want AS (
    SELECT acc.pid, acc.held_status, acc.held_deactivated_at, acc.held_u, acc.held_by_sync,
           acc.status, acc.deactivated_at, coalesce(acc.u, acc.held_u) AS u,
           CASE WHEN acc.u IS NULL THEN acc.held_by_sync
                WHEN acc.m IN (SELECT m FROM banned) THEN true
                WHEN acc.m IN (SELECT m FROM lifted) THEN false
                ELSE acc.by_sync END AS by_sync
    FROM acc),
  settled AS (
    UPDATE public.profiles p SET status = w.status, deactivated_at = w.deactivated_at,
           auth_user_id = w.u, auth_banned_by_sync = w.by_sync, updated_at = now()
    FROM want w
    WHERE p.id = w.pid
      AND (w.held_status, w.held_deactivated_at, w.held_u, w.held_by_sync)
          IS DISTINCT FROM (w.status, w.deactivated_at, w.u, w.by_sync))
  SELECT b.m, 'revoked'::text FROM banned b
  UNION ALL SELECT f.m, 'restored'::text FROM lifted f;
END $$;
REVOKE ALL ON FUNCTION portalsync.apply_access(text[]) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION portalsync.apply_access(text[]) TO portalsync_syncer;

-- link_account is the trigger on auth.users: an account that is created,
-- or whose e-mail is confirmed or changed, is linked to the one member
-- with that e-mail, and banned at once when that member is inactive.
-- Where several members have the e-mail, each member not linked yet gets a
-- sync-log row per organization (one without, for a member with none), so
-- that the org admins of those organizations read the conflict (00006).
CREATE FUNCTION portalsync.link_account() RETURNS trigger
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = '' AS $$
DECLARE
  members text[];
  n int;
BEGIN
  -- Only an account the linking rule lets link (this row, as the
  -- statement left it: confirmed, not SSO, not linked yet).
  IF NOT EXISTS (SELECT 1 FROM portalsync.email_accounts(NEW.email) a
                 WHERE a.auth_user_id = NEW.id AND NOT a.linked) THEN
    RETURN NULL;
  END IF;
  -- The members' rows first, then the e-mail: the order the syncer takes
  -- them in (it upserts profiles, then links), so the two cannot deadlock.
  PERFORM 1 FROM public.profiles p WHERE pg_catalog.lower(p.email) = pg_catalog.lower(NEW.email)
  ORDER BY p.portal_member_id FOR UPDATE;
  PERFORM portalsync.lock_emails(ARRAY[NEW.email]);
  members := ARRAY(SELECT p.portal_member_id FROM public.profiles p
                   WHERE pg_catalog.lower(p.email) = pg_catalog.lower(NEW.email) ORDER BY 1);
  n := pg_catalog.cardinality(members);
  IF n = 1 THEN
    INSERT INTO portalsync.account_links (portal_member_id, auth_user_id) VALUES (members[1], NEW.id)
    ON CONFLICT DO NOTHING;
    IF FOUND THEN
      UPDATE public.profiles p SET auth_user_id = NEW.id, auth_banned_by_sync = false, updated_at = now()
      WHERE p.portal_member_id = members[1];
      PERFORM portalsync.apply_access(members);
    END IF;
  ELSIF n > 1 THEN
    -- The organizations are key-share locked first (00025): one deleted
    -- meanwhile waits for this transaction, and its trigger then clears
    -- the ids written here.
    PERFORM 1 FROM public.organizations o
    JOIN public.organization_memberships om ON om.organization_id = o.id
    JOIN public.profiles p ON p.id = om.profile_id
    WHERE p.portal_member_id = ANY (members)
    ORDER BY o.id FOR KEY SHARE OF o;
    INSERT INTO public.portal_sync_log (event_id, event_type, portal_member_id, portal_org_id, organization_id, status, detail)
    SELECT 'account-link:' || NEW.id || ':' || m || coalesce(':' || o.portal_org_id, ''), 'account-link', m,
           o.portal_org_id, o.id, 'skipped', 'e-mail shared by ' || n || ' portal members; app account not linked'
    FROM pg_catalog.unnest(members) AS m
    LEFT JOIN (public.profiles p
               JOIN public.organization_memberships om ON om.profile_id = p.id
               JOIN public.organizations o ON o.id = om.organization_id) ON p.portal_member_id = m
    WHERE NOT EXISTS (SELECT 1 FROM portalsync.account_links l WHERE l.portal_member_id = m)
    ON CONFLICT (event_id) WHERE status IN ('success', 'skipped') DO NOTHING;
  END IF;
  RETURN NULL;
END $$;
REVOKE ALL ON FUNCTION portalsync.link_account() FROM PUBLIC;

-- The one change to Supabase's auth schema: this trigger.
CREATE TRIGGER portalsync_link_account
  AFTER INSERT OR UPDATE OF email, email_confirmed_at ON auth.users
  FOR EACH ROW EXECUTE FUNCTION portalsync.link_account();

-- unlink_profile clears a profile's mirror of a link that was deleted (its
-- account was deleted: the cascade from auth.users), so that no stale
-- "banned by the sync" outlives the account. SECURITY DEFINER: the
-- trigger fires as whoever deleted the account (supabase_auth_admin, with
-- no right on profiles), not as the owner the cascade itself runs as.
CREATE FUNCTION portalsync.unlink_profile() RETURNS trigger
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = '' AS $$
BEGIN
  UPDATE public.profiles p SET auth_user_id = NULL, auth_banned_by_sync = false, updated_at = now()
  WHERE p.portal_member_id = OLD.portal_member_id
    AND (p.auth_user_id IS NULL OR p.auth_user_id = OLD.auth_user_id)
    AND (p.auth_user_id, p.auth_banned_by_sync) IS DISTINCT FROM (NULL::uuid, false);
  RETURN NULL;
END $$;
REVOKE ALL ON FUNCTION portalsync.unlink_profile() FROM PUBLIC;

CREATE TRIGGER portalsync_unlink_profile
  AFTER DELETE ON portalsync.account_links
  FOR EACH ROW EXECUTE FUNCTION portalsync.unlink_profile();

-- ---------------------------------------------------------------------
-- Erasure (GDPR art. 17, 00012): a member-deleted event or `syncer erase`
-- deletes the member's profile (memberships and roles with it) and
-- account link, keeps the sync log's rows with the member ID replaced by a
-- one-way hash, and leaves a tombstone of that hash. The syncer's role
-- does this only through this function: it has no DELETE on profiles and
-- no UPDATE on the sync log.
-- ---------------------------------------------------------------------
CREATE FUNCTION portalsync.erase_member(p_member_id text, p_member_hash text, p_event_id text,
  OUT profiles_deleted integer, OUT memberships_deleted integer, OUT log_rows integer)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = '' AS $$
BEGIN
  INSERT INTO portalsync.erased_members (member_hash, event_id) VALUES (p_member_hash, p_event_id)
  ON CONFLICT (member_hash) DO NOTHING;
  SELECT count(*) INTO memberships_deleted
  FROM public.organization_memberships m JOIN public.profiles p ON p.id = m.profile_id
  WHERE p.portal_member_id = p_member_id;
  DELETE FROM public.profiles WHERE portal_member_id = p_member_id;
  GET DIAGNOSTICS profiles_deleted = ROW_COUNT;
  -- The account link names the member; the account itself stays (banned by
  -- the caller before this) and is the app's to delete.
  DELETE FROM portalsync.account_links WHERE portal_member_id = p_member_id;
  -- Rows the linking trigger wrote carry the member ID in their event id too.
  UPDATE public.portal_sync_log
  SET portal_member_id = p_member_hash,
      event_id = CASE WHEN event_type = 'account-link'
                      THEN pg_catalog.replace(event_id, ':' || p_member_id, ':' || p_member_hash)
                      ELSE event_id END,
      -- A refused change's detail names the row it refused: for a contact,
      -- the member (00030).
      detail = pg_catalog.replace(detail, p_member_id, p_member_hash)
  WHERE portal_member_id = p_member_id;
  GET DIAGNOSTICS log_rows = ROW_COUNT;
END $$;
REVOKE ALL ON FUNCTION portalsync.erase_member(text, text, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION portalsync.erase_member(text, text, text) TO portalsync_syncer;

-- ---------------------------------------------------------------------
-- A sync-log row never names an organization that is gone (00022): the
-- log has no foreign key to organizations, so deleting organizations
-- clears their ids from the log (by portal_sync_log_org_newest_idx), and
-- TRUNCATE, which fires no DELETE trigger, clears every id.
-- ---------------------------------------------------------------------
CREATE FUNCTION portalsync.forget_organizations() RETURNS trigger
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = '' AS $$
BEGIN
  IF TG_OP = 'TRUNCATE' THEN
    UPDATE public.portal_sync_log l SET organization_id = NULL WHERE l.organization_id IS NOT NULL;
  ELSE
    UPDATE public.portal_sync_log l SET organization_id = NULL
    FROM gone g WHERE l.organization_id = g.id;
  END IF;
  RETURN NULL;
END $$;
REVOKE ALL ON FUNCTION portalsync.forget_organizations() FROM PUBLIC;

CREATE TRIGGER portalsync_forget_organizations
  AFTER DELETE ON public.organizations
  REFERENCING OLD TABLE AS gone
  FOR EACH STATEMENT EXECUTE FUNCTION portalsync.forget_organizations();
CREATE TRIGGER portalsync_forget_truncated_organizations
  AFTER TRUNCATE ON public.organizations
  FOR EACH STATEMENT EXECUTE FUNCTION portalsync.forget_organizations();

-- ---------------------------------------------------------------------
-- The app's contract (00028, issue 21): what the Likeperson app and the
-- integration screen (console/) read, in public, as Supabase developers
-- expect it (docs/APP.md). All of it runs with the caller's rights (views
-- with security_invoker, a SQL function that is not SECURITY DEFINER), so
-- the row-level security of 3_access.sql stays the only gate: a caller
-- reads through the contract exactly the rows the tables' policies let
-- them read. Supabase's default privileges hand every new function and
-- view in public to anon, authenticated and service_role: only
-- authenticated keeps them.
-- ---------------------------------------------------------------------

-- The sync log of the caller's organizations where they are org admin,
-- with the organization's name and the member's display name, newest
-- first. Arguments (all optional):
--   org_id               one organization (default: all of the caller's)
--   status_filter        'success', 'failed' or 'skipped'
--   type_filter          an event type, e.g. 'role-updated'
--   since, until         processed_at >= since, < until
--   search               words; each must begin the member's first or last
--                        name (case-insensitive; profiles' *_name_search)
--   before_processed_at, before_id   the cursor: the last row of the page
--                        before (keyset paging)
--   entry_id             one row (the detail view)
--   page_size            rows per page, 1 to 200 (default 50)
-- Not SECURITY DEFINER and without SET clauses, so that the planner inlines
-- it into the caller's query and plans it with the arguments' values (the
-- filters then pick their indexes); every name is schema-qualified.
-- The period and the cursor are ranges on the log's indexes whatever the
-- arguments are (00029): a NULL bound is an infinite one (processed_at is
-- never NULL or infinite), written with CASE because under row-level
-- security a condition with coalesce serves no index (PostgreSQL cannot
-- tell that it leaks nothing).
-- member_name is the member's display name where the caller may read the
-- profile; an erased member has member_erased true and no id, no name.
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
REVOKE ALL ON FUNCTION public.sync_log(uuid, text, text, timestamptz, timestamptz, text, timestamptz, bigint, bigint, integer)
  FROM PUBLIC, anon, authenticated, service_role;
GRANT EXECUTE ON FUNCTION public.sync_log(uuid, text, text, timestamptz, timestamptz, text, timestamptz, bigint, bigint, integer)
  TO authenticated;

-- Per organization where the caller is org admin: the newest change
-- applied, the events that failed in the last 24 hours (and did not
-- succeed later), and the syncer's state from portalsync.sync_health:
-- 'running', 'catching_up' (with when the oldest unapplied event was
-- received), 'paused' (since when, why), or 'unknown' when no syncer
-- reported in the last two minutes; and when reconciliation last
-- succeeded.
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
REVOKE ALL ON public.sync_health FROM PUBLIC, anon, authenticated, service_role;
GRANT SELECT ON public.sync_health TO authenticated;

-- Members per organization, as the caller may read memberships (their own;
-- coordinators and org admins: all of their organizations', inactive ones
-- included). membership_status is the status in that organization: a member
-- deactivated here is inactive here even while active elsewhere (and so
-- while profiles.status is still 'active'). profile_id is taken from
-- profiles (00029), so that a keyset condition on (last_name, first_name,
-- profile_id) names one table and starts an index scan (profiles_name_idx).
CREATE VIEW public.organization_members WITH (security_invoker = true) AS
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
REVOKE ALL ON public.organization_members FROM PUBLIC, anon, authenticated, service_role;
GRANT SELECT ON public.organization_members TO authenticated;
