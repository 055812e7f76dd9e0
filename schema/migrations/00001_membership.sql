-- The membership data the Likeperson app reads, and the sync log. Every row
-- that mirrors the portal keeps the portal time (and, to break ties, the
-- event id) of what it reflects, so an older event never overwrites newer
-- data whatever the delivery order.

-- +goose Up
CREATE EXTENSION IF NOT EXISTS pgcrypto;

CREATE TABLE public.organizations (
  id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  portal_org_id text NOT NULL UNIQUE,
  name text NOT NULL DEFAULT '',
  -- Portal time and event of the name held.
  portal_updated_at timestamptz,
  portal_event_id text,
  created_at timestamptz NOT NULL DEFAULT now(),
  updated_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE public.profiles (
  id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  portal_member_id text NOT NULL UNIQUE,
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
  -- Portal time and event of the profile fields held; NULL until a
  -- membership-created or membership-updated event has set them.
  portal_updated_at timestamptz,
  portal_event_id text,
  -- True while the linked auth user is banned because of this sync (and so
  -- is unbanned by a reactivation); a ban set by an administrator is kept.
  auth_banned_by_sync boolean NOT NULL DEFAULT false,
  created_at timestamptz NOT NULL DEFAULT now(),
  updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX profiles_email_idx ON public.profiles (lower(email));

CREATE TABLE public.organization_memberships (
  profile_id uuid NOT NULL REFERENCES public.profiles (id) ON DELETE CASCADE,
  organization_id uuid NOT NULL REFERENCES public.organizations (id) ON DELETE CASCADE,
  status text NOT NULL CHECK (status IN ('active', 'inactive')),
  deactivated_at timestamptz,
  -- Portal time of the newest event applied to this membership.
  portal_updated_at timestamptz NOT NULL,
  -- Portal time and event of the status held; NULL while the status only
  -- comes from the membership having been created by an event that does not
  -- speak about status (membership-updated, role-updated).
  status_portal_at timestamptz,
  status_event_id text,
  created_at timestamptz NOT NULL DEFAULT now(),
  updated_at timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (profile_id, organization_id)
);
CREATE INDEX organization_memberships_org_idx ON public.organization_memberships (organization_id, status);

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

CREATE TABLE public.portal_sync_log (
  id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  event_id text NOT NULL,
  event_type text NOT NULL,
  portal_member_id text,
  portal_org_id text,
  organization_id uuid REFERENCES public.organizations (id) ON DELETE SET NULL,
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
  attempt integer NOT NULL DEFAULT 1
);
-- One success (or skip) per event: the idempotency guard.
CREATE UNIQUE INDEX portal_sync_log_event_done_idx ON public.portal_sync_log (event_id)
  WHERE status IN ('success', 'skipped');
-- "Newest entries of one organization", as org admins read them.
CREATE INDEX portal_sync_log_org_newest_idx ON public.portal_sync_log (organization_id, processed_at DESC, id DESC);
CREATE INDEX portal_sync_log_member_idx ON public.portal_sync_log (portal_member_id, processed_at DESC);
CREATE INDEX portal_sync_log_failed_idx ON public.portal_sync_log (processed_at DESC) WHERE status = 'failed';

-- +goose Down
DROP TABLE public.portal_sync_log;
DROP TABLE public.role_assignments;
DROP TABLE public.organization_memberships;
DROP TABLE public.profiles;
DROP TABLE public.organizations;
