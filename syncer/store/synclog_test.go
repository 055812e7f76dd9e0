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

// eraseByCommand applies the member-deleted event `syncer erase` applies
// (erase.Database), under the given event id: now, source erase-command.
func eraseByCommand(ctx context.Context, s *store.Store, member, eventID string) (store.Result, error) {
	now := time.Now()
	return s.Apply(ctx, &event.Event{ID: eventID, Type: event.MemberDeleted, OccurredAt: now.UTC().Truncate(time.Microsecond),
		Member: event.Member{ID: member}}, store.Meta{Attempt: 1, ReceivedAt: now, Source: stream.SourceEraseCommand})
}

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

	_, err = eraseByCommand(ctx, s, "m1", "erase-1")
	require.NoError(t, err)
	for _, src := range logSource(t, pool, "erase-1") {
		require.Equal(t, stream.SourceEraseCommand, src)
	}
}

// logChanges is the changes column of an event's success or skipped row,
// "" for NULL.
func logChanges(t *testing.T, pool *pgxpool.Pool, eventID string) string {
	t.Helper()
	var c *string
	require.NoError(t, pool.QueryRow(context.Background(),
		`SELECT changes::text FROM portal_sync_log WHERE event_id = $1 AND status <> 'failed'`, eventID).Scan(&c))
	if c == nil {
		return ""
	}
	return *c
}

// A log row says what its event changed: the role and the membership's
// status before and after, the names of the profile fields whose value
// changed (never a value); {} when it applied nothing new; NULL when it
// was skipped.
func TestLogChanges(t *testing.T) {
	t.Parallel()
	s, pool := setup(t)

	apply(t, s, ev("c-1", event.MembershipCreated, t0, "m1", "o1", event.RolePeerMentor))
	require.JSONEq(t, `{"role": {"old": null, "new": "peer_mentor"}, "status": {"old": null, "new": "active"},
		"profile_fields": ["email", "first_name", "last_name", "phone"]}`, logChanges(t, pool, "c-1"))

	apply(t, s, ev("c-2", event.RoleUpdated, t0.Add(time.Minute), "m1", "o1", event.RoleCoordinator))
	require.JSONEq(t, `{"role": {"old": "peer_mentor", "new": "coordinator"}}`, logChanges(t, pool, "c-2"))

	up := ev("c-3", event.MembershipUpdated, t0.Add(2*time.Minute), "m1", "o1", "")
	up.Member.FirstName = "F-c-1" // unchanged
	up.Member.Phone = "+47 9999"
	apply(t, s, up)
	require.JSONEq(t, `{"profile_fields": ["phone"]}`, logChanges(t, pool, "c-3"))
	require.NotContains(t, logChanges(t, pool, "c-3"), "9999", "never a value")

	apply(t, s, ev("c-4", event.MembershipDeactivated, t0.Add(3*time.Minute), "m1", "o1", ""))
	require.JSONEq(t, `{"status": {"old": "active", "new": "inactive"}}`, logChanges(t, pool, "c-4"))

	// Older than what the tables hold: skipped, nothing changed.
	require.Equal(t, store.StatusSkipped, apply(t, s, ev("c-5", event.RoleUpdated, t0, "m1", "o1", event.RoleOrgAdmin)).Status)
	require.Empty(t, logChanges(t, pool, "c-5"))

	// Two events of one batch on one role: the change is the newer's, from
	// the role before the batch.
	_, err := s.ApplyBatch(context.Background(), items(
		ev("c-6", event.RoleUpdated, t0.Add(4*time.Minute), "m1", "o1", event.RoleOrgAdmin),
		ev("c-7", event.RoleUpdated, t0.Add(5*time.Minute), "m1", "o1", event.RolePeerMentor)))
	require.NoError(t, err)
	require.Empty(t, logChanges(t, pool, "c-6"), "superseded in the batch: skipped")
	require.JSONEq(t, `{"role": {"old": "coordinator", "new": "peer_mentor"}}`, logChanges(t, pool, "c-7"))
}

