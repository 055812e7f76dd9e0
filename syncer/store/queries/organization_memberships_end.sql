-- public.organization_memberships: ends every membership of the profiles
-- $1 (members to erase), so that apply_access locks their accounts out.
UPDATE public.organization_memberships SET status = 'inactive', updated_at = now()
WHERE profile_id = ANY ($1::text[]::uuid[]) AND status <> 'inactive'
