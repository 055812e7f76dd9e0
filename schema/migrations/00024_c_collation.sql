-- Identifiers compare as bytes (issue 14). The portal's ids (member,
-- organization, event) are ASCII identifiers that nobody sorts for
-- reading; under the database's linguistic collation (C.UTF-8 here, a
-- language's elsewhere) every index probe, unique check and sort of them
-- went through the C library's strcoll. With COLLATE "C" they compare with
-- memcmp: +6 % in the ceiling benchmark (docs/BENCHMARKS.md). Equality is
-- unchanged (both collations are deterministic), and the syncer already
-- sorts its keys bytewise in Go.
--
-- The type stays text, so no table is rewritten, but each ALTER rebuilds
-- the indexes on its columns under an ACCESS EXCLUSIVE lock: on a large
-- sync log, run the migration while the syncer is stopped (the ingress
-- keeps accepting; the stream holds the events meanwhile).

-- +goose Up
ALTER TABLE public.profiles ALTER COLUMN portal_member_id TYPE text COLLATE "C";
ALTER TABLE public.organizations ALTER COLUMN portal_org_id TYPE text COLLATE "C";
ALTER TABLE public.portal_sync_log
  ALTER COLUMN event_id TYPE text COLLATE "C",
  ALTER COLUMN portal_member_id TYPE text COLLATE "C",
  ALTER COLUMN portal_org_id TYPE text COLLATE "C";
ALTER TABLE portalsync.account_links ALTER COLUMN portal_member_id TYPE text COLLATE "C";

-- +goose Down
ALTER TABLE portalsync.account_links ALTER COLUMN portal_member_id TYPE text COLLATE "default";
ALTER TABLE public.portal_sync_log
  ALTER COLUMN event_id TYPE text COLLATE "default",
  ALTER COLUMN portal_member_id TYPE text COLLATE "default",
  ALTER COLUMN portal_org_id TYPE text COLLATE "default";
ALTER TABLE public.organizations ALTER COLUMN portal_org_id TYPE text COLLATE "default";
ALTER TABLE public.profiles ALTER COLUMN portal_member_id TYPE text COLLATE "default";
