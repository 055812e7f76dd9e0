-- portalsync.account_links (through portalsync.link_members, 00005 and
-- 00021): links the members $1 that have no link yet to the accounts with
-- their confirmed e-mail, or with an e-mail their applied events carried
-- ($2[i] for $3[i]). apply_access, later in the same transaction, writes
-- the links onto the profiles.
SELECT portal_member_id, outcome FROM portalsync.link_members($1::text[], $2::text[], $3::text[])
