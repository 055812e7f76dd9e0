package store

import (
	"cmp"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/likeperson/portalsync/pkg/event"
)

// This file holds the pure decisions a batch makes after it wrote: what
// each event's result and log row say about what it changed, from what
// the tables hold now (written). No database here; reduce_test.go tables
// them.

// heldStamp is the (portal time, event id) a stored row or field holds; zero
// when none.
type heldStamp struct {
	set bool
	k   key
}

// written is what the writers report back (write.go): ids, which rows
// the batch inserted, the stamps the rows hold after the upserts (their
// RETURNING, or read for the rows they left alone), and what changed for
// each member beyond its rows (identity notes, in the order the
// statements ran).
type written struct {
	orgIDs   map[string]string // portal org id -> uuid
	profIDs  map[string]string // portal member id -> uuid
	created  map[string]bool   // members inserted by this batch
	fields   map[string][4]heldStamp
	status   map[pair]heldStamp
	inserted map[pair]bool // memberships inserted by this batch
	role     map[pair]heldStamp
	notes    map[string][]string
	// What the upserts changed, for the log's changes: whether each
	// profile field's value changed, and the membership's status and role
	// before and after (only those that changed).
	fieldChanged map[string][4]bool
	statusChange map[pair]Change
	roleChange   map[pair]Change
	// memberOf and orgOf map uuids back to portal ids (pairByIDs).
	memberOf, orgOf map[string]string
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

// changesOf is what an event changed: each part it applied whose row
// holds the event's own stamp after the batch (of several events of a
// batch on one row, the change is the newest's) and whose value changed
// (fieldChanged, status and role: what the upserts report; nil when
// unchanged or not written).
func changesOf(ev *event.Event, h held, fieldChanged [4]bool, status, role *Change) *Changes {
	k := keyOf(ev)
	own := func(s heldStamp) bool { return s.set && s.k.equal(k) }
	c := &Changes{}
	if ev.HasProfile() {
		for i, f := range event.ProfileFields {
			if ev.Member.Has(f) && fieldChanged[i] && own(h.fields[i]) {
				c.ProfileFields = append(c.ProfileFields, f.String())
			}
		}
	}
	if statusIntent(ev.Type) != "" && status != nil && own(h.status) {
		c.Status = status
	}
	if ev.Role != "" && role != nil && own(h.role) {
		c.Role = role
	}
	return c
}

// describe turns an outcome into the log row's status and detail: an event
// whose every part was superseded is skipped ("superseded by evt_…"),
// unless it created the member; a partly superseded one is a success that
// says what was applied and what not.
func describe(ev *event.Event, o outcome, memberCreated bool) (status, detail string) {
	if len(o.superseded) == 0 {
		return StatusSuccess, string(ev.Type) + " applied"
	}
	var by []string
	for _, id := range sortedKeys(o.superseded) {
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

// unjudged are the profiles and memberships whose stamps the upserts did
// not return (they left the rows alone: every part there is superseded, a
// late event) and judge needs: they are read (readStamps).
func unjudged(items []Item, p plan, w written) (members []string, pairs []pair) {
	seenM, seenP := map[string]bool{}, map[pair]bool{}
	for _, i := range p.live {
		ev := items[i].Event
		if _, ok := w.fields[ev.Member.ID]; !ok && ev.HasProfile() && ev.Member.Present() != 0 && !seenM[ev.Member.ID] {
			seenM[ev.Member.ID] = true
			members = append(members, ev.Member.ID)
		}
		_, hasStatus := w.status[pairOf(ev)]
		_, hasRole := w.role[pairOf(ev)]
		if ((statusIntent(ev.Type) != "" && !hasStatus) || (ev.Role != "" && !hasRole)) && !seenP[pairOf(ev)] {
			seenP[pairOf(ev)] = true
			pairs = append(pairs, pairOf(ev))
		}
	}
	return members, pairs
}

// judge sets each applied event's result from what the tables hold now
// (judgeEvent, describe): an event whose every part a newer event had
// already written is skipped, one that is partly superseded says so. The
// first event of a member the batch created says so too; a member's notes
// go with its last event that gets a log row.
func judge(items []Item, p plan, w written, erasures []erased) []Result {
	res := slices.Clone(p.results)
	for j, i := range p.erasures {
		res[i].Detail = erasureDetail(erasures[j])
	}
	created := map[string]bool{}
	for _, i := range p.live {
		ev, r := items[i].Event, &res[i]
		if m := ev.Member.ID; w.created[m] && !created[m] {
			created[m], r.MemberCreated = true, true
		}
		h := held{fields: w.fields[ev.Member.ID], status: w.status[pairOf(ev)], role: w.role[pairOf(ev)]}
		r.Status, r.Detail = describe(ev, judgeEvent(ev, h), r.MemberCreated)
		if r.Status == StatusSuccess {
			r.Changes = changesOf(ev, h, w.fieldChanged[ev.Member.ID], changePtr(w.statusChange, pairOf(ev)), changePtr(w.roleChange, pairOf(ev)))
		}
		// A membership this batch created, with no role row: say so, as
		// the member has no access by role there yet.
		if _, hasRole := w.role[pairOf(ev)]; w.inserted[pairOf(ev)] && !hasRole && ev.Role == "" {
			r.Detail += "; the member has no role in organization " + ev.Organization.ID + " yet"
		}
	}
	last := map[string]int{}
	for _, i := range p.live {
		if !p.relogged[i] {
			last[items[i].Event.Member.ID] = i
		}
	}
	for _, i := range p.live {
		if p.relogged[i] {
			continue // no log row: its detail stays as judged
		}
		ev, r := items[i].Event, &res[i]
		parts := []string{r.Detail}
		if len(p.live) > 1 && r.Status == StatusSuccess {
			parts[0] += fmt.Sprintf(" (batch of %d)", len(p.live))
		}
		if r.MemberCreated {
			parts = append([]string{"member created"}, parts...)
		}
		if last[ev.Member.ID] == i {
			parts = append(parts, w.notes[ev.Member.ID]...)
		}
		r.Detail = strings.Join(parts, "; ")
	}
	return res
}

func changePtr(m map[pair]Change, p pair) *Change {
	if c, ok := m[p]; ok {
		return &c
	}
	return nil
}

// erased is what erasing one member removed, and what changed for its
// account (eraseMembers).
type erased struct {
	profiles, memberships, logRows int
	notes                          []string
	// orgs are the organizations the member had a membership in: each
	// gets a log row of the erasure.
	orgs []orgRef
}

// erasureDetail is the log detail of a member-deleted event.
func erasureDetail(e erased) string {
	parts := []string{"member erased"}
	if e.profiles == 0 {
		parts = append(parts, "the app did not know the member")
	} else {
		parts = append(parts, fmt.Sprintf("profile and %d memberships deleted", e.memberships))
	}
	parts = append(parts, e.notes...)
	parts = append(parts, fmt.Sprintf("member ID replaced by its hash in %d log rows", e.logRows))
	return strings.Join(parts, "; ")
}

// logRow is one row of the sync log.
type logRow struct {
	eventID, eventType, member, org string // org: portal id, "" for none
	orgID                           string // uuid, "" when the batch did not read it
	status, detail                  string
	memberCreated                   bool
	occurred, received              time.Time // received: zero when unknown
	seq                             int64
	attempt                         int32
	source                          string // "" for none (NULL)
	changes                         *Changes
}

// logRowOf is item i's log row with result r. Every row names the
// organization the body names, skipped ones too, so that its admins see
// them; the member is its hash once the member is erased.
func logRowOf(it Item, r Result, p plan, orgIDs map[string]string) logRow {
	ev := it.Event
	row := logRow{
		eventID: ev.ID, eventType: string(ev.Type), member: ev.Member.ID, org: ev.Organization.ID,
		orgID: orgIDs[ev.Organization.ID], status: r.Status, detail: r.Detail, memberCreated: r.MemberCreated,
		occurred: ev.OccurredAt, received: it.Meta.ReceivedAt, seq: int64(it.Meta.StreamSeq), attempt: int32(max(it.Meta.Attempt, 1)),
		source: it.Meta.Source, changes: r.Changes,
	}
	if p.hashed[ev.Member.ID] {
		row.member = MemberHash(ev.Member.ID)
	}
	return row
}

// erasureRows are an erasure's rows for the organizations the member had
// a membership in: its own row (row) with the organization, and an event
// id of the event's and the organization's, as the account-link rows name
// theirs (one done row per event id).
func erasureRows(row logRow, orgs []orgRef) []logRow {
	out := make([]logRow, 0, len(orgs))
	for _, o := range orgs {
		r := row
		r.eventID, r.org, r.orgID = row.eventID+":"+o.portalID, o.portalID, o.id
		out = append(out, r)
	}
	return out
}

// logRows are the rows of the applied, skipped and erasing events (not the
// relogged ones), in stream order; failed are the refused events' rows
// (written apart, once per stream sequence). An erasure has, besides its
// own row (no organization: the body names none; it marks the event
// done), one row per organization the member had a membership in
// (erasureRows), so that the admins of each see it.
func logRows(items []Item, p plan, res []Result, orgIDs map[string]string, erasures []erased) (rows, failed []logRow) {
	erasureOf := make(map[int]erased, len(p.erasures))
	for j, i := range p.erasures {
		erasureOf[i] = erasures[j]
	}
	var idx []int
	for _, list := range [][]int{p.live, p.skipped, p.erasures} {
		for _, i := range list {
			if !p.relogged[i] {
				idx = append(idx, i)
			}
		}
	}
	slices.SortStableFunc(idx, func(x, y int) int { return cmp.Compare(items[x].Meta.StreamSeq, items[y].Meta.StreamSeq) })
	for _, i := range idx {
		row := logRowOf(items[i], res[i], p, orgIDs)
		rows = append(rows, row)
		rows = append(rows, erasureRows(row, erasureOf[i].orgs)...)
	}
	for _, i := range p.failed {
		failed = append(failed, logRowOf(items[i], res[i], p, orgIDs))
	}
	return rows, failed
}
