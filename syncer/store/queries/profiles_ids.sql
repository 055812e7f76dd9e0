-- public.profiles: the ids of the members $1.
SELECT portal_member_id, id::text FROM public.profiles WHERE portal_member_id = ANY ($1)
