-- Two mends to account linking (00005), found by attacking it through
-- Supabase Auth:
--
--  * A shared e-mail at sign-up is logged once per organization of each
--    member who was not linked (organization_id set), so that the org
--    admins of those organizations see the conflict under the sync log's
--    policy; a row without an organization was visible to nobody but the
--    syncer.
--  * When a linked account is deleted, its link goes (ON DELETE CASCADE)
--    and the profile's mirror of the link and of the sync's ban flag is
--    cleared with it, so that no stale "banned by the sync" outlives the
--    account.
--  * Only Supabase Auth (supabase_auth_admin) may execute the access-token
--    hook, as docs/ACCESS.md says: Supabase's default privileges had also
--    handed EXECUTE to service_role, which 00005 did not take back.

-- +goose Up
-- +goose StatementBegin
CREATE OR REPLACE FUNCTION portalsync.link_account() RETURNS trigger
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = '' AS $$
DECLARE
  members text[];
  n int;
BEGIN
  IF NEW.email IS NULL OR NEW.email_confirmed_at IS NULL OR NEW.is_sso_user
     OR EXISTS (SELECT 1 FROM portalsync.account_links l WHERE l.auth_user_id = NEW.id) THEN
    RETURN NULL;
  END IF;
  -- The members' rows first, then the e-mail: the order the syncer takes
  -- them in (it upserts profiles, then links), so the two cannot deadlock.
  PERFORM 1 FROM public.profiles p WHERE pg_catalog.lower(p.email) = pg_catalog.lower(NEW.email)
  ORDER BY p.portal_member_id FOR UPDATE;
  PERFORM portalsync.lock_emails(ARRAY[NEW.email]);
  members := ARRAY(SELECT p.portal_member_id FROM public.profiles p
                   WHERE pg_catalog.lower(p.email) = pg_catalog.lower(NEW.email) ORDER BY 1);
  n := pg_catalog.cardinality(members);
  IF n = 1 THEN
    INSERT INTO portalsync.account_links (portal_member_id, auth_user_id) VALUES (members[1], NEW.id)
    ON CONFLICT DO NOTHING;
    IF FOUND THEN
      UPDATE public.profiles p SET auth_user_id = NEW.id, auth_banned_by_sync = false, updated_at = now()
      WHERE p.portal_member_id = members[1];
      PERFORM portalsync.apply_access(members);
    END IF;
  ELSIF n > 1 THEN
    -- One row per organization of each member not linked yet (a member
    -- with no membership gets one without), so that the org admins of
    -- those organizations read it.
    INSERT INTO public.portal_sync_log (event_id, event_type, portal_member_id, portal_org_id, organization_id, status, detail)
    SELECT 'account-link:' || NEW.id || ':' || m || coalesce(':' || o.portal_org_id, ''), 'account-link', m,
           o.portal_org_id, o.id, 'skipped', 'e-mail shared by ' || n || ' portal members; app account not linked'
    FROM pg_catalog.unnest(members) AS m
    LEFT JOIN (public.profiles p
               JOIN public.organization_memberships om ON om.profile_id = p.id
               JOIN public.organizations o ON o.id = om.organization_id) ON p.portal_member_id = m
    WHERE NOT EXISTS (SELECT 1 FROM portalsync.account_links l WHERE l.portal_member_id = m)
    ON CONFLICT (event_id) WHERE status IN ('success', 'skipped') DO NOTHING;
  END IF;
  RETURN NULL;
END $$;
-- +goose StatementEnd

-- unlink_profile clears a profile's mirror of a link that was deleted (its
-- account was deleted: the cascade from auth.users). SECURITY DEFINER: the
-- trigger fires as whoever deleted the account (supabase_auth_admin, with
-- no right on profiles), not as the owner the cascade itself runs as.
-- +goose StatementBegin
CREATE FUNCTION portalsync.unlink_profile() RETURNS trigger
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = '' AS $$
BEGIN
  UPDATE public.profiles p SET auth_user_id = NULL, auth_banned_by_sync = false, updated_at = now()
  WHERE p.portal_member_id = OLD.portal_member_id
    AND (p.auth_user_id IS NULL OR p.auth_user_id = OLD.auth_user_id)
    AND (p.auth_user_id, p.auth_banned_by_sync) IS DISTINCT FROM (NULL::uuid, false);
  RETURN NULL;
END $$;
-- +goose StatementEnd

CREATE TRIGGER portalsync_unlink_profile
  AFTER DELETE ON portalsync.account_links
  FOR EACH ROW EXECUTE FUNCTION portalsync.unlink_profile();

REVOKE ALL ON FUNCTION portalsync.unlink_profile() FROM PUBLIC;

REVOKE ALL ON FUNCTION public.custom_access_token_hook(jsonb) FROM service_role;

-- Stale flags of accounts deleted before this migration.
UPDATE public.profiles p SET auth_banned_by_sync = false
WHERE p.auth_banned_by_sync AND p.auth_user_id IS NULL
  AND NOT EXISTS (SELECT 1 FROM portalsync.account_links l WHERE l.portal_member_id = p.portal_member_id);

-- +goose Down
-- (link_account keeps writing per-organization rows: harmless for 00005.)
DROP TRIGGER portalsync_unlink_profile ON portalsync.account_links;
DROP FUNCTION portalsync.unlink_profile();
