-- public.profiles, its memberships and roles, public.portal_sync_log and
-- portalsync.erased_members (through portalsync.erase_member, 00012):
-- erases member $1, replacing its id by the hash $2 in its log rows and
-- leaving a tombstone of the hash for event $3.
SELECT * FROM portalsync.erase_member($1, $2, $3)
