package e2e

import (
	"context"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"
)

// TestMembershipWithoutRole: an event that puts a member in an
// organization without a role is logged saying so; the organization's
// coordinator sees the member and the membership (with no role row); the
// member reads their own profile, membership and the organization, but
// gets no role for it in their token, so no role-based access there.
func TestMembershipWithoutRole(t *testing.T) {
	t.Parallel()
	sys := start(t)
	ctx := context.Background()
	coordUser := sys.addAuthUser(t, "nr-coord@example.invalid")
	memberUser := sys.addAuthUser(t, "nr-member@example.invalid")
	coord := sys.event("membership-created", "nr-coord", "nr-org", "coordinator", base)
	sys.send(t, coord)
	require.Equal(t, "success", sys.waitLogged(t, coord.ID))
	noRole := sys.event("membership-updated", "nr-member", "nr-org", "", base)
	sys.send(t, noRole)
	require.Equal(t, "success", sys.waitLogged(t, noRole.ID))
	var detail string
	require.NoError(t, sys.pool.QueryRow(ctx, `SELECT detail FROM portal_sync_log WHERE event_id = $1`, noRole.ID).Scan(&detail))
	require.Contains(t, detail, "the member has no role in organization nr-org yet")

	sys.asUser(t, coordUser, func(tx pgx.Tx) {
		require.Contains(t, queryStrings(t, tx, `SELECT portal_member_id FROM profiles`), "nr-member", "the coordinator sees the member")
		require.Contains(t, queryStrings(t, tx, `SELECT p.portal_member_id || ':' || m.status FROM organization_memberships m
			JOIN profiles p ON p.id = m.profile_id`), "nr-member:active")
		require.Empty(t, queryStrings(t, tx, `SELECT r.role FROM role_assignments r JOIN profiles p ON p.id = r.profile_id
			WHERE p.portal_member_id = 'nr-member'`))
	})
	sys.asUser(t, memberUser, func(tx pgx.Tx) {
		require.Equal(t, []string{"nr-member"}, queryStrings(t, tx, `SELECT portal_member_id FROM profiles`))
		require.Equal(t, []string{"nr-org"}, queryStrings(t, tx, `SELECT portal_org_id FROM organizations`))
		require.Empty(t, queryStrings(t, tx, `SELECT role FROM role_assignments`))
	})
	var claims string
	require.NoError(t, sys.pool.QueryRow(ctx, `SELECT public.custom_access_token_hook(jsonb_build_object('user_id', $1::text, 'claims', '{}'::jsonb)) -> 'claims' ->> 'org_roles'`,
		memberUser).Scan(&claims))
	require.Equal(t, "[]", claims, "no role in the token")
}
