-- portalsync's schema as it stands after every migration in
-- ../migrations (README.md here says how it is kept true): first the
-- tables, then the functions and triggers (2_functions.sql), then who may
-- read and write what (3_access.sql). Loaded in that order into a database
-- with Supabase's auth schema (or ../bootstrap/auth.sql on plain
-- PostgreSQL), it builds what the migrations build.
--
-- Every row that mirrors the portal keeps the portal time (and, to break
-- ties, the event id) of what it holds, so an older event never
-- overwrites newer data, whatever the delivery order.
--
-- The portal's ids (member, organization, event) compare as bytes
-- (COLLATE "C", 00024): ASCII identifiers nobody sorts for reading, and
-- memcmp is cheaper than the linguistic collation in every index probe.

CREATE EXTENSION IF NOT EXISTS pgcrypto;

-- The private schema: identity state, erasure tombstones, the linking and
-- policy functions, and goose's version table (portalsync.goose_db_version,
-- which goose creates; the syncer may read it, 00004).
CREATE SCHEMA IF NOT EXISTS portalsync;

-- The syncer's least-privilege role (its rights: 3_access.sql). A login
-- role gets them with CREATE ROLE portalsync_app LOGIN PASSWORD '…' IN
-- ROLE portalsync_syncer. Roles are cluster-wide: another database may
-- have created it.
DO $$
BEGIN
  CREATE ROLE portalsync_syncer NOLOGIN;
EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL;
END $$;

-- The integration screen's (console/) group role (00028): it can do
-- nothing but SET ROLE authenticated (3_access.sql), NOINHERIT so that it
-- holds none of authenticated's rights until it does. A login role joins
-- it: CREATE ROLE portalsync_screen LOGIN NOINHERIT PASSWORD '…' IN ROLE
-- portalsync_console.
DO $$
BEGIN
  CREATE ROLE portalsync_console NOLOGIN NOINHERIT;
EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL;
END $$;

-- ---------------------------------------------------------------------
-- The data contract the Likeperson app reads (public).
-- ---------------------------------------------------------------------

CREATE TABLE public.organizations (
  id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  portal_org_id text COLLATE "C" NOT NULL UNIQUE,
  name text NOT NULL DEFAULT '',
  -- Portal time and event of the name held.
  portal_updated_at timestamptz,
  portal_event_id text,
  created_at timestamptz NOT NULL DEFAULT now(),
  updated_at timestamptz NOT NULL DEFAULT now()
);

-- Each profile field keeps the portal time and event of the value it
-- holds (the portal sends a JSON Merge Patch: an absent field is
-- unchanged, null clears it), so an event writes only the fields it
-- carries, each when it is newer than that field's stamp (00010; those
-- columns came last, hence their place after updated_at).
-- portal_updated_at / portal_event_id are the newest of the four.
-- A fifth of each page stays free so that a status change is a HOT
-- update (00023). The lower-cased names last of all (00028): what the
-- sync log's name search (public.sync_log) reads.
CREATE TABLE public.profiles (
  id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  portal_member_id text COLLATE "C" NOT NULL UNIQUE,
  -- Mirrors portalsync.account_links (the truth about links).
  auth_user_id uuid UNIQUE REFERENCES auth.users (id) ON DELETE SET NULL,
  email text,
  first_name text,
  last_name text,
  phone text,
  -- Active while the member has at least one active membership.
  status text NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'inactive')),
  -- Portal time of the deactivation that left the member with no active
  -- membership.
  deactivated_at timestamptz,
  portal_updated_at timestamptz,
  portal_event_id text,
  -- True while the linked account is banned because of this sync (so a
  -- reactivation lifts it); an administrator's own ban never sets it.
  -- Mirrors portalsync.account_links.banned_by_sync.
  auth_banned_by_sync boolean NOT NULL DEFAULT false,
  created_at timestamptz NOT NULL DEFAULT now(),
  updated_at timestamptz NOT NULL DEFAULT now(),
  email_portal_at timestamptz,
  email_event_id text,
  first_name_portal_at timestamptz,
  first_name_event_id text,
  last_name_portal_at timestamptz,
  last_name_event_id text,
  phone_portal_at timestamptz,
  phone_event_id text,
  -- Stored rather than indexes on lower(...): under row-level security an
  -- index serves a condition only when its functions are leakproof, and
  -- lower() is not (text comparison is). Compared bytewise, so a range
  -- scan serves a prefix search with or without a generic plan.
  first_name_search text COLLATE "C" GENERATED ALWAYS AS (lower(first_name)) STORED,
  last_name_search text COLLATE "C" GENERATED ALWAYS AS (lower(last_name)) STORED
) WITH (fillfactor = 80);
-- Linking finds members by e-mail without regard to case.
CREATE INDEX profiles_email_idx ON public.profiles (lower(email));
-- The sync log's name search: a prefix of each word, on either name.
CREATE INDEX profiles_last_name_search_idx ON public.profiles (last_name_search);
CREATE INDEX profiles_first_name_search_idx ON public.profiles (first_name_search);
-- Members in name order (00029): a page of a members list walks profiles
-- in this order and keeps those of the organization, rather than sorting
-- every member of a large one. The first serves order=last_name,first_name
-- (the app, through PostgREST); the second the screen's keyset paging,
-- which sorts a missing name first. CASE rather than coalesce: under
-- row-level security a condition reaches an index only when PostgreSQL can
-- tell it leaks nothing, and it can of CASE but not of coalesce.
CREATE INDEX profiles_name_idx ON public.profiles (last_name, first_name, id);
CREATE INDEX profiles_sort_name_idx ON public.profiles (
  (CASE WHEN last_name IS NULL THEN '' ELSE last_name END),
  (CASE WHEN first_name IS NULL THEN '' ELSE first_name END), id);

