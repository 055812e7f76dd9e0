-- Dynamics GUIDs compare case-insensitively, and the syncer now stores and
-- keys member and organization IDs that are GUIDs in one canonical form:
-- lower case, no braces. This merges the rows that differ only in case:
-- per profile field, membership status and role, the newest data (by portal
-- time, then event id) wins; account links and sync-log rows are kept and
-- point at the merged row. Other IDs are left as they are. Running it again
-- changes nothing.

-- +goose Up
-- The rows concerned: GUID IDs whose group (same ID in any case) has
-- several rows or a row not in canonical form; keep is the row that
-- survives (the newest name or profile, else the canonical one).
CREATE TEMP TABLE canon_orgs ON COMMIT DROP AS
SELECT id, canon, first_value(id) OVER (PARTITION BY canon
         ORDER BY portal_updated_at DESC NULLS LAST, portal_event_id DESC NULLS LAST, (portal_org_id = canon) DESC, created_at, id) AS keep
FROM (SELECT o.*, lower(o.portal_org_id) AS canon FROM public.organizations o WHERE o.portal_org_id ~* '^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$') o
WHERE canon IN (SELECT lower(portal_org_id) FROM public.organizations WHERE portal_org_id ~* '^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$'
                GROUP BY 1 HAVING count(*) > 1 OR bool_or(portal_org_id <> lower(portal_org_id)));

CREATE TEMP TABLE canon_profiles ON COMMIT DROP AS
SELECT id, canon, first_value(id) OVER (PARTITION BY canon
         ORDER BY portal_updated_at DESC NULLS LAST, portal_event_id DESC NULLS LAST, (portal_member_id = canon) DESC, created_at, id) AS keep
FROM (SELECT p.*, lower(p.portal_member_id) AS canon FROM public.profiles p WHERE p.portal_member_id ~* '^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$') p
WHERE canon IN (SELECT lower(portal_member_id) FROM public.profiles WHERE portal_member_id ~* '^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$'
                GROUP BY 1 HAVING count(*) > 1 OR bool_or(portal_member_id <> lower(portal_member_id)));

-- Memberships and roles of every row concerned, re-keyed to the kept
-- profile and organization, reduced to the newest status and role.
CREATE TEMP TABLE canon_memberships ON COMMIT DROP AS
SELECT m.*, coalesce(cp.keep, m.profile_id) AS kp, coalesce(co.keep, m.organization_id) AS ko
FROM public.organization_memberships m
LEFT JOIN canon_profiles cp ON cp.id = m.profile_id
LEFT JOIN canon_orgs co ON co.id = m.organization_id
WHERE cp.id IS NOT NULL OR co.id IS NOT NULL;

CREATE TEMP TABLE canon_roles ON COMMIT DROP AS
SELECT DISTINCT ON (cm.kp, cm.ko) cm.kp, cm.ko, r.role, r.portal_updated_at, r.portal_event_id, r.created_at
FROM canon_memberships cm
JOIN public.role_assignments r ON r.profile_id = cm.profile_id AND r.organization_id = cm.organization_id
ORDER BY cm.kp, cm.ko, r.portal_updated_at DESC, r.portal_event_id DESC;

DELETE FROM public.organization_memberships m
USING canon_memberships cm
WHERE m.profile_id = cm.profile_id AND m.organization_id = cm.organization_id;

INSERT INTO public.organization_memberships
  (profile_id, organization_id, status, deactivated_at, portal_updated_at, status_portal_at, status_event_id, created_at)
SELECT DISTINCT ON (kp, ko) kp, ko, status, deactivated_at,
       max(portal_updated_at) OVER (PARTITION BY kp, ko), status_portal_at, status_event_id,
       min(created_at) OVER (PARTITION BY kp, ko)
FROM canon_memberships
ORDER BY kp, ko, status_portal_at DESC NULLS LAST, status_event_id DESC NULLS LAST;

INSERT INTO public.role_assignments (profile_id, organization_id, role, portal_updated_at, portal_event_id, created_at)
SELECT kp, ko, role, portal_updated_at, portal_event_id, created_at FROM canon_roles;

-- The sync log keeps its rows, under the canonical IDs.
UPDATE public.portal_sync_log l SET organization_id = co.keep
FROM canon_orgs co WHERE l.organization_id = co.id AND co.id <> co.keep;
UPDATE public.portal_sync_log SET portal_member_id = lower(portal_member_id)
WHERE portal_member_id ~* '^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$' AND portal_member_id <> lower(portal_member_id);
UPDATE public.portal_sync_log SET portal_org_id = lower(portal_org_id)
WHERE portal_org_id ~* '^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$' AND portal_org_id <> lower(portal_org_id);

