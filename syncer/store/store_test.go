package store_test

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"
	"pgregory.net/rapid"

	"github.com/likeperson/portalsync/pkg/event"
	"github.com/likeperson/portalsync/syncer/store"
	"github.com/likeperson/portalsync/testkit/schematest"
)

var t0 = time.Date(2026, 11, 25, 10, 0, 0, 0, time.UTC)

func setup(t *testing.T) (*store.Store, *pgxpool.Pool) {
	t.Helper()
	db := schematest.NewDB(t)
	return store.New(db.Pool), db.Pool
}

func ev(id string, typ event.Type, at time.Time, member, org string, role event.Role) *event.Event {
	return &event.Event{
		ID: id, Type: typ, OccurredAt: at,
		Organization: event.Organization{ID: org, Name: "Org " + org},
		Member:       event.Member{ID: member, Email: member + "@example.invalid", FirstName: "F-" + id, LastName: "L", Phone: "+47 1234"},
		Role:         role,
	}
}

func apply(t *testing.T, s *store.Store, e *event.Event) store.Result {
	t.Helper()
	res, err := s.Apply(context.Background(), e, store.Meta{StreamSeq: 1, Attempt: 1, ReceivedAt: time.Now()})
	require.NoError(t, err)
	return res
}

// state is everything the app sees of one member, for comparisons.
type state struct {
	ProfileStatus string
	FirstName     string
	Memberships   map[string]string // org -> status
	Roles         map[string]string // org -> role
}

func memberState(t *testing.T, pool *pgxpool.Pool, member string) state {
	t.Helper()
	ctx := context.Background()
	st := state{Memberships: map[string]string{}, Roles: map[string]string{}}
	var first *string
	err := pool.QueryRow(ctx, `SELECT status, first_name FROM profiles WHERE portal_member_id = $1`, member).Scan(&st.ProfileStatus, &first)
	if err == pgx.ErrNoRows {
		return st
	}
	require.NoError(t, err)
	if first != nil {
		st.FirstName = *first
	}
	rows, err := pool.Query(ctx, `SELECT o.portal_org_id, m.status, coalesce(r.role, '')
		FROM organization_memberships m JOIN profiles p ON p.id = m.profile_id
		JOIN organizations o ON o.id = m.organization_id
		LEFT JOIN role_assignments r ON r.profile_id = m.profile_id AND r.organization_id = m.organization_id
		WHERE p.portal_member_id = $1`, member)
	require.NoError(t, err)
	for rows.Next() {
		var org, status, role string
		require.NoError(t, rows.Scan(&org, &status, &role))
		st.Memberships[org] = status
		if role != "" {
			st.Roles[org] = role
		}
	}
	require.NoError(t, rows.Err())
	return st
}

func logRows(t *testing.T, pool *pgxpool.Pool, eventID string) []string {
	t.Helper()
	rows, err := pool.Query(context.Background(), `SELECT status FROM portal_sync_log WHERE event_id = $1 ORDER BY id`, eventID)
	require.NoError(t, err)
	out, err := pgx.CollectRows(rows, pgx.RowTo[string])
	require.NoError(t, err)
	return out
}

func TestCreated(t *testing.T) {
	t.Parallel()
	s, pool := setup(t)
	res := apply(t, s, ev("e1", event.MembershipCreated, t0, "m1", "o1", event.RolePeerMentor))
	require.Equal(t, store.StatusSuccess, res.Status)
	require.True(t, res.MemberCreated)
	require.Contains(t, res.Detail, "member created")
	require.Equal(t, state{ProfileStatus: "active", FirstName: "F-e1", Memberships: map[string]string{"o1": "active"}, Roles: map[string]string{"o1": "peer_mentor"}}, memberState(t, pool, "m1"))
	require.Equal(t, []string{"success"}, logRows(t, pool, "e1"))
}

func TestSameEventTwiceOneLogRow(t *testing.T) {
	t.Parallel()
	s, pool := setup(t)
	e := ev("e1", event.MembershipCreated, t0, "m1", "o1", event.RoleCoordinator)
	apply(t, s, e)
	res := apply(t, s, e)
	require.True(t, res.AlreadyDone)
	require.Equal(t, []string{"success"}, logRows(t, pool, "e1"))
}

