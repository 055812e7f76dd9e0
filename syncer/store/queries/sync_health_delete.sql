-- portalsync.sync_health: a process's row, removed when it stops cleanly.
-- $1 process.
DELETE FROM portalsync.sync_health WHERE process = $1
