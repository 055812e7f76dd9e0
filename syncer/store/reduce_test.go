package store

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/likeperson/portalsync/pkg/event"
)

var rt0 = time.Date(2026, 11, 25, 10, 0, 0, 0, time.UTC)

func TestReduceProfilesMergePatch(t *testing.T) {
	t.Parallel()
	at := func(min int) time.Time { return rt0.Add(time.Duration(min) * time.Minute) }
	tests := []struct {
		name   string
		events []*event.Event
		want   [4]fieldPatch // for member m
	}{
		{"AbsentFieldsNotCarried", []*event.Event{
			{ID: "a", Type: event.MembershipUpdated, OccurredAt: at(1), Member: event.Member{ID: "m", Phone: "1"}},
		}, [4]fieldPatch{3: {set: true, k: key{at(1), "a"}, value: "1"}}},
		{"NullClears", []*event.Event{
			{ID: "a", Type: event.MembershipUpdated, OccurredAt: at(1), Member: event.Member{ID: "m", Cleared: Fields(event.FieldEmail)}},
		}, [4]fieldPatch{0: {set: true, k: key{at(1), "a"}}}},
		{"NewestPerField", []*event.Event{
			{ID: "b", Type: event.MembershipUpdated, OccurredAt: at(2), Member: event.Member{ID: "m", Phone: "2"}},
			{ID: "a", Type: event.MembershipCreated, OccurredAt: at(1), Member: event.Member{ID: "m", Email: "x@y", Phone: "1"}},
			{ID: "c", Type: event.MembershipUpdated, OccurredAt: at(2), Member: event.Member{ID: "m", Phone: "3"}}, // same time: larger id
		}, [4]fieldPatch{0: {set: true, k: key{at(1), "a"}, value: "x@y"}, 3: {set: true, k: key{at(2), "c"}, value: "3"}}},
		{"OtherTypesDoNotPatch", []*event.Event{
			{ID: "a", Type: event.RoleUpdated, OccurredAt: at(1), Member: event.Member{ID: "m", Email: "x@y"}},
			{ID: "b", Type: event.MembershipDeactivated, OccurredAt: at(2), Member: event.Member{ID: "m", Phone: "9"}},
		}, [4]fieldPatch{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := reduceProfiles(tt.events)
			require.Len(t, got, 1)
			require.Equal(t, "m", got[0].member)
			require.Equal(t, tt.want, got[0].fields)
		})
	}
	// An unknown member is created with the first event's fields under
	// the patch.
	p := reduceProfiles([]*event.Event{
		{ID: "a", Type: event.RoleUpdated, OccurredAt: at(1), Member: event.Member{ID: "m", Email: "first@y", Phone: "1"}},
		{ID: "b", Type: event.MembershipUpdated, OccurredAt: at(0), Member: event.Member{ID: "m", Phone: "2"}},
	})[0]
	require.Equal(t, "first@y", p.value(0))
	require.Equal(t, "2", p.value(3))
}

// Fields is a shorthand for a one-field set.
func Fields(f event.Field) event.Fields { return event.Fields(0).With(f) }

func TestJudgeAndDescribe(t *testing.T) {
	t.Parallel()
	k := func(min int, id string) heldStamp {
		return heldStamp{set: true, k: key{rt0.Add(time.Duration(min) * time.Minute), id}}
	}
	deact := &event.Event{ID: "e2", Type: event.MembershipDeactivated, OccurredAt: rt0.Add(2 * time.Minute)}
	upd := &event.Event{ID: "e2", Type: event.MembershipUpdated, OccurredAt: rt0.Add(2 * time.Minute), Role: event.RoleCoordinator,
		Member: event.Member{Phone: "1", Cleared: Fields(event.FieldEmail)}}
	tests := []struct {
		name          string
		ev            *event.Event
		h             held
		created       bool
		status, where string
	}{
		{"Applied", deact, held{status: k(2, "e2")}, false, StatusSuccess, "membership-deactivated applied"},
		{"Superseded", deact, held{status: k(3, "e3")}, false, StatusSkipped, "superseded by e3 (status)"},
		{"SameTimeLargerID", deact, held{status: k(2, "e9")}, false, StatusSkipped, "superseded by e9 (status)"},
		{"SupersededButCreatedTheMember", deact, held{status: k(3, "e3")}, true, StatusSuccess, "membership-deactivated partly applied: nothing applied; superseded by e3 (status)"},
		{"Partly", upd, held{fields: [4]heldStamp{0: k(2, "e2"), 3: k(5, "e5")}, role: k(2, "e2")}, false, StatusSuccess,
			"membership-updated partly applied: email, role applied; superseded by e5 (phone)"},
		{"AllPartsByTwoEvents", upd, held{fields: [4]heldStamp{0: k(4, "e4"), 3: k(5, "e5")}, role: k(4, "e4")}, false, StatusSkipped,
			"superseded by e4 (email, role), e5 (phone)"},
		{"NoParts", &event.Event{ID: "e2", Type: event.MembershipUpdated, OccurredAt: rt0}, held{}, false, StatusSuccess, "membership-updated applied"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			status, detail := describe(tt.ev, judgeEvent(tt.ev, tt.h), tt.created)
			require.Equal(t, tt.status, status)
			require.Equal(t, tt.where, detail)
		})
	}
}