func TestOlderEventNeverOverwritesNewer(t *testing.T) {
	t.Parallel()
	s, pool := setup(t)
	// role-updated at t2 arrives before membership-created at t1.
	apply(t, s, ev("e2", event.RoleUpdated, t0.Add(time.Minute), "m1", "o1", event.RoleOrgAdmin))
	res := apply(t, s, ev("e1", event.MembershipCreated, t0, "m1", "o1", event.RolePeerMentor))
	require.Equal(t, store.StatusSuccess, res.Status)
	got := memberState(t, pool, "m1")
	require.Equal(t, "org_admin", got.Roles["o1"])
	require.Equal(t, "active", got.Memberships["o1"])
	// The created event's profile fields are the only snapshot so far.
	require.Equal(t, "F-e1", got.FirstName)

	// An older update does not replace newer profile fields.
	apply(t, s, ev("e3", event.MembershipUpdated, t0.Add(2*time.Minute), "m1", "o1", ""))
	apply(t, s, ev("e0", event.MembershipUpdated, t0.Add(-time.Minute), "m1", "o1", ""))
	require.Equal(t, "F-e3", memberState(t, pool, "m1").FirstName)
}

func TestUpdatedLeavesStatusAlone(t *testing.T) {
	t.Parallel()
	s, pool := setup(t)
	apply(t, s, ev("e1", event.MembershipDeactivated, t0, "m1", "o1", ""))
	res := apply(t, s, ev("e2", event.MembershipUpdated, t0.Add(time.Minute), "m1", "o1", event.RoleCoordinator))
	require.False(t, res.MemberCreated)
	got := memberState(t, pool, "m1")
	require.Equal(t, "inactive", got.Memberships["o1"])
	require.Equal(t, "inactive", got.ProfileStatus)
	require.Equal(t, "coordinator", got.Roles["o1"])
}

func TestUnknownMemberCreatedByEveryType(t *testing.T) {
	t.Parallel()
	s, pool := setup(t)
	for i, typ := range event.Types {
		member := fmt.Sprintf("m%d", i)
		role := event.Role("")
		if typ.RequiresRole() {
			role = event.RolePeerMentor
		}
		res := apply(t, s, ev("e"+member, typ, t0, member, "o1", role))
		require.True(t, res.MemberCreated, typ)
		require.Contains(t, res.Detail, "member created")
		want := "active"
		if typ == event.MembershipDeactivated {
			want = "inactive"
		}
		require.Equal(t, want, memberState(t, pool, member).ProfileStatus, typ)
		var created bool
		require.NoError(t, pool.QueryRow(context.Background(), `SELECT member_created FROM portal_sync_log WHERE event_id = $1`, "e"+member).Scan(&created))
		require.True(t, created)
	}
}

func TestUnknownTypeSkipped(t *testing.T) {
	t.Parallel()
	s, pool := setup(t)
	e := &event.Event{ID: "ex", Type: "membership-merged", OccurredAt: t0, Member: event.Member{ID: "m1"}}
	res := apply(t, s, e)
	require.Equal(t, store.StatusSkipped, res.Status)
	require.True(t, apply(t, s, e).AlreadyDone)
	require.Equal(t, []string{"skipped"}, logRows(t, pool, "ex"))
	require.Equal(t, "", memberState(t, pool, "m1").ProfileStatus, "nothing created")
}

func TestDeactivationLocksOutAndReactivationRestores(t *testing.T) {
	t.Parallel()
	s, pool := setup(t)
	ctx := context.Background()
	const uid = "00000000-0000-0000-0000-000000000001"
	_, err := pool.Exec(ctx, `INSERT INTO auth.users (id, email, email_confirmed_at) VALUES ($1, 'm1@example.invalid', now())`, uid)
	require.NoError(t, err)
	apply(t, s, ev("e1", event.MembershipCreated, t0, "m1", "o1", event.RolePeerMentor))
	apply(t, s, ev("e2", event.MembershipCreated, t0, "m1", "o2", event.RoleCoordinator))
	var linked *string
	require.NoError(t, pool.QueryRow(ctx, `SELECT auth_user_id::text FROM profiles WHERE portal_member_id = 'm1'`).Scan(&linked))
	require.NotNil(t, linked, "profile linked to the auth user by confirmed e-mail")
	_, err = pool.Exec(ctx, `INSERT INTO auth.sessions (id, user_id) VALUES (gen_random_uuid(), $1), (gen_random_uuid(), $1)`, uid)
	require.NoError(t, err)

	// One of two memberships ends: the member keeps access.
	apply(t, s, ev("e3", event.MembershipDeactivated, t0.Add(time.Minute), "m1", "o1", ""))
	require.Equal(t, "active", memberState(t, pool, "m1").ProfileStatus)
	var sessions int
	require.NoError(t, pool.QueryRow(ctx, `SELECT count(*) FROM auth.sessions WHERE user_id = $1`, uid).Scan(&sessions))
	require.Equal(t, 2, sessions)

	// The last one ends: inactive, banned, sessions gone.
	res := apply(t, s, ev("e4", event.MembershipDeactivated, t0.Add(2*time.Minute), "m1", "o2", ""))
	require.Contains(t, res.Detail, "app access revoked")
	var status string
	var deactivatedAt *time.Time
	require.NoError(t, pool.QueryRow(ctx, `SELECT status, deactivated_at FROM profiles WHERE portal_member_id = 'm1'`).Scan(&status, &deactivatedAt))
	require.Equal(t, "inactive", status)
	require.NotNil(t, deactivatedAt)
	require.True(t, deactivatedAt.Equal(t0.Add(2*time.Minute)))
	var banned *time.Time
	require.NoError(t, pool.QueryRow(ctx, `SELECT banned_until FROM auth.users WHERE id = $1`, uid).Scan(&banned))
	require.NotNil(t, banned)
	require.True(t, banned.After(time.Now().AddDate(50, 0, 0)))
	require.NoError(t, pool.QueryRow(ctx, `SELECT count(*) FROM auth.sessions WHERE user_id = $1`, uid).Scan(&sessions))
	require.Zero(t, sessions)

	// Reactivation lifts the ban this sync set.
	res = apply(t, s, ev("e5", event.MembershipReactivated, t0.Add(3*time.Minute), "m1", "o2", ""))
	require.Contains(t, res.Detail, "app access restored")
	require.NoError(t, pool.QueryRow(ctx, `SELECT banned_until FROM auth.users WHERE id = $1`, uid).Scan(&banned))
	require.Nil(t, banned)
	require.Equal(t, "active", memberState(t, pool, "m1").ProfileStatus)
}

