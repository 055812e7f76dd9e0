-- public.organization_memberships: resets every portal stamp later than
-- $1 (the status's to none, the newest event's to -infinity). It returns
-- the members reset.
UPDATE public.organization_memberships m SET
  status_portal_at = CASE WHEN status_portal_at > $1 THEN NULL ELSE status_portal_at END,
  status_event_id = CASE WHEN status_portal_at > $1 THEN NULL ELSE status_event_id END,
  deactivated_at = CASE WHEN m.deactivated_at > $1 THEN NULL ELSE m.deactivated_at END,
  portal_updated_at = CASE WHEN m.portal_updated_at > $1 THEN '-infinity' ELSE m.portal_updated_at END,
  updated_at = now()
FROM public.profiles p
WHERE p.id = m.profile_id AND greatest(m.status_portal_at, m.deactivated_at, m.portal_updated_at) > $1
RETURNING p.portal_member_id
