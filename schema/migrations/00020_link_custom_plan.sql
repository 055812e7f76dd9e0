-- The syncer no longer sets plan_cache_mode=force_custom_plan for its whole
-- session (every foreign-key check and every prepared statement was
-- re-planned on each run: 23 % of the ceiling). The one place where a plan
-- must see its arguments is the account link, whose statements compare
-- the batch's e-mails with auth.users: it keeps custom plans, for itself
-- only (docs/BENCHMARKS.md shows its plan against a populated auth.users).

-- +goose Up
ALTER FUNCTION portalsync.link_members(text[], text[], text[]) SET plan_cache_mode = force_custom_plan;

-- +goose Down
ALTER FUNCTION portalsync.link_members(text[], text[], text[]) RESET plan_cache_mode;
