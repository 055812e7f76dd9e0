-- Erasure leaves the member's ID in no log row's detail (found by attack,
-- issue 21): the ingress's record of a Dataverse change it refused says
-- which row it refused ("the ingress refused Dataverse update of contact
-- <id>: ...") and, for a contact, that row's ID is the member's. 00012's
-- erase_member replaced the ID in the row's member column only, so an org
-- admin read the erased member's ID in the refusal's detail. It now
-- replaces it in the detail too, and the rows erased before this
-- migration are cleaned: a GUID in the detail of an erased member's row
-- whose hash is the row's member hash is that member's ID.

-- +goose Up
-- +goose StatementBegin
CREATE OR REPLACE FUNCTION portalsync.erase_member(p_member_id text, p_member_hash text, p_event_id text,
  OUT profiles_deleted integer, OUT memberships_deleted integer, OUT log_rows integer)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = '' AS $$
BEGIN
  INSERT INTO portalsync.erased_members (member_hash, event_id) VALUES (p_member_hash, p_event_id)
  ON CONFLICT (member_hash) DO NOTHING;
  SELECT count(*) INTO memberships_deleted
  FROM public.organization_memberships m JOIN public.profiles p ON p.id = m.profile_id
  WHERE p.portal_member_id = p_member_id;
  DELETE FROM public.profiles WHERE portal_member_id = p_member_id;
  GET DIAGNOSTICS profiles_deleted = ROW_COUNT;
  -- The account link names the member; the account itself stays (banned by
  -- the caller before this) and is the app's to delete.
  DELETE FROM portalsync.account_links WHERE portal_member_id = p_member_id;
  -- Rows the linking trigger wrote carry the member ID in their event id too.
  UPDATE public.portal_sync_log
  SET portal_member_id = p_member_hash,
      event_id = CASE WHEN event_type = 'account-link'
                      THEN pg_catalog.replace(event_id, ':' || p_member_id, ':' || p_member_hash)
                      ELSE event_id END,
      -- A refused change's detail names the row it refused: for a contact,
      -- the member (00030).
      detail = pg_catalog.replace(detail, p_member_id, p_member_hash)
  WHERE portal_member_id = p_member_id;
  GET DIAGNOSTICS log_rows = ROW_COUNT;
END $$;
-- +goose StatementEnd

UPDATE public.portal_sync_log l
SET detail = pg_catalog.replace(l.detail, m.id, l.portal_member_id)
FROM (SELECT g.id AS row_id, x[1] AS id
      FROM public.portal_sync_log g,
           pg_catalog.regexp_matches(g.detail, '[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}', 'g') AS x
      WHERE g.portal_member_id LIKE 'erased:%') m
WHERE l.id = m.row_id
  AND l.portal_member_id = 'erased:' || pg_catalog.encode(pg_catalog.sha256(pg_catalog.convert_to(m.id, 'UTF8')), 'hex');

-- +goose Down
-- +goose StatementBegin
CREATE OR REPLACE FUNCTION portalsync.erase_member(p_member_id text, p_member_hash text, p_event_id text,
  OUT profiles_deleted integer, OUT memberships_deleted integer, OUT log_rows integer)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = '' AS $$
BEGIN
  INSERT INTO portalsync.erased_members (member_hash, event_id) VALUES (p_member_hash, p_event_id)
  ON CONFLICT (member_hash) DO NOTHING;
  SELECT count(*) INTO memberships_deleted
  FROM public.organization_memberships m JOIN public.profiles p ON p.id = m.profile_id
  WHERE p.portal_member_id = p_member_id;
  DELETE FROM public.profiles WHERE portal_member_id = p_member_id;
  GET DIAGNOSTICS profiles_deleted = ROW_COUNT;
  -- The account link names the member; the account itself stays (banned by
  -- the caller before this) and is the app's to delete.
  DELETE FROM portalsync.account_links WHERE portal_member_id = p_member_id;
  -- Rows the linking trigger wrote carry the member ID in their event id too.
  UPDATE public.portal_sync_log
  SET portal_member_id = p_member_hash,
      event_id = CASE WHEN event_type = 'account-link'
                      THEN pg_catalog.replace(event_id, ':' || p_member_id, ':' || p_member_hash)
                      ELSE event_id END
  WHERE portal_member_id = p_member_id;
  GET DIAGNOSTICS log_rows = ROW_COUNT;
END $$;
-- +goose StatementEnd
