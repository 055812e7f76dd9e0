-- public.organizations: the ids of the organizations $1, FOR KEY SHARE
-- (as the sync log's foreign key took them before 00022): one deleted
-- meanwhile waits for the batch's transaction, and its trigger then clears
-- the ids the batch logs.
SELECT portal_org_id, id::text FROM public.organizations WHERE portal_org_id = ANY ($1) FOR KEY SHARE
