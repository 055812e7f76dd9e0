package store

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgtype"

	"github.com/likeperson/portalsync/pkg/event"
)

// This file holds the writers: each sends a row set that reduce.go decided
// and reports back what the tables hold (written). They decide nothing.

// lookUp reads, in one round trip, the items' events the log holds as
// done and their members erased before (by tombstone hash).
func lookUp(ctx context.Context, db DBTX, items []Item) (seen, error) {
	ids := make([]string, 0, len(items))
	byHash := map[string]string{}
	for _, it := range items {
		ids = append(ids, it.Event.ID)
		byHash[MemberHash(it.Event.Member.ID)] = it.Event.Member.ID
	}
	s := seen{logged: map[string]string{}, erased: map[string]bool{}}
	rows, err := db.Query(ctx, lookUpSQL, ids, sortedKeys(byHash))
	if err != nil {
		return s, fmt.Errorf("look up log and erased members: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var erased bool
		var id, status string
		if err := rows.Scan(&erased, &id, &status); err != nil {
			return s, fmt.Errorf("look up log and erased members: %w", err)
		}
		if erased {
			s.erased[byHash[id]] = true
		} else {
			s.logged[id] = status
		}
	}
	if err := rows.Err(); err != nil {
		return s, fmt.Errorf("look up log and erased members: %w", err)
	}
	return s, nil
}

// upsertOrganizations writes the organization rows.
func upsertOrganizations(ctx context.Context, db DBTX, orgs []orgRow) error {
	n := len(orgs)
	keys, names, ats, eids := make([]string, n), make([]string, n), make([]pgtype.Timestamptz, n), make([]pgtype.Text, n)
	for i, o := range orgs {
		keys[i] = o.id
		if o.named {
			names[i], ats[i], eids[i] = o.name, stamp(o.k.at), text(o.k.id)
		}
	}
	if _, err := db.Exec(ctx, upsertOrganizationsSQL, keys, names, ats, eids); err != nil {
		return fmt.Errorf("upsert organizations: %w", err)
	}
	return nil
}

// organizationIDs reads the organizations' ids FOR KEY SHARE, as the log's
// foreign key took them before 00022: an organization deleted meanwhile
// waits for this transaction, so that its trigger clears the ids the
// batch logs.
func organizationIDs(ctx context.Context, db DBTX, orgs []orgRow) (map[string]string, error) {
	if len(orgs) == 0 {
		return map[string]string{}, nil
	}
	keys := make([]string, len(orgs))
	for i, o := range orgs {
		keys[i] = o.id
	}
	ids, err := readIDs(ctx, db, organizationIDsSQL, keys)
	if err != nil {
		return nil, fmt.Errorf("read organization ids: %w", err)
	}
	return ids, nil
}

// upsertProfiles writes each member's merge patch and reports the
// profiles' ids, which members it inserted, and the field stamps of the
// rows it wrote; the ids of the rows it left alone are read.
func upsertProfiles(ctx context.Context, db DBTX, profiles []profileRow, w *written) error {
	n := len(profiles)
	keys := make([]string, n)
	args := []any{keys}
	for f := range event.ProfileFields {
		vals, ats, eids := make([]string, n), make([]pgtype.Timestamptz, n), make([]pgtype.Text, n)
		for i := range profiles {
			p := &profiles[i]
			keys[i], vals[i] = p.member, p.value(f)
			if fp := p.fields[f]; fp.set {
				ats[i], eids[i] = stamp(fp.k.at), text(fp.k.id)
			}
		}
		args = append(args, vals, ats, eids)
	}
	ats, eids := make([]pgtype.Timestamptz, n), make([]pgtype.Text, n)
	for i := range profiles {
		if nk, ok := profiles[i].newest(); ok {
			ats[i], eids[i] = stamp(nk.at), text(nk.id)
		}
	}
	rows, err := db.Query(ctx, upsertProfilesSQL, append(args, ats, eids)...)
	if err != nil {
		return fmt.Errorf("upsert profiles: %w", err)
	}
	w.profIDs, w.created, w.fields = make(map[string]string, n), map[string]bool{}, map[string][4]heldStamp{}
	w.fieldChanged = map[string][4]bool{}
	for rows.Next() {
		var k, pid string
		var inserted bool
		var c stampCols
		var changed [4]bool
		if err := rows.Scan(append([]any{&k, &pid, &inserted}, append(c.targets(), &changed[0], &changed[1], &changed[2], &changed[3])...)...); err != nil {
			rows.Close()
			return fmt.Errorf("upsert profiles: %w", err)
		}
		w.profIDs[k], w.fields[k], w.fieldChanged[k] = pid, c.held(), changed
		if inserted {
			w.created[k] = true
		}
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return fmt.Errorf("upsert profiles: %w", err)
	}
	var unwritten []string
	for _, k := range keys {
		if _, ok := w.profIDs[k]; !ok {
			unwritten = append(unwritten, k)
		}
	}
	if len(unwritten) > 0 {
		ids, err := readIDs(ctx, db, profileIDsSQL, unwritten)
		if err != nil {
			return fmt.Errorf("read profile ids: %w", err)
		}
		maps.Copy(w.profIDs, ids)
	}
	return nil
}

// upsertMemberships writes the memberships' status rows and reports the
// status stamps of the rows it wrote and which it inserted.
func upsertMemberships(ctx context.Context, db DBTX, ms []membershipRow, w *written) error {
	n := len(ms)
	profs, orgs, statuses := make([]string, n), make([]string, n), make([]string, n)
	deact, ats, latest := make([]pgtype.Timestamptz, n), make([]pgtype.Timestamptz, n), make([]time.Time, n)
	eids := make([]pgtype.Text, n)
	for i, j := range inKeyOrder(w, n, func(i int) pair { return ms[i].pair }) {
		m := ms[j]
		profs[i], orgs[i], statuses[i], latest[i] = w.profIDs[m.member], w.orgIDs[m.org], "active", m.latest
		if m.status != "" {
			statuses[i], ats[i], eids[i] = m.status, stamp(m.k.at), text(m.k.id)
			if m.status == "inactive" {
				deact[i] = stamp(m.k.at)
			}
		}
	}
	rows, err := db.Query(ctx, upsertMembershipsSQL, profs, orgs, statuses, deact, ats, eids, latest)
	if err != nil {
		return fmt.Errorf("upsert memberships: %w", err)
	}
	defer rows.Close()
	w.status, w.inserted, w.statusChange = map[pair]heldStamp{}, map[pair]bool{}, map[pair]Change{}
	for rows.Next() {
		var prof, org, now string
		var inserted bool
		var at pgtype.Timestamptz
		var id, before pgtype.Text
		if err := rows.Scan(&prof, &org, &inserted, &at, &id, &before, &now); err != nil {
			return fmt.Errorf("upsert memberships: %w", err)
		}
		p := w.pairByIDs(prof, org)
		w.status[p], w.inserted[p] = heldOf(at, id), inserted
		if ch := changeOf(before, now); ch != nil {
			w.statusChange[p] = *ch
		}
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("upsert memberships: %w", err)
	}
	return nil
}

// upsertRoles writes the role rows and reports the stamps of those it
// wrote.
func upsertRoles(ctx context.Context, db DBTX, roles []roleRow, w *written) error {
	w.role, w.roleChange = map[pair]heldStamp{}, map[pair]Change{}
	if len(roles) == 0 {
		return nil
	}
	n := len(roles)
	profs, orgs, names, eids, ats := make([]string, n), make([]string, n), make([]string, n), make([]string, n), make([]time.Time, n)
	for i, j := range inKeyOrder(w, n, func(i int) pair { return roles[i].pair }) {
		r := roles[j]
		profs[i], orgs[i], names[i], ats[i], eids[i] = w.profIDs[r.member], w.orgIDs[r.org], r.role, r.k.at, r.k.id
	}
	rows, err := db.Query(ctx, upsertRolesSQL, profs, orgs, names, ats, eids)
	if err != nil {
		return fmt.Errorf("upsert roles: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var prof, org, now string
		var at pgtype.Timestamptz
		var id, before pgtype.Text
		if err := rows.Scan(&prof, &org, &at, &id, &before, &now); err != nil {
			return fmt.Errorf("upsert roles: %w", err)
		}
		p := w.pairByIDs(prof, org)
		w.role[p] = heldOf(at, id)
		if ch := changeOf(before, now); ch != nil {
			w.roleChange[p] = *ch
		}
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("upsert roles: %w", err)
	}
	return nil
}

// readStamps reads the stamps judge needs of the rows the upserts left
// alone (unjudged): the members' profile fields, the memberships' status
// and role.
func readStamps(ctx context.Context, db DBTX, members []string, pairs []pair, w *written) error {
	if len(members) > 0 {
		if err := readProfileStamps(ctx, db, members, w); err != nil {
			return fmt.Errorf("read profile stamps: %w", err)
		}
	}
	if len(pairs) > 0 {
		if err := readMembershipStamps(ctx, db, pairs, w); err != nil {
			return fmt.Errorf("read membership stamps: %w", err)
		}
	}
	return nil
}

func readProfileStamps(ctx context.Context, db DBTX, members []string, w *written) error {
	rows, err := db.Query(ctx, profileStampsSQL, members)
	if err != nil {
		return err
	}
	defer rows.Close()
	for rows.Next() {
		var m string
		var c stampCols
		if err := rows.Scan(append([]any{&m}, c.targets()...)...); err != nil {
			return err
		}
		w.fields[m] = c.held()
	}
	return rows.Err()
}

// readMembershipStamps keeps what the upserts returned and adds what they
// did not (a membership without a role row gets a zero role stamp).
func readMembershipStamps(ctx context.Context, db DBTX, pairs []pair, w *written) error {
	profs, orgs := make([]string, len(pairs)), make([]string, len(pairs))
	for i, p := range pairs {
		profs[i], orgs[i] = w.profIDs[p.member], w.orgIDs[p.org]
	}
	rows, err := db.Query(ctx, membershipStampsSQL, profs, orgs)
	if err != nil {
		return err
	}
	defer rows.Close()
	for rows.Next() {
		var prof, org string
		var sAt, rAt pgtype.Timestamptz
		var sID, rID pgtype.Text
		if err := rows.Scan(&prof, &org, &sAt, &sID, &rAt, &rID); err != nil {
			return err
		}
		p := w.pairByIDs(prof, org)
		if _, ok := w.status[p]; !ok {
			w.status[p] = heldOf(sAt, sID)
		}
		if _, ok := w.role[p]; !ok {
			w.role[p] = heldOf(rAt, rID)
		}
	}
	return rows.Err()
}

// insertFailed writes a failed row for each refused event.
func insertFailed(ctx context.Context, db DBTX, rows []logRow) error {
	for _, r := range rows {
		if err := insertFailedRow(ctx, db, r); err != nil {
			return fmt.Errorf("log refused event %s: %w", r.eventID, err)
		}
	}
	return nil
}

// insertFailedRow writes one failed row (insertFailedSQL), for a batch's
// refused events and for LogFailure alike: the one place that knows the
// statement's arguments. The texts are cut to the lengths the columns
// allow (a failure may come from an undecodable message's headers); the
// erasure hash is of the whole member ID.
func insertFailedRow(ctx context.Context, db DBTX, r logRow) error {
	_, err := db.Exec(ctx, insertFailedSQL,
		truncate(r.eventID, 256), truncate(r.eventType, 64), truncate(r.member, 256), truncate(r.org, 256),
		truncate(r.detail, 1000), nullTime(r.occurred), nullTime(r.received), r.seq, r.attempt,
		optText(r.source), MemberHash(r.member))
	return err
}

// insertLog writes the log rows. No ON CONFLICT: lookUp left out the
// events logged before, so a conflict is a concurrent duplicate, whose
// unique violation makes the batch retry (classifyCode) and the retry find the
// event done.
func insertLog(ctx context.Context, db DBTX, rows []logRow) error {
	if len(rows) == 0 {
		return nil
	}
	n := len(rows)
	var (
		eventIDs, types, members, statuses, details = make([]string, n), make([]string, n), make([]string, n), make([]string, n), make([]string, n)
		orgs, orgIDs, sources, changes              = make([]pgtype.Text, n), make([]pgtype.Text, n), make([]pgtype.Text, n), make([]pgtype.Text, n)
		created                                     = make([]bool, n)
		occurred                                    = make([]time.Time, n)
		received                                    = make([]pgtype.Timestamptz, n)
		seqs                                        = make([]int64, n)
		attempts                                    = make([]int32, n)
	)
	for j, r := range rows {
		eventIDs[j], types[j], members[j], statuses[j], details[j] = r.eventID, r.eventType, r.member, r.status, r.detail
		orgs[j], orgIDs[j], sources[j] = optText(r.org), optText(r.orgID), optText(r.source)
		if r.changes != nil {
			b, err := json.Marshal(r.changes)
			if err != nil {
				return fmt.Errorf("insert log: changes of %s: %w", r.eventID, err)
			}
			changes[j] = text(string(b))
		}
		created[j], occurred[j], seqs[j], attempts[j] = r.memberCreated, r.occurred, r.seq, r.attempt
		if !r.received.IsZero() {
			received[j] = stamp(r.received)
		}
	}
	_, err := db.Exec(ctx, insertLogSQL, eventIDs, types, members, orgs, orgIDs, statuses, details, created, occurred, received, seqs, attempts, sources, changes)
	if err != nil {
		return fmt.Errorf("insert log: %w", err)
	}
	return nil
}

// readIDs reads (key, id) pairs for the given keys.
func readIDs(ctx context.Context, db DBTX, sql string, keys []string) (map[string]string, error) {
	rows, err := db.Query(ctx, sql, keys)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := make(map[string]string, len(keys))
	for rows.Next() {
		var k, id string
		if err := rows.Scan(&k, &id); err != nil {
			return nil, err
		}
		out[k] = id
	}
	return out, rows.Err()
}

// pairByIDs maps a membership's (profile, organization) uuids, as a
// statement returns them, back to its portal ids.
func (w *written) pairByIDs(prof, org string) pair {
	if w.memberOf == nil {
		w.memberOf, w.orgOf = make(map[string]string, len(w.profIDs)), make(map[string]string, len(w.orgIDs))
		for m, id := range w.profIDs {
			w.memberOf[id] = m
		}
		for o, id := range w.orgIDs {
			w.orgOf[id] = o
		}
	}
	return pair{w.memberOf[prof], w.orgOf[org]}
}

// inKeyOrder returns the indexes of n membership rows (pairAt) in the
// order of their (profile, organization) uuids, the order their upsert
// locks them in (ORDER BY 1, 2): sent so, PostgreSQL's sort finds them
// sorted.
func inKeyOrder(w *written, n int, pairAt func(i int) pair) []int {
	type ids struct {
		prof, org string
		i         int
	}
	keys := make([]ids, n)
	for i := range keys {
		p := pairAt(i)
		keys[i] = ids{w.profIDs[p.member], w.orgIDs[p.org], i}
	}
	slices.SortFunc(keys, func(a, b ids) int { return cmp.Or(strings.Compare(a.prof, b.prof), strings.Compare(a.org, b.org)) })
	idx := make([]int, n)
	for j, k := range keys {
		idx[j] = k.i
	}
	return idx
}

// stampCols are the scan targets of a profile's four field stamps
// (portal time, event id), in event.ProfileFields order.
type stampCols struct {
	at [4]pgtype.Timestamptz
	id [4]pgtype.Text
}

func (c *stampCols) targets() []any {
	out := make([]any, 0, 8)
	for i := range c.at {
		out = append(out, &c.at[i], &c.id[i])
	}
	return out
}

func (c *stampCols) held() [4]heldStamp {
	var h [4]heldStamp
	for i := range h {
		h[i] = heldOf(c.at[i], c.id[i])
	}
	return h
}

func sortedKeys[V any](m map[string]V) []string {
	return slices.Sorted(maps.Keys(m))
}

func text(s string) pgtype.Text            { return pgtype.Text{String: s, Valid: true} }
func optText(s string) pgtype.Text         { return pgtype.Text{String: s, Valid: s != ""} }
func stamp(t time.Time) pgtype.Timestamptz { return pgtype.Timestamptz{Time: t, Valid: true} }

// changeOf is a value's change from before (NULL: none) to now; nil when
// it did not change.
func changeOf(before pgtype.Text, now string) *Change {
	if before.Valid && before.String == now {
		return nil
	}
	ch := Change{New: now}
	if before.Valid {
		ch.Old = &before.String
	}
	return &ch
}

// heldOf is a stamp as PostgreSQL returns it.
func heldOf(at pgtype.Timestamptz, id pgtype.Text) heldStamp {
	if !at.Valid || at.InfinityModifier != pgtype.Finite {
		return heldStamp{}
	}
	return heldStamp{set: true, k: key{at.Time, id.String}}
}