-- Profiles: each field from the row of the group with its newest stamp;
-- the account link of the kept row, else of the newest linked one.
CREATE TEMP TABLE canon_profile_values ON COMMIT DROP AS
SELECT cp.keep,
  (SELECT p.email FROM canon_profiles c JOIN public.profiles p ON p.id = c.id WHERE c.keep = cp.keep
    ORDER BY p.email_portal_at DESC NULLS LAST, p.email_event_id DESC NULLS LAST, (p.id = cp.keep) DESC LIMIT 1) AS email,
  (SELECT array[p.email_portal_at::text, p.email_event_id] FROM canon_profiles c JOIN public.profiles p ON p.id = c.id WHERE c.keep = cp.keep
    ORDER BY p.email_portal_at DESC NULLS LAST, p.email_event_id DESC NULLS LAST, (p.id = cp.keep) DESC LIMIT 1) AS email_stamp,
  (SELECT p.first_name FROM canon_profiles c JOIN public.profiles p ON p.id = c.id WHERE c.keep = cp.keep
    ORDER BY p.first_name_portal_at DESC NULLS LAST, p.first_name_event_id DESC NULLS LAST, (p.id = cp.keep) DESC LIMIT 1) AS first_name,
  (SELECT array[p.first_name_portal_at::text, p.first_name_event_id] FROM canon_profiles c JOIN public.profiles p ON p.id = c.id WHERE c.keep = cp.keep
    ORDER BY p.first_name_portal_at DESC NULLS LAST, p.first_name_event_id DESC NULLS LAST, (p.id = cp.keep) DESC LIMIT 1) AS first_name_stamp,
  (SELECT p.last_name FROM canon_profiles c JOIN public.profiles p ON p.id = c.id WHERE c.keep = cp.keep
    ORDER BY p.last_name_portal_at DESC NULLS LAST, p.last_name_event_id DESC NULLS LAST, (p.id = cp.keep) DESC LIMIT 1) AS last_name,
  (SELECT array[p.last_name_portal_at::text, p.last_name_event_id] FROM canon_profiles c JOIN public.profiles p ON p.id = c.id WHERE c.keep = cp.keep
    ORDER BY p.last_name_portal_at DESC NULLS LAST, p.last_name_event_id DESC NULLS LAST, (p.id = cp.keep) DESC LIMIT 1) AS last_name_stamp,
  (SELECT p.phone FROM canon_profiles c JOIN public.profiles p ON p.id = c.id WHERE c.keep = cp.keep
    ORDER BY p.phone_portal_at DESC NULLS LAST, p.phone_event_id DESC NULLS LAST, (p.id = cp.keep) DESC LIMIT 1) AS phone,
  (SELECT array[p.phone_portal_at::text, p.phone_event_id] FROM canon_profiles c JOIN public.profiles p ON p.id = c.id WHERE c.keep = cp.keep
    ORDER BY p.phone_portal_at DESC NULLS LAST, p.phone_event_id DESC NULLS LAST, (p.id = cp.keep) DESC LIMIT 1) AS phone_stamp,
  (SELECT array[p.auth_user_id::text, p.auth_banned_by_sync::text] FROM canon_profiles c JOIN public.profiles p ON p.id = c.id
    WHERE c.keep = cp.keep AND p.auth_user_id IS NOT NULL
    ORDER BY (p.id = cp.keep) DESC, p.portal_updated_at DESC NULLS LAST LIMIT 1) AS auth,
  (SELECT min(p.created_at) FROM canon_profiles c JOIN public.profiles p ON p.id = c.id WHERE c.keep = cp.keep) AS created_at,
  min(cp.canon) AS canon
FROM canon_profiles cp
GROUP BY cp.keep;

DELETE FROM public.profiles p USING canon_profiles cp WHERE p.id = cp.id AND cp.id <> cp.keep;

UPDATE public.profiles p SET
  portal_member_id = v.canon,
  email = v.email, email_portal_at = v.email_stamp[1]::timestamptz, email_event_id = v.email_stamp[2],
  first_name = v.first_name, first_name_portal_at = v.first_name_stamp[1]::timestamptz, first_name_event_id = v.first_name_stamp[2],
  last_name = v.last_name, last_name_portal_at = v.last_name_stamp[1]::timestamptz, last_name_event_id = v.last_name_stamp[2],
  phone = v.phone, phone_portal_at = v.phone_stamp[1]::timestamptz, phone_event_id = v.phone_stamp[2],
  auth_user_id = v.auth[1]::uuid, auth_banned_by_sync = coalesce(v.auth[2]::boolean, false),
  created_at = v.created_at, updated_at = now()
FROM canon_profile_values v WHERE p.id = v.keep;

-- The kept profile's stamp is the newest of its fields'; its status again
-- follows its memberships.
UPDATE public.profiles p SET (portal_updated_at, portal_event_id) = (
  SELECT s.at, s.id FROM (VALUES (p.email_portal_at, p.email_event_id), (p.first_name_portal_at, p.first_name_event_id),
                                 (p.last_name_portal_at, p.last_name_event_id), (p.phone_portal_at, p.phone_event_id)) AS s(at, id)
  ORDER BY s.at DESC NULLS LAST, s.id DESC NULLS LAST LIMIT 1)
FROM canon_profile_values v WHERE p.id = v.keep;
UPDATE public.profiles p SET
  status = CASE WHEN w.active THEN 'active' ELSE 'inactive' END,
  deactivated_at = CASE WHEN w.active THEN NULL ELSE w.deactivated_at END
FROM (SELECT m.profile_id, bool_or(m.status = 'active') AS active, max(m.deactivated_at) AS deactivated_at
      FROM public.organization_memberships m JOIN canon_profile_values v ON v.keep = m.profile_id GROUP BY m.profile_id) w
WHERE p.id = w.profile_id;

-- Organizations: the kept row has the newest name.
DELETE FROM public.organizations o USING canon_orgs co WHERE o.id = co.id AND co.id <> co.keep;
UPDATE public.organizations o SET portal_org_id = co.canon, updated_at = now()
FROM canon_orgs co WHERE o.id = co.id AND co.id = co.keep AND o.portal_org_id <> co.canon;

-- +goose Down
-- Merged rows cannot be split again; nothing to undo.
SELECT 1;
