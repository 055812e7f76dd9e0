package store_test

import (
	"context"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/likeperson/portalsync/pkg/event"
	"github.com/likeperson/portalsync/syncer/store"
)

// mirror is a profile's and its link's view of one member's account.
type mirror struct {
	Status         string
	ProfileUser    *string
	ProfileBySync  bool
	LinkUser       *string
	LinkBySync     *bool
	BannedUntilSet bool
}

func mirrorOf(t *testing.T, pool *pgxpool.Pool, member, uid string) mirror {
	t.Helper()
	var m mirror
	require.NoError(t, pool.QueryRow(context.Background(), `SELECT p.status, p.auth_user_id::text, p.auth_banned_by_sync,
		l.auth_user_id::text, l.banned_by_sync, (SELECT banned_until IS NOT NULL FROM auth.users WHERE id = $2::uuid)
		FROM profiles p LEFT JOIN portalsync.account_links l ON l.portal_member_id = p.portal_member_id
		WHERE p.portal_member_id = $1`, member, uid).
		Scan(&m.Status, &m.ProfileUser, &m.ProfileBySync, &m.LinkUser, &m.LinkBySync, &m.BannedUntilSet))
	return m
}

// Sign-up of an inactive member's account (the trigger path: link_account
// then apply_access): linked, banned at once, the flag mirrored on the
// profile; a later reactivation lifts the ban and clears both flags.
func TestSignUpOfInactiveMemberMirrorsBan(t *testing.T) {
	t.Parallel()
	s, pool := setup(t)
	ctx := context.Background()
	const uid = "00000000-0000-0000-0000-0000000000a1"
	apply(t, s, ev("s-1", event.MembershipCreated, t0, "m1", "o1", event.RolePeerMentor))
	apply(t, s, ev("s-2", event.MembershipDeactivated, t0.Add(time.Minute), "m1", "o1", ""))
	_, err := pool.Exec(ctx, `INSERT INTO auth.users (id, email, email_confirmed_at) VALUES ($1, 'm1@example.invalid', now())`, uid)
	require.NoError(t, err)
	m := mirrorOf(t, pool, "m1", uid)
	require.Equal(t, "inactive", m.Status)
	require.NotNil(t, m.ProfileUser)
	require.Equal(t, uid, *m.ProfileUser)
	require.True(t, m.ProfileBySync, "profile mirrors the sync's ban")
	require.True(t, *m.LinkBySync)
	require.True(t, m.BannedUntilSet)

	apply(t, s, ev("s-3", event.MembershipReactivated, t0.Add(2*time.Minute), "m1", "o1", ""))
	m = mirrorOf(t, pool, "m1", uid)
	require.Equal(t, "active", m.Status)
	require.False(t, m.ProfileBySync)
	require.False(t, *m.LinkBySync)
	require.False(t, m.BannedUntilSet)
}

// A resync (public tables truncated, events applied again, in batches)
// restores the link and the ban flag onto the profiles from account_links,
// also for a member whose link_members returns early.
func TestResyncRestoresLinkAndBanFlag(t *testing.T) {
	t.Parallel()
	s, pool := setup(t)
	ctx := context.Background()
	const uid = "00000000-0000-0000-0000-0000000000a2"
	_, err := pool.Exec(ctx, `INSERT INTO auth.users (id, email, email_confirmed_at) VALUES ($1, 'm1@example.invalid', now())`, uid)
	require.NoError(t, err)
	evs := []*event.Event{
		ev("r-1", event.MembershipCreated, t0, "m1", "o1", event.RolePeerMentor),
		ev("r-2", event.MembershipDeactivated, t0.Add(time.Minute), "m1", "o1", ""),
		ev("r-3", event.MembershipCreated, t0, "m2", "o1", event.RolePeerMentor),
	}
	for _, e := range evs {
		apply(t, s, e)
	}
	before := mirrorOf(t, pool, "m1", uid)
	require.True(t, before.ProfileBySync)

	_, err = pool.Exec(ctx, `TRUNCATE organizations, profiles, organization_memberships, role_assignments, portal_sync_log`)
	require.NoError(t, err)
	// Replayed as one batch, then one by one again (nothing changes).
	_, err = s.ApplyBatch(ctx, items(evs...))
	require.NoError(t, err)
	require.Equal(t, before, mirrorOf(t, pool, "m1", uid))
	for i, e := range evs {
		_, err := s.ApplyBatch(ctx, []store.Item{{Event: e, Meta: store.Meta{StreamSeq: uint64(i + 1), Attempt: 1, Replay: true}}})
		require.NoError(t, err)
	}
	require.Equal(t, before, mirrorOf(t, pool, "m1", uid))
}

// Erasing a linked member locks the account out first (apply_access from
// the erasure path), whatever the batch held.
func TestErasureLocksOutLinkedAccount(t *testing.T) {
	t.Parallel()
	s, pool := setup(t)
	ctx := context.Background()
	const uid = "00000000-0000-0000-0000-0000000000a3"
	_, err := pool.Exec(ctx, `INSERT INTO auth.users (id, email, email_confirmed_at) VALUES ($1, 'm1@example.invalid', now())`, uid)
	require.NoError(t, err)
	apply(t, s, ev("x-1", event.MembershipCreated, t0, "m1", "o1", event.RolePeerMentor))
	_, err = pool.Exec(ctx, `INSERT INTO auth.sessions (id, user_id) VALUES (gen_random_uuid(), $1)`, uid)
	require.NoError(t, err)
	// The erasure in a batch with another member's live event.
	del := &event.Event{ID: "x-2", Type: event.MemberDeleted, OccurredAt: t0.Add(time.Minute), Member: event.Member{ID: "m1"}}
	res, err := s.ApplyBatch(ctx, items(ev("x-3", event.MembershipCreated, t0, "m2", "o1", event.RolePeerMentor), del))
	require.NoError(t, err)
	require.Contains(t, res[1].Detail, "app access revoked")
	var banned bool
	var sessions int
	require.NoError(t, pool.QueryRow(ctx, `SELECT banned_until IS NOT NULL, (SELECT count(*) FROM auth.sessions WHERE user_id = $1)
		FROM auth.users WHERE id = $1`, uid).Scan(&banned, &sessions))
	require.True(t, banned)
	require.Zero(t, sessions)
}
