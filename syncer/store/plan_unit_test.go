package store

import (
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"pgregory.net/rapid"

	"github.com/likeperson/portalsync/pkg/event"
	"github.com/likeperson/portalsync/testkit/eventmodel"
)

// The reduce step's tables: no database. The property test at the end
// holds one batch's row sets to the reference model (testkit/eventmodel); the
// database tests (model_test.go) hold the tables to it.

func uev(id string, typ event.Type, min int, member, org string, role event.Role) *event.Event {
	return &event.Event{ID: id, Type: typ, OccurredAt: rt0.Add(time.Duration(min) * time.Minute),
		Organization: event.Organization{ID: org}, Member: event.Member{ID: member}, Role: role}
}

func uitems(evs ...*event.Event) []Item {
	out := make([]Item, len(evs))
	for i, e := range evs {
		out[i] = Item{Event: e, Meta: Meta{StreamSeq: uint64(i + 1), Attempt: 1}}
	}
	return out
}

func TestSortItems(t *testing.T) {
	t.Parallel()
	now := rt0.Add(time.Hour)
	ahead := uev("f", event.MembershipDeactivated, 0, "m1", "o1", "")
	ahead.OccurredAt = now.Add(MaxAhead + time.Second)
	type verdicts struct {
		live, skipped, failed, erasures []int
	}
	tests := []struct {
		name    string
		items   []Item
		before  seen
		want    verdicts
		status  []string // per item
		done    []bool   // AlreadyDone per item
		hashed  []string
		relog   []int
		details map[int]string
	}{
		{
			name:   "LiveAndDuplicateInBatch",
			items:  uitems(uev("a", event.MembershipCreated, 0, "m1", "o1", event.RolePeerMentor), uev("a", event.MembershipCreated, 0, "m1", "o1", event.RolePeerMentor)),
			want:   verdicts{live: []int{0}},
			status: []string{StatusSuccess, StatusSuccess},
			done:   []bool{false, true},
		},
		{
			name:   "LoggedBeforeIsDone",
			items:  uitems(uev("a", event.MembershipCreated, 0, "m1", "o1", event.RolePeerMentor)),
			before: seen{logged: map[string]string{"a": StatusSkipped}},
			status: []string{StatusSkipped},
			done:   []bool{true},
		},
		{
			name:    "UnknownTypeSkipped",
			items:   uitems(uev("a", "membership-merged", 0, "m1", "o1", "")),
			want:    verdicts{skipped: []int{0}},
			status:  []string{StatusSkipped},
			done:    []bool{false},
			details: map[int]string{0: `unknown event type "membership-merged"`},
		},
		{
			name:   "DatedAheadRefused",
			items:  uitems(ahead, uev("b", event.MembershipDeactivated, 0, "m1", "o1", "")),
			want:   verdicts{live: []int{1}, failed: []int{0}},
			status: []string{StatusFailed, StatusSuccess},
			done:   []bool{false, false},
		},
		{
			name: "ErasedBeforeStaysErased",
			items: uitems(uev("a", event.MembershipCreated, 0, "m1", "o1", event.RolePeerMentor),
				uev("b", event.MemberDeleted, 1, "m1", "", "")),
			before:  seen{erased: map[string]bool{"m1": true}},
			want:    verdicts{skipped: []int{0, 1}},
			status:  []string{StatusSkipped, StatusSkipped},
			done:    []bool{false, false},
			hashed:  []string{"m1"},
			details: map[int]string{0: "member erased"},
		},
		{
			name: "ErasureWinsWhateverTheOrder",
			items: uitems(uev("a", event.MembershipCreated, 5, "m1", "o1", event.RolePeerMentor),
				uev("d1", event.MemberDeleted, 1, "m1", "", ""), uev("d2", event.MemberDeleted, 2, "m1", "", ""),
				uev("c", event.MembershipCreated, 0, "m2", "o1", event.RolePeerMentor)),
			want:    verdicts{live: []int{3}, skipped: []int{0, 2}, erasures: []int{1}},
			status:  []string{StatusSkipped, StatusSuccess, StatusSkipped, StatusSuccess},
			done:    []bool{false, false, false, false},
			hashed:  []string{"m1"},
			details: map[int]string{0: "member erased by d1", 2: "member erased by d1"},
		},
		{
			name: "ReplayOfLoggedEventAppliedNotLogged",
			items: []Item{{Event: uev("a", event.MembershipCreated, 0, "m1", "o1", event.RolePeerMentor), Meta: Meta{Replay: true}},
				{Event: uev("a", event.MembershipCreated, 0, "m1", "o1", event.RolePeerMentor), Meta: Meta{Replay: true}}},
			before: seen{logged: map[string]string{"a": StatusSuccess}},
			want:   verdicts{live: []int{0}},
			status: []string{StatusSuccess, StatusSuccess},
			done:   []bool{false, true},
			relog:  []int{0, 1},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			p := sortItems(tt.items, tt.before, now)
			require.Equal(t, tt.want, verdicts{p.live, p.skipped, p.failed, p.erasures})
			for i, r := range p.results {
				require.Equal(t, tt.status[i], r.Status, "item %d", i)
				require.Equal(t, tt.done[i], r.AlreadyDone, "item %d", i)
				if d, ok := tt.details[i]; ok {
					require.Equal(t, d, r.Detail, "item %d", i)
				}
			}
			var hashed []string
			for m := range p.hashed {
				hashed = append(hashed, m)
			}
			require.ElementsMatch(t, tt.hashed, hashed)
			var relog []int
			for i := range p.relogged {
				relog = append(relog, i)
			}
			require.ElementsMatch(t, tt.relog, relog)
		})
	}
}

