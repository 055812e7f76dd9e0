-- Linking app accounts (auth.users) to portal members, as real Supabase runs.
--
-- Where identity state lives: portalsync.account_links, one row per linked
-- member, keyed by the portal member ID. It is the truth about links and
-- about bans the sync set; profiles.auth_user_id and
-- profiles.auth_banned_by_sync mirror it for the app and its policies. A
-- resync that wipes the public tables leaves it alone, so a replay restores
-- every link and ban flag exactly instead of guessing again from e-mails.
--
-- When an account is linked, and to whom:
--   * when an account is created or its e-mail becomes confirmed or
--     changes (a trigger on auth.users, Supabase's handle_new_user pattern),
--     and when the sync applies an event for a member (portalsync.link_members);
--   * only a confirmed e-mail (email_confirmed_at set), compared without
--     regard to case, never an SSO account;
--   * only when exactly one portal member has that e-mail: a shared e-mail
--     links nobody new and is written to the sync log (never the e-mail);
--   * a link is never moved: it follows the member, whatever e-mail either
--     side has later; it ends only when the account is deleted.
-- An account that links to a member with no active membership is banned at
-- once, with the sync's ban flag set, so that a reactivation lifts it.
--
-- Privileges: the auth tables belong to supabase_auth_admin and have
-- row-level security with no policies, so portalsync_syncer gets no right
-- on them. It calls the SECURITY DEFINER functions below instead; they are
-- owned by the migrating role (postgres on Supabase: BYPASSRLS and all
-- rights on auth's tables; a superuser on plain PostgreSQL), with
-- search_path pinned. `syncer migrate` checks those rights before it
-- applies anything and names the statements an administrator must run
-- where they are missing.

-- +goose Up
CREATE TABLE portalsync.account_links (
  portal_member_id text PRIMARY KEY,
  auth_user_id uuid NOT NULL UNIQUE REFERENCES auth.users (id) ON DELETE CASCADE,
  -- True while the account is banned because the member has no active
  -- membership; an administrator's own ban never sets it.
  banned_by_sync boolean NOT NULL DEFAULT false,
  linked_at timestamptz NOT NULL DEFAULT now()
);
REVOKE ALL ON portalsync.account_links FROM PUBLIC;

-- Links made before this migration become durable.
INSERT INTO portalsync.account_links (portal_member_id, auth_user_id, banned_by_sync)
SELECT portal_member_id, auth_user_id, auth_banned_by_sync FROM public.profiles
WHERE auth_user_id IS NOT NULL
ON CONFLICT DO NOTHING;

-- The syncer no longer touches auth's tables itself (grants that 00004 may
-- have given on plain PostgreSQL are taken back).
-- +goose StatementBegin
DO $$
BEGIN
  REVOKE ALL ON auth.users, auth.sessions FROM portalsync_syncer;
  REVOKE USAGE ON SCHEMA auth FROM portalsync_syncer;
EXCEPTION WHEN insufficient_privilege THEN NULL; -- never granted there
END $$;
-- +goose StatementEnd

-- lock_emails serializes every linking decision about one e-mail, so that
-- two transactions never both see it unshared.
-- +goose StatementBegin
CREATE FUNCTION portalsync.lock_emails(emails text[]) RETURNS void
LANGUAGE plpgsql VOLATILE SET search_path = '' AS $$
DECLARE
  e text;
BEGIN
  -- In sorted order, so that two transactions cannot deadlock on them.
  FOR e IN SELECT DISTINCT pg_catalog.lower(x) FROM pg_catalog.unnest(emails) AS x WHERE x IS NOT NULL ORDER BY 1 LOOP
    PERFORM pg_catalog.pg_advisory_xact_lock(pg_catalog.hashtext('portalsync.email:' || e));
  END LOOP;
END $$;
-- +goose StatementEnd

-- apply_access brings the accounts of the members member_ids in line with
-- their profiles' status: an inactive member's account is banned (unless
-- already banned) and its sessions deleted; an active member's ban set by
-- the sync is lifted. It returns what changed per member: 'revoked' or
-- 'restored'.
-- +goose StatementBegin
CREATE FUNCTION portalsync.apply_access(member_ids text[])
RETURNS TABLE (portal_member_id text, change text)
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = '' AS $$
BEGIN
  RETURN QUERY
  WITH acc AS (
    SELECT l.portal_member_id AS m, l.auth_user_id AS u, l.banned_by_sync AS by_sync, p.status
    FROM portalsync.account_links l JOIN public.profiles p ON p.portal_member_id = l.portal_member_id
    WHERE l.portal_member_id = ANY (member_ids)),
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
    DELETE FROM auth.sessions s USING acc WHERE s.user_id = acc.u AND acc.status = 'inactive')
  SELECT b.m, 'revoked'::text FROM banned b
  UNION ALL SELECT f.m, 'restored'::text FROM lifted f;
  -- The profiles mirror the flag (a statement of its own: it must see the
  -- links as updated above).
  UPDATE public.profiles p SET auth_banned_by_sync = l.banned_by_sync
  FROM portalsync.account_links l
  WHERE l.portal_member_id = p.portal_member_id AND p.portal_member_id = ANY (member_ids)
    AND p.auth_banned_by_sync IS DISTINCT FROM l.banned_by_sync;
