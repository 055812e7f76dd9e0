package store_test

import (
	"context"
	"fmt"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/likeperson/portalsync/pkg/event"
	"github.com/likeperson/portalsync/syncer/store"
	"github.com/likeperson/portalsync/testkit/schematest"
)

// A database that refuses new connections with an SQLSTATE of its own
// (ALTER DATABASE … ALLOW_CONNECTIONS false: 55000; a rotated password:
// 28P01; CONNECT revoked: 42501; a database being restored: 3D000) is
// unavailable, not the event's fault: found by an outside test of issue 19
// (a syncer whose pool still held working connections logged three
// accepted events `failed` and dead-lettered them on their first delivery
// while new connections were refused; the others spent deliveries).
func TestDatabaseRefusingNewConnectionsIsUnavailable(t *testing.T) {
	t.Parallel()
	db := schematest.NewDB(t)
	ctx := context.Background()
	// From another database: a session cannot close its own.
	cc, err := pgx.ParseConfig(db.URL)
	require.NoError(t, err)
	cc.Database = "postgres"
	admin, err := pgx.ConnectConfig(ctx, cc)
	require.NoError(t, err)
	t.Cleanup(func() { _ = admin.Close(context.Background()) })
	_, err = admin.Exec(ctx, fmt.Sprintf("ALTER DATABASE %s ALLOW_CONNECTIONS false", pgx.Identifier{db.Name}.Sanitize()))
	require.NoError(t, err)
	t.Cleanup(func() {
		_, _ = admin.Exec(context.Background(), fmt.Sprintf("ALTER DATABASE %s ALLOW_CONNECTIONS true", pgx.Identifier{db.Name}.Sanitize()))
	})

	pool, err := pgxpool.New(ctx, db.URL) // its first connection is refused
	require.NoError(t, err)
	t.Cleanup(pool.Close)
	s := store.New(pool)
	_, err = s.ApplyBatch(ctx, []store.Item{{Event: ev("e1", event.MembershipCreated, t0, "m1", "o1", event.RolePeerMentor), Meta: store.Meta{StreamSeq: 1, Attempt: 1}}})
	require.Error(t, err)
	require.Equal(t, store.KindUnavailable, store.KindOf(err), "%v", err)
	_, err = s.Apply(ctx, ev("e2", event.MembershipCreated, t0, "m2", "o1", event.RolePeerMentor), store.Meta{StreamSeq: 2, Attempt: 1})
	require.Equal(t, store.KindUnavailable, store.KindOf(err), "%v", err)
	require.Equal(t, store.KindUnavailable, store.KindOf(s.LogFailure(ctx, store.Failure{EventID: "e1"}, store.Meta{StreamSeq: 1})))
}