func TestReduceOrganizations(t *testing.T) {
	t.Parallel()
	now := rt0.Add(time.Hour)
	named := func(e *event.Event, name string, cleared bool) *event.Event {
		e.Organization.Name, e.Organization.NameCleared = name, cleared
		return e
	}
	ahead := named(uev("z", event.MembershipUpdated, 0, "m1", "o1", ""), "From the future", false)
	ahead.OccurredAt = now.Add(time.Hour)
	tests := []struct {
		name  string
		items []Item
		want  []orgRow
	}{
		{"NewestNameWins", uitems(
			named(uev("b", event.MembershipUpdated, 2, "m1", "o1", ""), "New", false),
			named(uev("a", event.MembershipCreated, 1, "m2", "o1", event.RolePeerMentor), "Old", false),
		), []orgRow{{id: "o1", named: true, k: key{rt0.Add(2 * time.Minute), "b"}, name: "New"}}},
		{"SameTimeLargerIDWins", uitems(
			named(uev("b", event.MembershipUpdated, 1, "m1", "o1", ""), "B", false),
			named(uev("c", event.MembershipUpdated, 1, "m1", "o1", ""), "C", false),
		), []orgRow{{id: "o1", named: true, k: key{rt0.Add(time.Minute), "c"}, name: "C"}}},
		{"UnnamedOnlyCreatesSortedByID", uitems(
			uev("a", event.RoleUpdated, 1, "m1", "o2", event.RoleCoordinator),
			uev("b", event.RoleUpdated, 1, "m1", "o1", event.RoleCoordinator),
		), []orgRow{{id: "o1"}, {id: "o2"}}},
		{"ClearedNameCounts", uitems(
			named(uev("a", event.MembershipUpdated, 1, "m1", "o1", ""), "Old", false),
			named(uev("b", event.MembershipUpdated, 2, "m1", "o1", ""), "", true),
		), []orgRow{{id: "o1", named: true, k: key{rt0.Add(2 * time.Minute), "b"}}}},
		{"UnknownTypesAndEventsDatedAheadNameNone", uitems(
			named(uev("a", "membership-merged", 1, "m1", "o9", ""), "Unknown", false),
			ahead,
		), nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			requireRows(t, tt.want, reduceOrganizations(tt.items, now))
		})
	}
}

// requireRows fails t unless got holds the rows want holds; no rows are
// no rows, nil or empty.
func requireRows[T any](t *testing.T, want, got []T) {
	t.Helper()
	if len(want) == 0 {
		require.Empty(t, got)
		return
	}
	require.Equal(t, want, got)
}

