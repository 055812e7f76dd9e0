package store_test

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"pgregory.net/rapid"

	"github.com/likeperson/portalsync/pkg/event"
	"github.com/likeperson/portalsync/syncer/store"
)

func items(evs ...*event.Event) []store.Item {
	out := make([]store.Item, len(evs))
	for i, e := range evs {
		out[i] = store.Item{Event: e, Meta: store.Meta{StreamSeq: uint64(i + 1), Attempt: 1, ReceivedAt: time.Now()}}
	}
	return out
}

func TestBatchAppliesAndLogs(t *testing.T) {
	t.Parallel()
	s, pool := setup(t)
	ctx := context.Background()
	const uid = "00000000-0000-0000-0000-0000000000b1"
	_, err := pool.Exec(ctx, `INSERT INTO auth.users (id, email, email_confirmed_at) VALUES ($1, 'b1@example.invalid', now())`, uid)
	require.NoError(t, err)
	_, err = pool.Exec(ctx, `INSERT INTO auth.sessions (id, user_id) VALUES (gen_random_uuid(), $1)`, uid)
	require.NoError(t, err)

	batch := items(
		ev("e1", event.MembershipCreated, t0, "b1", "o1", event.RolePeerMentor),
		ev("e2", event.RoleUpdated, t0.Add(time.Minute), "b1", "o1", event.RoleCoordinator),
		ev("e3", event.MembershipCreated, t0, "b2", "o1", event.RoleOrgAdmin),
		&event.Event{ID: "e4", Type: "membership-merged", OccurredAt: t0, Member: event.Member{ID: "b3"}},
		ev("e1", event.MembershipCreated, t0, "b1", "o1", event.RolePeerMentor), // redelivered in the same batch
		ev("e5", event.MembershipDeactivated, t0.Add(2*time.Minute), "b1", "o1", ""),
	)
	res, err := s.ApplyBatch(ctx, batch)
	require.NoError(t, err)
	require.Len(t, res, len(batch))
	require.True(t, res[0].MemberCreated)
	require.False(t, res[1].MemberCreated)
	require.True(t, res[2].MemberCreated)
	require.Equal(t, store.StatusSkipped, res[3].Status)
	require.True(t, res[4].AlreadyDone)
	require.Contains(t, res[0].Detail, "member created")

	got := memberState(t, pool, "b1")
	require.Equal(t, "inactive", got.ProfileStatus)
	require.Equal(t, "coordinator", got.Roles["o1"])
	var banned *time.Time
	var sessions int
	require.NoError(t, pool.QueryRow(ctx, `SELECT banned_until FROM auth.users WHERE id = $1`, uid).Scan(&banned))
	require.NotNil(t, banned, "linked and banned in the same batch")
	require.NoError(t, pool.QueryRow(ctx, `SELECT count(*) FROM auth.sessions`).Scan(&sessions))
	require.Zero(t, sessions)
	for id, want := range map[string][]string{"e1": {"success"}, "e2": {"success"}, "e3": {"success"}, "e4": {"skipped"}, "e5": {"success"}} {
		require.Equal(t, want, logRows(t, pool, id), id)
	}

	// Again: everything is already done, nothing is written.
	res, err = s.ApplyBatch(ctx, batch)
	require.NoError(t, err)
	for _, r := range res {
		require.True(t, r.AlreadyDone)
	}
	var n int
	require.NoError(t, pool.QueryRow(ctx, `SELECT count(*) FROM portal_sync_log`).Scan(&n))
	require.Equal(t, 5, n)

	// Reactivation in a later batch lifts the ban this sync set.
	_, err = s.ApplyBatch(ctx, items(ev("e6", event.MembershipReactivated, t0.Add(3*time.Minute), "b1", "o1", "")))
	require.NoError(t, err)
	require.NoError(t, pool.QueryRow(ctx, `SELECT banned_until FROM auth.users WHERE id = $1`, uid).Scan(&banned))
	require.Nil(t, banned)
}

// TestBatchesMatchModel: events of a few members, with redeliveries, cut
// into random batches in random order, end in the model's state.
func TestBatchesMatchModel(t *testing.T) {
	t.Parallel()
	s, pool := setup(t)
	var check atomic.Int64
	rapid.Check(t, func(rt *rapid.T) {
		prefix := fmt.Sprintf("b%d", check.Add(1))
		events := drawEvents(rt, prefix, 3, 24)
		accounts := drawAccounts(rt, pool, events)
		order := drawDeliveries(rt, events, 6)
		applyInBatches(rt, s, order)
		requireModel(t, rt, pool, prefix, events)
		requireIdentity(rt, pool, events, accounts)
	})
}

// The same ApplyBatch runs in a caller's transaction: each batch is a
// savepoint, so a batch that fails leaves the transaction usable and
// nothing of itself behind, the next one applies, and the caller's
// rollback takes everything back.
func TestApplyBatchInCallersTransaction(t *testing.T) {
	t.Parallel()
	_, pool := setup(t)
	ctx := context.Background()
	_, err := pool.Exec(ctx, `
		CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS $$
		BEGIN IF NEW.portal_member_id = 'bad' THEN RAISE EXCEPTION 'refused'; END IF; RETURN NEW; END $$;
		CREATE TRIGGER refuse BEFORE INSERT ON profiles FOR EACH ROW EXECUTE FUNCTION refuse();`)
	require.NoError(t, err)
	tx, err := pool.Begin(ctx)
	require.NoError(t, err)
	defer tx.Rollback(ctx) //nolint:errcheck // rolled back below
	s := store.New(tx)

	_, err = s.ApplyBatch(ctx, items(ev("t-1", event.MembershipCreated, t0, "bad", "o-bad", event.RolePeerMentor)))
	require.Equal(t, store.KindEventFault, store.KindOf(err), "%v", err)
	res, err := s.ApplyBatch(ctx, items(ev("t-2", event.MembershipCreated, t0, "m1", "o1", event.RolePeerMentor)))
	require.NoError(t, err, "the transaction is still usable")
	require.Equal(t, store.StatusSuccess, res[0].Status)
	var profiles, orgs, logged int
	require.NoError(t, tx.QueryRow(ctx, `SELECT (SELECT count(*) FROM profiles), (SELECT count(*) FROM organizations),
		(SELECT count(*) FROM portal_sync_log)`).Scan(&profiles, &orgs, &logged))
	require.Equal(t, []int{1, 2, 1}, []int{profiles, orgs, logged}, "the failed batch's organization was upserted first")

	require.NoError(t, tx.Rollback(ctx))
	require.NoError(t, pool.QueryRow(ctx, `SELECT (SELECT count(*) FROM profiles) + (SELECT count(*) FROM organizations)`).Scan(&profiles))
	require.Zero(t, profiles)
}
