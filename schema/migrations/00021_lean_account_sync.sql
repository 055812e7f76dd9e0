-- Account linking and access at the cost of what changed (issue 14).
--
-- A batch's members are nearly all linked already, and their access is
-- nearly always what it was. 00005's functions still did the whole work for
-- every member of every batch: link_members looked for accounts, locked
-- e-mails and counted every profile sharing each member's e-mail, then both
-- functions joined the batch's profiles with account_links to mirror the
-- links and the sync's ban flags onto the profiles (76 of 151 ms of top-level
-- statement time per batch of 1,024 with 50,000 accounts,
-- docs/BENCHMARKS.md).
--
-- Now:
--   * link_members decides links only for the batch's members that have
--     none (read by account_links' primary key); with none, it does no
--     more. Its rules are 00005's, unchanged.
--   * apply_access brings the members' profiles and accounts in line with
--     their memberships in one statement: it reads each member's profile,
--     link and memberships once, derives the profile's status from the
--     memberships (the syncer's own statement before, which wrote the
--     profile a second time), bans or lifts bans, deletes sessions, and
--     writes each profile once, where its status, its mirror of the link or
--     the ban flag differs (a status change, a new link, a resync's new
--     profile), and nothing else. The syncer calls it after link_members
--     and the membership upserts, in the same transaction; the account
--     trigger after linking.
--   * Neither forces custom plans any more (00020 did for the link): their
--     statements read by key. Both run with enable_seqscan = off instead: a
--     generic plan cached while the tables were small (a new database, the
--     first batches) hashed or scanned whole tables, and kept doing so for
--     every small batch once they had grown. The setting is set after the
--     bodies below because CREATE OR REPLACE FUNCTION replaces a function's
--     settings with its own SET clauses; a later migration that replaces
--     either body must set it again (store's TestNoForcedCustomPlans checks).

-- +goose Up

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

-- +goose StatementBegin
CREATE OR REPLACE FUNCTION portalsync.apply_access(member_ids text[])
RETURNS TABLE (portal_member_id text, change text)
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = '' AS $$
BEGIN
  RETURN QUERY
  -- Per member: the profile as held, the status its memberships give it
  -- (active while one is; a member with none keeps the held status), and
  -- its link.
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
-- +goose StatementEnd

ALTER FUNCTION portalsync.link_members(text[], text[], text[]) SET enable_seqscan = off;
ALTER FUNCTION portalsync.apply_access(text[]) SET enable_seqscan = off;

-- +goose Down
-- 00005's bodies (and 00020's custom plans for the link).
-- +goose StatementBegin
CREATE OR REPLACE FUNCTION portalsync.apply_access(member_ids text[])
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
  UPDATE public.profiles p SET auth_banned_by_sync = l.banned_by_sync
  FROM portalsync.account_links l
  WHERE l.portal_member_id = p.portal_member_id AND p.portal_member_id = ANY (member_ids)
    AND p.auth_banned_by_sync IS DISTINCT FROM l.banned_by_sync;
END $$;
-- +goose StatementEnd

-- +goose StatementBegin
CREATE OR REPLACE FUNCTION portalsync.link_members(member_ids text[], seen_members text[] DEFAULT '{}', seen_emails text[] DEFAULT '{}')
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
ALTER FUNCTION portalsync.link_members(text[], text[], text[]) SET plan_cache_mode = force_custom_plan;