CREATE TABLE public.organization_memberships (
  profile_id uuid NOT NULL REFERENCES public.profiles (id) ON DELETE CASCADE,
  organization_id uuid NOT NULL REFERENCES public.organizations (id) ON DELETE CASCADE,
  status text NOT NULL CHECK (status IN ('active', 'inactive')),
  deactivated_at timestamptz,
  -- Portal time of the newest event applied to this membership.
  portal_updated_at timestamptz NOT NULL,
  -- Portal time and event of the status held; NULL while the status only
  -- comes from the membership having been created by an event that does
  -- not speak about status (membership-updated, role-updated).
  status_portal_at timestamptz,
  status_event_id text,
  created_at timestamptz NOT NULL DEFAULT now(),
  updated_at timestamptz NOT NULL DEFAULT now(),
  -- The primary key names neither member nor organization (00031): it is
  -- what Supabase Realtime sends every subscriber of a DELETE, with no
  -- row-level security; (profile_id, organization_id) is unique instead.
  id uuid NOT NULL DEFAULT gen_random_uuid(),
  PRIMARY KEY (id),
  UNIQUE (profile_id, organization_id)
) WITH (fillfactor = 80);
-- "Members of my organization", with their ids so that the profiles
-- policy reads them from the index alone (00029); the status is not in
-- it, so that a status change writes no index entry (00023).
CREATE INDEX organization_memberships_org_idx ON public.organization_memberships (organization_id, profile_id);

CREATE TABLE public.role_assignments (
  profile_id uuid NOT NULL,
  organization_id uuid NOT NULL,
  role text NOT NULL CHECK (role IN ('peer_mentor', 'coordinator', 'org_admin')),
  portal_updated_at timestamptz NOT NULL,
  portal_event_id text NOT NULL,
  created_at timestamptz NOT NULL DEFAULT now(),
  updated_at timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (profile_id, organization_id),
  FOREIGN KEY (profile_id, organization_id)
    REFERENCES public.organization_memberships (profile_id, organization_id) ON DELETE CASCADE
);
CREATE INDEX role_assignments_org_role_idx ON public.role_assignments (organization_id, role);

