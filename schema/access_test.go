package schema_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/likeperson/portalsync/testkit/schematest"
)

// accessFixture holds two organizations: in A an org admin, a coordinator,
// a peer mentor and a member whose only membership is inactive; in B an
// org admin. Each member's account is linked; each organization has one
// sync-log row per member. It returns the auth user ids by member.
func accessFixture(t *testing.T, pool *pgxpool.Pool) map[string]string {
	t.Helper()
	ctx := context.Background()
	members := []struct{ id, org, role, status string }{
		{"admin-a", "org-a", "org_admin", "active"},
		{"coord-a", "org-a", "coordinator", "active"},
		{"mentor-a", "org-a", "peer_mentor", "active"},
		{"gone-a", "org-a", "peer_mentor", "inactive"},
		{"admin-b", "org-b", "org_admin", "active"},
	}
	_, err := pool.Exec(ctx, `INSERT INTO organizations (portal_org_id, name) VALUES ('org-a', 'A'), ('org-b', 'B')`)
	require.NoError(t, err)
	users := map[string]string{}
	for i, m := range members {
		user := fmt.Sprintf("00000000-0000-4000-8000-%012d", i+1)
		users[m.id] = user
		// Unconfirmed: the account trigger links nothing; the link is
		// written below as link_members and apply_access leave it.
		_, err := pool.Exec(ctx, `INSERT INTO auth.users (id, email) VALUES ($1, $2)`, user, m.id+"@example.invalid")
		require.NoError(t, err)
		_, err = pool.Exec(ctx, `
			WITH p AS (INSERT INTO profiles (portal_member_id, auth_user_id, status) VALUES ($1, $2, $4) RETURNING id),
			o AS (SELECT id FROM organizations WHERE portal_org_id = $3),
			ms AS (INSERT INTO organization_memberships (profile_id, organization_id, status, portal_updated_at)
			       SELECT p.id, o.id, $4, now() FROM p, o RETURNING profile_id, organization_id),
			r AS (INSERT INTO role_assignments (profile_id, organization_id, role, portal_updated_at, portal_event_id)
			      SELECT profile_id, organization_id, $5, now(), 'e-' || $1 FROM ms)
			INSERT INTO portal_sync_log (event_id, event_type, portal_member_id, portal_org_id, organization_id, status)
			SELECT 'e-' || $1, 'membership-created', $1, $3, o.id, 'success' FROM o`,
			m.id, user, m.org, m.status, m.role)
		require.NoError(t, err)
		_, err = pool.Exec(ctx, `INSERT INTO portalsync.account_links (portal_member_id, auth_user_id) VALUES ($1, $2)`, m.id, user)
		require.NoError(t, err)
	}
	return users
}

func readStrings(t *testing.T, tx pgx.Tx, sql string) []string {
	t.Helper()
	rows, err := tx.Query(context.Background(), sql)
	require.NoError(t, err)
	out, err := pgx.CollectRows(rows, pgx.RowTo[string])
	require.NoError(t, err)
	if len(out) == 0 {
		return nil // compared with a nil want
	}
	return out
}

// TestRowLevelSecurity reads every contract table as each kind of member
// through the policies of schema/current/3_access.sql, on plain
// PostgreSQL: a member reads their own organization, profile, membership
// and role; coordinators and org admins read all of their organizations'
// members, inactive ones included; only an org admin reads the sync log,
// of their own organizations; a member without an active membership reads
// nothing; nobody authenticated writes.
func TestRowLevelSecurity(t *testing.T) {
	t.Parallel()
	db := schematest.NewDB(t)
	users := accessFixture(t, db.Pool)
	allA := []string{"admin-a", "coord-a", "gone-a", "mentor-a"}

	for _, tc := range []struct {
		member                     string
		orgs, profiles, roles, log []string
	}{
		{"admin-a", []string{"org-a"}, allA, allA, allA},
		{"coord-a", []string{"org-a"}, allA, allA, nil},
		{"mentor-a", []string{"org-a"}, []string{"mentor-a"}, []string{"mentor-a"}, nil},
		{"gone-a", nil, nil, nil, nil},
		{"admin-b", []string{"org-b"}, []string{"admin-b"}, []string{"admin-b"}, []string{"admin-b"}},
	} {
		t.Run(tc.member, func(t *testing.T) {
			schematest.AsAuthenticated(t, db.Pool, users[tc.member], func(tx pgx.Tx) {
				require.Equal(t, tc.orgs, readStrings(t, tx, `SELECT portal_org_id FROM organizations ORDER BY 1`), "organizations")
				require.Equal(t, tc.profiles, readStrings(t, tx, `SELECT portal_member_id FROM profiles ORDER BY 1`), "profiles")
				require.Equal(t, tc.profiles, readStrings(t, tx, `SELECT p.portal_member_id FROM organization_memberships m
					JOIN profiles p ON p.id = m.profile_id ORDER BY 1`), "memberships")
				require.Equal(t, tc.roles, readStrings(t, tx, `SELECT p.portal_member_id FROM role_assignments r
					JOIN profiles p ON p.id = r.profile_id ORDER BY 1`), "roles")
				require.Equal(t, tc.log, readStrings(t, tx, `SELECT portal_member_id FROM portal_sync_log ORDER BY 1`), "sync log")
			})
		})
	}

	t.Run("NoWrites", func(t *testing.T) {
		for _, stmt := range []string{
			`UPDATE profiles SET first_name = 'x'`,
			`INSERT INTO organizations (portal_org_id) VALUES ('org-c')`,
			`DELETE FROM portal_sync_log`,
			`UPDATE role_assignments SET role = 'org_admin'`,
			`SELECT * FROM portalsync.apply_access(ARRAY['mentor-a'])`,
		} {
			schematest.AsAuthenticated(t, db.Pool, users["admin-a"], func(tx pgx.Tx) {
				_, err := tx.Exec(context.Background(), stmt)
				require.ErrorContains(t, err, "permission denied", stmt)
			})
		}
	})
}

