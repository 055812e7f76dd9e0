package store_test

import (
	"context"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/likeperson/portalsync/pkg/event"
	"github.com/likeperson/portalsync/pkg/stream"
	"github.com/likeperson/portalsync/syncer/store"
)

// logSource is the source column of an event's log rows, "" for NULL.
func logSource(t *testing.T, pool *pgxpool.Pool, eventID string) []string {
	t.Helper()
	var out []string
	rows, err := pool.Query(context.Background(),
		`SELECT coalesce(source, '') FROM portal_sync_log WHERE event_id = $1 ORDER BY id`, eventID)
	require.NoError(t, err)
	for rows.Next() {
		var s string
		require.NoError(t, rows.Scan(&s))
		out = append(out, s)
	}
	require.NoError(t, rows.Err())
	return out
}

// A log row says where its event came in (Meta.Source, from the
// message's header), failed rows too; an event without one (stored
// before the header existed) logs NULL.
func TestLogSource(t *testing.T) {
	t.Parallel()
	s, pool := setup(t)
	ctx := context.Background()
	meta := func(seq uint64, src string) store.Meta {
		return store.Meta{StreamSeq: seq, Attempt: 1, ReceivedAt: time.Now(), Source: src}
	}

	_, err := s.ApplyBatch(ctx, []store.Item{
		{Event: ev("src-1", event.MembershipCreated, t0, "m1", "o1", event.RolePeerMentor), Meta: meta(1, stream.SourcePortalWebhook)},
		{Event: ev("src-2", event.MembershipCreated, t0, "m2", "o1", event.RolePeerMentor), Meta: meta(2, stream.SourceDataverseWebhook)},
		{Event: ev("src-3", event.MembershipCreated, t0, "m3", "o1", event.RolePeerMentor), Meta: meta(3, "")},
	})
	require.NoError(t, err)
	require.Equal(t, []string{stream.SourcePortalWebhook}, logSource(t, pool, "src-1"))
	require.Equal(t, []string{stream.SourceDataverseWebhook}, logSource(t, pool, "src-2"))
	require.Equal(t, []string{""}, logSource(t, pool, "src-3"), "no header: NULL")

	require.NoError(t, s.LogFailure(ctx, store.Failure{EventID: "src-4", EventType: "membership-created", MemberID: "m4", OrgID: "o1", Reason: "invalid payload"},
		meta(4, stream.SourceRedrive)))
	require.Equal(t, []string{stream.SourceRedrive}, logSource(t, pool, "src-4"))

	_, err = s.Erase(ctx, "m1", "erase-1")
	require.NoError(t, err)
	for _, src := range logSource(t, pool, "erase-1") {
		require.Equal(t, stream.SourceEraseCommand, src)
	}
}