func TestReduceMembershipsAndRoles(t *testing.T) {
	t.Parallel()
	at := func(min int) time.Time { return rt0.Add(time.Duration(min) * time.Minute) }
	tests := []struct {
		name   string
		events []*event.Event
		ms     []membershipRow
		roles  []roleRow
	}{
		{"NewestStatusAndRoleWin", []*event.Event{
			uev("c", event.MembershipReactivated, 3, "m1", "o1", ""),
			uev("a", event.MembershipCreated, 1, "m1", "o1", event.RolePeerMentor),
			uev("b", event.MembershipDeactivated, 2, "m1", "o1", ""),
			uev("d", event.RoleUpdated, 4, "m1", "o1", event.RoleCoordinator),
		}, []membershipRow{{pair: pair{"m1", "o1"}, status: "active", k: key{at(3), "c"}, latest: at(4)}},
			[]roleRow{{pair: pair{"m1", "o1"}, k: key{at(4), "d"}, role: "coordinator"}}},
		{"UpdatesSpeakNeitherStatusNorRoleWithoutOne", []*event.Event{
			uev("a", event.MembershipUpdated, 1, "m1", "o1", ""),
		}, []membershipRow{{pair: pair{"m1", "o1"}, latest: at(1)}}, nil},
		{"TieBrokenByEventID", []*event.Event{
			uev("b", event.MembershipDeactivated, 1, "m1", "o1", ""),
			uev("a", event.MembershipReactivated, 1, "m1", "o1", ""),
			uev("y", event.RoleUpdated, 1, "m1", "o1", event.RoleOrgAdmin),
			uev("x", event.RoleUpdated, 1, "m1", "o1", event.RoleCoordinator),
		}, []membershipRow{{pair: pair{"m1", "o1"}, status: "inactive", k: key{at(1), "b"}, latest: at(1)}},
			[]roleRow{{pair: pair{"m1", "o1"}, k: key{at(1), "y"}, role: "org_admin"}}},
		{"OneRowPerMembershipSorted", []*event.Event{
			uev("a", event.MembershipCreated, 1, "m2", "o1", event.RolePeerMentor),
			uev("b", event.MembershipCreated, 1, "m1", "o2", event.RolePeerMentor),
			uev("c", event.MembershipCreated, 1, "m1", "o1", event.RolePeerMentor),
		}, []membershipRow{
			{pair: pair{"m1", "o1"}, status: "active", k: key{at(1), "c"}, latest: at(1)},
			{pair: pair{"m1", "o2"}, status: "active", k: key{at(1), "b"}, latest: at(1)},
			{pair: pair{"m2", "o1"}, status: "active", k: key{at(1), "a"}, latest: at(1)},
		}, []roleRow{
			{pair: pair{"m1", "o1"}, k: key{at(1), "c"}, role: "peer_mentor"},
			{pair: pair{"m1", "o2"}, k: key{at(1), "b"}, role: "peer_mentor"},
			{pair: pair{"m2", "o1"}, k: key{at(1), "a"}, role: "peer_mentor"},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			require.Equal(t, tt.ms, reduceMemberships(tt.events))
			requireRows(t, tt.roles, reduceRoles(tt.events))
		})
	}
}

