package store_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/likeperson/portalsync/pkg/event"
	"github.com/likeperson/portalsync/syncer/store"
)

// The log insert has no ON CONFLICT: the same event logged by a concurrent
// transaction (another replica, a redelivery) after this batch's pre-check
// raises the unique violation, which is a retry, and the retried batch
// finds the event done. One success row, whatever the race.
func TestConcurrentDuplicateRetriesToOneSuccess(t *testing.T) {
	t.Parallel()
	s, pool := setup(t)
	ctx := context.Background()
	e := ev("dup-1", event.MembershipCreated, t0, "m-dup", "o1", event.RolePeerMentor)

	// The other replica, at its log write: its row for the event is in,
	// not yet committed.
	other, err := pool.Begin(ctx)
	require.NoError(t, err)
	defer other.Rollback(ctx) //nolint:errcheck // committed below
	_, err = other.Exec(ctx, `INSERT INTO portal_sync_log (event_id, event_type, portal_member_id, status, stream_seq)
		VALUES ('dup-1', 'membership-created', 'm-dup', 'success', 7)`)
	require.NoError(t, err)

	done := make(chan error, 1)
	go func() {
		_, err := s.ApplyBatch(ctx, items(e))
		done <- err
	}()
	// This batch passed its pre-check and waits on the other's index entry.
	// (Only this test's database: other tests run in parallel.)
	require.Eventually(t, func() bool {
		var waiting bool
		err := pool.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_stat_activity
			WHERE datname = current_database() AND wait_event_type = 'Lock'
			  AND query LIKE '%INSERT INTO public.portal_sync_log%')`).Scan(&waiting)
		return err == nil && waiting
	}, 10*time.Second, 20*time.Millisecond)
	require.NoError(t, other.Commit(ctx))

	err = <-done
	require.Error(t, err)
	require.Equal(t, store.KindRetry, store.KindOf(err), "%v", err)

	res, err := s.ApplyBatch(ctx, items(e))
	require.NoError(t, err)
	require.True(t, res[0].AlreadyDone)
	require.Equal(t, []string{"success"}, logRows(t, pool, "dup-1"))
}

// The log has no per-row foreign key to organizations; deleting an
// organization still clears its id from the log rows (what ON DELETE SET
// NULL did), and leaves other organizations' rows alone.
func TestDeletedOrganizationLeavesNoIDInLog(t *testing.T) {
	t.Parallel()
	s, pool := setup(t)
	ctx := context.Background()
	apply(t, s, ev("o-1", event.MembershipCreated, t0, "m1", "o1", event.RolePeerMentor))
	apply(t, s, ev("o-2", event.MembershipCreated, t0, "m2", "o2", event.RolePeerMentor))

	_, err := pool.Exec(ctx, `DELETE FROM organizations WHERE portal_org_id = 'o1'`)
	require.NoError(t, err)

	var o1, o2 *string
	require.NoError(t, pool.QueryRow(ctx, `SELECT
		(SELECT organization_id::text FROM portal_sync_log WHERE event_id = 'o-1'),
		(SELECT organization_id::text FROM portal_sync_log WHERE event_id = 'o-2')`).Scan(&o1, &o2))
	require.Nil(t, o1, "the deleted organization's id is gone from its rows")
	require.NotNil(t, o2)
	var dangling int
	require.NoError(t, pool.QueryRow(ctx, `SELECT count(*) FROM portal_sync_log l
		WHERE l.organization_id IS NOT NULL AND NOT EXISTS (SELECT 1 FROM organizations o WHERE o.id = l.organization_id)`).Scan(&dangling))
	require.Zero(t, dangling)
}

// TRUNCATE fires no DELETE trigger: truncating the organizations (their
// memberships and roles with them) but keeping the log clears every
// organization id from the log.
func TestTruncatedOrganizationsLeaveNoIDInLog(t *testing.T) {
	t.Parallel()
	s, pool := setup(t)
	ctx := context.Background()
	apply(t, s, ev("t-1", event.MembershipCreated, t0, "m1", "o1", event.RolePeerMentor))

	_, err := pool.Exec(ctx, `TRUNCATE organizations CASCADE`)
	require.NoError(t, err)

	var rows, withID int
	require.NoError(t, pool.QueryRow(ctx, `SELECT count(*), count(organization_id) FROM portal_sync_log`).Scan(&rows, &withID))
	require.Equal(t, 1, rows, "the log is kept")
	require.Zero(t, withID)
}

// A replayed event is applied again (repairing its rows) but keeps its one
// log row, also when the batch holds events the log does not know yet.
func TestReplayWritesNoSecondLogRow(t *testing.T) {
	t.Parallel()
	s, pool := setup(t)
	ctx := context.Background()
	old := ev("r-1", event.MembershipCreated, t0, "m1", "o1", event.RolePeerMentor)
	apply(t, s, old)
	_, err := pool.Exec(ctx, `UPDATE profiles SET first_name = 'damaged' WHERE portal_member_id = 'm1'`)
	require.NoError(t, err)

	fresh := ev("r-2", event.MembershipCreated, t0, "m2", "o1", event.RolePeerMentor)
	replay := store.Meta{StreamSeq: 1, Attempt: 1, Replay: true}
	res, err := s.ApplyBatch(ctx, []store.Item{{Event: old, Meta: replay}, {Event: fresh, Meta: store.Meta{StreamSeq: 2, Attempt: 1, Replay: true}}})
	require.NoError(t, err)
	require.Equal(t, store.StatusSuccess, res[0].Status)
	require.False(t, res[0].AlreadyDone)
	require.Equal(t, "F-r-1", memberState(t, pool, "m1").FirstName, "repaired")
	require.Equal(t, []string{"success"}, logRows(t, pool, "r-1"))
	require.Equal(t, []string{"success"}, logRows(t, pool, "r-2"))
}

// An organization deleted while a batch that logs a failed event naming
// it is in flight: the log row must not keep the deleted organization's
// id (00022 promised what the foreign key's ON DELETE SET NULL gave). The
// deletion's trigger runs before the batch commits, so the batch itself
// must hold the organization until then, as the key's check did.
func TestOrganizationDeletedDuringBatchLeavesNoIDInLog(t *testing.T) {
	t.Parallel()
	_, pool := setup(t)
	s := store.New(pool)
	ctx := context.Background()
	apply(t, s, ev("d-1", event.MembershipCreated, t0, "m1", "o1", event.RolePeerMentor))

	// A failed event (dated in the future) names o1.
	future := ev("d-2", event.MembershipDeactivated, time.Now().Add(time.Hour), "m1", "o1", "")
	tx, err := pool.Begin(ctx)
	require.NoError(t, err)
	defer tx.Rollback(ctx) //nolint:errcheck // committed below
	_, err = store.New(tx).ApplyBatch(ctx, []store.Item{{Event: future, Meta: store.Meta{StreamSeq: 2, Attempt: 1}}})
	require.NoError(t, err)

	deleteOrgBeforeCommit(t, pool, tx, "o1")
}

// Live deliveries and replays of the same batch race on several
// connections: every one ends applied (retrying conflicts, as the
// consumer and the replayer do) and each event has one success row.
func TestRacingDuplicatesAndReplaysOneRowEach(t *testing.T) {
	t.Parallel()
	s, pool := setup(t)
	ctx := context.Background()
	var evs []*event.Event
	for i := range 6 {
		evs = append(evs, ev(fmt.Sprintf("race-%d", i), event.MembershipCreated, t0.Add(time.Duration(i)*time.Second),
			fmt.Sprintf("m%d", i%3), "o1", event.RolePeerMentor))
	}
	errs := make(chan error, 8)
	for g := range 8 {
		go func() {
			its := items(evs...)
			for i := range its {
				its[i].Meta.Replay = g%2 == 1
			}
			for attempt := 0; ; attempt++ {
				_, err := s.ApplyBatch(ctx, its)
				if store.KindOf(err) != store.KindRetry || attempt == 20 {
					errs <- err
					return
				}
			}
		}()
	}
	for range 8 {
		require.NoError(t, <-errs)
	}
	for _, e := range evs {
		require.Equal(t, []string{"success"}, logRows(t, pool, e.ID), e.ID)
	}
}

// What changed for a member beyond its rows (here: access revoked) is told
// in the row of its last event that gets one: in a replay whose last event
// for the member is logged already (no second row), the row of the event
// the replay logs says it.
func TestReplayNotesGoToALoggedRow(t *testing.T) {
	t.Parallel()
	s, pool := setup(t)
	ctx := context.Background()
	_, err := pool.Exec(ctx, `INSERT INTO auth.users (id, email, email_confirmed_at) VALUES (gen_random_uuid(), 'm1@example.invalid', now())`)
	require.NoError(t, err)
	updated := ev("n-2", event.MembershipUpdated, t0, "m1", "o1", "")
	apply(t, s, updated)

	deactivated := ev("n-3", event.MembershipDeactivated, t0.Add(time.Minute), "m1", "o1", "")
	_, err = s.ApplyBatch(ctx, []store.Item{
		{Event: deactivated, Meta: store.Meta{StreamSeq: 3, Attempt: 1, Replay: true}},
		{Event: updated, Meta: store.Meta{StreamSeq: 4, Attempt: 1, Replay: true}},
	})
	require.NoError(t, err)
	var detail string
	require.NoError(t, pool.QueryRow(ctx, `SELECT detail FROM portal_sync_log WHERE event_id = 'n-3'`).Scan(&detail))
	require.Contains(t, detail, "app access revoked")
	require.Equal(t, []string{"success"}, logRows(t, pool, "n-2"))
}

// The account trigger logs a shared e-mail at sign-up once per
// organization of each member; an organization deleted while that sign-up
// is not yet committed waits for it, and no row keeps the id (00025).
func TestOrganizationDeletedDuringSharedEmailSignUpLeavesNoIDInLog(t *testing.T) {
	t.Parallel()
	s, pool := setup(t)
	ctx := context.Background()
	for i, m := range []string{"sh-1", "sh-2"} {
		e := ev(fmt.Sprintf("sh-e%d", i), event.MembershipCreated, t0, m, "o1", event.RolePeerMentor)
		e.Member.Email = "shared@example.invalid"
		apply(t, s, e)
	}
	signUp, err := pool.Begin(ctx)
	require.NoError(t, err)
	defer signUp.Rollback(ctx) //nolint:errcheck // committed below
	_, err = signUp.Exec(ctx, `INSERT INTO auth.users (id, email, email_confirmed_at) VALUES (gen_random_uuid(), 'shared@example.invalid', now())`)
	require.NoError(t, err)
	var logged int
	require.NoError(t, signUp.QueryRow(ctx, `SELECT count(*) FROM portal_sync_log WHERE event_type = 'account-link' AND organization_id IS NOT NULL`).Scan(&logged))
	require.Equal(t, 2, logged, "one row per member in o1")

	deleteOrgBeforeCommit(t, pool, signUp, "o1")
}

// deleteOrgBeforeCommit deletes the organization org from another
// connection while tx, which has logged rows naming it, is still open,
// then commits tx, and requires that no log row names an organization that
// is gone. The deletion either waits for tx (its lock) or is done before
// tx commits; it is given the time to be done.
func deleteOrgBeforeCommit(t *testing.T, pool *pgxpool.Pool, tx pgx.Tx, org string) {
	t.Helper()
	ctx := context.Background()
	deleted := make(chan error, 1)
	go func() {
		_, err := pool.Exec(ctx, `DELETE FROM organizations WHERE portal_org_id = $1`, org)
		deleted <- err
	}()
	select {
	case err := <-deleted:
		require.NoError(t, err)
		deleted <- nil
	case <-time.After(500 * time.Millisecond):
	}
	require.NoError(t, tx.Commit(ctx))
	require.NoError(t, <-deleted)

	var dangling int
	require.NoError(t, pool.QueryRow(ctx, `SELECT count(*) FROM portal_sync_log l
		WHERE l.organization_id IS NOT NULL AND NOT EXISTS (SELECT 1 FROM organizations o WHERE o.id = l.organization_id)`).Scan(&dangling))
	require.Zero(t, dangling, "a log row names an organization that is gone")
}
