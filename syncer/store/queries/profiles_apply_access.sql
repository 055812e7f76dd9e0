-- public.profiles and the accounts (through portalsync.apply_access, 00005
-- and 00021): derives the members' ($1) profile status from their
-- memberships, bans the accounts of inactive members (deleting their
-- sessions), lifts the sync's bans of active ones, and mirrors links and
-- ban flags onto the profiles.
SELECT portal_member_id, change FROM portalsync.apply_access($1::text[])
