-- Status changes as HOT updates (issue 14). A membership's status is
-- rewritten by every deactivation and reactivation; while it was part of
-- organization_memberships_org_idx, each such update wrote new entries in
-- both of the table's indexes. The index now holds organization_id alone
-- (the coordinators' "members of my organization" read filters the status
-- from the row), and the table and profiles leave a fifth of each page free
-- so that an updated row fits beside its old version (a HOT update: no new
-- index entries). Applies to pages written from now on.

-- +goose Up
DROP INDEX public.organization_memberships_org_idx;
CREATE INDEX organization_memberships_org_idx ON public.organization_memberships (organization_id);
ALTER TABLE public.organization_memberships SET (fillfactor = 80);
ALTER TABLE public.profiles SET (fillfactor = 80);

-- +goose Down
ALTER TABLE public.profiles RESET (fillfactor);
ALTER TABLE public.organization_memberships RESET (fillfactor);
DROP INDEX public.organization_memberships_org_idx;
CREATE INDEX organization_memberships_org_idx ON public.organization_memberships (organization_id, status);
