package main

import (
	"bytes"
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/likeperson/portalsync/pkg/event"
)

// A replay that meets the live syncer logging the same event (its log row
// written after the replay looked, committed while the replay waits on
// it) retries the batch instead of stopping, and the event keeps one row.
func TestReplayRetriesAConcurrentDuplicate(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	b := setupCLI(t)
	b.publish(t, event.Event{
		ID: "dup-e1", Type: event.MembershipCreated, OccurredAt: time.Date(2026, 11, 25, 10, 0, 0, 0, time.UTC),
		Organization: event.Organization{ID: "o1"}, Member: event.Member{ID: "m1"}, Role: event.RolePeerMentor,
	})

	// The live syncer, at its log write for the same event.
	live, err := b.db.Pool.Begin(ctx)
	require.NoError(t, err)
	defer live.Rollback(ctx) //nolint:errcheck // committed below
	_, err = live.Exec(ctx, `INSERT INTO portal_sync_log (event_id, event_type, portal_member_id, status, stream_seq)
		VALUES ('dup-e1', 'membership-created', 'm1', 'success', 1)`)
	require.NoError(t, err)

	done := make(chan error, 1)
	var out bytes.Buffer
	go func() {
		var errOut bytes.Buffer
		done <- run(ctx, append([]string{"replay", "--all"}, b.common...), &out, &errOut)
	}()
	require.Eventually(t, func() bool {
		var waiting bool
		if err := b.db.Pool.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_stat_activity
			WHERE datname = current_database() AND wait_event_type = 'Lock'
			  AND query LIKE '%INSERT INTO public.portal_sync_log%')`).Scan(&waiting); err != nil {
			return false
		}
		return waiting
	}, 30*time.Second, 20*time.Millisecond, "the replay waits on the live row")
	require.NoError(t, live.Commit(ctx))

	require.NoError(t, <-done, "the replay retried instead of stopping")
	var rows int
	require.NoError(t, b.db.Pool.QueryRow(ctx, `SELECT count(*) FROM portal_sync_log WHERE event_id = 'dup-e1'`).Scan(&rows))
	require.Equal(t, 1, rows)
}
