package store_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"pgregory.net/rapid"

	"github.com/likeperson/portalsync/pkg/event"
	"github.com/likeperson/portalsync/pkg/eventmodel"
)

// drawEvents draws 1..maxEvents events of 1..members members (ids
// "<prefix>-m<n>") in two organizations, with few distinct portal times so
// that ties, broken by event id, are common.
func drawEvents(rt *rapid.T, prefix string, members, maxEvents int) []event.Event {
	types := []event.Type{event.MembershipCreated, event.MembershipUpdated, event.RoleUpdated, event.MembershipDeactivated, event.MembershipReactivated}
	roles := []event.Role{"", event.RolePeerMentor, event.RoleCoordinator, event.RoleOrgAdmin}
	events := make([]event.Event, rapid.IntRange(1, maxEvents).Draw(rt, "events"))
	for i := range events {
		typ := rapid.SampledFrom(types).Draw(rt, "type")
		role := event.Role("")
		if typ.RequiresRole() {
			role = rapid.SampledFrom(roles[1:]).Draw(rt, "role")
		} else if typ == event.MembershipUpdated {
			role = rapid.SampledFrom(roles).Draw(rt, "role")
		}
		at := t0.Add(time.Duration(rapid.IntRange(0, 3).Draw(rt, "minute")) * time.Minute)
		member := fmt.Sprintf("%s-m%d", prefix, rapid.IntRange(0, members-1).Draw(rt, "member"))
		org := rapid.SampledFrom([]string{"o1", "o2"}).Draw(rt, "org")
		events[i] = *ev(fmt.Sprintf("%s-e%d", prefix, i), typ, at, member, org, role)
		if rapid.IntRange(0, 24).Draw(rt, "erase") == 0 {
			// Now and then the portal deletes the contact.
			events[i] = event.Event{ID: events[i].ID, Type: event.MemberDeleted, OccurredAt: at, Member: event.Member{ID: member}}
			continue
		}
		if events[i].HasProfile() {
			events[i].Member = drawPatch(rt, events[i].Member)
		}
	}
	return events
}

// drawPatch makes a member's fields a random JSON Merge Patch: each field
// absent, null, or a value.
func drawPatch(rt *rapid.T, m event.Member) event.Member {
	out := event.Member{ID: m.ID}
	for _, f := range event.ProfileFields {
		switch rapid.IntRange(0, 2).Draw(rt, f.String()) {
		case 1:
			out.Cleared = out.Cleared.With(f)
		case 2:
			v := m.Value(f)
			switch f {
			case event.FieldEmail:
				out.Email = v
			case event.FieldFirstName:
				out.FirstName = v
			case event.FieldLastName:
				out.LastName = v + m.FirstName // distinct per event
			case event.FieldPhone:
				out.Phone = v
			}
		}
	}
	return out
}

// profileFields reads a member's profile fields by JSON name ("" for NULL).
func profileFields(t *testing.T, pool *pgxpool.Pool, member string) map[string]string {
	t.Helper()
	var e, f, l, p *string
	err := pool.QueryRow(context.Background(), `SELECT email, first_name, last_name, phone FROM profiles WHERE portal_member_id = $1`, member).Scan(&e, &f, &l, &p)
	if err != nil {
		t.Fatalf("read profile %s: %v", member, err)
	}
	out := map[string]string{}
	for name, v := range map[string]*string{"email": e, "first_name": f, "last_name": l, "phone": p} {
		out[name] = ""
		if v != nil {
			out[name] = *v
		}
	}
	return out
}

// drawDeliveries is a random order of the events with up to maxRepeats
// redeliveries appended.
func drawDeliveries(rt *rapid.T, events []event.Event, maxRepeats int) []event.Event {
	order := rapid.Permutation(events).Draw(rt, "order")
	for _, i := range rapid.SliceOfN(rapid.IntRange(0, len(events)-1), 0, maxRepeats).Draw(rt, "redeliveries") {
		order = append(order, order[i])
	}
	return order
}

// requireModel fails rt unless every member's state equals the reference
// model's and each distinct event has exactly one log row.
func requireModel(t *testing.T, rt *rapid.T, pool *pgxpool.Pool, prefix string, events []event.Event) {
	for member, want := range eventmodel.Expect(events) {
		got := memberState(t, pool, member)
		if got.ProfileStatus != want.Status || (want.HasSnapshot && got.FirstName != want.FirstName) {
			rt.Fatalf("%s: status %s first name %q, model %s %q", member, got.ProfileStatus, got.FirstName, want.Status, want.FirstName)
		}
		fields := profileFields(t, pool, member)
		for name, v := range want.Fields {
			if fields[name] != v {
				rt.Fatalf("%s: %s is %q, model (portal-time order) %q", member, name, fields[name], v)
			}
		}
		wantMS, wantRoles := map[string]string{}, map[string]string{}
		for org, m := range want.Memberships {
			wantMS[org] = m.Status
			if m.Role != "" {
				wantRoles[org] = m.Role
			}
		}
		if fmt.Sprint(got.Memberships) != fmt.Sprint(wantMS) || fmt.Sprint(got.Roles) != fmt.Sprint(wantRoles) {
			rt.Fatalf("%s: memberships %v roles %v, model %v %v", member, got.Memberships, got.Roles, wantMS, wantRoles)
		}
	}
	for _, e := range events {
		if e.Type == event.MemberDeleted {
			var n int
			if err := pool.QueryRow(context.Background(), `SELECT count(*) FROM profiles WHERE portal_member_id = $1`, e.Member.ID).Scan(&n); err != nil {
				rt.Fatal(err)
			}
			if n != 0 {
				rt.Fatalf("%s: erased, but its profile is back", e.Member.ID)
			}
		}
	}
	var logged int
	if err := pool.QueryRow(context.Background(), `SELECT count(*) FROM portal_sync_log WHERE event_id LIKE $1`, prefix+"-%").Scan(&logged); err != nil {
		rt.Fatal(err)
	}
	if logged != len(events) {
		rt.Fatalf("%d log rows for %d distinct events", logged, len(events))
	}
}