-- organization_id has no foreign key (00022): checking it cost a lookup
-- per logged event. Its promise — a log row never names an organization
-- that is gone — is kept once per deletion instead, by the triggers on
-- organizations (portalsync.forget_organizations, 2_functions.sql); the
-- writers key-share lock the organizations they log.
CREATE TABLE public.portal_sync_log (
  id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  event_id text COLLATE "C" NOT NULL,
  event_type text NOT NULL,
  -- An erased member's is 'erased:' and the SHA-256 of their id (00012).
  portal_member_id text COLLATE "C",
  portal_org_id text COLLATE "C",
  organization_id uuid,
  status text NOT NULL CHECK (status IN ('success', 'failed', 'skipped')),
  -- What the event did ("member created; membership created; role set"),
  -- or why it failed or was skipped. Never personal data.
  detail text NOT NULL DEFAULT '',
  -- True when the event created a member the app did not know.
  member_created boolean NOT NULL DEFAULT false,
  occurred_at timestamptz,
  received_at timestamptz,
  processed_at timestamptz NOT NULL DEFAULT clock_timestamp(),
  stream_seq bigint,
  attempt integer NOT NULL DEFAULT 1,
  -- Where the event came from (00028). Both this and changes are nullable
  -- without a default, so an INSERT that does not name them works as
  -- before; NULL: not recorded (older rows, the account-link trigger).
  source text CHECK (
    source IN ('portal-webhook', 'dataverse-webhook', 'reconciliation', 'redrive', 'replay', 'erase-command')),
  -- What the event changed, in one shape that holds no personal value
  -- (the constraint refuses anything else), each key only when that part
  -- changed:
  --   {"role":   {"old": "peer_mentor", "new": "coordinator"},   old null: no role before
  --    "status": {"old": "active", "new": "inactive"},           the membership's status
  --    "profile_fields": ["first_name", "phone"]}                names only, never values
  changes jsonb CHECK (
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
  ))
);
-- One success (or skip) per event: the idempotency guard.
CREATE UNIQUE INDEX portal_sync_log_event_done_idx ON public.portal_sync_log (event_id)
  WHERE status IN ('success', 'skipped');
-- One failed row per delivery sequence: a failure logged, then redelivered
-- because the acknowledgement was lost, is not logged twice (00003).
CREATE UNIQUE INDEX portal_sync_log_failed_seq_idx ON public.portal_sync_log (stream_seq)
  WHERE status = 'failed' AND stream_seq IS NOT NULL;
-- "Newest entries of one organization", as org admins read them; also
-- how the organization triggers find the rows to clear.
CREATE INDEX portal_sync_log_org_newest_idx ON public.portal_sync_log (organization_id, processed_at DESC, id DESC);
-- The same of one event type, and only the failed or skipped ones (the
-- screen's filters and its failures in the last 24 hours, 00028).
CREATE INDEX portal_sync_log_org_type_idx ON public.portal_sync_log (organization_id, event_type, processed_at DESC, id DESC);
CREATE INDEX portal_sync_log_org_unsuccessful_idx ON public.portal_sync_log (organization_id, processed_at DESC, id DESC)
  WHERE status <> 'success';
-- A member's rows, which erasure rewrites (and the name search reads,
-- after profiles' name indexes).
CREATE INDEX portal_sync_log_member_idx ON public.portal_sync_log (portal_member_id, processed_at DESC);
CREATE INDEX portal_sync_log_failed_idx ON public.portal_sync_log (processed_at DESC) WHERE status = 'failed';

-- ---------------------------------------------------------------------
-- Identity state, erasure and the syncer's health (portalsync; no API
-- role reads them, but org admins read sync_health through
-- public.sync_health).
-- ---------------------------------------------------------------------

-- One row per linked member: the truth about links and about the bans the
-- sync set (profiles mirror it). A resync that wipes the public tables
-- leaves it alone, so a replay restores every link and ban flag exactly
-- instead of guessing again from e-mails (00005). A link follows the
-- member and is never moved; it ends when the account is deleted.
CREATE TABLE portalsync.account_links (
  portal_member_id text COLLATE "C" PRIMARY KEY,
  auth_user_id uuid NOT NULL UNIQUE REFERENCES auth.users (id) ON DELETE CASCADE,
  -- True while the account is banned because the member has no active
  -- membership; an administrator's own ban never sets it.
  banned_by_sync boolean NOT NULL DEFAULT false,
  linked_at timestamptz NOT NULL DEFAULT now()
);

-- Erased members (GDPR art. 17, 00012): no later or replayed event brings
-- one back.
CREATE TABLE portalsync.erased_members (
  -- 'erased:' followed by the hex SHA-256 of the canonical member ID.
  member_hash text PRIMARY KEY,
  event_id text NOT NULL,
  erased_at timestamptz NOT NULL DEFAULT now()
);

-- The syncer's own state, one row per reporting process (00028): each
-- syncer replica ('syncer:<host>:<pid>') and the reconciler
-- ('reconciler'). A row not reported for two minutes no longer counts
-- (public.sync_health, 2_functions.sql, says 'unknown' when no syncer row
-- counts). No personal data: reason is a fixed phrase such as 'database
-- unavailable'.
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
