-- Erasure (GDPR art. 17): a member-deleted event or `syncer erase` deletes
-- the member's profile (memberships and roles with it), keeps the sync
-- log's rows but replaces their member ID by a one-way hash, and leaves a
-- tombstone of that hash, so that no later or replayed event can bring the
-- member back. The syncer's least-privilege role does this only through
-- portalsync.erase_member: it still has no DELETE on profiles and no UPDATE
-- on the sync log.

-- +goose Up
CREATE TABLE portalsync.erased_members (
  -- 'erased:' followed by the hex SHA-256 of the canonical member ID.
  member_hash text PRIMARY KEY,
  event_id text NOT NULL,
  erased_at timestamptz NOT NULL DEFAULT now()
);
REVOKE ALL ON portalsync.erased_members FROM PUBLIC;
GRANT SELECT ON portalsync.erased_members TO portalsync_syncer;

-- +goose StatementBegin
CREATE FUNCTION portalsync.erase_member(p_member_id text, p_member_hash text, p_event_id text,
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
REVOKE ALL ON FUNCTION portalsync.erase_member(text, text, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION portalsync.erase_member(text, text, text) TO portalsync_syncer;

-- +goose Down
DROP FUNCTION portalsync.erase_member(text, text, text);
DROP TABLE portalsync.erased_members;
