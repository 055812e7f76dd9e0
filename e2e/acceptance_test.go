package e2e

import (
	"context"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"github.com/likeperson/portalsync/pkg/event"
	"github.com/likeperson/portalsync/pkg/stream"
)

// Criterion 1: a new member appears in the app under the right organization.
func TestNewMemberAppearsUnderOrganization(t *testing.T) {
	t.Parallel()
	sys := start(t)
	ctx := context.Background()
	e := sys.event("membership-created", "m-new", "org-oslo", "peer_mentor", base)

	sent := time.Now()
	sys.send(t, e)
	var org, status, role string
	require.Eventually(t, func() bool {
		err := sys.pool.QueryRow(ctx, `
			SELECT o.portal_org_id, m.status, r.role
			FROM profiles p
			JOIN organization_memberships m ON m.profile_id = p.id
			JOIN organizations o ON o.id = m.organization_id
			JOIN role_assignments r ON r.profile_id = p.id AND r.organization_id = o.id
			WHERE p.portal_member_id = 'm-new'`).Scan(&org, &status, &role)
		return err == nil
	}, 20*time.Second, time.Millisecond)
	latency := time.Since(sent)
	t.Logf("membership-created visible in PostgreSQL %s after the webhook was sent", latency)
	require.Equal(t, "org-oslo", org)
	require.Equal(t, "active", status)
	require.Equal(t, "peer_mentor", role)
	require.Equal(t, "success", sys.waitLogged(t, e.ID))
	var name string
	require.NoError(t, sys.pool.QueryRow(ctx, `SELECT name FROM organizations WHERE portal_org_id = 'org-oslo'`).Scan(&name))
	require.Equal(t, "HLF org-oslo", name)
}

// Criterion 2: a role change is what the member holds afterwards.
func TestRoleUpdated(t *testing.T) {
	t.Parallel()
	sys := start(t)
	sys.send(t, sys.event("membership-created", "m-role", "org-1", "peer_mentor", base))
	e := sys.event("role-updated", "m-role", "org-1", "coordinator", base.Add(time.Minute))
	sys.send(t, e)
	require.Equal(t, "success", sys.waitLogged(t, e.ID))
	var role string
	require.NoError(t, sys.pool.QueryRow(context.Background(), `
		SELECT r.role FROM role_assignments r JOIN profiles p ON p.id = r.profile_id
		WHERE p.portal_member_id = 'm-role'`).Scan(&role))
	require.Equal(t, "coordinator", role)
}

// Criterion 3: a deactivated member loses app access and shows as inactive
// to the coordinators of the organization.
func TestDeactivatedMemberLosesAccess(t *testing.T) {
	t.Parallel()
	sys := start(t)
	ctx := context.Background()
	memberUser := sys.addAuthUser(t, "m-deact@example.invalid")
	coordUser := sys.addAuthUser(t, "m-coord@example.invalid")
	_, err := sys.pool.Exec(ctx, `INSERT INTO auth.sessions (id, user_id) VALUES (gen_random_uuid(), $1), (gen_random_uuid(), $1)`, memberUser)
	require.NoError(t, err)

	sys.send(t, sys.event("membership-created", "m-coord", "org-1", "coordinator", base))
	created := sys.event("membership-created", "m-deact", "org-1", "peer_mentor", base)
	sys.send(t, created)
	require.Equal(t, "success", sys.waitLogged(t, created.ID))
	deact := sys.event("membership-deactivated", "m-deact", "org-1", "", base.Add(time.Hour))
	sys.send(t, deact)
	require.Equal(t, "success", sys.waitLogged(t, deact.ID))

	var profileStatus, membershipStatus string
	var deactivatedAt *time.Time
	require.NoError(t, sys.pool.QueryRow(ctx, `
		SELECT p.status, p.deactivated_at, m.status FROM profiles p JOIN organization_memberships m ON m.profile_id = p.id
		WHERE p.portal_member_id = 'm-deact'`).Scan(&profileStatus, &deactivatedAt, &membershipStatus))
	require.Equal(t, "inactive", profileStatus)
	require.Equal(t, "inactive", membershipStatus)
	require.NotNil(t, deactivatedAt)

	var banned *time.Time
	var sessions int
	require.NoError(t, sys.pool.QueryRow(ctx, `SELECT banned_until FROM auth.users WHERE id = $1`, memberUser).Scan(&banned))
	require.NotNil(t, banned)
	require.True(t, banned.After(time.Now()))
	require.NoError(t, sys.pool.QueryRow(ctx, `SELECT count(*) FROM auth.sessions WHERE user_id = $1`, memberUser).Scan(&sessions))
	require.Zero(t, sessions, "no session is left to refresh")

	// The coordinator still sees the member, as inactive.
	sys.asUser(t, coordUser, func(tx pgx.Tx) {
		got := queryStrings(t, tx, `
			SELECT p.portal_member_id || ':' || p.status || ':' || m.status
			FROM profiles p JOIN organization_memberships m ON m.profile_id = p.id
			JOIN organizations o ON o.id = m.organization_id
			WHERE o.portal_org_id = 'org-1' ORDER BY 1`)
		require.Equal(t, []string{"m-coord:active:active", "m-deact:inactive:inactive"}, got)
	})
	// The deactivated member, even with a still-valid token, reads nothing.
	sys.asUser(t, memberUser, func(tx pgx.Tx) {
		require.Empty(t, queryStrings(t, tx, `SELECT portal_member_id FROM profiles`))
		require.Empty(t, queryStrings(t, tx, `SELECT portal_org_id FROM organizations`))
	})
}

