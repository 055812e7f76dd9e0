-- A membership's primary key names neither its member nor its
-- organization (found by the attack pass of issue 21). Supabase Realtime
-- applies no row-level security to a DELETE: every subscriber of
-- organization_memberships receives the replica identity (the primary key)
-- of each deleted row, whatever its filter. With the key (profile_id,
-- organization_id), an erasure told every signed-in user which profile had
-- been a member of which organization, the very fact the member asked to
-- be forgotten. The key is now a random id; (profile_id, organization_id)
-- stays unique (the syncer's upserts and role_assignments' foreign key
-- use it). Adding the column rewrites the table and rebuilds its indexes
-- under an ACCESS EXCLUSIVE lock (reads and writes wait): on a large
-- organization_memberships table run the migration while the syncer is
-- stopped.

-- +goose Up
-- +goose StatementBegin
ALTER TABLE public.organization_memberships ADD COLUMN id uuid NOT NULL DEFAULT gen_random_uuid();
ALTER TABLE public.role_assignments DROP CONSTRAINT role_assignments_profile_id_organization_id_fkey;
ALTER TABLE public.organization_memberships DROP CONSTRAINT organization_memberships_pkey;
ALTER TABLE public.organization_memberships
  ADD CONSTRAINT organization_memberships_profile_id_organization_id_key UNIQUE (profile_id, organization_id);
ALTER TABLE public.organization_memberships ADD CONSTRAINT organization_memberships_pkey PRIMARY KEY (id);
ALTER TABLE public.role_assignments ADD CONSTRAINT role_assignments_profile_id_organization_id_fkey
  FOREIGN KEY (profile_id, organization_id)
  REFERENCES public.organization_memberships (profile_id, organization_id) ON DELETE CASCADE;
-- +goose StatementEnd

-- +goose Down
-- +goose StatementBegin
ALTER TABLE public.role_assignments DROP CONSTRAINT role_assignments_profile_id_organization_id_fkey;
ALTER TABLE public.organization_memberships DROP CONSTRAINT organization_memberships_pkey;
ALTER TABLE public.organization_memberships DROP CONSTRAINT organization_memberships_profile_id_organization_id_key;
ALTER TABLE public.organization_memberships ADD CONSTRAINT organization_memberships_pkey PRIMARY KEY (profile_id, organization_id);
ALTER TABLE public.role_assignments ADD CONSTRAINT role_assignments_profile_id_organization_id_fkey
  FOREIGN KEY (profile_id, organization_id)
  REFERENCES public.organization_memberships (profile_id, organization_id) ON DELETE CASCADE;
ALTER TABLE public.organization_memberships DROP COLUMN id;
-- +goose StatementEnd
