-- Partial updates: the portal sends a member's fields as a JSON Merge
-- Patch (an absent field is unchanged, null clears it), so each profile
-- field keeps the portal time and event of the value it holds, and an
-- event writes only the fields it carries, each when it is newer than
-- that field's stamp. profiles.portal_updated_at / portal_event_id stay the
-- newest of the four.

-- +goose Up
ALTER TABLE public.profiles
  ADD COLUMN email_portal_at timestamptz,
  ADD COLUMN email_event_id text,
  ADD COLUMN first_name_portal_at timestamptz,
  ADD COLUMN first_name_event_id text,
  ADD COLUMN last_name_portal_at timestamptz,
  ADD COLUMN last_name_event_id text,
  ADD COLUMN phone_portal_at timestamptz,
  ADD COLUMN phone_event_id text;
-- Until now every snapshot wrote all four fields at once.
UPDATE public.profiles
SET email_portal_at = portal_updated_at, email_event_id = portal_event_id,
    first_name_portal_at = portal_updated_at, first_name_event_id = portal_event_id,
    last_name_portal_at = portal_updated_at, last_name_event_id = portal_event_id,
    phone_portal_at = portal_updated_at, phone_event_id = portal_event_id
WHERE portal_updated_at IS NOT NULL;

-- +goose Down
ALTER TABLE public.profiles
  DROP COLUMN email_portal_at, DROP COLUMN email_event_id,
  DROP COLUMN first_name_portal_at, DROP COLUMN first_name_event_id,
  DROP COLUMN last_name_portal_at, DROP COLUMN last_name_event_id,
  DROP COLUMN phone_portal_at, DROP COLUMN phone_event_id;