END $$;
-- +goose StatementEnd

-- Supabase Auth stores e-mails in lower case (and keeps them unique among
-- non-SSO users, users_email_partial_key): the portal's e-mail, lower-cased,
-- finds the account by that index. From an account, the members are found
-- by lower(email) (profiles_email_idx).
--
-- link_members links the members member_ids (whose profiles exist) to
-- their accounts and restores links kept in account_links onto their
-- profiles (after a resync). Besides a member's current e-mail it tries the
-- e-mails seen_emails[i] that the applied events of member seen_members[i]
-- carried (newest first), so that a member whose e-mail changed within a
-- batch is linked as applying the events one by one, in any order, would
-- link them. An e-mail counts only while no other member's profile has
-- it. (The syncer bans the account of an inactive member right after, in
-- the same transaction.) It returns per member 'linked', or 'shared' when
-- an account has the member's e-mail but other members have it too.
-- +goose StatementBegin
CREATE FUNCTION portalsync.link_members(member_ids text[], seen_members text[] DEFAULT '{}', seen_emails text[] DEFAULT '{}')
RETURNS TABLE (portal_member_id text, outcome text)
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = '' AS $$
DECLARE
  linked text[];
  cm text[];
  ce text[];
  co int[];
BEGIN
  SELECT coalesce(array_agg(c.m ORDER BY c.m, c.ord), '{}'), coalesce(array_agg(c.e ORDER BY c.m, c.ord), '{}'),
         coalesce(array_agg(c.ord ORDER BY c.m, c.ord), '{}')
    INTO cm, ce, co
  FROM (
    SELECT p.portal_member_id AS m, pg_catalog.lower(p.email) AS e, 0 AS ord
    FROM public.profiles p
    WHERE p.portal_member_id = ANY (member_ids) AND p.email IS NOT NULL
    UNION ALL
    SELECT x.m, pg_catalog.lower(x.e), x.ord::int
    FROM unnest(seen_members, seen_emails) WITH ORDINALITY AS x(m, e, ord)
    WHERE x.m = ANY (member_ids) AND x.e IS NOT NULL AND x.e <> '') c
  WHERE NOT EXISTS (SELECT 1 FROM portalsync.account_links l WHERE l.portal_member_id = c.m);
  PERFORM portalsync.lock_emails(ce);

  -- New links: per member the first candidate e-mail that no other member
  -- has and that belongs to a confirmed, non-SSO account not linked yet.
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
    SELECT a.m, a.u FROM acct a ORDER BY a.m
    ON CONFLICT DO NOTHING
    RETURNING account_links.portal_member_id)
  SELECT coalesce(array_agg(ins.portal_member_id), '{}') INTO linked FROM ins;

  -- Every link of these members onto their profiles: the new ones, and
  -- those a resync found missing.
  UPDATE public.profiles p SET auth_user_id = l.auth_user_id, auth_banned_by_sync = l.banned_by_sync, updated_at = now()
  FROM portalsync.account_links l
  WHERE l.portal_member_id = p.portal_member_id AND p.portal_member_id = ANY (member_ids)
    AND (p.auth_user_id, p.auth_banned_by_sync) IS DISTINCT FROM (l.auth_user_id, l.banned_by_sync);

  RETURN QUERY
  SELECT x, 'linked'::text FROM pg_catalog.unnest(linked) AS x
  UNION ALL
  SELECT p.portal_member_id, 'shared'::text
  FROM public.profiles p
  WHERE p.portal_member_id = ANY (member_ids) AND p.email IS NOT NULL
    AND NOT EXISTS (SELECT 1 FROM portalsync.account_links l WHERE l.portal_member_id = p.portal_member_id)
    AND (SELECT count(*) FROM public.profiles q WHERE pg_catalog.lower(q.email) = pg_catalog.lower(p.email)) > 1
    AND EXISTS (SELECT 1 FROM auth.users u
                WHERE u.email = pg_catalog.lower(p.email) AND u.email_confirmed_at IS NOT NULL
                  AND u.is_sso_user = false);