// An erasure is logged, without the member's id, in every organization
// the member had a membership in (besides its own row, which names none),
// with its source; the member's earlier rows carry the hash too.
func TestErasureLoggedPerOrganization(t *testing.T) {
	t.Parallel()
	s, pool := setup(t)
	ctx := context.Background()
	apply(t, s, ev("e-1", event.MembershipCreated, t0, "m1", "o1", event.RolePeerMentor))
	apply(t, s, ev("e-2", event.MembershipCreated, t0, "m1", "o2", event.RoleCoordinator))
	apply(t, s, ev("e-3", event.MembershipCreated, t0, "m2", "o3", event.RoleCoordinator))

	res, err := eraseByCommand(ctx, s, "m1", "erase-m1")
	require.NoError(t, err)
	require.Equal(t, store.StatusSuccess, res.Status)

	rows, err := pool.Query(ctx, `SELECT l.event_id, coalesce(l.portal_org_id, ''), coalesce(o.portal_org_id, ''),
		l.portal_member_id, l.status, coalesce(l.source, ''), l.changes IS NULL
		FROM portal_sync_log l LEFT JOIN organizations o ON o.id = l.organization_id
		WHERE l.event_type = 'member-deleted' ORDER BY l.event_id`)
	require.NoError(t, err)
	type row struct {
		id, porg, org, member, status, source string
		noChanges                             bool
	}
	var got []row
	for rows.Next() {
		var r row
		require.NoError(t, rows.Scan(&r.id, &r.porg, &r.org, &r.member, &r.status, &r.source, &r.noChanges))
		got = append(got, r)
	}
	require.NoError(t, rows.Err())
	hash := store.MemberHash("m1")
	require.Equal(t, []row{
		{"erase-m1", "", "", hash, "success", stream.SourceEraseCommand, true},
		{"erase-m1:o1", "o1", "o1", hash, "success", stream.SourceEraseCommand, true},
		{"erase-m1:o2", "o2", "o2", hash, "success", stream.SourceEraseCommand, true},
	}, got)

	// The same erasure again: done, no further rows.
	res, err = eraseByCommand(ctx, s, "m1", "erase-m1")
	require.NoError(t, err)
	require.True(t, res.AlreadyDone)
	var n int
	require.NoError(t, pool.QueryRow(ctx, `SELECT count(*) FROM portal_sync_log WHERE event_type = 'member-deleted'`).Scan(&n))
	require.Equal(t, 3, n)
	require.NoError(t, pool.QueryRow(ctx, `SELECT count(*) FROM portal_sync_log WHERE portal_member_id = 'm1'`).Scan(&n))
	require.Zero(t, n, "no row names the member")
}

// A failure logged after its member was erased (a refused Dataverse change
// to the deleted contact, a poison message) names the member by the
// erasure's hash, in the member column and in the detail, as erasure
// left the member's earlier rows: the id never comes back into the log.
// Found by the attack pass of issue 21.
func TestFailureAfterErasureKeepsTheMemberErased(t *testing.T) {
	t.Parallel()
	s, pool := setup(t)
	ctx := context.Background()
	const member = "5f0c1e2a-7b3d-4c8e-9a1f-2d3e4f5a6b7c"
	_, err := s.ApplyBatch(ctx, []store.Item{{Event: ev("fe-1", event.MembershipCreated, t0, member, "o1", event.RolePeerMentor),
		Meta: store.Meta{StreamSeq: 1, Attempt: 1, ReceivedAt: time.Now()}}})
	require.NoError(t, err)
	_, err = eraseByCommand(ctx, s, member, "fe-erase")
	require.NoError(t, err)

	require.NoError(t, s.LogFailure(ctx, store.Failure{EventID: "fe-2", EventType: "change-refused", MemberID: member, OrgID: "o1",
		Reason: "update of contact " + member + ": invalid-event"}, store.Meta{StreamSeq: 2, Attempt: 1, ReceivedAt: time.Now()}))
	var gotMember, detail string
	require.NoError(t, pool.QueryRow(ctx, `SELECT portal_member_id, detail FROM portal_sync_log WHERE event_id = 'fe-2'`).Scan(&gotMember, &detail))
	require.Equal(t, store.MemberHash(member), gotMember)
	require.NotContains(t, detail, member)
	require.Contains(t, detail, store.MemberHash(member))

	// A member never erased keeps its id.
	require.NoError(t, s.LogFailure(ctx, store.Failure{EventID: "fe-3", EventType: "change-refused", MemberID: "m-kept", OrgID: "o1",
		Reason: "update of contact m-kept: invalid-event"}, store.Meta{StreamSeq: 3, Attempt: 1, ReceivedAt: time.Now()}))
	require.NoError(t, pool.QueryRow(ctx, `SELECT portal_member_id, detail FROM portal_sync_log WHERE event_id = 'fe-3'`).Scan(&gotMember, &detail))
	require.Equal(t, "m-kept", gotMember)
	require.Equal(t, "update of contact m-kept: invalid-event", detail)
}
