package store

import (
	"cmp"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/likeperson/portalsync/pkg/event"
)

// This file holds the pure decisions a batch makes before it writes: what
// becomes of each item (applied, already done, skipped, refused, erasing
// its member), and which event wins for every row and field group of every
// table, as the row sets the writers send (write.go). No database here;
// reduce_test.go tables them against the reference model's rules
// (testkit/eventmodel): the newest event in portal order wins, per profile
// field, membership status, role and organization name; unknown types and
// repeated event ids change nothing; an erased member stays erased.
//
// Organizations are reduced apart (reduceOrganizations) because they are
// written before the rest, in a transaction of their own (ApplyBatch).

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

// MaxAhead is how far in the future an event's occurred_at may be by the
// syncer's clock: the ingress's default webhook timestamp tolerance. An
// event dated later is logged failed and never applied, since it would
// win every later newest-wins comparison for its member.
const MaxAhead = 5 * time.Minute

// statusIntent is the membership status an event type asks for, if any.
func statusIntent(t event.Type) string {
	switch t {
	case event.MembershipCreated, event.MembershipReactivated:
		return "active"
	case event.MembershipDeactivated:
		return "inactive"
	}
	return ""
}

// seen is what the database held before a batch (lookUp): the events the
// log has as done, and the members erased before.
type seen struct {
	logged map[string]string // event id -> status (success or skipped)
	erased map[string]bool   // portal member id
}

// plan is what a batch writes, decided from its items, the clock and what
// the database held before (seen).
type plan struct {
	// results are the verdicts, one per item; the status and detail of
	// the applied ones are judged after the writes (judge).
	results []Result
	// The items by verdict, as indexes in batch order: applied; logged
	// skipped (unknown type, erased member); refused (dated ahead), logged
	// failed; member-deleted events that erase their member.
	live, skipped, failed, erasures []int
	// relogged are replayed items whose event the log holds: applied
	// again to repair the tables, not logged again.
	relogged map[int]bool
	// hashed are the members whose log rows carry MemberHash: erased
	// before or by this batch.
	hashed map[string]bool

	profiles    []profileRow
	memberships []membershipRow
	roles       []roleRow
	// members are the live events' members, sorted: they are linked to
	// accounts (link_members, which also tries the e-mails their events
	// carried: seenMembers[i] had seenEmails[i]) and their access is
	// derived from their memberships (apply_access).
	members                 []string
	seenMembers, seenEmails []string
}

// pair names a membership (and its role) by portal ids.
type pair struct{ member, org string }

func pairOf(ev *event.Event) pair { return pair{ev.Member.ID, ev.Organization.ID} }

// reduce decides a batch: the verdict of each item (sortItems), then the
// row sets of the live ones.
func reduce(items []Item, before seen, now time.Time) plan {
	p := sortItems(items, before, now)
	live := make([]*event.Event, len(p.live))
	for j, i := range p.live {
		live[j] = items[i].Event
	}
	p.profiles = reduceProfiles(live)
	p.memberships = reduceMemberships(live)
	p.roles = reduceRoles(live)
	for _, r := range p.profiles {
		p.members = append(p.members, r.member)
	}
	p.seenMembers, p.seenEmails = seenEmails(items, p.live)
	return p
}