END $$;
-- +goose StatementEnd

-- link_account is the trigger on auth.users: an account that is created, or
-- whose e-mail is confirmed or changed, is linked to the one member with
-- that e-mail, and banned at once when that member is inactive. Where
-- several members have the e-mail, each gets a sync-log row saying the
-- account was not linked.
-- +goose StatementBegin
CREATE FUNCTION portalsync.link_account() RETURNS trigger
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = '' AS $$
DECLARE
  members text[];
  n int;
BEGIN
  IF NEW.email IS NULL OR NEW.email_confirmed_at IS NULL OR NEW.is_sso_user
     OR EXISTS (SELECT 1 FROM portalsync.account_links l WHERE l.auth_user_id = NEW.id) THEN
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
    INSERT INTO public.portal_sync_log (event_id, event_type, portal_member_id, status, detail)
    SELECT 'account-link:' || NEW.id || ':' || m, 'account-link', m, 'skipped',
           'e-mail shared by ' || n || ' portal members; app account not linked'
    FROM pg_catalog.unnest(members) AS m
    WHERE NOT EXISTS (SELECT 1 FROM portalsync.account_links l WHERE l.portal_member_id = m)
    ON CONFLICT (event_id) WHERE status IN ('success', 'skipped') DO NOTHING;
  END IF;
  RETURN NULL;
END $$;
-- +goose StatementEnd

CREATE TRIGGER portalsync_link_account
  AFTER INSERT OR UPDATE OF email, email_confirmed_at ON auth.users
  FOR EACH ROW EXECUTE FUNCTION portalsync.link_account();

REVOKE ALL ON FUNCTION portalsync.lock_emails(text[]), portalsync.apply_access(text[]),
  portalsync.link_members(text[], text[], text[]), portalsync.link_account() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION portalsync.apply_access(text[]), portalsync.link_members(text[], text[], text[]) TO portalsync_syncer;

-- The access-token hook refuses a token to an account whose member has no
-- active membership (Supabase answers the sign-in or refresh with the
-- hook's error), so no path issues a token to a deactivated member, even
-- before the ban lands.
-- +goose StatementBegin
CREATE OR REPLACE FUNCTION public.custom_access_token_hook(event jsonb) RETURNS jsonb
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
-- +goose StatementEnd

-- What Supabase's default privileges hand anon and authenticated on objects
-- created in public is taken back: authenticated keeps only SELECT (by
-- policy) on the five tables.
REVOKE ALL ON SEQUENCE public.portal_sync_log_id_seq FROM PUBLIC, anon, authenticated;
REVOKE ALL ON public.organizations, public.profiles, public.organization_memberships,
  public.role_assignments, public.portal_sync_log FROM PUBLIC, anon, authenticated;
GRANT SELECT ON public.organizations, public.profiles, public.organization_memberships,
  public.role_assignments, public.portal_sync_log TO authenticated;
REVOKE ALL ON FUNCTION public.custom_access_token_hook(jsonb) FROM PUBLIC, anon, authenticated;

-- +goose Down
DROP TRIGGER portalsync_link_account ON auth.users;
DROP FUNCTION portalsync.link_account();
DROP FUNCTION portalsync.link_members(text[], text[], text[]);
DROP FUNCTION portalsync.apply_access(text[]);
DROP FUNCTION portalsync.lock_emails(text[]);
DROP TABLE portalsync.account_links;
