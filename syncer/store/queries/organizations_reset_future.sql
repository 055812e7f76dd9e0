-- public.organizations: resets every name stamp later than $1 to none. It
-- returns one empty member per row (organizations have none).
UPDATE public.organizations SET portal_updated_at = NULL, portal_event_id = NULL, updated_at = now()
WHERE portal_updated_at > $1
RETURNING ''
