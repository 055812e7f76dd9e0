package eventmodel_test

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/likeperson/portalsync/pkg/event"
	"github.com/likeperson/portalsync/testkit/eventmodel"
)

func TestExpect(t *testing.T) {
	t.Parallel()
	t0 := time.Date(2026, 11, 25, 10, 0, 0, 0, time.UTC)
	ev := func(id string, typ event.Type, min int, org string, role event.Role) event.Event {
		return event.Event{ID: id, Type: typ, OccurredAt: t0.Add(time.Duration(min) * time.Minute),
			Organization: event.Organization{ID: org}, Member: event.Member{ID: "m", FirstName: id}, Role: role}
	}
	got := eventmodel.Expect([]event.Event{
		ev("e3", event.MembershipDeactivated, 3, "o1", ""),
		ev("e1", event.MembershipCreated, 1, "o1", event.RolePeerMentor),
		ev("e2", event.RoleUpdated, 2, "o1", event.RoleCoordinator),
		ev("e2", event.RoleUpdated, 2, "o1", event.RoleCoordinator), // duplicate
		ev("e4", event.MembershipUpdated, 0, "o2", ""),              // older, other org, no status
		ev("e5", "membership-merged", 9, "o3", ""),                  // unknown: ignored
	})
	require.Equal(t, map[string]eventmodel.Member{"m": {
		Status: "active", FirstName: "e1", HasSnapshot: true, Fields: map[string]string{"first_name": "e1"},
		Memberships: map[string]eventmodel.Membership{
			"o1": {Status: "inactive", Role: "coordinator"},
			"o2": {Status: "active"},
		},
	}}, got)

	// Same time: the larger id wins.
	got = eventmodel.Expect([]event.Event{
		ev("b", event.MembershipDeactivated, 1, "o1", ""),
		ev("a", event.MembershipReactivated, 1, "o1", ""),
	})
	require.Equal(t, "inactive", got["m"].Status)
}

// TestExpectMergePatch: each field is that of the newest created or
// updated event that carries it; null clears; absent leaves it.
func TestExpectMergePatch(t *testing.T) {
	t.Parallel()
	t0 := time.Date(2026, 11, 25, 10, 0, 0, 0, time.UTC)
	at := func(min int) time.Time { return t0.Add(time.Duration(min) * time.Minute) }
	org := event.Organization{ID: "o"}
	got := eventmodel.Expect([]event.Event{
		{ID: "e3", Type: event.MembershipUpdated, OccurredAt: at(3), Organization: org, Member: event.Member{ID: "m", Phone: "+47 3", Cleared: event.Fields(0).With(event.FieldEmail)}},
		{ID: "e1", Type: event.MembershipCreated, OccurredAt: at(1), Organization: org, Role: event.RolePeerMentor,
			Member: event.Member{ID: "m", Email: "a@example.invalid", FirstName: "A", LastName: "B", Phone: "+47 1"}},
		{ID: "e2", Type: event.MembershipUpdated, OccurredAt: at(2), Organization: org, Member: event.Member{ID: "m", FirstName: "C", Phone: "+47 2"}},
		{ID: "e4", Type: event.RoleUpdated, OccurredAt: at(4), Organization: org, Role: event.RoleCoordinator, Member: event.Member{ID: "m", FirstName: "ignored"}},
	})
	require.Equal(t, map[string]string{"email": "", "first_name": "C", "last_name": "B", "phone": "+47 3"}, got["m"].Fields)
	require.Equal(t, "C", got["m"].FirstName)
}

// TestExpectErased: a member-deleted event erases the member, before or
// after their other events.
func TestExpectErased(t *testing.T) {
	t.Parallel()
	t0 := time.Date(2026, 11, 25, 10, 0, 0, 0, time.UTC)
	got := eventmodel.Expect([]event.Event{
		{ID: "e2", Type: event.MemberDeleted, OccurredAt: t0, Member: event.Member{ID: "m"}},
		{ID: "e3", Type: event.MembershipUpdated, OccurredAt: t0.Add(time.Minute), Organization: event.Organization{ID: "o"}, Member: event.Member{ID: "m"}},
		{ID: "e1", Type: event.MembershipCreated, OccurredAt: t0, Organization: event.Organization{ID: "o"}, Member: event.Member{ID: "k"}, Role: event.RolePeerMentor},
	})
	require.NotContains(t, got, "m")
	require.Contains(t, got, "k")
}
