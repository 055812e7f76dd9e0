-- public.profiles: each member's merge patch. $1 the member ids; per field
-- (email $2-$4, first_name $5-$7, last_name $8-$10, phone $11-$13) the
-- value ('' is NULL), and the portal time and id of the batch's newest
-- event that carries it (NULL when none does); $14 and $15 the newest of
-- those stamps. A field is written when its event is newer than the
-- field's stamp (portalsync.newer: or is the same event and the value
-- differs, which lets a replay repair it); a field the batch does not carry
-- keeps its value. A new member is inserted with every field, carried or
-- not (then unstamped). Rows in byte order of the member id, so
-- concurrent batches lock them in the same order. It returns the id,
-- whether it inserted, the field stamps of each row it wrote, and for
-- each field whether its value changed (for the log's changes, which
-- names fields and never holds values: no value leaves the database); the
-- values before are read in the statement's snapshot (old), as in
-- role_assignments_upsert.sql.
WITH t AS (
  SELECT * FROM unnest($1::text[],
                       $2::text[], $3::timestamptz[], $4::text[],
                       $5::text[], $6::timestamptz[], $7::text[],
                       $8::text[], $9::timestamptz[], $10::text[],
                       $11::text[], $12::timestamptz[], $13::text[],
                       $14::timestamptz[], $15::text[])
    AS t(k, v0, a0, e0, v1, a1, e1, v2, a2, e2, v3, a3, e3, ts, eid)
), old AS MATERIALIZED (
  SELECT o.portal_member_id, o.email, o.first_name, o.last_name, o.phone FROM public.profiles o
  WHERE o.portal_member_id IN (SELECT t.k FROM t)
), up AS (
  INSERT INTO public.profiles AS p
    (portal_member_id,
     email, email_portal_at, email_event_id,
     first_name, first_name_portal_at, first_name_event_id,
     last_name, last_name_portal_at, last_name_event_id,
     phone, phone_portal_at, phone_event_id,
     portal_updated_at, portal_event_id)
  SELECT t.k,
         nullif(t.v0, ''), t.a0, t.e0,
         nullif(t.v1, ''), t.a1, t.e1,
         nullif(t.v2, ''), t.a2, t.e2,
         nullif(t.v3, ''), t.a3, t.e3,
         t.ts, t.eid
  FROM t
  ORDER BY t.k COLLATE "C"
  ON CONFLICT (portal_member_id) DO UPDATE
  SET email = CASE WHEN portalsync.newer(excluded.email_portal_at, excluded.email_event_id, p.email_portal_at, p.email_event_id, p.email IS DISTINCT FROM excluded.email)
                   THEN excluded.email ELSE p.email END,
      email_portal_at = CASE WHEN portalsync.newer(excluded.email_portal_at, excluded.email_event_id, p.email_portal_at, p.email_event_id, p.email IS DISTINCT FROM excluded.email)
                             THEN excluded.email_portal_at ELSE p.email_portal_at END,
      email_event_id = CASE WHEN portalsync.newer(excluded.email_portal_at, excluded.email_event_id, p.email_portal_at, p.email_event_id, p.email IS DISTINCT FROM excluded.email)
                            THEN excluded.email_event_id ELSE p.email_event_id END,
      first_name = CASE WHEN portalsync.newer(excluded.first_name_portal_at, excluded.first_name_event_id, p.first_name_portal_at, p.first_name_event_id, p.first_name IS DISTINCT FROM excluded.first_name)
                        THEN excluded.first_name ELSE p.first_name END,
      first_name_portal_at = CASE WHEN portalsync.newer(excluded.first_name_portal_at, excluded.first_name_event_id, p.first_name_portal_at, p.first_name_event_id, p.first_name IS DISTINCT FROM excluded.first_name)
                                  THEN excluded.first_name_portal_at ELSE p.first_name_portal_at END,
      first_name_event_id = CASE WHEN portalsync.newer(excluded.first_name_portal_at, excluded.first_name_event_id, p.first_name_portal_at, p.first_name_event_id, p.first_name IS DISTINCT FROM excluded.first_name)
                                 THEN excluded.first_name_event_id ELSE p.first_name_event_id END,
      last_name = CASE WHEN portalsync.newer(excluded.last_name_portal_at, excluded.last_name_event_id, p.last_name_portal_at, p.last_name_event_id, p.last_name IS DISTINCT FROM excluded.last_name)
                       THEN excluded.last_name ELSE p.last_name END,
      last_name_portal_at = CASE WHEN portalsync.newer(excluded.last_name_portal_at, excluded.last_name_event_id, p.last_name_portal_at, p.last_name_event_id, p.last_name IS DISTINCT FROM excluded.last_name)
                                 THEN excluded.last_name_portal_at ELSE p.last_name_portal_at END,
      last_name_event_id = CASE WHEN portalsync.newer(excluded.last_name_portal_at, excluded.last_name_event_id, p.last_name_portal_at, p.last_name_event_id, p.last_name IS DISTINCT FROM excluded.last_name)
                                THEN excluded.last_name_event_id ELSE p.last_name_event_id END,
      phone = CASE WHEN portalsync.newer(excluded.phone_portal_at, excluded.phone_event_id, p.phone_portal_at, p.phone_event_id, p.phone IS DISTINCT FROM excluded.phone)
                   THEN excluded.phone ELSE p.phone END,
      phone_portal_at = CASE WHEN portalsync.newer(excluded.phone_portal_at, excluded.phone_event_id, p.phone_portal_at, p.phone_event_id, p.phone IS DISTINCT FROM excluded.phone)
                             THEN excluded.phone_portal_at ELSE p.phone_portal_at END,
      phone_event_id = CASE WHEN portalsync.newer(excluded.phone_portal_at, excluded.phone_event_id, p.phone_portal_at, p.phone_event_id, p.phone IS DISTINCT FROM excluded.phone)
                            THEN excluded.phone_event_id ELSE p.phone_event_id END,
      portal_updated_at = CASE WHEN portalsync.newer(excluded.portal_updated_at, excluded.portal_event_id, p.portal_updated_at, p.portal_event_id, false)
                               THEN excluded.portal_updated_at ELSE p.portal_updated_at END,
      portal_event_id = CASE WHEN portalsync.newer(excluded.portal_updated_at, excluded.portal_event_id, p.portal_updated_at, p.portal_event_id, false)
                             THEN excluded.portal_event_id ELSE p.portal_event_id END,
      updated_at = now()
  WHERE portalsync.newer(excluded.email_portal_at, excluded.email_event_id, p.email_portal_at, p.email_event_id, p.email IS DISTINCT FROM excluded.email)
     OR portalsync.newer(excluded.first_name_portal_at, excluded.first_name_event_id, p.first_name_portal_at, p.first_name_event_id, p.first_name IS DISTINCT FROM excluded.first_name)
     OR portalsync.newer(excluded.last_name_portal_at, excluded.last_name_event_id, p.last_name_portal_at, p.last_name_event_id, p.last_name IS DISTINCT FROM excluded.last_name)
     OR portalsync.newer(excluded.phone_portal_at, excluded.phone_event_id, p.phone_portal_at, p.phone_event_id, p.phone IS DISTINCT FROM excluded.phone)
  RETURNING portal_member_id, id, xmax = 0 AS inserted,
            email_portal_at, email_event_id, first_name_portal_at, first_name_event_id,
            last_name_portal_at, last_name_event_id, phone_portal_at, phone_event_id,
            email, first_name, last_name, phone
)
SELECT up.portal_member_id, up.id::text, up.inserted,
       up.email_portal_at, up.email_event_id, up.first_name_portal_at, up.first_name_event_id,
       up.last_name_portal_at, up.last_name_event_id, up.phone_portal_at, up.phone_event_id,
       CASE WHEN old.portal_member_id IS NULL THEN up.email IS NOT NULL ELSE old.email IS DISTINCT FROM up.email END,
       CASE WHEN old.portal_member_id IS NULL THEN up.first_name IS NOT NULL ELSE old.first_name IS DISTINCT FROM up.first_name END,
       CASE WHEN old.portal_member_id IS NULL THEN up.last_name IS NOT NULL ELSE old.last_name IS DISTINCT FROM up.last_name END,
       CASE WHEN old.portal_member_id IS NULL THEN up.phone IS NOT NULL ELSE old.phone IS DISTINCT FROM up.phone END
FROM up LEFT JOIN old ON old.portal_member_id = up.portal_member_id