// sortItems finds what is already done, repeated, unknown, refused, erased
// or erasing in the batch; the rest is live.
func sortItems(items []Item, before seen, now time.Time) plan {
	p := plan{results: make([]Result, len(items)), relogged: map[int]bool{}, hashed: map[string]bool{}}
	erasedBy := map[string]string{} // member -> the batch's member-deleted event
	for _, it := range items {
		if ev := it.Event; ev.Type == event.MemberDeleted && ev.CheckClock(now, MaxAhead) == nil {
			if _, ok := erasedBy[ev.Member.ID]; !ok && !before.erased[ev.Member.ID] {
				erasedBy[ev.Member.ID] = ev.ID
			}
		}
	}
	first := map[string]int{}
	for i, it := range items {
		ev, r := it.Event, &p.results[i]
		if status, ok := before.logged[ev.ID]; ok {
			if !it.Meta.Replay {
				*r = Result{Status: status, AlreadyDone: true}
				continue
			}
			p.relogged[i] = true
		}
		if j, ok := first[ev.ID]; ok {
			// The same event twice in one batch: the first one's verdict.
			*r = p.results[j]
			r.AlreadyDone = true
			continue
		}
		first[ev.ID] = i
		by, erasing := erasedBy[ev.Member.ID]
		switch clock := ev.CheckClock(now, MaxAhead); {
		case !ev.Type.Known():
			*r = Result{Status: StatusSkipped, Detail: fmt.Sprintf("unknown event type %q", truncate(string(ev.Type), 64))}
			p.skipped = append(p.skipped, i)
		case clock != nil:
			*r = Result{Status: StatusFailed, Detail: "not applied: " + clock.Error() + " by the syncer's clock"}
			p.failed = append(p.failed, i)
		case before.erased[ev.Member.ID]:
			// Erased before: nothing may bring the member back.
			*r = Result{Status: StatusSkipped, Detail: "member erased", MemberErased: true}
			p.skipped = append(p.skipped, i)
		case erasing && by == ev.ID:
			*r = Result{Status: StatusSuccess, MemberErased: true}
			p.erasures = append(p.erasures, i)
			p.hashed[ev.Member.ID] = true
		case erasing:
			*r = Result{Status: StatusSkipped, Detail: "member erased by " + by, MemberErased: true}
			p.skipped = append(p.skipped, i)
		default:
			*r = Result{Status: StatusSuccess}
			p.live = append(p.live, i)
		}
	}
	for m := range before.erased {
		p.hashed[m] = true
	}
	return p
}

// orgRow is what a batch writes to one organization: its key, and the
// newest event that carries its name (none: the row is only created).
type orgRow struct {
	id    string
	named bool
	k     key
	name  string
}

// reduceOrganizations reduces the organizations the items name to the
// newest event that carries a name, sorted by id. Events of unknown types
// and events dated too far ahead (refused: see MaxAhead) name none; the
// log and the tombstones are not read yet (they are read in the batch's
// transaction), so events found done or of erased members count: a name
// written again by its own event changes nothing.
func reduceOrganizations(items []Item, now time.Time) []orgRow {
	orgs := map[string]*orgRow{}
	for _, it := range items {
		ev := it.Event
		if !ev.Type.Known() || ev.Organization.ID == "" || ev.CheckClock(now, MaxAhead) != nil {
			continue
		}
		o, ok := orgs[ev.Organization.ID]
		if !ok {
			o = &orgRow{id: ev.Organization.ID}
			orgs[o.id] = o
		}
		if ev.Organization.HasName() && (!o.named || keyOf(ev).after(o.k)) {
			o.named, o.k, o.name = true, keyOf(ev), ev.Organization.Name
		}
	}
	return sortedRows(orgs, func(a, b *orgRow) int { return strings.Compare(a.id, b.id) })
}

// fieldPatch is the newest value of one profile field in a batch.
type fieldPatch struct {
	set   bool
	k     key
	value string // "" clears the field
}

// profileRow is what a batch writes to one member's profile: per field,
// the newest event of the batch that carries it (a JSON Merge Patch:
// fields no event carries are left alone), and the values to create the
// member with when the app does not know it yet.
type profileRow struct {
	member string
	fields [4]fieldPatch // in event.ProfileFields order
	create event.Member
}

