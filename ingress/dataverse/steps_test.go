package dataverse

import (
	"reflect"
	"testing"

	"github.com/likeperson/portalsync/pkg/dvmap"
	"github.com/likeperson/portalsync/pkg/event"
)

// TestMembershipSteps holds which events each message on a membership row
// becomes, in order, for every state and with or without a role.
func TestMembershipSteps(t *testing.T) {
	type s = membershipStep
	created, updated := s{event.MembershipCreated, event.RoleCoordinator}, s{typ: event.MembershipUpdated}
	off, on, role := s{typ: event.MembershipDeactivated}, s{typ: event.MembershipReactivated}, s{event.RoleUpdated, event.RoleCoordinator}
	for _, tc := range []struct {
		msg   string
		state dvmap.State
		role  event.Role
		want  []s
	}{
		{"create", dvmap.StateNone, event.RoleCoordinator, []s{created}},
		{"create", dvmap.StateActive, event.RoleCoordinator, []s{created}},
		{"create", dvmap.StateInactive, event.RoleCoordinator, []s{created, off}},
		{"create", dvmap.StateNone, "", []s{updated}},
		{"create", dvmap.StateInactive, "", []s{updated, off}},
		{"update", dvmap.StateNone, "", nil},
		{"update", dvmap.StateNone, event.RoleCoordinator, []s{role}},
		{"update", dvmap.StateInactive, event.RoleCoordinator, []s{off, role}},
		{"update", dvmap.StateActive, "", []s{on}},
		{"setstate", dvmap.StateInactive, "", []s{off}},
		{"setstatedynamicentity", dvmap.StateActive, "", []s{on}},
		{"delete", dvmap.StateActive, event.RoleCoordinator, []s{off}},
		{"assign", dvmap.StateActive, event.RoleCoordinator, nil},
	} {
		if got := membershipSteps(tc.msg, tc.state, tc.role); !reflect.DeepEqual(got, tc.want) {
			t.Errorf("membershipSteps(%s, %d, %q) = %v, want %v", tc.msg, tc.state, tc.role, got, tc.want)
		}
	}
}
