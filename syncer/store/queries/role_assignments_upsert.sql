-- public.role_assignments: the newest role the batch gives each membership
-- ($1 and $2 the profile and organization ids, $3 the role, $4 and $5 its
-- event's portal time and id), written when its event is newer than the
-- stored role's stamp (portalsync.newer: or is the same event and the role
-- differs). Rows in key order. It returns the stamp of each row it wrote,
-- with the role it held before (NULL: none) and holds now, for the log's
-- changes. The role before is read in the statement's snapshot (old), as
-- every part of one statement sees the tables as they were when it began,
-- the insert's own writes included; no row lock is taken for it (a FOR
-- UPDATE would write every row's header once more for a rare race). It
-- is the role the update replaced unless another transaction changed the
-- row after this statement's snapshot and before its update (two syncer
-- replicas applying the same membership at the same instant): that row's
-- log then names as old the role before both.
WITH t AS (
  SELECT * FROM unnest($1::text[]::uuid[], $2::text[]::uuid[], $3::text[], $4::timestamptz[], $5::text[])
    AS t(profile_id, organization_id, role, portal_updated_at, portal_event_id)
), old AS MATERIALIZED (
  SELECT r.profile_id, r.organization_id, r.role FROM public.role_assignments r
  WHERE (r.profile_id, r.organization_id) IN (SELECT t.profile_id, t.organization_id FROM t)
), up AS (
  INSERT INTO public.role_assignments AS r (profile_id, organization_id, role, portal_updated_at, portal_event_id)
  SELECT * FROM t
  ORDER BY 1, 2
  ON CONFLICT (profile_id, organization_id) DO UPDATE
  SET role = excluded.role, portal_updated_at = excluded.portal_updated_at,
      portal_event_id = excluded.portal_event_id, updated_at = now()
  WHERE portalsync.newer(excluded.portal_updated_at, excluded.portal_event_id, r.portal_updated_at, r.portal_event_id,
                         r.role <> excluded.role)
  RETURNING profile_id, organization_id, portal_updated_at, portal_event_id, role
)
SELECT up.profile_id::text, up.organization_id::text, up.portal_updated_at, up.portal_event_id, old.role, up.role
FROM up LEFT JOIN old ON old.profile_id = up.profile_id AND old.organization_id = up.organization_id
