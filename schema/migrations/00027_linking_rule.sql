-- The account-linking rule in one place (issue 20). Which app account an
-- e-mail may link to a portal member — a confirmed e-mail, never an SSO
-- account, never an account linked already (a link is never moved) — was
-- written out three times: twice in link_members' choice of new links and
-- once at the top of the sign-up trigger link_account. Now both ask
-- portalsync.email_accounts, and so does link_members' "shared" report
-- (which names an e-mail shared by several members whenever a confirmed,
-- non-SSO account has it, linked or not, as before).
--
-- email_accounts is SQL, STABLE and SECURITY INVOKER, without SET clauses,
-- so that the planner inlines it into its callers' statements: the
-- lookup stays the index probe on auth.users' unique e-mail index
-- (users_email_partial_key, usable because is_sso_user = false is in the
-- query the planner sees), and "not linked" an anti-join on
-- account_links' unique key. A SET search_path would stop the inlining;
-- it needs none: every name in it is schema-qualified, it runs only
-- inside the SECURITY DEFINER callers (which pin search_path to ''), and
-- nobody else may execute it. The callers' bodies are otherwise 00021's
-- and 00025's; link_members gets enable_seqscan = off again, because
-- CREATE OR REPLACE FUNCTION replaces a function's settings (00021).
--
-- Also: the syncer's role loses the column grants on auth's tables that
-- 00005 meant to take back. On Supabase, postgres holds SELECT on
-- auth.users and auth.sessions WITH GRANT OPTION and is a member of their
-- owner, supabase_auth_admin: 00004's column SELECT grants were made by
-- postgres, but 00005's REVOKE ALL ran as the owner (who holds every grant
-- option) and so left them (found by e2e's
-- TestSupabaseCurrentSchemaMatchesMigrations). They gave nothing — the
-- role has no USAGE on schema auth — but the role is to hold no right on
-- auth at all. Revoked column by column, as postgres granted them; a
-- no-op on plain PostgreSQL. The Down leaves them revoked.

-- +goose Up
-- +goose StatementBegin
CREATE FUNCTION portalsync.email_accounts(p_email text)
RETURNS TABLE (auth_user_id uuid, linked boolean)
LANGUAGE sql STABLE AS $$
  SELECT u.id, l.auth_user_id IS NOT NULL
  FROM auth.users u
  LEFT JOIN portalsync.account_links l ON l.auth_user_id = u.id
  WHERE u.email = p_email AND u.email_confirmed_at IS NOT NULL AND u.is_sso_user = false
$$;
-- +goose StatementEnd
REVOKE ALL ON FUNCTION portalsync.email_accounts(text) FROM PUBLIC;

-- +goose StatementBegin
DO $$
BEGIN
  REVOKE SELECT (id, email, email_confirmed_at, banned_until, is_sso_user), UPDATE (banned_until, updated_at)
    ON auth.users FROM portalsync_syncer;
  REVOKE SELECT (id, user_id) ON auth.sessions FROM portalsync_syncer;
EXCEPTION WHEN insufficient_privilege THEN NULL; -- never granted there
END $$;
-- +goose StatementEnd

-- +goose StatementBegin
CREATE OR REPLACE FUNCTION portalsync.link_members(member_ids text[], seen_members text[] DEFAULT '{}', seen_emails text[] DEFAULT '{}')
RETURNS TABLE (portal_member_id text, outcome text)
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = '' AS $$
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
  -- has and whose account the linking rule lets link (email_accounts:
  -- confirmed, not SSO, not linked yet); the lowest account id of several.
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
-- +goose StatementEnd
ALTER FUNCTION portalsync.link_members(text[], text[], text[]) SET enable_seqscan = off;

-- +goose StatementBegin
CREATE OR REPLACE FUNCTION portalsync.link_account() RETURNS trigger
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
    -- One row per organization of each member not linked yet (a member
    -- with no membership gets one without), so that the org admins of
    -- those organizations read it. The organizations are key-share
    -- locked first: one deleted meanwhile waits for this transaction, and
    -- its trigger then clears the ids written here (00022).
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
-- +goose StatementEnd

-- +goose Down
-- 00025's link_account and 00021's link_members.
-- +goose StatementBegin
CREATE OR REPLACE FUNCTION portalsync.link_account() RETURNS trigger
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = '' AS $$
DECLARE
  members text[];
  n int;
BEGIN
  IF NEW.email IS NULL OR NEW.email_confirmed_at IS NULL OR NEW.is_sso_user
     OR EXISTS (SELECT 1 FROM portalsync.account_links l WHERE l.auth_user_id = NEW.id) THEN
    RETURN NULL;
  END IF;
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
-- +goose StatementEnd

-- +goose StatementBegin
CREATE OR REPLACE FUNCTION portalsync.link_members(member_ids text[], seen_members text[] DEFAULT '{}', seen_emails text[] DEFAULT '{}')
RETURNS TABLE (portal_member_id text, outcome text)
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = '' AS $$
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
  WITH unshared AS (
    SELECT c.m, c.e, c.ord FROM unnest(cm, ce, co) AS c(m, e, ord)
    WHERE NOT EXISTS (SELECT 1 FROM public.profiles q
                      WHERE pg_catalog.lower(q.email) = c.e AND q.portal_member_id <> c.m)),
  acct AS (
    SELECT DISTINCT ON (s.m) s.m,
           (SELECT u.id FROM auth.users u
            WHERE u.email = s.e AND u.email_confirmed_at IS NOT NULL AND u.is_sso_user = false
              AND NOT EXISTS (SELECT 1 FROM portalsync.account_links l WHERE l.auth_user_id = u.id)
            ORDER BY u.id LIMIT 1) AS u
    FROM unshared s
    WHERE EXISTS (SELECT 1 FROM auth.users u
                  WHERE u.email = s.e AND u.email_confirmed_at IS NOT NULL AND u.is_sso_user = false
                    AND NOT EXISTS (SELECT 1 FROM portalsync.account_links l WHERE l.auth_user_id = u.id))
    ORDER BY s.m, s.ord),
  ins AS (
    INSERT INTO portalsync.account_links (portal_member_id, auth_user_id)
    SELECT a.m, a.u FROM acct a ORDER BY a.m COLLATE "C"
    ON CONFLICT DO NOTHING
    RETURNING account_links.portal_member_id)
  SELECT coalesce(array_agg(ins.portal_member_id), '{}') INTO linked FROM ins;
  RETURN QUERY
  SELECT x, 'linked'::text FROM pg_catalog.unnest(linked) AS x
  UNION ALL
  SELECT p.portal_member_id, 'shared'::text
  FROM pg_catalog.unnest(unlinked) AS u(id) JOIN public.profiles p ON p.portal_member_id = u.id
  WHERE p.email IS NOT NULL AND NOT (u.id = ANY (linked))
    AND EXISTS (SELECT 1 FROM public.profiles q
                WHERE pg_catalog.lower(q.email) = pg_catalog.lower(p.email) AND q.portal_member_id <> p.portal_member_id)
    AND EXISTS (SELECT 1 FROM auth.users a
                WHERE a.email = pg_catalog.lower(p.email) AND a.email_confirmed_at IS NOT NULL
                  AND a.is_sso_user = false);
END $$;
-- +goose StatementEnd
ALTER FUNCTION portalsync.link_members(text[], text[], text[]) SET enable_seqscan = off;

DROP FUNCTION portalsync.email_accounts(text);
