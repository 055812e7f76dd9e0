package store_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"
	"golang.org/x/sync/errgroup"

	"github.com/likeperson/portalsync/pkg/event"
	"github.com/likeperson/portalsync/syncer/store"
)

// identityOf reads a member's linked account e-mail and the sync's ban flag.
func identityOf(t *testing.T, pool *pgxpool.Pool, member string) (email string, bannedBySync bool) {
	t.Helper()
	require.NoError(t, pool.QueryRow(context.Background(), `
		SELECT coalesce(u.email, ''), p.auth_banned_by_sync FROM profiles p LEFT JOIN auth.users u ON u.id = p.auth_user_id
		WHERE p.portal_member_id = $1`, member).Scan(&email, &bannedBySync))
	return email, bannedBySync
}

// The same events give the same link and ban whether they are applied one
// by one, in either order, or in one batch — also when the member's e-mail
// changes between them (the account has the old one).
func TestLinkingSameOneByOneOrBatched(t *testing.T) {
	t.Parallel()
	created := ev("e1", event.MembershipCreated, t0, "m1", "o1", event.RoleCoordinator)
	created.Member.Email = "Before@example.invalid"
	updated := ev("e2", event.MembershipUpdated, t0.Add(time.Minute), "m1", "o1", "")
	updated.Member.Email = "after@example.invalid"
	deactivated := ev("e3", event.MembershipDeactivated, t0.Add(2*time.Minute), "m1", "o1", "")
	deactivated.Member.Email = "after@example.invalid"

	for name, apply := range map[string]func(*store.Store){
		"OneByOne": func(s *store.Store) {
			for i, e := range []*event.Event{created, updated, deactivated} {
				_, err := s.Apply(context.Background(), e, store.Meta{StreamSeq: uint64(i + 1), Attempt: 1})
				require.NoError(t, err)
			}
		},
		"OneByOneReversed": func(s *store.Store) {
			for i, e := range []*event.Event{deactivated, updated, created} {
				_, err := s.Apply(context.Background(), e, store.Meta{StreamSeq: uint64(i + 1), Attempt: 1})
				require.NoError(t, err)
			}
		},
		"Batched": func(s *store.Store) {
			_, err := s.ApplyBatch(context.Background(), items(created, updated, deactivated))
			require.NoError(t, err)
		},
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			s, pool := setup(t)
			_, err := pool.Exec(context.Background(),
				`INSERT INTO auth.users (id, email, email_confirmed_at) VALUES (gen_random_uuid(), 'before@example.invalid', now())`)
			require.NoError(t, err)
			apply(s)
			email, bannedBySync := identityOf(t, pool, "m1")
			require.Equal(t, "before@example.invalid", email, "linked by the e-mail the member had")
			require.True(t, bannedBySync, "and banned: the member is inactive")
		})
	}
}

// Members who share an e-mail are not linked, whether their events come
// one by one or in one batch, and the log says so without the e-mail.
func TestSharedEmailLinksNobody(t *testing.T) {
	t.Parallel()
	a := ev("e1", event.MembershipCreated, t0, "m1", "o1", event.RoleOrgAdmin)
	b := ev("e2", event.MembershipCreated, t0, "m2", "o1", event.RolePeerMentor)
	a.Member.Email, b.Member.Email = "family@example.invalid", "FAMILY@example.invalid"
	s, pool := setup(t)
	ctx := context.Background()
	_, err := s.ApplyBatch(ctx, items(a, b))
	require.NoError(t, err)
	_, err = pool.Exec(ctx, `INSERT INTO auth.users (id, email, email_confirmed_at) VALUES (gen_random_uuid(), 'family@example.invalid', now())`)
	require.NoError(t, err)
	res := apply(t, s, ev("e3", event.MembershipUpdated, t0.Add(time.Minute), "m1", "o1", ""))
	// (e3 carries m1's own address, m1@example.invalid: no longer shared,
	// but no account has it.)
	require.NotContains(t, res.Detail, "linked")
	c := ev("e4", event.MembershipUpdated, t0.Add(2*time.Minute), "m2", "o1", "")
	c.Member.Email = "family@example.invalid"
	d := ev("e5", event.MembershipUpdated, t0.Add(2*time.Minute), "m1", "o1", "")
	d.Member.Email = "family@example.invalid"
	results, err := s.ApplyBatch(ctx, items(c, d))
	require.NoError(t, err)
	for _, r := range results {
		require.Contains(t, r.Detail, "e-mail shared by several portal members; app account not linked")
		require.NotContains(t, r.Detail, "@")
	}
	for _, m := range []string{"m1", "m2"} {
		email, _ := identityOf(t, pool, m)
		require.Empty(t, email, m)
	}
}

// A sign-up (the trigger on auth.users) and an event for the member, at the
// same moment, link the account exactly once and fail neither; two members
// with one e-mail applied at once never both get it.
func TestLinkingRaces(t *testing.T) {
	t.Parallel()
	s, pool := setup(t)
	ctx := context.Background()
	for i := range 20 {
		member, email := fmt.Sprintf("race%d", i), fmt.Sprintf("race%d@example.invalid", i)
		created := ev(fmt.Sprintf("r%d", i), event.MembershipCreated, t0, member, "o1", event.RolePeerMentor)
		created.Member.Email = email
		var g errgroup.Group
		g.Go(func() error {
			_, err := pool.Exec(ctx, `INSERT INTO auth.users (id, email, email_confirmed_at) VALUES (gen_random_uuid(), $1, now())`, email)
			return err
		})
		g.Go(func() error {
			_, err := s.Apply(ctx, created, store.Meta{StreamSeq: uint64(i + 1), Attempt: 1})
			return err
		})
		require.NoError(t, g.Wait())
		linked, _ := identityOf(t, pool, member)
		require.Equal(t, email, linked, "member %s", member)

		// Two members, one e-mail whose account exists, in two transactions.
		shared := fmt.Sprintf("shared%d@example.invalid", i)
		_, err := pool.Exec(ctx, `INSERT INTO auth.users (id, email, email_confirmed_at) VALUES (gen_random_uuid(), $1, now())`, shared)
		require.NoError(t, err)
		for j, m := range []string{"a", "b"} {
			e := ev(fmt.Sprintf("s%d%s", i, m), event.MembershipCreated, t0, fmt.Sprintf("shared%d%s", i, m), "o1", event.RolePeerMentor)
			e.Member.Email = shared
			g.Go(func() error {
				_, err := s.Apply(ctx, e, store.Meta{StreamSeq: uint64(1000 + 2*i + j), Attempt: 1})
				return err
			})
		}
		require.NoError(t, g.Wait())
		var n int
		require.NoError(t, pool.QueryRow(ctx, `SELECT count(*) FROM profiles WHERE portal_member_id LIKE $1 AND auth_user_id IS NOT NULL`,
			fmt.Sprintf("shared%d_", i)).Scan(&n))
		require.LessOrEqual(t, n, 1, "both members sharing an e-mail linked")
	}
}