// Criterion 4: the sync log shows type, times and status, and an org admin
// reads their own organization's rows only.
func TestSyncLogVisibleToOwnOrgAdminOnly(t *testing.T) {
	t.Parallel()
	sys := start(t)
	adminA := sys.addAuthUser(t, "admin-a@example.invalid")
	adminB := sys.addAuthUser(t, "admin-b@example.invalid")
	mentorA := sys.addAuthUser(t, "mentor-a@example.invalid")
	coordB := sys.addAuthUser(t, "member-b@example.invalid")
	var last string
	var sent []string
	for _, e := range []evt{
		sys.event("membership-created", "admin-a", "org-a", "org_admin", base),
		sys.event("membership-created", "admin-b", "org-b", "org_admin", base),
		sys.event("membership-created", "mentor-a", "org-a", "peer_mentor", base),
		sys.event("membership-created", "member-b", "org-b", "peer_mentor", base),
		sys.event("role-updated", "member-b", "org-b", "coordinator", base.Add(time.Minute)),
	} {
		sys.send(t, e)
		last = e.ID
		sent = append(sent, e.ID)
	}
	sys.waitApplied(t, sent, 20*time.Second)

	var typ, status string
	var occurred, received, processed time.Time
	require.NoError(t, sys.pool.QueryRow(context.Background(), `
		SELECT event_type, status, occurred_at, received_at, processed_at FROM portal_sync_log WHERE event_id = $1`, last).
		Scan(&typ, &status, &occurred, &received, &processed))
	require.Equal(t, "role-updated", typ)
	require.Equal(t, "success", status)
	require.True(t, occurred.Equal(base.Add(time.Minute)))
	require.False(t, received.After(processed))

	logOf := func(user string) []string {
		var out []string
		sys.asUser(t, user, func(tx pgx.Tx) {
			out = queryStrings(t, tx, `SELECT portal_member_id || ':' || event_type || ':' || status
				FROM portal_sync_log ORDER BY 1`)
		})
		return out
	}
	require.Equal(t, []string{"admin-a:membership-created:success", "mentor-a:membership-created:success"}, logOf(adminA))
	require.Equal(t, []string{"admin-b:membership-created:success", "member-b:membership-created:success", "member-b:role-updated:success"}, logOf(adminB))
	require.Empty(t, logOf(mentorA), "a peer mentor reads no sync log")
	// member-b is org-b's coordinator now (the role-updated above): they
	// manage its members, yet read none of its sync log.
	sys.asUser(t, coordB, func(tx pgx.Tx) {
		require.Equal(t, []string{"coordinator"}, queryStrings(t, tx, `SELECT r.role::text FROM role_assignments r
			JOIN profiles p ON p.id = r.profile_id WHERE p.portal_member_id = 'member-b'`), "the coordinator is linked")
	})
	require.Empty(t, logOf(coordB), "a coordinator reads no sync log")
}

// Criterion 5: an event for a member the app does not know creates the
// member, and the log says so.
func TestUpdateForUnknownMemberCreatesIt(t *testing.T) {
	t.Parallel()
	sys := start(t)
	ctx := context.Background()
	e := sys.event("membership-updated", "m-unknown", "org-1", "", base)
	sys.send(t, e)
	require.Equal(t, "success", sys.waitLogged(t, e.ID))
	var detail string
	var created bool
	require.NoError(t, sys.pool.QueryRow(ctx, `SELECT detail, member_created FROM portal_sync_log WHERE event_id = $1`, e.ID).Scan(&detail, &created))
	require.True(t, created)
	require.Contains(t, detail, "member created")
	var status, membership string
	require.NoError(t, sys.pool.QueryRow(ctx, `
		SELECT p.status, m.status FROM profiles p JOIN organization_memberships m ON m.profile_id = p.id
		WHERE p.portal_member_id = 'm-unknown'`).Scan(&status, &membership))
	require.Equal(t, "active", status)
	require.Equal(t, "active", membership)
}

