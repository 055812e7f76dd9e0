-- A lean sync-log write (issue 14): the log insert was the syncer's largest
-- statement. Its foreign key to organizations checked every row (one
-- key-share lookup per event) to keep what ON DELETE SET NULL gave: a log
-- row never names an organization that is gone. That guarantee stays,
-- kept once per deletion instead of once per row: a statement-level
-- trigger on organizations clears the deleted organizations' ids from the
-- log (by portal_sync_log_org_newest_idx), and one on TRUNCATE (which
-- fires no DELETE trigger, and which the key refused unless the log was
-- truncated too) clears every id. The syncer writes ids it has
-- just read from organizations, and no path of the project deletes an
-- organization while the syncer runs (00011's merge of duplicates ran as
-- a migration).
--
-- The syncer's insert no longer says ON CONFLICT DO NOTHING: its pre-check
-- already leaves out events logged before, so a conflict means a
-- concurrent duplicate, which now raises the unique violation on
-- portal_sync_log_event_done_idx; the store classifies that one as retry,
-- and the retried batch finds the event done.
--
-- The indexes stay: the primary key, one success per event
-- (portal_sync_log_event_done_idx), the org admins' newest-first read
-- (portal_sync_log_org_newest_idx), the two partial ones of the failed
-- rows (newest first, and one row per stream sequence), and
-- portal_sync_log_member_idx, which erasure reads (erase_member replaces a
-- member's id in every row of theirs).

-- +goose Up
ALTER TABLE public.portal_sync_log DROP CONSTRAINT portal_sync_log_organization_id_fkey;

-- +goose StatementBegin
CREATE FUNCTION portalsync.forget_organizations() RETURNS trigger
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = '' AS $$
BEGIN
  IF TG_OP = 'TRUNCATE' THEN
    UPDATE public.portal_sync_log l SET organization_id = NULL WHERE l.organization_id IS NOT NULL;
  ELSE
    UPDATE public.portal_sync_log l SET organization_id = NULL
    FROM gone g WHERE l.organization_id = g.id;
  END IF;
  RETURN NULL;
END $$;
-- +goose StatementEnd
REVOKE ALL ON FUNCTION portalsync.forget_organizations() FROM PUBLIC;

CREATE TRIGGER portalsync_forget_organizations
  AFTER DELETE ON public.organizations
  REFERENCING OLD TABLE AS gone
  FOR EACH STATEMENT EXECUTE FUNCTION portalsync.forget_organizations();
CREATE TRIGGER portalsync_forget_truncated_organizations
  AFTER TRUNCATE ON public.organizations
  FOR EACH STATEMENT EXECUTE FUNCTION portalsync.forget_organizations();

-- Ids of organizations deleted before now (none while the key held).
UPDATE public.portal_sync_log l SET organization_id = NULL
WHERE l.organization_id IS NOT NULL
  AND NOT EXISTS (SELECT 1 FROM public.organizations o WHERE o.id = l.organization_id);

-- +goose Down
DROP TRIGGER portalsync_forget_truncated_organizations ON public.organizations;
DROP TRIGGER portalsync_forget_organizations ON public.organizations;
DROP FUNCTION portalsync.forget_organizations();
UPDATE public.portal_sync_log l SET organization_id = NULL
WHERE l.organization_id IS NOT NULL
  AND NOT EXISTS (SELECT 1 FROM public.organizations o WHERE o.id = l.organization_id);
ALTER TABLE public.portal_sync_log ADD CONSTRAINT portal_sync_log_organization_id_fkey
  FOREIGN KEY (organization_id) REFERENCES public.organizations (id) ON DELETE SET NULL;
