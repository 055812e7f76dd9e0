package store_test

import (
	"context"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/likeperson/portalsync/syncer/store"
	"github.com/likeperson/portalsync/testkit/schematest"
)

// healthRow is a row of portalsync.sync_health.
type healthRow struct {
	Kind, State             string
	Since                   time.Time
	Reason                  *string
	Oldest, LastSuccess     *time.Time
	ReportedAt, DatabaseNow time.Time
}

func readHealth(t *testing.T, pool *pgxpool.Pool, process string) (healthRow, bool) {
	t.Helper()
	var r healthRow
	err := pool.QueryRow(context.Background(), `SELECT kind, state, since, reason, oldest_unapplied_at, last_success_at, reported_at, now()
		FROM portalsync.sync_health WHERE process = $1`, process).
		Scan(&r.Kind, &r.State, &r.Since, &r.Reason, &r.Oldest, &r.LastSuccess, &r.ReportedAt, &r.DatabaseNow)
	if err == pgx.ErrNoRows {
		return r, false
	}
	require.NoError(t, err)
	return r, true
}

// setupHealth returns a store that writes as portalsync_syncer (the role
// the syncer runs as: its grants and row-level security apply) and a pool
// of the owner to read and arrange with.
func setupHealth(t *testing.T) (*store.Store, *pgxpool.Pool) {
	t.Helper()
	db := schematest.NewDB(t)
	cfg, err := pgxpool.ParseConfig(db.URL)
	require.NoError(t, err)
	cfg.AfterConnect = func(ctx context.Context, c *pgx.Conn) error {
		_, err := c.Exec(ctx, `SET ROLE portalsync_syncer`)
		return err
	}
	pool, err := pgxpool.NewWithConfig(context.Background(), cfg)
	require.NoError(t, err)
	t.Cleanup(pool.Close)
	return store.New(pool), db.Pool
}

func TestHealth(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	since := time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)

	// Each report replaces the row: state, since, reason only when paused,
	// the oldest unapplied event only when catching up, reported_at the
	// database's now().
	t.Run("StateTransitions", func(t *testing.T) {
		t.Parallel()
		st, pool := setupHealth(t)
		h := store.Health{Process: "syncer:host:1", Kind: store.HealthKindSyncer, State: store.HealthRunning, Since: since,
			Reason: "ignored while running", OldestUnappliedAt: since}
		require.NoError(t, st.ReportHealth(ctx, h))
		r, ok := readHealth(t, pool, h.Process)
		require.True(t, ok)
		require.Equal(t, "running", r.State)
		require.True(t, since.Equal(r.Since))
		require.Nil(t, r.Reason)
		require.Nil(t, r.Oldest)
		require.WithinDuration(t, r.DatabaseNow, r.ReportedAt, time.Second)

		h.State, h.Since, h.Reason = store.HealthPaused, since.Add(time.Minute), "database unavailable"
		require.NoError(t, st.ReportHealth(ctx, h))
		r, _ = readHealth(t, pool, h.Process)
		require.Equal(t, "paused", r.State)
		require.Equal(t, "database unavailable", *r.Reason)
		require.True(t, since.Add(time.Minute).Equal(r.Since))
		require.Nil(t, r.Oldest)

		h.State, h.Since, h.OldestUnappliedAt = store.HealthCatchingUp, since.Add(2*time.Minute), since.Add(30*time.Second)
		require.NoError(t, st.ReportHealth(ctx, h))
		r, _ = readHealth(t, pool, h.Process)
		require.Equal(t, "catching_up", r.State)
		require.Nil(t, r.Reason, "a reason only while paused")
		require.True(t, since.Add(30*time.Second).Equal(*r.Oldest))

		h.State, h.Since = store.HealthRunning, since.Add(3*time.Minute)
		require.NoError(t, st.ReportHealth(ctx, h))
		r, _ = readHealth(t, pool, h.Process)
		require.Equal(t, "running", r.State)
		require.Nil(t, r.Oldest, "no backlog while running")
	})

	// The reconciler's last success stays when a report carries none.
	t.Run("LastSuccessKept", func(t *testing.T) {
		t.Parallel()
		st, pool := setupHealth(t)
		h := store.Health{Process: "reconciler", Kind: store.HealthKindReconciler, State: store.HealthRunning, Since: since}
		require.NoError(t, st.ReportHealth(ctx, h))
		r, _ := readHealth(t, pool, "reconciler")
		require.Nil(t, r.LastSuccess)
		h.LastSuccessAt = since.Add(time.Hour)
		require.NoError(t, st.ReportHealth(ctx, h))
		h.LastSuccessAt = time.Time{}
		require.NoError(t, st.ReportHealth(ctx, h))
		r, _ = readHealth(t, pool, "reconciler")
		require.True(t, since.Add(time.Hour).Equal(*r.LastSuccess))
		require.Equal(t, "reconciler", r.Kind)
	})

	// A clean stop removes its row; the purge removes rows not reported
	// for longer than it is given, and only those.
	t.Run("RemoveAndPurge", func(t *testing.T) {
		t.Parallel()
		st, pool := setupHealth(t)
		for _, p := range []string{"syncer:a:1", "syncer:b:2", "syncer:c:3"} {
			require.NoError(t, st.ReportHealth(ctx, store.Health{Process: p, Kind: store.HealthKindSyncer, State: store.HealthRunning, Since: since}))
		}
		_, err := pool.Exec(ctx, `UPDATE portalsync.sync_health SET reported_at = now() - interval '25 hours' WHERE process = 'syncer:b:2'`)
		require.NoError(t, err)
		n, err := st.PurgeHealth(ctx, 24*time.Hour)
		require.NoError(t, err)
		require.EqualValues(t, 1, n)
		_, ok := readHealth(t, pool, "syncer:b:2")
		require.False(t, ok)
		require.NoError(t, st.RemoveHealth(ctx, "syncer:a:1"))
		_, ok = readHealth(t, pool, "syncer:a:1")
		require.False(t, ok)
		_, ok = readHealth(t, pool, "syncer:c:3")
		require.True(t, ok)
		_, err = st.PurgeHealth(ctx, 0)
		require.Error(t, err)
	})

	// A report the table would refuse is refused before it is sent.
	t.Run("Validates", func(t *testing.T) {
		t.Parallel()
		ok := store.Health{Process: "p", Kind: store.HealthKindSyncer, State: store.HealthRunning, Since: since}
		require.NoError(t, ok.Validate())
		for name, mod := range map[string]func(*store.Health){
			"no process": func(h *store.Health) { h.Process = "" },
			"kind":       func(h *store.Health) { h.Kind = "console" },
			"state":      func(h *store.Health) { h.State = "stopped" },
			"no since":   func(h *store.Health) { h.Since = time.Time{} },
			"reason":     func(h *store.Health) { h.Reason = string(make([]byte, 201)) },
		} {
			h := ok
			mod(&h)
			require.Error(t, h.Validate(), name)
		}
	})
}
