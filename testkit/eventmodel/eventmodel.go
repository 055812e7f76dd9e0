// Package eventmodel is the reference model of what a set of membership
// events means for the app: the state the database must hold after the
// syncer applied them, in whatever order and however often they arrived.
// Tests compare the database with it.
package eventmodel

import (
	"sort"

	"github.com/likeperson/portalsync/pkg/event"
)

// Membership is the expected state of one membership.
type Membership struct {
	Status string // "active" or "inactive"
	Role   string // "" when no event set a role
}

// Member is the expected state of one member.
type Member struct {
	// Status is "active" while any membership is active.
	Status string
	// FirstName is the first name of the newest membership-created or
	// -updated event that carries one; "" when there is none, since then the
	// name comes from whichever event happened to create the member.
	FirstName string
	// HasSnapshot reports whether FirstName is defined.
	HasSnapshot bool
	// Fields holds, by JSON name, each profile field that some
	// membership-created or -updated event carries (a merge patch: absent
	// fields are left alone), with the value of the newest such event; ""
	// means cleared. Fields no such event carries are undefined.
	Fields map[string]string
	// Memberships by portal organization ID.
	Memberships map[string]Membership
}

// newer reports whether a comes after b in the portal's order: by time,
// then by event id.
func newer(a, b *event.Event) bool {
	if !a.OccurredAt.Equal(b.OccurredAt) {
		return a.OccurredAt.After(b.OccurredAt)
	}
	return a.ID > b.ID
}

// Expect returns the expected state of every member the events mention,
// except erased ones: a member-deleted event erases the member for good,
// whatever the order. Events with an unknown type change nothing; the same
// event id twice counts once.
func Expect(events []event.Event) map[string]Member {
	type orgKey struct{ member, org string }
	seen := map[string]bool{}
	erased := map[string]bool{}
	for i := range events {
		if events[i].Type == event.MemberDeleted {
			erased[events[i].Member.ID] = true
		}
	}
	var known []*event.Event
	for i := range events {
		e := &events[i]
		if !e.Type.Known() || seen[e.ID] || erased[e.Member.ID] {
			continue
		}
		seen[e.ID] = true
		known = append(known, e)
	}
	sort.Slice(known, func(i, j int) bool { return newer(known[j], known[i]) })

	status := map[orgKey]string{}
	role := map[orgKey]string{}
	out := map[string]Member{}
	for _, e := range known { // oldest first: later writes win
		k := orgKey{e.Member.ID, e.Organization.ID}
		m, ok := out[e.Member.ID]
		if !ok {
			m = Member{Memberships: map[string]Membership{}, Fields: map[string]string{}}
		}
		if _, ok := status[k]; !ok {
			status[k] = "active"
		}
		switch e.Type {
		case event.MembershipCreated, event.MembershipReactivated:
			status[k] = "active"
		case event.MembershipDeactivated:
			status[k] = "inactive"
		}
		if e.Role != "" {
			role[k] = string(e.Role)
		}
		if e.HasProfile() {
			for _, f := range event.ProfileFields {
				if e.Member.Has(f) {
					m.Fields[f.String()] = e.Member.Value(f)
				}
			}
			if e.Member.Has(event.FieldFirstName) {
				m.FirstName, m.HasSnapshot = e.Member.FirstName, true
			}
		}
		out[e.Member.ID] = m
	}
	for k, s := range status {
		out[k.member].Memberships[k.org] = Membership{Status: s, Role: role[k]}
	}
	for id, m := range out {
		m.Status = "inactive"
		for _, ms := range m.Memberships {
			if ms.Status == "active" {
				m.Status = "active"
			}
		}
		out[id] = m
	}
	return out
}
