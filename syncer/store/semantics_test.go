package store_test

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/likeperson/portalsync/pkg/event"
	"github.com/likeperson/portalsync/syncer/store"
)

// TestPartialUpdateKeepsOtherFields: a membership-updated carrying only the
// member ID and a new phone changes the phone and nothing else; an explicit
// null clears a field.
func TestPartialUpdateKeepsOtherFields(t *testing.T) {
	t.Parallel()
	s, pool := setup(t)
	apply(t, s, ev("e1", event.MembershipCreated, t0, "m1", "o1", event.RolePeerMentor))
	before := profileFields(t, pool, "m1")
	require.Equal(t, "F-e1", before["first_name"])

	res := apply(t, s, &event.Event{ID: "e2", Type: event.MembershipUpdated, OccurredAt: t0.Add(time.Minute),
		Organization: event.Organization{ID: "o1"}, Member: event.Member{ID: "m1", Phone: "+47 999"}})
	require.Equal(t, store.StatusSuccess, res.Status)
	after := profileFields(t, pool, "m1")
	require.Equal(t, "+47 999", after["phone"])
	for _, f := range []string{"email", "first_name", "last_name"} {
		require.Equal(t, before[f], after[f], f)
	}
	require.Equal(t, "peer_mentor", memberState(t, pool, "m1").Roles["o1"], "the role is left as it is")

	// null clears, absent keeps.
	apply(t, s, &event.Event{ID: "e3", Type: event.MembershipUpdated, OccurredAt: t0.Add(2 * time.Minute),
		Organization: event.Organization{ID: "o1"}, Member: event.Member{ID: "m1", Cleared: event.Fields(0).With(event.FieldLastName)}})
	after = profileFields(t, pool, "m1")
	require.Equal(t, "", after["last_name"])
	require.Equal(t, before["email"], after["email"])

	// An older partial update of another field still lands: fields are
	// ordered one by one.
	res = apply(t, s, &event.Event{ID: "e0", Type: event.MembershipUpdated, OccurredAt: t0.Add(90 * time.Second),
		Organization: event.Organization{ID: "o1"}, Member: event.Member{ID: "m1", Email: "new@example.invalid", LastName: "Old"}})
	after = profileFields(t, pool, "m1")
	require.Equal(t, "new@example.invalid", after["email"])
	require.Equal(t, "", after["last_name"], "the newer null wins")
	require.Equal(t, store.StatusSuccess, res.Status)
	require.Contains(t, res.Detail, "partly applied: email applied; superseded by e3 (last_name)")

	// The organization's name is a patch too: absent keeps it, null clears.
	var name string
	require.NoError(t, pool.QueryRow(context.Background(), `SELECT name FROM organizations WHERE portal_org_id = 'o1'`).Scan(&name))
	require.Equal(t, "Org o1", name)
	apply(t, s, &event.Event{ID: "e4", Type: event.MembershipUpdated, OccurredAt: t0.Add(3 * time.Minute),
		Organization: event.Organization{ID: "o1", NameCleared: true}, Member: event.Member{ID: "m1"}})
	require.NoError(t, pool.QueryRow(context.Background(), `SELECT name FROM organizations WHERE portal_org_id = 'o1'`).Scan(&name))
	require.Equal(t, "", name)
}

// TestFutureEventFailedNeverApplied: a deactivation dated 2099 is logged
// failed with the reason and changes nothing, so later real events apply.
func TestFutureEventFailedNeverApplied(t *testing.T) {
	t.Parallel()
	s, pool := setup(t)
	ctx := context.Background()
	now := time.Now().UTC().Truncate(time.Second)
	apply(t, s, ev("e1", event.MembershipCreated, now.Add(-time.Hour), "m1", "o1", event.RolePeerMentor))
	future := ev("e2", event.MembershipDeactivated, time.Date(2099, 1, 1, 0, 0, 0, 0, time.UTC), "m1", "o1", "")
	res, err := s.Apply(ctx, future, store.Meta{StreamSeq: 2, Attempt: 1})
	require.NoError(t, err)
	require.Equal(t, store.StatusFailed, res.Status)
	require.Contains(t, res.Detail, "occurred_at")
	require.Equal(t, "active", memberState(t, pool, "m1").ProfileStatus)
	require.Equal(t, []string{"failed"}, logRows(t, pool, "e2"))
	var detail string
	var org *string
	require.NoError(t, pool.QueryRow(ctx, `SELECT detail, organization_id::text FROM portal_sync_log WHERE event_id = 'e2'`).Scan(&detail, &org))
	require.Contains(t, detail, "ahead")
	require.NotNil(t, org, "the failed row carries the organization")

	// Delivered again (the acknowledgement was lost): still one failed row.
	_, err = s.Apply(ctx, future, store.Meta{StreamSeq: 2, Attempt: 2})
	require.NoError(t, err)
	require.Equal(t, []string{"failed"}, logRows(t, pool, "e2"))

	// In a batch, it fails alone; the real deactivation applies.
	results, err := s.ApplyBatch(ctx, []store.Item{
		{Event: ev("e3", event.MembershipDeactivated, time.Date(2099, 2, 1, 0, 0, 0, 0, time.UTC), "m1", "o1", ""), Meta: store.Meta{StreamSeq: 3, Attempt: 1}},
		{Event: ev("e4", event.MembershipDeactivated, now, "m1", "o1", ""), Meta: store.Meta{StreamSeq: 4, Attempt: 1}},
	})
	require.NoError(t, err)
	require.Equal(t, store.StatusFailed, results[0].Status)
	require.Equal(t, store.StatusSuccess, results[1].Status)
	require.Equal(t, "inactive", memberState(t, pool, "m1").ProfileStatus)
}

