-- public.role_assignments: resets every role stamp later than $1 to
-- -infinity. It returns the members reset.
UPDATE public.role_assignments r SET portal_updated_at = '-infinity', portal_event_id = '', updated_at = now()
FROM public.profiles p
WHERE p.id = r.profile_id AND r.portal_updated_at > $1
RETURNING p.portal_member_id
