-- public.profiles: the field stamps (portal time, event id) of the members
-- $1, in event.ProfileFields order.
SELECT portal_member_id,
       email_portal_at, email_event_id, first_name_portal_at, first_name_event_id,
       last_name_portal_at, last_name_event_id, phone_portal_at, phone_event_id
FROM public.profiles WHERE portal_member_id = ANY ($1)