// TestApplyAccess: apply_access derives a member's profile status from
// their memberships, bans the linked account of a member left with no
// active membership (marking the ban as the sync's) and ends its sessions,
// lifts only the sync's own ban on reactivation, and changes nothing when
// called again.
func TestApplyAccess(t *testing.T) {
	t.Parallel()
	db := schematest.NewDB(t)
	ctx := context.Background()
	users := accessFixture(t, db.Pool)
	user := users["mentor-a"]
	_, err := db.Pool.Exec(ctx, `INSERT INTO auth.sessions (id, user_id) VALUES (gen_random_uuid(), $1)`, user)
	require.NoError(t, err)

	apply := func(members ...string) []string {
		t.Helper()
		rows, err := db.Pool.Query(ctx, `SELECT portal_member_id || ':' || change FROM portalsync.apply_access($1) ORDER BY 1`, members)
		require.NoError(t, err)
		out, err := pgx.CollectRows(rows, pgx.RowTo[string])
		require.NoError(t, err)
		if len(out) == 0 {
			return nil
		}
		return out
	}
	type state struct {
		Status           string
		Deactivated      bool
		Banned           bool
		ProfileBySync    bool
		LinkBySync       bool
		Sessions         int
		ProfileLinksUser bool
	}
	stateOf := func(member string) state {
		t.Helper()
		var s state
		require.NoError(t, db.Pool.QueryRow(ctx, `
			SELECT p.status, p.deactivated_at IS NOT NULL, coalesce(u.banned_until > now(), false), p.auth_banned_by_sync, l.banned_by_sync,
			       (SELECT count(*) FROM auth.sessions s WHERE s.user_id = u.id), p.auth_user_id = u.id
			FROM profiles p JOIN portalsync.account_links l USING (portal_member_id) JOIN auth.users u ON u.id = l.auth_user_id
			WHERE p.portal_member_id = $1`, member).
			Scan(&s.Status, &s.Deactivated, &s.Banned, &s.ProfileBySync, &s.LinkBySync, &s.Sessions, &s.ProfileLinksUser))
		return s
	}
	setMembership := func(member, status string) {
		t.Helper()
		var at any
		if status == "inactive" {
			at = time.Date(2026, 11, 25, 10, 0, 0, 0, time.UTC)
		}
		_, err := db.Pool.Exec(ctx, `UPDATE organization_memberships m SET status = $2, deactivated_at = $3
			FROM profiles p WHERE p.id = m.profile_id AND p.portal_member_id = $1`, member, status, at)
		require.NoError(t, err)
	}

	require.Empty(t, apply("mentor-a", "coord-a"), "nothing to change")
	require.Equal(t, state{Status: "active", Sessions: 1, ProfileLinksUser: true}, stateOf("mentor-a"))

	setMembership("mentor-a", "inactive")
	require.Equal(t, []string{"mentor-a:revoked"}, apply("mentor-a", "coord-a"))
	require.Equal(t, state{Status: "inactive", Deactivated: true, Banned: true, ProfileBySync: true, LinkBySync: true, ProfileLinksUser: true},
		stateOf("mentor-a"), "banned by the sync, sessions ended")
	require.Equal(t, state{Status: "active", ProfileLinksUser: true}, stateOf("coord-a"), "another member untouched")
	require.Empty(t, apply("mentor-a"), "banned once")

	setMembership("mentor-a", "active")
	require.Equal(t, []string{"mentor-a:restored"}, apply("mentor-a"))
	require.Equal(t, state{Status: "active", ProfileLinksUser: true}, stateOf("mentor-a"), "the sync's ban lifted")

	// An administrator's own ban on an active member is not the sync's to
	// lift.
	_, err = db.Pool.Exec(ctx, `UPDATE auth.users SET banned_until = now() + interval '1 day' WHERE id = $1`, users["coord-a"])
	require.NoError(t, err)
	require.Empty(t, apply("coord-a"))
	require.Equal(t, state{Status: "active", Banned: true, ProfileLinksUser: true}, stateOf("coord-a"))
}
