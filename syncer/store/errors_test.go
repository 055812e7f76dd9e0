package store_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"testing"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/likeperson/portalsync/pkg/event"
	"github.com/likeperson/portalsync/syncer/store"
	"github.com/likeperson/portalsync/testkit/schematest"
)

// Driver errors are classified by what the caller should do.
func TestKindOf(t *testing.T) {
	t.Parallel()
	pg := func(code string) error { return fmt.Errorf("apply: %w", &pgconn.PgError{Code: code}) }
	for _, tc := range []struct {
		name string
		err  error
		want store.Kind
	}{
		{"nil", nil, store.KindNone},
		{"serialization", pg("40001"), store.KindRetry},
		{"deadlock", pg("40P01"), store.KindRetry},
		{"statement timeout", pg("57014"), store.KindRetry},
		{"lock timeout", pg("55P03"), store.KindRetry},
		{"deadline", context.DeadlineExceeded, store.KindRetry},
		{"admin shutdown", pg("57P01"), store.KindUnavailable},
		{"cannot connect now", pg("57P03"), store.KindUnavailable},
		{"too many connections", pg("53300"), store.KindUnavailable},
		{"disk full", pg("53100"), store.KindUnavailable},
		{"read-only", pg("25006"), store.KindUnavailable},
		{"connection failure", pg("08006"), store.KindUnavailable},
		{"undefined table", pg("42P01"), store.KindUnavailable},
		{"refused", &net.OpError{Op: "dial", Err: errors.New("connection refused")}, store.KindUnavailable},
		{"lost", io.ErrUnexpectedEOF, store.KindUnavailable},
		{"canceled", context.Canceled, store.KindUnavailable},
		{"data exception", pg("22001"), store.KindEventFault},
		{"constraint", pg("23505"), store.KindEventFault},
		{"event logged concurrently", fmt.Errorf("apply: %w", &pgconn.PgError{Code: "23505", ConstraintName: "portal_sync_log_event_done_idx"}), store.KindRetry},
		{"raised", pg("P0001"), store.KindEventFault},
		{"syntax", pg("42601"), store.KindEventFault},
		{"classified", &store.Error{Kind: store.KindRetry, Err: io.EOF}, store.KindRetry},
	} {
		t.Run(tc.name, func(t *testing.T) {
			require.Equal(t, tc.want, store.KindOf(tc.err))
		})
	}
}

// The store classifies at its boundary: a database that refuses
// connections is unavailable, for applying, logging a failure and ping.
func TestUnreachableDatabaseIsUnavailable(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := ln.Addr().String()
	require.NoError(t, ln.Close()) // nothing listens there now
	pool, err := pgxpool.New(context.Background(), "postgres://postgres@"+addr+"/x?sslmode=disable&connect_timeout=2")
	require.NoError(t, err)
	t.Cleanup(pool.Close)
	s := store.New(pool)
	ctx := context.Background()
	_, err = s.ApplyBatch(ctx, []store.Item{{Event: ev("e1", event.MembershipCreated, t0, "m1", "o1", event.RolePeerMentor), Meta: store.Meta{StreamSeq: 1, Attempt: 1}}})
	require.Equal(t, store.KindUnavailable, store.KindOf(err), "%v", err)
	require.Equal(t, store.KindUnavailable, store.KindOf(s.LogFailure(ctx, store.Failure{EventID: "e1"}, store.Meta{StreamSeq: 1})))
	require.True(t, store.IsUnavailable(s.Ping(ctx)))
}

// A batch of one upserts its organization before its transaction, as a
// batch does (so single-event transactions of one organization do not
// queue on its row): when the transaction fails, the organization row stays.
func TestSingleEventUpsertsOrganizationFirst(t *testing.T) {
	t.Parallel()
	db := schematest.NewDB(t)
	s := store.New(db.Pool)
	ctx := context.Background()
	_, err := db.Pool.Exec(ctx, `
		CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS $$
		BEGIN RAISE EXCEPTION 'refused'; END $$;
		CREATE TRIGGER refuse BEFORE INSERT ON profiles FOR EACH ROW EXECUTE FUNCTION refuse();`)
	require.NoError(t, err)
	_, err = s.Apply(ctx, ev("e1", event.MembershipCreated, t0, "m1", "org-first", event.RolePeerMentor), store.Meta{StreamSeq: 1, Attempt: 1})
	require.Error(t, err)
	require.Equal(t, store.KindEventFault, store.KindOf(err))
	var n int
	require.NoError(t, db.Pool.QueryRow(ctx, `SELECT count(*) FROM organizations WHERE portal_org_id = 'org-first'`).Scan(&n))
	require.Equal(t, 1, n, "the organization was upserted before the transaction")

}
