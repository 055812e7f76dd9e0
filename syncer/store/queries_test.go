package store

import (
	"context"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/likeperson/portalsync/testkit/schematest"
)

// portalsync.newer (migration 00026) is the upserts' one "newer than
// stored" guard: by portal time, then event id in byte order; the same
// event wins only where the values differ; no incoming time never wins; no
// stored stamp is older than everything.
func TestNewerGuard(t *testing.T) {
	t.Parallel()
	db := schematest.NewDB(t)
	at := time.Date(2026, 11, 25, 10, 0, 0, 0, time.UTC)
	later := at.Add(time.Minute)
	tests := []struct {
		name                 string
		inAt                 *time.Time
		inID                 string
		storedAt             *time.Time
		storedID             *string
		differ, want, isNull bool
	}{
		{name: "NewerTime", inAt: &later, inID: "a", storedAt: &at, storedID: ptr("z"), want: true},
		{name: "OlderTime", inAt: &at, inID: "z", storedAt: &later, storedID: ptr("a")},
		{name: "SameTimeLargerID", inAt: &at, inID: "e2", storedAt: &at, storedID: ptr("e10"), want: true},
		{name: "SameTimeIDsAsBytes", inAt: &at, inID: "e-2", storedAt: &at, storedID: ptr("e1")},
		{name: "SameEventSameValues", inAt: &at, inID: "e1", storedAt: &at, storedID: ptr("e1")},
		{name: "SameEventValuesDiffer", inAt: &at, inID: "e1", storedAt: &at, storedID: ptr("e1"), differ: true, want: true},
		{name: "NothingStored", inAt: &at, inID: "e1", want: true},
		{name: "NoIncomingTime", inID: "e1", storedAt: &at, storedID: ptr("e0"), differ: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var got bool
			require.NoError(t, db.Pool.QueryRow(context.Background(), `SELECT portalsync.newer($1, $2, $3, $4, $5)`,
				tt.inAt, tt.inID, tt.storedAt, tt.storedID, tt.differ).Scan(&got))
			require.Equal(t, tt.want, got)
		})
	}
}

func ptr[T any](v T) *T { return &v }

// PostgreSQL inlines portalsync.newer into every upsert that calls it, for
// the syncer's role: the plans hold the guard's expression, not a call
// (a call would cost a function invocation per row and column, and hide
// the expression from the planner).
func TestNewerGuardInlined(t *testing.T) {
	t.Parallel()
	db := schematest.NewDB(t)
	ctx := context.Background()
	for name, sql := range map[string]string{
		"organizations":    upsertOrganizationsSQL,
		"profiles":         upsertProfilesSQL,
		"memberships":      upsertMembershipsSQL,
		"role assignments": upsertRolesSQL,
	} {
		t.Run(name, func(t *testing.T) {
			require.Contains(t, sql, "portalsync.newer(")
			plan := explainAsSyncer(t, ctx, db.Pool, sql)
			require.Contains(t, plan, "Conflict Filter")
			require.NotContains(t, plan, "newer(", "inlined")
			require.Contains(t, plan, "'-infinity'::timestamp with time zone", "the guard's expression")
		})
	}
}

// explainAsSyncer is EXPLAIN (VERBOSE) of sql, with every parameter NULL,
// as the syncer's role, in a transaction rolled back.
func explainAsSyncer(t *testing.T, ctx context.Context, db interface {
	Begin(context.Context) (pgx.Tx, error)
}, sql string) string {
	t.Helper()
	tx, err := db.Begin(ctx)
	require.NoError(t, err)
	defer tx.Rollback(ctx) //nolint:errcheck // read only
	_, err = tx.Exec(ctx, `SET LOCAL ROLE portalsync_syncer`)
	require.NoError(t, err)
	n := 0
	for _, m := range regexp.MustCompile(`\$(\d+)`).FindAllStringSubmatch(sql, -1) {
		k, err := strconv.Atoi(m[1])
		require.NoError(t, err)
		n = max(n, k)
	}
	args := make([]any, n)
	rows, err := tx.Query(ctx, "EXPLAIN (VERBOSE, COSTS OFF) "+sql, args...)
	require.NoError(t, err)
	lines, err := pgx.CollectRows(rows, pgx.RowTo[string])
	require.NoError(t, err)
	return strings.Join(lines, "\n")
}