func TestJudgeAndLogRows(t *testing.T) {
	t.Parallel()
	held := func(min int, id string) heldStamp {
		return heldStamp{set: true, k: key{rt0.Add(time.Duration(min) * time.Minute), id}}
	}
	items := uitems(
		uev("a", event.MembershipCreated, 1, "m1", "o1", ""),
		uev("b", event.MembershipDeactivated, 2, "m1", "o1", ""),
		uev("x", event.MemberDeleted, 1, "m9", "", ""),
		uev("c", event.MembershipDeactivated, 0, "m2", "o1", ""),
	)
	items[0].Meta.StreamSeq, items[3].Meta.StreamSeq = 9, 5 // stream order: b, x, c, a
	p := reduce(items, seen{}, rt0.Add(time.Hour))
	w := written{
		orgIDs:   map[string]string{"o1": "uuid-o1"},
		created:  map[string]bool{"m1": true},
		status:   map[pair]heldStamp{{"m1", "o1"}: held(2, "b"), {"m2", "o1"}: held(3, "newer")},
		inserted: map[pair]bool{{"m1", "o1"}: true},
		role:     map[pair]heldStamp{},
		notes:    map[string][]string{"m1": {"app account linked"}},
		// The membership is new: its status before is none.
		statusChange: map[pair]Change{{"m1", "o1"}: {New: "inactive"}},
	}
	erasures := []erased{{profiles: 1, memberships: 2, logRows: 3, notes: []string{"app access revoked"},
		orgs: []orgRef{{"uuid-o1", "o1"}, {"uuid-o2", "o2"}}}}
	res := judge(items, p, w, erasures)
	require.Equal(t, []Result{
		{Status: StatusSuccess, MemberCreated: true, Changes: &Changes{},
			Detail: "member created; membership-created partly applied: nothing applied; superseded by b (status); the member has no role in organization o1 yet (batch of 3)"},
		{Status: StatusSuccess, Changes: &Changes{Status: &Change{New: "inactive"}},
			Detail: "membership-deactivated applied; the member has no role in organization o1 yet (batch of 3); app account linked"},
		{Status: StatusSuccess, MemberErased: true,
			Detail: "member erased; profile and 2 memberships deleted; app access revoked; member ID replaced by its hash in 3 log rows"},
		{Status: StatusSkipped, Detail: "superseded by newer (status)"},
	}, res)

	rows, failed := logRows(items, p, res, w.orgIDs, erasures)
	require.Empty(t, failed)
	var order []string
	for _, r := range rows {
		order = append(order, r.eventID+" "+r.member+" "+r.orgID)
	}
	// The erasure: its own row, then one per organization the member had
	// a membership in, without the member's id.
	require.Equal(t, []string{"b m1 uuid-o1", "x " + MemberHash("m9") + " ", "x:o1 " + MemberHash("m9") + " uuid-o1",
		"x:o2 " + MemberHash("m9") + " uuid-o2", "c m2 uuid-o1", "a m1 uuid-o1"}, order)
}

// An event's changes are the parts it applied whose row holds its own
// stamp and whose value changed; a part another event wrote, or that did
// not change, is not among them.
func TestChangesOf(t *testing.T) {
	t.Parallel()
	peer := "peer_mentor"
	own := func(id string, min int) heldStamp {
		return heldStamp{set: true, k: key{rt0.Add(time.Duration(min) * time.Minute), id}}
	}
	role := &Change{Old: &peer, New: "coordinator"}
	status := &Change{Old: new("active"), New: "inactive"}
	profile := uev("e", event.MembershipUpdated, 1, "m1", "o1", "")
	profile.Member.Email, profile.Member.FirstName, profile.Member.LastName = "a@example.invalid", "A", "B" // no phone
	tests := []struct {
		name    string
		ev      *event.Event
		h       held
		fields  [4]bool
		status  *Change
		role    *Change
		changes *Changes
	}{
		{"RoleChanged", uev("e", event.RoleUpdated, 1, "m1", "o1", event.RoleCoordinator),
			held{role: own("e", 1)}, [4]bool{}, nil, role, &Changes{Role: role}},
		{"RoleWrittenByNewerEvent", uev("e", event.RoleUpdated, 1, "m1", "o1", event.RoleCoordinator),
			held{role: own("f", 2)}, [4]bool{}, nil, role, &Changes{}},
		{"RoleUnchanged", uev("e", event.RoleUpdated, 1, "m1", "o1", event.RoleCoordinator),
			held{role: own("e", 1)}, [4]bool{}, nil, nil, &Changes{}},
		{"Deactivated", uev("e", event.MembershipDeactivated, 1, "m1", "o1", ""),
			held{status: own("e", 1)}, [4]bool{}, status, nil, &Changes{Status: status}},
		{"StatusOfAnEventWithoutStatus", uev("e", event.RoleUpdated, 1, "m1", "o1", event.RoleCoordinator),
			held{status: own("e", 1)}, [4]bool{}, status, nil, &Changes{}},
		// email changed; first_name did not; last_name is a newer event's;
		// phone is not the event's.
		{"ProfileFieldsByName", profile,
			held{fields: [4]heldStamp{own("e", 1), own("e", 1), own("f", 2), own("e", 1)}}, [4]bool{true, false, true, true}, nil, nil,
			&Changes{ProfileFields: []string{"email"}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			require.Equal(t, tt.changes, changesOf(tt.ev, tt.h, tt.fields, tt.status, tt.role))
		})
	}
}