// A newer role-updated delivered before an older membership-created wins.
func TestNewerRoleBeforeOlderCreate(t *testing.T) {
	t.Parallel()
	sys := start(t)
	newer := sys.event("role-updated", "m-order", "org-1", "org_admin", base.Add(2*time.Minute))
	older := sys.event("membership-created", "m-order", "org-1", "peer_mentor", base)
	sys.send(t, newer)
	require.Equal(t, "success", sys.waitLogged(t, newer.ID))
	sys.send(t, older)
	require.Equal(t, "success", sys.waitLogged(t, older.ID))
	var role string
	require.NoError(t, sys.pool.QueryRow(context.Background(), `
		SELECT r.role FROM role_assignments r JOIN profiles p ON p.id = r.profile_id WHERE p.portal_member_id = 'm-order'`).Scan(&role))
	require.Equal(t, "org_admin", role)
}

// The same event stored twice in the stream (under another Nats-Msg-Id, so
// JetStream's duplicate window does not catch it) gives one log row: the
// database's idempotency, not JetStream's.
func TestSameEventTwiceOneLogRow(t *testing.T) {
	t.Parallel()
	sys := start(t)
	ctx := context.Background()
	e := sys.event("membership-created", "m-twice", "org-1", "peer_mentor", base)
	acc := sys.send(t, e)
	require.Equal(t, "success", sys.waitLogged(t, e.ID))

	js := sys.jetStream(t)
	s, err := js.Stream(ctx, "EVENTS")
	require.NoError(t, err)
	orig, err := s.GetMsg(ctx, acc.StreamSeq)
	require.NoError(t, err)
	again := nats.NewMsg(orig.Subject)
	again.Data = orig.Data
	again.Header = orig.Header
	again.Header.Set(jetstream.MsgIDHeader, e.ID+"-redelivered-by-portal")
	ack, err := js.PublishMsg(ctx, again)
	require.NoError(t, err)
	require.False(t, ack.Duplicate)

	// A marker event on the same member is processed after the copy.
	marker := sys.event("membership-updated", "m-twice", "org-1", "", base.Add(time.Minute))
	sys.send(t, marker)
	require.Equal(t, "success", sys.waitLogged(t, marker.ID))
	var n int
	require.NoError(t, sys.pool.QueryRow(ctx, `SELECT count(*) FROM portal_sync_log WHERE event_id = $1`, e.ID).Scan(&n))
	require.Equal(t, 1, n)
}

// An event with an unknown type is logged as skipped.
func TestUnknownTypeLoggedSkipped(t *testing.T) {
	t.Parallel()
	sys := start(t)
	e := sys.event("membership-merged", "m-skip", "org-1", "", base)
	sys.send(t, e)
	require.Equal(t, "skipped", sys.waitLogged(t, e.ID))
}

// A message that is not a valid event (here published straight to the
// stream, past the ingress) is logged failed once and not redelivered.
func TestInvalidPayloadLoggedFailed(t *testing.T) {
	t.Parallel()
	sys := start(t)
	ctx := context.Background()
	js := sys.jetStream(t)
	msg := nats.NewMsg(event.Subject("m-poison"))
	msg.Data = []byte(`{"id":"evt_poison","type":"membership-created"}`)
	msg.Header.Set(jetstream.MsgIDHeader, "evt_poison")
	msg.Header.Set(stream.HeaderEventType, "membership-created")
	msg.Header.Set(stream.HeaderMemberID, "m-poison")
	_, err := js.PublishMsg(ctx, msg)
	require.NoError(t, err)
	require.Equal(t, "failed", sys.waitLogged(t, "evt_poison"))

	// The consumer goes on with the next event.
	next := sys.event("membership-created", "m-after", "org-1", "peer_mentor", base)
	sys.send(t, next)
	require.Equal(t, "success", sys.waitLogged(t, next.ID))
	var n int
	var detail string
	require.NoError(t, sys.pool.QueryRow(ctx, `SELECT count(*), max(detail) FROM portal_sync_log WHERE event_id = 'evt_poison'`).Scan(&n, &detail))
	require.Equal(t, 1, n)
	require.Contains(t, detail, "invalid payload")
}