func TestAdminBanIsKeptOnReactivation(t *testing.T) {
	t.Parallel()
	s, pool := setup(t)
	ctx := context.Background()
	const uid = "00000000-0000-0000-0000-000000000002"
	_, err := pool.Exec(ctx, `INSERT INTO auth.users (id, email, email_confirmed_at, banned_until) VALUES ($1, 'm1@example.invalid', now(), now() + interval '1 day')`, uid)
	require.NoError(t, err)
	apply(t, s, ev("e1", event.MembershipCreated, t0, "m1", "o1", event.RolePeerMentor))
	apply(t, s, ev("e2", event.MembershipDeactivated, t0.Add(time.Minute), "m1", "o1", ""))
	apply(t, s, ev("e3", event.MembershipReactivated, t0.Add(2*time.Minute), "m1", "o1", ""))
	var banned *time.Time
	require.NoError(t, pool.QueryRow(ctx, `SELECT banned_until FROM auth.users WHERE id = $1`, uid).Scan(&banned))
	require.NotNil(t, banned, "an administrator's ban is not lifted by the sync")
}

// TestPermutationsAndDuplicatesMatchModel applies one member's events one
// by one in random orders with random redeliveries and expects the
// reference model's state: that of the newest event of each kind.
func TestPermutationsAndDuplicatesMatchModel(t *testing.T) {
	t.Parallel()
	s, pool := setup(t)
	var check atomic.Int64
	rapid.Check(t, func(rt *rapid.T) {
		prefix := fmt.Sprintf("c%d", check.Add(1))
		events := drawEvents(rt, prefix, 1, 10)
		accounts := drawAccounts(rt, pool, events)
		order := drawDeliveries(rt, events, 4)
		for i := range order {
			if _, err := s.Apply(context.Background(), &order[i], store.Meta{StreamSeq: uint64(i + 1), Attempt: 1}); err != nil {
				rt.Fatalf("apply: %v", err)
			}
		}
		requireModel(t, rt, pool, prefix, events)
		requireIdentity(rt, pool, events, accounts)
	})
}

func TestPurgeLog(t *testing.T) {
	t.Parallel()
	s, pool := setup(t)
	ctx := context.Background()
	for i := range 5 {
		apply(t, s, ev(fmt.Sprintf("p%d", i), event.MembershipCreated, t0, fmt.Sprintf("m%d", i), "o1", event.RolePeerMentor))
	}
	_, err := pool.Exec(ctx, `UPDATE portal_sync_log SET processed_at = now() - interval '91 days' WHERE event_id IN ('p0', 'p1', 'p2')`)
	require.NoError(t, err)
	n, err := s.PurgeLog(ctx, 90*24*time.Hour, 2)
	require.NoError(t, err)
	require.EqualValues(t, 3, n)
	var left int
	require.NoError(t, pool.QueryRow(ctx, `SELECT count(*) FROM portal_sync_log`).Scan(&left))
	require.Equal(t, 2, left)
	_, err = s.PurgeLog(ctx, 0, 10)
	require.Error(t, err)
}