// reduceProfiles reduces the events to one row per member, sorted by
// member. Only membership-created and membership-updated events patch the
// profile; every event's fields may create an unknown member (the first
// event's, overlaid by every patch).
func reduceProfiles(evs []*event.Event) []profileRow {
	out := map[string]*profileRow{}
	for _, ev := range evs {
		p, ok := out[ev.Member.ID]
		if !ok {
			p = &profileRow{member: ev.Member.ID, create: ev.Member}
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
	return sortedRows(out, func(a, b *profileRow) int { return strings.Compare(a.member, b.member) })
}

// value is what the profile's field i is inserted with.
func (p *profileRow) value(i int) string {
	if p.fields[i].set {
		return p.fields[i].value
	}
	return p.create.Value(event.ProfileFields[i])
}

// newest is the newest stamp of the row's fields.
func (p *profileRow) newest() (key, bool) {
	var k key
	found := false
	for _, f := range p.fields {
		if f.set && (!found || f.k.after(k)) {
			k, found = f.k, true
		}
	}
	return k, found
}

// membershipRow is what a batch writes to one membership: the newest
// event that speaks about its status (none: status ""), and the newest
// portal time of any event for it.
type membershipRow struct {
	pair
	status string
	k      key
	latest time.Time
}

// reduceMemberships reduces the events to one row per membership, sorted
// by member and organization.
func reduceMemberships(evs []*event.Event) []membershipRow {
	all := map[pair]*membershipRow{}
	for _, ev := range evs {
		m, ok := all[pairOf(ev)]
		if !ok {
			m = &membershipRow{pair: pairOf(ev), latest: ev.OccurredAt}
			all[m.pair] = m
		}
		if ev.OccurredAt.After(m.latest) {
			m.latest = ev.OccurredAt
		}
		if st := statusIntent(ev.Type); st != "" && (m.status == "" || keyOf(ev).after(m.k)) {
			m.status, m.k = st, keyOf(ev)
		}
	}
	return sortedRows(all, func(a, b *membershipRow) int { return comparePairs(a.pair, b.pair) })
}

// roleRow is the newest role an event of the batch gives one membership.
type roleRow struct {
	pair
	k    key
	role string
}

// reduceRoles reduces the events that carry a role to one row per
// membership, sorted by member and organization.
func reduceRoles(evs []*event.Event) []roleRow {
	all := map[pair]*roleRow{}
	for _, ev := range evs {
		if ev.Role == "" {
			continue
		}
		if r, ok := all[pairOf(ev)]; !ok || keyOf(ev).after(r.k) {
			all[pairOf(ev)] = &roleRow{pair: pairOf(ev), k: keyOf(ev), role: string(ev.Role)}
		}
	}
	return sortedRows(all, func(a, b *roleRow) int { return comparePairs(a.pair, b.pair) })
}

// seenEmails are, per member, the lower-cased e-mails that the events
// items[live[i]] carry, newest event first and each once (members[i] has
// emails[i]): linking tries them all, as applying the events one by one
// (in whatever order) would have.
func seenEmails(items []Item, live []int) (members, emails []string) {
	idx := slices.Clone(live)
	slices.SortStableFunc(idx, func(x, y int) int {
		kx, ky := keyOf(items[x].Event), keyOf(items[y].Event)
		switch {
		case kx.after(ky):
			return -1
		case ky.after(kx):
			return 1
		}
		return 0
	})
	seen := map[[2]string]bool{}
	for _, i := range idx {
		m := items[i].Event.Member
		k := [2]string{m.ID, strings.ToLower(m.Email)}
		if m.Email == "" || seen[k] {
			continue
		}
		seen[k] = true
		members, emails = append(members, k[0]), append(emails, k[1])
	}
	return members, emails
}

func comparePairs(a, b pair) int {
	return cmp.Or(strings.Compare(a.member, b.member), strings.Compare(a.org, b.org))
}

// sortedRows returns the map's rows sorted by compare.
func sortedRows[K comparable, R any](m map[K]*R, compare func(a, b *R) int) []R {
	ptrs := make([]*R, 0, len(m))
	for _, r := range m {
		ptrs = append(ptrs, r)
	}
	slices.SortFunc(ptrs, compare)
	out := make([]R, len(ptrs))
	for i, r := range ptrs {
		out[i] = *r
	}
	return out
}
