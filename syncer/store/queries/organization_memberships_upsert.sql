-- public.organization_memberships: each membership of the batch. $1 and $2
-- the profile and organization ids; $3 the status of the batch's newest
-- event that speaks about it ('active' when none does), $4 its
-- deactivated_at, $5 and $6 that event's portal time and id (NULL when
-- none); $7 the newest portal time of any of its events. The status is
-- written when its event is newer than the stored status's stamp
-- (portalsync.newer: or is the same event and the status differs, a
-- replay's repair); a membership no event gave a status to is active. Rows
-- in key order, so concurrent batches lock them in the same order. It
-- returns whether it inserted, the status stamp of each row it wrote, and
-- its status before (NULL: inserted) and now, for the log's changes; the
-- status before is read in the statement's snapshot (old), as in
-- role_assignments_upsert.sql.
WITH t AS (
  SELECT * FROM unnest($1::text[]::uuid[], $2::text[]::uuid[], $3::text[], $4::timestamptz[],
                       $5::timestamptz[], $6::text[], $7::timestamptz[])
    AS t(profile_id, organization_id, status, deactivated_at, status_portal_at, status_event_id, portal_updated_at)
), old AS MATERIALIZED (
  SELECT m.profile_id, m.organization_id, m.status FROM public.organization_memberships m
  WHERE (m.profile_id, m.organization_id) IN (SELECT t.profile_id, t.organization_id FROM t)
), up AS (
  INSERT INTO public.organization_memberships AS m
    (profile_id, organization_id, status, deactivated_at, status_portal_at, status_event_id, portal_updated_at)
  SELECT * FROM t
  ORDER BY 1, 2
  ON CONFLICT (profile_id, organization_id) DO UPDATE
  SET status = CASE WHEN portalsync.newer(excluded.status_portal_at, excluded.status_event_id, m.status_portal_at, m.status_event_id,
                                          (m.status, m.deactivated_at) IS DISTINCT FROM (excluded.status, excluded.deactivated_at))
                    THEN excluded.status WHEN m.status_portal_at IS NULL THEN 'active' ELSE m.status END,
      deactivated_at = CASE WHEN portalsync.newer(excluded.status_portal_at, excluded.status_event_id, m.status_portal_at, m.status_event_id,
                                                  (m.status, m.deactivated_at) IS DISTINCT FROM (excluded.status, excluded.deactivated_at))
                            THEN excluded.deactivated_at WHEN m.status_portal_at IS NULL THEN NULL ELSE m.deactivated_at END,
      status_portal_at = CASE WHEN portalsync.newer(excluded.status_portal_at, excluded.status_event_id, m.status_portal_at, m.status_event_id,
                                                    (m.status, m.deactivated_at) IS DISTINCT FROM (excluded.status, excluded.deactivated_at))
                              THEN excluded.status_portal_at ELSE m.status_portal_at END,
      status_event_id = CASE WHEN portalsync.newer(excluded.status_portal_at, excluded.status_event_id, m.status_portal_at, m.status_event_id,
                                                   (m.status, m.deactivated_at) IS DISTINCT FROM (excluded.status, excluded.deactivated_at))
                             THEN excluded.status_event_id ELSE m.status_event_id END,
      portal_updated_at = greatest(m.portal_updated_at, excluded.portal_updated_at),
      updated_at = now()
  WHERE portalsync.newer(excluded.status_portal_at, excluded.status_event_id, m.status_portal_at, m.status_event_id,
                         (m.status, m.deactivated_at) IS DISTINCT FROM (excluded.status, excluded.deactivated_at))
     OR m.portal_updated_at < excluded.portal_updated_at
     OR (m.status_portal_at IS NULL AND (m.status <> 'active' OR m.deactivated_at IS NOT NULL))
  RETURNING profile_id, organization_id, xmax = 0 AS inserted, status_portal_at, status_event_id, status
)
SELECT up.profile_id::text, up.organization_id::text, up.inserted, up.status_portal_at, up.status_event_id,
       old.status, up.status
FROM up LEFT JOIN old ON old.profile_id = up.profile_id AND old.organization_id = up.organization_id
