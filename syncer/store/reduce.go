package store

import (
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/likeperson/portalsync/pkg/event"
)

// This file holds the pure decisions of a batch: which event wins for each
// row and field group, and what each event's log row says about what it
// changed. No database here; reduce_test.go tables them.

// key orders events the way the portal does: by time, then by id. Times
// are kept to the microsecond, as PostgreSQL compares them.
type key struct {
	at time.Time
	id string
}

func keyOf(e *event.Event) key { return key{e.OccurredAt.Truncate(time.Microsecond), e.ID} }

func (k key) after(o key) bool {
	if c := k.at.Compare(o.at); c != 0 {
		return c > 0
	}
	return k.id > o.id
}

func (k key) equal(o key) bool { return k.at.Equal(o.at) && k.id == o.id }

// fieldPatch is the newest value of one profile field in a batch.
type fieldPatch struct {
	set   bool
	k     key
	value string // "" clears the field
}

// profilePatch is what a batch writes to one member's profile: per field,
// the newest event of the batch that carries it (a JSON Merge Patch:
// fields no event carries are left alone), and the values to create the
// member with when the app does not know it yet.
type profilePatch struct {
	fields [4]fieldPatch // in event.ProfileFields order
	create event.Member
}

// reduceProfiles reduces the events to one patch per member. Only
// membership-created and membership-updated events patch the profile;
// every event's fields may create an unknown member (the first event's,
// overlaid by every patch).
func reduceProfiles(evs []*event.Event) map[string]*profilePatch {
	out := map[string]*profilePatch{}
	for _, ev := range evs {
		p, ok := out[ev.Member.ID]
		if !ok {
			p = &profilePatch{create: ev.Member}
			out[ev.Member.ID] = p
		}
		if !ev.HasProfile() {
			continue
		}
		k := keyOf(ev)
		for i, f := range event.ProfileFields {
			if ev.Member.Has(f) && (!p.fields[i].set || k.after(p.fields[i].k)) {
				p.fields[i] = fieldPatch{set: true, k: k, value: ev.Member.Value(f)}
			}
		}
	}
	return out
}

// value is what the profile's field i is inserted with.
func (p *profilePatch) value(i int) string {
	if p.fields[i].set {
		return p.fields[i].value
	}
	return p.create.Value(event.ProfileFields[i])
}

// newest is the newest heldStamp of the patch's fields.
func (p *profilePatch) newest() (key, bool) {
	var k key
	found := false
	for _, f := range p.fields {
		if f.set && (!found || f.k.after(k)) {
			k, found = f.k, true
		}
	}
	return k, found
}

// heldStamp is the (portal time, event id) a stored row or field holds; zero
// when none.
type heldStamp struct {
	set bool
	k   key
}

// held is what the tables hold after a batch, for the parts of one
// event: the stamps of the member's profile fields, and of the status and
// role of the event's membership.
type held struct {
	fields [4]heldStamp
	status heldStamp
	role   heldStamp
}

// outcome says which parts of an event the tables hold and which newer
// events superseded the rest.
type outcome struct {
	applied    []string
	superseded map[string][]string // newer event id -> parts
}

// judgeEvent compares each part an event asks to change — a present
// profile field (created and updated events), the membership's status, the
// role — with the stamp the tables hold for it after the batch.
func judgeEvent(ev *event.Event, h held) outcome {
	k := keyOf(ev)
	o := outcome{superseded: map[string][]string{}}
	check := func(part string, s heldStamp) {
		if s.set && !s.k.equal(k) && s.k.after(k) {
			o.superseded[s.k.id] = append(o.superseded[s.k.id], part)
			return
		}
		o.applied = append(o.applied, part)
	}
	if ev.HasProfile() {
		for i, f := range event.ProfileFields {
			if ev.Member.Has(f) {
				check(f.String(), h.fields[i])
			}
		}
	}
	if statusIntent(ev.Type) != "" {
		check("status", h.status)
	}
	if ev.Role != "" {
		check("role", h.role)
	}
	return o
}

// describe turns an outcome into the log row's status and detail: an event
// whose every part was superseded is skipped ("superseded by evt_…"),
// unless it created the member; a partly superseded one is a success that
// says what was applied and what not.
func describe(ev *event.Event, o outcome, memberCreated bool) (status, detail string) {
	if len(o.superseded) == 0 {
		return StatusSuccess, string(ev.Type) + " applied"
	}
	newer := make([]string, 0, len(o.superseded))
	for id := range o.superseded {
		newer = append(newer, id)
	}
	slices.Sort(newer)
	var by []string
	for _, id := range newer {
		by = append(by, fmt.Sprintf("%s (%s)", id, strings.Join(o.superseded[id], ", ")))
	}
	if len(o.applied) == 0 && !memberCreated {
		return StatusSkipped, "superseded by " + strings.Join(by, ", ")
	}
	applied := strings.Join(o.applied, ", ")
	if applied == "" {
		applied = "nothing"
	}
	return StatusSuccess, fmt.Sprintf("%s partly applied: %s applied; superseded by %s", ev.Type, applied, strings.Join(by, ", "))
}
