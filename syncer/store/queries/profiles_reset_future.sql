-- public.profiles: resets every portal stamp later than $1 (now plus the
-- allowed clock difference) to none, so that the next real event for the
-- field wins. It returns the members reset.
UPDATE public.profiles SET
  email_portal_at = CASE WHEN email_portal_at > $1 THEN NULL ELSE email_portal_at END,
  email_event_id = CASE WHEN email_portal_at > $1 THEN NULL ELSE email_event_id END,
  first_name_portal_at = CASE WHEN first_name_portal_at > $1 THEN NULL ELSE first_name_portal_at END,
  first_name_event_id = CASE WHEN first_name_portal_at > $1 THEN NULL ELSE first_name_event_id END,
  last_name_portal_at = CASE WHEN last_name_portal_at > $1 THEN NULL ELSE last_name_portal_at END,
  last_name_event_id = CASE WHEN last_name_portal_at > $1 THEN NULL ELSE last_name_event_id END,
  phone_portal_at = CASE WHEN phone_portal_at > $1 THEN NULL ELSE phone_portal_at END,
  phone_event_id = CASE WHEN phone_portal_at > $1 THEN NULL ELSE phone_event_id END,
  portal_updated_at = CASE WHEN portal_updated_at > $1 THEN NULL ELSE portal_updated_at END,
  portal_event_id = CASE WHEN portal_updated_at > $1 THEN NULL ELSE portal_event_id END,
  deactivated_at = CASE WHEN deactivated_at > $1 THEN NULL ELSE deactivated_at END,
  updated_at = now()
WHERE greatest(email_portal_at, first_name_portal_at, last_name_portal_at, phone_portal_at, portal_updated_at, deactivated_at) > $1
RETURNING portal_member_id
