package main

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/likeperson/portalsync/pkg/event"
)

// TestRepairFutureTimes: a deactivation dated 2099, applied before such
// events were refused, froze a member inactive; `repair --future-times`
// resets the stamp and replays the member, whose real events then win.
func TestRepairFutureTimes(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	b := setupCLI(t)
	db := b.db
	publish := func(ev event.Event) { b.publish(t, ev) }
	org := event.Organization{ID: "o1"}
	created := time.Now().UTC().Add(-time.Hour).Truncate(time.Second)
	publish(event.Event{ID: "e1", Type: event.MembershipCreated, OccurredAt: created, Organization: org, Member: event.Member{ID: "m1"}, Role: event.RolePeerMentor})
	publish(event.Event{ID: "e2", Type: event.MembershipDeactivated, OccurredAt: time.Date(2099, 1, 1, 0, 0, 0, 0, time.UTC), Organization: org, Member: event.Member{ID: "m1"}})
	publish(event.Event{ID: "e3", Type: event.MembershipCreated, OccurredAt: created, Organization: org, Member: event.Member{ID: "m2"}, Role: event.RolePeerMentor})
	b.mustRun(t, "replay", "--all")
	status := func(member string) (profile, membership string) {
		require.NoError(t, db.Pool.QueryRow(ctx, `SELECT p.status, m.status FROM profiles p JOIN organization_memberships m ON m.profile_id = p.id
			WHERE p.portal_member_id = $1`, member).Scan(&profile, &membership))
		return
	}
	p, m := status("m1")
	require.Equal(t, "active", p, "the future deactivation is refused now")
	require.Equal(t, "active", m)

	// What the old code left behind: the 2099 deactivation applied.
	_, err := db.Pool.Exec(ctx, `UPDATE organization_memberships SET status = 'inactive', deactivated_at = '2099-01-01Z',
		status_portal_at = '2099-01-01Z', status_event_id = 'e2', portal_updated_at = '2099-01-01Z'
		WHERE profile_id = (SELECT id FROM profiles WHERE portal_member_id = 'm1')`)
	require.NoError(t, err)
	_, err = db.Pool.Exec(ctx, `UPDATE profiles SET status = 'inactive', deactivated_at = '2099-01-01Z' WHERE portal_member_id = 'm1'`)
	require.NoError(t, err)

	out := b.mustRun(t, "repair", "--future-times", "--dry-run")
	require.Contains(t, out, "public.organization_memberships: would reset future portal times in 1 rows")
	require.Contains(t, out, "members concerned: 1")
	p, _ = status("m1")
	require.Equal(t, "inactive", p, "a dry run writes nothing")

	out = b.mustRun(t, "repair", "--future-times")
	require.Contains(t, out, "public.organization_memberships: reset future portal times in 1 rows")
	require.Contains(t, out, "replayed member m1: read 2, applied 1, skipped 0, refused or invalid 1")
	p, m = status("m1")
	require.Equal(t, "active", p)
	require.Equal(t, "active", m)
	var future int
	require.NoError(t, db.Pool.QueryRow(ctx, `SELECT count(*) FROM organization_memberships WHERE status_portal_at > now() OR portal_updated_at > now()`).Scan(&future))
	require.Zero(t, future)

	// Nothing left to repair; m2 was never touched.
	out = b.mustRun(t, "repair", "--future-times")
	require.Contains(t, out, "members concerned: 0")
	p, _ = status("m2")
	require.Equal(t, "active", p)
}