// TestSupersededEventSkipped: a late, older deactivation that changes
// nothing is skipped, naming the newer event, and its row carries the
// organization so the org admin sees it.
func TestSupersededEventSkipped(t *testing.T) {
	t.Parallel()
	s, pool := setup(t)
	ctx := context.Background()
	apply(t, s, ev("e1", event.MembershipCreated, t0, "m1", "o1", event.RolePeerMentor))
	apply(t, s, ev("e3", event.MembershipReactivated, t0.Add(2*time.Minute), "m1", "o1", ""))
	res := apply(t, s, ev("e2", event.MembershipDeactivated, t0.Add(time.Minute), "m1", "o1", ""))
	require.Equal(t, store.StatusSkipped, res.Status)
	require.Equal(t, "superseded by e3 (status)", res.Detail)
	require.Equal(t, "active", memberState(t, pool, "m1").ProfileStatus)
	var status, detail string
	var org *string
	require.NoError(t, pool.QueryRow(ctx, `SELECT status, detail, organization_id::text FROM portal_sync_log WHERE event_id = 'e2'`).Scan(&status, &detail, &org))
	require.Equal(t, "skipped", status)
	require.Equal(t, "superseded by e3 (status)", detail)
	require.NotNil(t, org, "a skipped row names the organization")
	require.True(t, apply(t, s, ev("e2", event.MembershipDeactivated, t0.Add(time.Minute), "m1", "o1", "")).AlreadyDone)

	// Superseded inside one batch: the older event is skipped too.
	results, err := s.ApplyBatch(ctx, items(
		ev("r2", event.RoleUpdated, t0.Add(5*time.Minute), "m1", "o1", event.RoleOrgAdmin),
		ev("r1", event.RoleUpdated, t0.Add(4*time.Minute), "m1", "o1", event.RoleCoordinator),
	))
	require.NoError(t, err)
	require.Equal(t, store.StatusSuccess, results[0].Status)
	require.Equal(t, store.StatusSkipped, results[1].Status)
	require.Equal(t, "superseded by r2 (role)", results[1].Detail)

	// Partly superseded: success, saying what was and was not applied.
	res = apply(t, s, ev("c0", event.MembershipCreated, t0.Add(3*time.Minute), "m1", "o1", event.RolePeerMentor))
	require.Equal(t, store.StatusSuccess, res.Status)
	require.Contains(t, res.Detail, "partly applied")
	require.Contains(t, res.Detail, "status applied")
	require.Contains(t, res.Detail, "superseded by r2 (role)")

	// An unknown type names its organization too.
	res = apply(t, s, &event.Event{ID: "u1", Type: "membership-merged", OccurredAt: t0, Member: event.Member{ID: "m1"}, Organization: event.Organization{ID: "o1"}})
	require.Equal(t, store.StatusSkipped, res.Status)
	require.NoError(t, pool.QueryRow(ctx, `SELECT organization_id::text FROM portal_sync_log WHERE event_id = 'u1'`).Scan(&org))
	require.NotNil(t, org)
}

// TestMembershipWithoutRoleSaysSo: an event that leaves the member in an
// organization with no role says so in the log.
func TestMembershipWithoutRoleSaysSo(t *testing.T) {
	t.Parallel()
	s, pool := setup(t)
	res := apply(t, s, ev("e1", event.MembershipUpdated, t0, "m1", "o1", ""))
	require.Equal(t, store.StatusSuccess, res.Status)
	require.Contains(t, res.Detail, "the member has no role in organization o1 yet")
	require.Equal(t, "active", memberState(t, pool, "m1").Memberships["o1"])
	res = apply(t, s, ev("e2", event.RoleUpdated, t0.Add(time.Minute), "m1", "o1", event.RoleCoordinator))
	require.NotContains(t, res.Detail, "no role")
}

// TestFutureEventLeavesOrganizationAlone: an event refused for its date
// changes nothing, its organization's name included (which is written
// before the batch's transaction): a name stamped in 2099 would win over
// every real rename until repaired.
func TestFutureEventLeavesOrganizationAlone(t *testing.T) {
	t.Parallel()
	s, pool := setup(t)
	ctx := context.Background()
	now := time.Now().UTC().Truncate(time.Second)
	apply(t, s, ev("e1", event.MembershipCreated, now.Add(-time.Hour), "m1", "o1", event.RolePeerMentor))
	future := ev("e2", event.MembershipUpdated, time.Date(2099, 1, 1, 0, 0, 0, 0, time.UTC), "m1", "o1", "")
	future.Organization.Name = "From the future"
	future2 := ev("e3", event.MembershipUpdated, time.Date(2099, 1, 1, 0, 0, 0, 0, time.UTC), "m2", "o-future", "")
	res, err := s.ApplyBatch(ctx, items(future, future2))
	require.NoError(t, err)
	require.Equal(t, store.StatusFailed, res[0].Status)
	var name string
	require.NoError(t, pool.QueryRow(ctx, `SELECT name FROM organizations WHERE portal_org_id = 'o1'`).Scan(&name))
	require.Equal(t, "Org o1", name)
	var n int
	require.NoError(t, pool.QueryRow(ctx, `SELECT count(*) FROM organizations WHERE portal_org_id = 'o-future' OR portal_updated_at > now()`).Scan(&n))
	require.Zero(t, n)
}