// One batch's row sets, applied to empty tables, are the reference
// model's state: per membership the newest status (active when no event
// speaks about it) and role, per member each field from its newest
// carrying event; erased members, unknown types and repeated events leave
// nothing.
func TestReduceMatchesModel(t *testing.T) {
	t.Parallel()
	rapid.Check(t, func(rt *rapid.T) {
		types := []event.Type{event.MembershipCreated, event.MembershipUpdated, event.RoleUpdated,
			event.MembershipDeactivated, event.MembershipReactivated, event.MemberDeleted, "membership-merged"}
		n := rapid.IntRange(1, 16).Draw(rt, "events")
		var evs []event.Event
		for i := range n {
			typ := rapid.SampledFrom(types).Draw(rt, "type")
			role := event.Role("")
			if typ.RequiresRole() || typ == event.MembershipUpdated && rapid.Bool().Draw(rt, "role?") {
				role = rapid.SampledFrom([]event.Role{event.RolePeerMentor, event.RoleCoordinator}).Draw(rt, "role")
			}
			e := *uev(fmt.Sprintf("e%d", rapid.IntRange(0, n).Draw(rt, "id")), typ, rapid.IntRange(0, 2).Draw(rt, "minute"),
				rapid.SampledFrom([]string{"m1", "m2"}).Draw(rt, "member"), rapid.SampledFrom([]string{"o1", "o2"}).Draw(rt, "org"), role)
			if i > 0 && rapid.IntRange(0, 5).Draw(rt, "again") == 0 {
				e = evs[rapid.IntRange(0, i-1).Draw(rt, "which")] // a redelivery
			}
			if e.HasProfile() {
				if rapid.Bool().Draw(rt, "phone?") {
					e.Member.Phone = e.ID
				}
				if rapid.Bool().Draw(rt, "clear first name?") {
					e.Member.Cleared = e.Member.Cleared.With(event.FieldFirstName)
				}
			}
			evs = append(evs, e)
		}
		// The model takes an event id once, whatever its body: keep the
		// first body per id, as the batch does.
		firstBody := map[string]event.Event{}
		var ptrs []*event.Event
		for i := range evs {
			if b, ok := firstBody[evs[i].ID]; ok {
				evs[i] = b
			} else {
				firstBody[evs[i].ID] = evs[i]
			}
			ptrs = append(ptrs, &evs[i])
		}
		want := eventmodel.Expect(evs)
		p := reduce(uitems(ptrs...), seen{}, rt0.Add(time.Hour))

		got := map[string]eventmodel.Member{}
		member := func(id string) eventmodel.Member {
			m, ok := got[id]
			if !ok {
				m = eventmodel.Member{Fields: map[string]string{}, Memberships: map[string]eventmodel.Membership{}}
			}
			return m
		}
		for _, r := range p.profiles {
			m := member(r.member)
			for i, f := range event.ProfileFields {
				if r.fields[i].set {
					m.Fields[f.String()] = r.fields[i].value
				}
			}
			got[r.member] = m
		}
		roles := map[pair]string{}
		for _, r := range p.roles {
			roles[r.pair] = r.role
		}
		for _, r := range p.memberships {
			status := r.status
			if status == "" {
				status = "active"
			}
			got[r.member].Memberships[r.org] = eventmodel.Membership{Status: status, Role: roles[r.pair]}
		}
		require.Len(rt, got, len(want))
		for id, w := range want {
			require.Equal(rt, w.Fields, got[id].Fields, id)
			require.Equal(rt, w.Memberships, got[id].Memberships, id)
		}
	})
}
