-- One "newer than stored" guard (issue 20). The syncer writes an event's
-- values over a stored row, field group or status only when the event is
-- newer than the stamp stored with it — by portal time, then by event id,
-- so that the outcome never depends on delivery order — or is the very
-- event stored and the values differ (values_differ), which lets a replay
-- repair a damaged row while applying an event twice writes nothing. A
-- NULL incoming time is no event: it never wins. A NULL stored stamp is
-- older than any event.
--
-- The syncer's upserts (syncer/store/queries/*.sql) had this written out
-- sixteen times in three spellings; they call this function instead. It
-- is kept inlinable, so the planner sees the very expression the upserts
-- held before and their plans do not change (the store's
-- TestNewerGuardInlined reads EXPLAIN as the syncer's role): LANGUAGE sql,
-- IMMUTABLE, one expression, no SECURITY DEFINER and no SET clause (either
-- stops inlining). So unlike the identity functions it pins no
-- search_path: its body is SQL-standard (RETURN …), resolved when it is
-- created, so a caller's search_path cannot change what it means. Event
-- ids compare as bytes (COLLATE "C"), as the id columns since 00024 and the
-- syncer's Go code (which picks the winner within a batch) do, whatever
-- the database's collation. Only the syncer's role may execute it (the
-- planner inlines a function only for a role that may).

-- +goose Up
-- +goose StatementBegin
CREATE FUNCTION portalsync.newer(incoming_at timestamptz, incoming_id text,
                                 stored_at timestamptz, stored_id text, values_differ boolean)
RETURNS boolean LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN incoming_at IS NOT NULL
   AND ((coalesce(stored_at, '-infinity'), coalesce(stored_id, '') COLLATE "C") < (incoming_at, incoming_id COLLATE "C")
        OR ((coalesce(stored_at, '-infinity'), coalesce(stored_id, '')) = (incoming_at, incoming_id) AND values_differ));
-- +goose StatementEnd
REVOKE ALL ON FUNCTION portalsync.newer(timestamptz, text, timestamptz, text, boolean) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION portalsync.newer(timestamptz, text, timestamptz, text, boolean) TO portalsync_syncer;

-- +goose Down
DROP FUNCTION portalsync.newer(timestamptz, text, timestamptz, text, boolean);
