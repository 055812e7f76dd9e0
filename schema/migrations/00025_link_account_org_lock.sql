-- The account trigger's log rows keep 00022's promise (issue 14): a log
-- row never names an organization that is gone. The syncer reads the
-- organization ids it logs FOR KEY SHARE since 00022 dropped the log's
-- foreign key; link_account, which logs a shared e-mail at sign-up once
-- per organization of each member, now takes the same lock before it
-- writes, so a concurrent deletion waits for the sign-up's transaction and
-- its trigger clears the ids. The body is 00006's otherwise.

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
    -- those organizations read it. The organizations are key-share
    -- locked first: one deleted meanwhile waits for this transaction, and
    -- its trigger then clears the ids written here (00022).
    PERFORM 1 FROM public.organizations o
    JOIN public.organization_memberships om ON om.organization_id = o.id
    JOIN public.profiles p ON p.id = om.profile_id
    WHERE p.portal_member_id = ANY (members)
    ORDER BY o.id FOR KEY SHARE OF o;
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

-- +goose Down
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
