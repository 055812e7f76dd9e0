package store

import (
	"cmp"
	"context"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgtype"

	"github.com/likeperson/portalsync/pkg/event"
)

// Item is one event of a batch with its delivery metadata.
type Item struct {
	Event *event.Event
	Meta  Meta
}

// ApplyBatch applies many events with set-based statements, in one
// transaction on the Store's DBTX (over a transaction: in a savepoint of
// it). The batch's events are reduced, per row, to the newest one in
// portal order (which is what applying them one by one yields, whatever
// the order), then each table gets one multi-row upsert whose rows are
// sorted by key, so concurrent batches lock rows in the same order. It
// returns one Result per item, in order. When the transaction fails, no
// item is applied: the caller retries or falls back to one batch per event
// to isolate a bad one. Errors are classified here, once (KindOf). A
// single event is a batch of one (Apply).
//
// Organizations first: organization rows are shared by every member of an
// organization, and an upsert locks the rows it meets even when it writes
// nothing, so inside the batch's transaction every concurrent batch of an
// organization would queue on its row until the first commits (measured in
// a27998c: part of the step from 8k to 25k events/s, docs/BENCHMARKS.md).
// They are upserted first, in a short transaction of their own (over a
// caller's transaction, a savepoint: the caller holds the locks until it
// commits). That is safe on its own: the newest-event rule makes it
// idempotent, and a failed or retried batch finds them done.
func (s *Store) ApplyBatch(ctx context.Context, items []Item) ([]Result, error) {
	now := s.now()
	orgArgs := organizationArgs(items)
	err := pgx.BeginFunc(ctx, s.db, func(tx pgx.Tx) error {
		_, err := tx.Exec(ctx, upsertOrganizationsSQL, orgArgs...)
		return err
	})
	if err != nil {
		return nil, interpretError(fmt.Errorf("apply batch of %d: upsert organizations: %w", len(items), err))
	}
	var res []Result
	err = pgx.BeginFunc(ctx, s.db, func(tx pgx.Tx) error {
		b := &batch{tx: tx, items: items, results: make([]Result, len(items)), orgKeys: orgArgs[0].([]string), now: now}
		if err := b.run(ctx); err != nil {
			return err
		}
		res = b.results
		return nil
	})
	if err != nil {
		return nil, interpretError(fmt.Errorf("apply batch of %d: %w", len(items), err))
	}
	return res, nil
}

// Apply applies one event: a batch of one.
func (s *Store) Apply(ctx context.Context, ev *event.Event, meta Meta) (Result, error) {
	res, err := s.ApplyBatch(ctx, []Item{{Event: ev, Meta: meta}})
	if err != nil {
		return Result{}, fmt.Errorf("apply event %s: %w", ev.ID, err)
	}
	return res[0], nil
}

type batch struct {
	tx      pgx.Tx
	items   []Item
	results []Result
	// live are the indexes of the items to apply: known types, not applied
	// before, first occurrence of their event id.
	live    []int
	skipped []int
	orgIDs  map[string]string // portal org id -> uuid
	// notes are what changed for a member beyond its rows' values (access
	// revoked or restored, status), told in the log of its last event.
	notes map[string][]string // portal member id -> notes
	// orgKeys are the organizations upserted before the transaction.
	orgKeys []string
	profIDs map[string]string // portal member id -> uuid
	created map[string]bool   // portal member ids inserted by this batch
	// failed are the indexes of the items refused before applying (dated
	// in the future).
	failed []int
	// erasures are the indexes of the member-deleted events to apply;
	// erased holds their members and those erased before the batch, whose
	// other events are skipped and whose log rows carry MemberHash.
	erasures []int
	erased   map[string]bool
	// What the upserts wrote (RETURNING), so that judge reads only the
	// rows they left alone: the profile field stamps, the membership status
	// stamps (and which memberships were inserted), the role stamps.
	heldFields map[string][4]heldStamp
	heldStatus map[pair]heldStamp
	msInserted map[pair]bool
	heldRole   map[pair]heldStamp
	// now is the syncer's clock; an event dated more than MaxAhead after
	// it is refused.
	now time.Time
	// logged are the indexes of replayed items whose event the log holds
	// already (success or skipped): applied again, not logged again.
	logged map[int]bool
}

// MaxAhead is how far in the future an event's occurred_at may be by the
// syncer's clock: the ingress's default webhook timestamp tolerance. An
// event dated later is logged failed and never applied, since it would
// win every later newest-wins comparison for its member.
const MaxAhead = 5 * time.Minute

func (b *batch) run(ctx context.Context) error {
	if err := b.sort(ctx); err != nil {
		return err
	}
	if len(b.live) > 0 {
		for _, step := range []func(context.Context) error{
			b.organizations, b.profiles, b.linkAuthUsers, b.memberships, b.roles, b.accessAndStatus, b.judge,
		} {
			if err := step(ctx); err != nil {
				return err
			}
		}
	}
	if err := b.eraseMembers(ctx); err != nil {
		return err
	}
	return b.log(ctx)
}

// sort finds what is already done, skipped, or repeated in the batch.
func (b *batch) sort(ctx context.Context) error {
	ids := make([]string, 0, len(b.items))
	for _, it := range b.items {
		ids = append(ids, it.Event.ID)
	}
	// One round trip: the events already logged, and the members erased
	// before (by tombstone hash).
	byHash := map[string]string{}
	for _, it := range b.items {
		byHash[MemberHash(it.Event.Member.ID)] = it.Event.Member.ID
	}
	done := map[string]string{}
	b.erased, b.logged = map[string]bool{}, map[int]bool{}
	rows, err := b.tx.Query(ctx, `
		SELECT false, event_id, status FROM public.portal_sync_log
		WHERE event_id = ANY($1) AND status IN ('success', 'skipped')
		UNION ALL
		SELECT true, member_hash, '' FROM portalsync.erased_members WHERE member_hash = ANY($2)`, ids, sortedKeys(byHash))
	if err != nil {
		return fmt.Errorf("look up log and erased members: %w", err)
	}
	for rows.Next() {
		var erased bool
		var id, status string
		if err := rows.Scan(&erased, &id, &status); err != nil {
			rows.Close()
			return fmt.Errorf("look up log and erased members: %w", err)
		}
		if erased {
			b.erased[byHash[id]] = true
		} else {
			done[id] = status
		}
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return fmt.Errorf("look up log and erased members: %w", err)
	}
	erasedBy := map[string]string{} // member -> the batch's member-deleted event
	for _, it := range b.items {
		if ev := it.Event; ev.Type == event.MemberDeleted && ev.CheckClock(b.now, MaxAhead) == nil {
			if _, ok := erasedBy[ev.Member.ID]; !ok && !b.erased[ev.Member.ID] {
				erasedBy[ev.Member.ID] = ev.ID
			}
		}
	}
	first := map[string]int{}
	for i, it := range b.items {
		ev := it.Event
		if status, ok := done[ev.ID]; ok {
			if !it.Meta.Replay {
				b.results[i] = Result{Status: status, AlreadyDone: true}
				continue
			}
			// Applied again to repair the tables; its row stays the one.
			b.logged[i] = true
		}
		if j, ok := first[ev.ID]; ok {
			// The same event twice in one batch: the first one's result.
			b.results[i] = b.results[j]
			b.results[i].AlreadyDone = true
			continue
		}
		first[ev.ID] = i
		if !ev.Type.Known() {
			b.results[i] = Result{Status: StatusSkipped, Detail: fmt.Sprintf("unknown event type %q", truncate(string(ev.Type), 64))}
			b.skipped = append(b.skipped, i)
			continue
		}
		if err := ev.CheckClock(b.now, MaxAhead); err != nil {
			b.results[i] = Result{Status: StatusFailed, Detail: "not applied: " + err.Error() + " by the syncer's clock"}
			b.failed = append(b.failed, i)
			continue
		}
		switch by, erasing := erasedBy[ev.Member.ID]; {
		case b.erased[ev.Member.ID]:
			// Erased before: nothing may bring the member back.
			b.results[i] = Result{Status: StatusSkipped, Detail: "member erased", MemberErased: true}
			b.skipped = append(b.skipped, i)
			continue
		case erasing && by == ev.ID:
			b.results[i] = Result{Status: StatusSuccess, MemberErased: true}
			b.erasures = append(b.erasures, i)
			continue
		case erasing:
			b.results[i] = Result{Status: StatusSkipped, Detail: "member erased by " + by, MemberErased: true}
			b.skipped = append(b.skipped, i)
			continue
		}
		b.results[i] = Result{Status: StatusSuccess}
		b.live = append(b.live, i)
	}
	return nil
}

// logFailed writes a failed row for each event refused before applying
// (insertFailedSQL, as LogFailure does).
func (b *batch) logFailed(ctx context.Context) error {
	for _, i := range b.failed {
		it, r := b.items[i], b.results[i]
		ev := it.Event
		_, err := b.tx.Exec(ctx, insertFailedSQL,
			ev.ID, string(ev.Type), b.loggedMember(ev.Member.ID), ev.Organization.ID, r.Detail, ev.OccurredAt,
			nullTime(it.Meta.ReceivedAt), int64(it.Meta.StreamSeq), int32(max(it.Meta.Attempt, 1)))
		if err != nil {
			return fmt.Errorf("log refused event %s: %w", ev.ID, err)
		}
	}
	return nil
}

// loggedMember is the member ID a log row may hold: the hash once the
// member is erased.
func (b *batch) loggedMember(id string) string {
	if b.erased[id] {
		return MemberHash(id)
	}
	return id
}

func text(s string) pgtype.Text            { return pgtype.Text{String: s, Valid: true} }
func stamp(t time.Time) pgtype.Timestamptz { return pgtype.Timestamptz{Time: t, Valid: true} }
func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

// ids reads (key, id) pairs for the given keys.
func (b *batch) ids(ctx context.Context, sql string, keys []string) (map[string]string, error) {
	rows, err := b.tx.Query(ctx, sql, keys)
	if err != nil {
		return nil, err
	}
	out := make(map[string]string, len(keys))
	for rows.Next() {
		var k, id string
		if err := rows.Scan(&k, &id); err != nil {
			rows.Close()
			return nil, err
		}
		out[k] = id
	}
	rows.Close()
	return out, rows.Err()
}

// organizationArgs reduces the items' organizations to the newest event
// that carries a name, as the arguments of upsertOrganizationsSQL.
func organizationArgs(items []Item) []any {
	type org struct {
		named bool
		k     key
		name  string
	}
	orgs := map[string]*org{}
	for _, it := range items {
		ev := it.Event
		if !ev.Type.Known() || ev.Organization.ID == "" {
			continue
		}
		o, ok := orgs[ev.Organization.ID]
		if !ok {
			o = &org{}
			orgs[ev.Organization.ID] = o
		}
		if ev.Organization.HasName() && (!o.named || keyOf(ev).after(o.k)) {
			o.named, o.k, o.name = true, keyOf(ev), ev.Organization.Name
		}
	}
	keys := sortedKeys(orgs)
	names, ats, eids := make([]string, len(keys)), make([]pgtype.Timestamptz, len(keys)), make([]pgtype.Text, len(keys))
	for i, k := range keys {
		if o := orgs[k]; o.named {
			names[i], ats[i], eids[i] = o.name, stamp(o.k.at), text(o.k.id)
		}
	}
	return []any{keys, names, ats, eids}
}

var upsertOrganizationsSQL = `
	INSERT INTO public.organizations AS o (portal_org_id, name, portal_updated_at, portal_event_id)
	SELECT * FROM unnest($1::text[], $2::text[], $3::timestamptz[], $4::text[]) AS t(k, n, a, e) ORDER BY t.k COLLATE "C"
	ON CONFLICT (portal_org_id) DO UPDATE
	SET name = excluded.name, portal_updated_at = excluded.portal_updated_at,
	    portal_event_id = excluded.portal_event_id, updated_at = now()
	WHERE excluded.portal_updated_at IS NOT NULL AND ` + newerExcluded("o", "o.name IS DISTINCT FROM excluded.name")

// organizations reads the ids of the organizations upserted before the
// transaction (ApplyBatch). FOR KEY SHARE, as the log's foreign key took it
// before 00022: an organization deleted meanwhile waits for this
// transaction, so that its trigger clears the ids this batch logs.
func (b *batch) organizations(ctx context.Context) error {
	var err error
	b.orgIDs, err = b.ids(ctx, `SELECT portal_org_id, id::text FROM public.organizations WHERE portal_org_id = ANY($1) FOR KEY SHARE`, b.orgKeys)
	if err != nil {
		return fmt.Errorf("read organization ids: %w", err)
	}
	return nil
}

// newerExcluded is the ON CONFLICT condition for writing an event's values
// over a row: the stored (portal time, event id) of alias is older than
// excluded's — which orders events of the same portal time by id, so the
// outcome never depends on delivery order — or it is the same event and
// the stored values differ (valuesDiffer, a full condition), which lets a
// replay repair a damaged row while applying an event twice writes
// nothing.
func newerExcluded(alias, valuesDiffer string) string {
	stored := fmt.Sprintf("(coalesce(%s.portal_updated_at, '-infinity'), coalesce(%s.portal_event_id, ''))", alias, alias)
	incoming := "(excluded.portal_updated_at, excluded.portal_event_id)"
	return fmt.Sprintf("(%s < %s OR (%s = %s AND %s))", stored, incoming, stored, incoming, valuesDiffer)
}

// profileColumns are the profile field columns, in event.ProfileFields
// order; each has <name>_portal_at and <name>_event_id, the stamp of the
// value it holds.
var profileColumns = []string{"email", "first_name", "last_name", "phone"}

// upsertProfilesSQL writes each member's merge patch: a field is written
// when the batch carries it and its event is newer than the field's stamp
// (or is the same event and the value differs, which lets a replay repair
// it); a field the batch does not carry keeps its value. A new member is
// inserted with every field, carried or not (then unstamped).
var upsertProfilesSQL = func() string {
	var cols, sel, set, anyNewer []string
	args := []string{"$1::text[]"}
	for i, c := range profileColumns {
		v, at, eid := 2+3*i, 3+3*i, 4+3*i
		args = append(args, fmt.Sprintf("$%d::text[]", v), fmt.Sprintf("$%d::timestamptz[]", at), fmt.Sprintf("$%d::text[]", eid))
		cols = append(cols, c, c+"_portal_at", c+"_event_id")
		sel = append(sel, fmt.Sprintf("nullif(t.v%d, '')", i), fmt.Sprintf("t.a%d", i), fmt.Sprintf("t.e%d", i))
		stored := fmt.Sprintf("(coalesce(p.%s_portal_at, '-infinity'), coalesce(p.%s_event_id, ''))", c, c)
		incoming := fmt.Sprintf("(excluded.%s_portal_at, excluded.%s_event_id)", c, c)
		newer := fmt.Sprintf("(excluded.%s_portal_at IS NOT NULL AND (%s < %s OR (%s = %s AND p.%s IS DISTINCT FROM excluded.%s)))",
			c, stored, incoming, stored, incoming, c, c)
		anyNewer = append(anyNewer, newer)
		for _, col := range []string{c, c + "_portal_at", c + "_event_id"} {
			set = append(set, fmt.Sprintf("%s = CASE WHEN %s THEN excluded.%s ELSE p.%s END", col, newer, col, col))
		}
	}
	names := []string{"k"}
	for i := range profileColumns {
		names = append(names, fmt.Sprintf("v%d", i), fmt.Sprintf("a%d", i), fmt.Sprintf("e%d", i))
	}
	newestStored := "(coalesce(p.portal_updated_at, '-infinity'), coalesce(p.portal_event_id, ''))"
	newestIncoming := "(excluded.portal_updated_at, excluded.portal_event_id)"
	return fmt.Sprintf(`
		INSERT INTO public.profiles AS p (portal_member_id, %s, portal_updated_at, portal_event_id)
		SELECT t.k, %s, t.ts, t.eid
		FROM unnest(%s, $14::timestamptz[], $15::text[]) AS t(%s, ts, eid)
		ORDER BY t.k COLLATE "C"
		ON CONFLICT (portal_member_id) DO UPDATE
		SET %s,
		    portal_updated_at = CASE WHEN excluded.portal_updated_at IS NOT NULL AND %s < %s THEN excluded.portal_updated_at ELSE p.portal_updated_at END,
		    portal_event_id = CASE WHEN excluded.portal_updated_at IS NOT NULL AND %s < %s THEN excluded.portal_event_id ELSE p.portal_event_id END,
		    updated_at = now()
		WHERE %s
		RETURNING portal_member_id, id::text, xmax = 0, email_portal_at, email_event_id, first_name_portal_at, first_name_event_id,
		          last_name_portal_at, last_name_event_id, phone_portal_at, phone_event_id`,
		strings.Join(cols, ", "), strings.Join(sel, ", "), strings.Join(args, ", "), strings.Join(names, ", "),
		strings.Join(set, ",\n\t\t    "), newestStored, newestIncoming, newestStored, newestIncoming,
		strings.Join(anyNewer, "\n\t\t   OR "))
}()

func (b *batch) profiles(ctx context.Context) error {
	evs := make([]*event.Event, len(b.live))
	for j, i := range b.live {
		evs[j] = b.items[i].Event
	}
	patches := reduceProfiles(evs)
	keys := sortedKeys(patches)
	n := len(keys)
	args := []any{keys}
	for f := range profileColumns {
		vals, ats, eids := make([]string, n), make([]pgtype.Timestamptz, n), make([]pgtype.Text, n)
		for i, k := range keys {
			p := patches[k]
			vals[i] = p.value(f)
			if fp := p.fields[f]; fp.set {
				ats[i], eids[i] = stamp(fp.k.at), text(fp.k.id)
			}
		}
		args = append(args, vals, ats, eids)
	}
	ats, eids := make([]pgtype.Timestamptz, n), make([]pgtype.Text, n)
	for i, k := range keys {
		if nk, ok := patches[k].newest(); ok {
			ats[i], eids[i] = stamp(nk.at), text(nk.id)
		}
	}
	args = append(args, ats, eids)
	rows, err := b.tx.Query(ctx, upsertProfilesSQL, args...)
	if err != nil {
		return fmt.Errorf("upsert profiles: %w", err)
	}
	b.created, b.heldFields, b.profIDs = map[string]bool{}, map[string][4]heldStamp{}, make(map[string]string, n)
	for rows.Next() {
		var k, pid string
		var inserted bool
		var at [4]pgtype.Timestamptz
		var id [4]pgtype.Text
		if err := rows.Scan(&k, &pid, &inserted, &at[0], &id[0], &at[1], &id[1], &at[2], &id[2], &at[3], &id[3]); err != nil {
			rows.Close()
			return fmt.Errorf("upsert profiles: %w", err)
		}
		b.profIDs[k] = pid
		if inserted {
			b.created[k] = true
		}
		var h [4]heldStamp
		for i := range at {
			h[i] = heldOf(at[i], id[i])
		}
		b.heldFields[k] = h
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return fmt.Errorf("upsert profiles: %w", err)
	}
	// The rows the upsert left alone (nothing newer to write) are read.
	var unwritten []string
	for _, k := range keys {
		if _, ok := b.profIDs[k]; !ok {
			unwritten = append(unwritten, k)
		}
	}
	if len(unwritten) > 0 {
		ids, err := b.ids(ctx, `SELECT portal_member_id, id::text FROM public.profiles WHERE portal_member_id = ANY($1)`, unwritten)
		if err != nil {
			return fmt.Errorf("read profile ids: %w", err)
		}
		maps.Copy(b.profIDs, ids)
	}
	// The first event of each created member says so.
	seen := map[string]bool{}
	for _, i := range b.live {
		m := b.items[i].Event.Member.ID
		if b.created[m] && !seen[m] {
			seen[m] = true
			b.results[i].MemberCreated = true
		}
	}
	return nil
}

func (b *batch) profileIDs() []string {
	out := make([]string, 0, len(b.profIDs))
	for _, k := range sortedKeys(b.profIDs) {
		out = append(out, b.profIDs[k])
	}
	slices.Sort(out)
	return out
}

func (b *batch) linkAuthUsers(ctx context.Context) error {
	b.notes = map[string][]string{}
	members, emails := b.seenEmails()
	return b.identity(ctx, linkMembersSQL, "link accounts", members, emails)
}

type pair struct{ profile, org string }

func (b *batch) pairOf(ev *event.Event) pair {
	return pair{b.profIDs[ev.Member.ID], b.orgIDs[ev.Organization.ID]}
}

func sortedPairs[V any](m map[pair]V) []pair {
	keys := make([]pair, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, func(a, b pair) int { return cmp.Or(cmp.Compare(a.profile, b.profile), cmp.Compare(a.org, b.org)) })
	return keys
}

func (b *batch) memberships(ctx context.Context) error {
	// Per membership: the newest event that speaks about status, and the
	// newest portal time of any event.
	type ms struct {
		hasStatus bool
		k         key
		status    string
		latest    time.Time
	}
	all := map[pair]*ms{}
	for _, i := range b.live {
		ev := b.items[i].Event
		p := b.pairOf(ev)
		m, ok := all[p]
		if !ok {
			m = &ms{latest: ev.OccurredAt}
			all[p] = m
		}
		if ev.OccurredAt.After(m.latest) {
			m.latest = ev.OccurredAt
		}
		if st := statusIntent(ev.Type); st != "" && (!m.hasStatus || keyOf(ev).after(m.k)) {
			m.hasStatus, m.k, m.status = true, keyOf(ev), st
		}
	}
	keys := sortedPairs(all)
	n := len(keys)
	profs, orgs, statuses := make([]string, n), make([]string, n), make([]string, n)
	deact, ats, latest := make([]pgtype.Timestamptz, n), make([]pgtype.Timestamptz, n), make([]time.Time, n)
	eids := make([]pgtype.Text, n)
	for i, k := range keys {
		m := all[k]
		profs[i], orgs[i], statuses[i], latest[i] = k.profile, k.org, "active", m.latest
		if m.hasStatus {
			statuses[i], ats[i], eids[i] = m.status, stamp(m.k.at), text(m.k.id)
			if m.status == "inactive" {
				deact[i] = stamp(m.k.at)
			}
		}
	}
	const newerStatus = `(excluded.status_portal_at IS NOT NULL AND (
		(coalesce(m.status_portal_at, '-infinity'), coalesce(m.status_event_id, '')) < (excluded.status_portal_at, excluded.status_event_id)
		OR ((coalesce(m.status_portal_at, '-infinity'), coalesce(m.status_event_id, '')) = (excluded.status_portal_at, excluded.status_event_id)
		    AND (m.status, m.deactivated_at) IS DISTINCT FROM (excluded.status, excluded.deactivated_at))))`
	rows, err := b.tx.Query(ctx, `
		INSERT INTO public.organization_memberships AS m
		  (profile_id, organization_id, status, deactivated_at, status_portal_at, status_event_id, portal_updated_at)
		SELECT * FROM unnest($1::text[]::uuid[], $2::text[]::uuid[], $3::text[], $4::timestamptz[], $5::timestamptz[], $6::text[], $7::timestamptz[])
		ORDER BY 1, 2
		ON CONFLICT (profile_id, organization_id) DO UPDATE
		SET status = CASE WHEN `+newerStatus+` THEN excluded.status WHEN m.status_portal_at IS NULL THEN 'active' ELSE m.status END,
		    deactivated_at = CASE WHEN `+newerStatus+` THEN excluded.deactivated_at WHEN m.status_portal_at IS NULL THEN NULL ELSE m.deactivated_at END,
		    status_portal_at = CASE WHEN `+newerStatus+` THEN excluded.status_portal_at ELSE m.status_portal_at END,
		    status_event_id = CASE WHEN `+newerStatus+` THEN excluded.status_event_id ELSE m.status_event_id END,
		    portal_updated_at = greatest(m.portal_updated_at, excluded.portal_updated_at),
		    updated_at = now()
		WHERE `+newerStatus+` OR m.portal_updated_at < excluded.portal_updated_at
		   OR (m.status_portal_at IS NULL AND (m.status <> 'active' OR m.deactivated_at IS NOT NULL))
		RETURNING profile_id::text, organization_id::text, xmax = 0, status_portal_at, status_event_id`,
		profs, orgs, statuses, deact, ats, eids, latest)
	if err != nil {
		return fmt.Errorf("upsert memberships: %w", err)
	}
	b.heldStatus, b.msInserted = map[pair]heldStamp{}, map[pair]bool{}
	for rows.Next() {
		var p pair
		var inserted bool
		var at pgtype.Timestamptz
		var id pgtype.Text
		if err := rows.Scan(&p.profile, &p.org, &inserted, &at, &id); err != nil {
			rows.Close()
			return fmt.Errorf("upsert memberships: %w", err)
		}
		b.heldStatus[p], b.msInserted[p] = heldOf(at, id), inserted
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return fmt.Errorf("upsert memberships: %w", err)
	}
	return nil
}

func (b *batch) roles(ctx context.Context) error {
	type role struct {
		k    key
		role string
	}
	all := map[pair]*role{}
	for _, i := range b.live {
		ev := b.items[i].Event
		if ev.Role == "" {
			continue
		}
		p := b.pairOf(ev)
		if r, ok := all[p]; !ok || keyOf(ev).after(r.k) {
			all[p] = &role{k: keyOf(ev), role: string(ev.Role)}
		}
	}
	b.heldRole = map[pair]heldStamp{}
	if len(all) == 0 {
		return nil
	}
	keys := sortedPairs(all)
	n := len(keys)
	profs, orgs, roles, eids, ats := make([]string, n), make([]string, n), make([]string, n), make([]string, n), make([]time.Time, n)
	for i, k := range keys {
		r := all[k]
		profs[i], orgs[i], roles[i], ats[i], eids[i] = k.profile, k.org, r.role, r.k.at, r.k.id
	}
	rows, err := b.tx.Query(ctx, `
		INSERT INTO public.role_assignments AS r (profile_id, organization_id, role, portal_updated_at, portal_event_id)
		SELECT * FROM unnest($1::text[]::uuid[], $2::text[]::uuid[], $3::text[], $4::timestamptz[], $5::text[]) ORDER BY 1, 2
		ON CONFLICT (profile_id, organization_id) DO UPDATE
		SET role = excluded.role, portal_updated_at = excluded.portal_updated_at,
		    portal_event_id = excluded.portal_event_id, updated_at = now()
		WHERE `+newerExcluded("r", "r.role <> excluded.role")+`
		RETURNING profile_id::text, organization_id::text, portal_updated_at, portal_event_id`,
		profs, orgs, roles, ats, eids)
	if err != nil {
		return fmt.Errorf("upsert roles: %w", err)
	}
	for rows.Next() {
		var p pair
		var at pgtype.Timestamptz
		var id pgtype.Text
		if err := rows.Scan(&p.profile, &p.org, &at, &id); err != nil {
			rows.Close()
			return fmt.Errorf("upsert roles: %w", err)
		}
		b.heldRole[p] = heldOf(at, id)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return fmt.Errorf("upsert roles: %w", err)
	}
	return nil
}

// accessAndStatus derives the affected profiles' status from their
// memberships and brings their accounts in line, in one statement
// (identity.go).
func (b *batch) accessAndStatus(ctx context.Context) error {
	return b.identity(ctx, applyAccessSQL, "apply status and account access")
}

// heldOf is a stamp as PostgreSQL returns it.
func heldOf(at pgtype.Timestamptz, id pgtype.Text) heldStamp {
	if !at.Valid || at.InfinityModifier != pgtype.Finite {
		return heldStamp{}
	}
	return heldStamp{set: true, k: key{at.Time, id.String}}
}

// judge sets each applied event's status and detail from what the tables
// now hold (see describe): an event whose every part a newer event had
// already written is skipped, one that is partly superseded says so. The
// stamps come from the upserts' RETURNING; only rows the upserts left
// alone (every part there superseded: a late event) are read.
func (b *batch) judge(ctx context.Context) error {
	var members []string
	var missing []pair
	seenM, seenP := map[string]bool{}, map[pair]bool{}
	for _, i := range b.live {
		ev := b.items[i].Event
		if _, ok := b.heldFields[ev.Member.ID]; !ok && ev.HasProfile() && ev.Member.Present() != 0 && !seenM[ev.Member.ID] {
			seenM[ev.Member.ID] = true
			members = append(members, ev.Member.ID)
		}
		p := b.pairOf(ev)
		_, hasStatus := b.heldStatus[p]
		_, hasRole := b.heldRole[p]
		if ((statusIntent(ev.Type) != "" && !hasStatus) || (ev.Role != "" && !hasRole)) && !seenP[p] {
			seenP[p] = true
			missing = append(missing, p)
		}
	}
	if len(members) > 0 {
		rows, err := b.tx.Query(ctx, `SELECT portal_member_id, email_portal_at, email_event_id, first_name_portal_at, first_name_event_id,
			       last_name_portal_at, last_name_event_id, phone_portal_at, phone_event_id
			FROM public.profiles WHERE portal_member_id = ANY($1)`, members)
		if err != nil {
			return fmt.Errorf("read profile stamps: %w", err)
		}
		for rows.Next() {
			var m string
			var at [4]pgtype.Timestamptz
			var id [4]pgtype.Text
			if err := rows.Scan(&m, &at[0], &id[0], &at[1], &id[1], &at[2], &id[2], &at[3], &id[3]); err != nil {
				rows.Close()
				return fmt.Errorf("read profile stamps: %w", err)
			}
			var h [4]heldStamp
			for i := range at {
				h[i] = heldOf(at[i], id[i])
			}
			b.heldFields[m] = h
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return fmt.Errorf("read profile stamps: %w", err)
		}
	}
	if len(missing) > 0 {
		profs, orgs := make([]string, len(missing)), make([]string, len(missing))
		for i, p := range missing {
			profs[i], orgs[i] = p.profile, p.org
		}
		rows, err := b.tx.Query(ctx, `SELECT m.profile_id::text, m.organization_id::text, m.status_portal_at, m.status_event_id,
			       r.portal_updated_at, r.portal_event_id
			FROM unnest($1::text[]::uuid[], $2::text[]::uuid[]) AS k(profile_id, organization_id)
			JOIN public.organization_memberships m ON m.profile_id = k.profile_id AND m.organization_id = k.organization_id
			LEFT JOIN public.role_assignments r ON r.profile_id = m.profile_id AND r.organization_id = m.organization_id`, profs, orgs)
		if err != nil {
			return fmt.Errorf("read membership stamps: %w", err)
		}
		for rows.Next() {
			var p pair
			var sAt, rAt pgtype.Timestamptz
			var sID, rID pgtype.Text
			if err := rows.Scan(&p.profile, &p.org, &sAt, &sID, &rAt, &rID); err != nil {
				rows.Close()
				return fmt.Errorf("read membership stamps: %w", err)
			}
			if _, ok := b.heldStatus[p]; !ok {
				b.heldStatus[p] = heldOf(sAt, sID)
			}
			if _, ok := b.heldRole[p]; !ok {
				b.heldRole[p] = heldOf(rAt, rID)
			}
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return fmt.Errorf("read membership stamps: %w", err)
		}
	}
	for _, i := range b.live {
		ev := b.items[i].Event
		p := b.pairOf(ev)
		h := held{fields: b.heldFields[ev.Member.ID], status: b.heldStatus[p], role: b.heldRole[p]}
		r := &b.results[i]
		r.Status, r.Detail = describe(ev, judgeEvent(ev, h), r.MemberCreated)
		// A membership this batch created, with no role row: say so, as
		// the member has no access by role there yet.
		if _, hasRole := b.heldRole[p]; b.msInserted[p] && !hasRole && ev.Role == "" {
			r.Detail += "; the member has no role in organization " + ev.Organization.ID + " yet"
		}
	}
	return nil
}

// log writes one row per applied, skipped or refused event, in stream
// order.
func (b *batch) log(ctx context.Context) error {
	for _, i := range b.erasures {
		b.erased[b.items[i].Event.Member.ID] = true
	}
	if err := b.logFailed(ctx); err != nil {
		return err
	}
	idx := slices.DeleteFunc(append(append(append([]int(nil), b.live...), b.skipped...), b.erasures...),
		func(i int) bool { return b.logged[i] })
	if len(idx) == 0 {
		return nil
	}
	slices.SortFunc(idx, func(x, y int) int { return cmp.Compare(b.items[x].Meta.StreamSeq, b.items[y].Meta.StreamSeq) })
	n := len(idx)
	var (
		eventIDs, types, members, statuses, details = make([]string, n), make([]string, n), make([]string, n), make([]string, n), make([]string, n)
		orgs                                        = make([]pgtype.Text, n)
		orgIDs                                      = make([]pgtype.Text, n)
		created                                     = make([]bool, n)
		occurred                                    = make([]time.Time, n)
		received                                    = make([]pgtype.Timestamptz, n)
		seqs                                        = make([]int64, n)
		attempts                                    = make([]int32, n)
	)
	// A member's notes go with its last event in the batch.
	last := map[string]int{}
	for _, i := range b.live {
		if !b.logged[i] {
			last[b.items[i].Event.Member.ID] = i
		}
	}
	for j, i := range idx {
		it, r := b.items[i], &b.results[i]
		ev := it.Event
		if _, isLive := last[ev.Member.ID]; isLive && ev.Type.Known() {
			parts := []string{r.Detail}
			if len(b.live) > 1 && r.Status == StatusSuccess {
				parts[0] += fmt.Sprintf(" (batch of %d)", len(b.live))
			}
			if r.MemberCreated {
				parts = append([]string{"member created"}, parts...)
			}
			if last[ev.Member.ID] == i {
				parts = append(parts, b.notes[ev.Member.ID]...)
			}
			r.Detail = strings.Join(parts, "; ")
		}
		eventIDs[j], types[j], members[j], statuses[j], details[j] = ev.ID, string(ev.Type), ev.Member.ID, r.Status, r.Detail
		if b.erased[ev.Member.ID] {
			members[j] = MemberHash(ev.Member.ID)
		}
		if ev.Organization.ID != "" {
			orgs[j] = text(ev.Organization.ID)
			if id, ok := b.orgIDs[ev.Organization.ID]; ok {
				orgIDs[j] = text(id)
			}
		}
		created[j], occurred[j], seqs[j], attempts[j] = r.MemberCreated, ev.OccurredAt, int64(it.Meta.StreamSeq), int32(max(it.Meta.Attempt, 1))
		if !it.Meta.ReceivedAt.IsZero() {
			received[j] = stamp(it.Meta.ReceivedAt)
		}
	}
	// Every row names the organization the body names, skipped ones
	// too, so that its admins see them. No ON CONFLICT: sort left out the
	// events logged before, so a conflict is a concurrent duplicate, whose
	// unique violation makes the batch retry (classifyCode) and the retry
	// find the event done.
	_, err := b.tx.Exec(ctx, `
		INSERT INTO public.portal_sync_log
		  (event_id, event_type, portal_member_id, portal_org_id, organization_id, status, detail, member_created,
		   occurred_at, received_at, stream_seq, attempt)
		SELECT t.eid, t.typ, t.mem, t.porg,
		       coalesce(t.oid, (SELECT o.id FROM public.organizations o WHERE o.portal_org_id = t.porg)),
		       t.st, t.det, t.cr, t.occ, t.rec, t.seq, t.att
		FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[]::uuid[], $6::text[], $7::text[], $8::bool[],
		            $9::timestamptz[], $10::timestamptz[], $11::bigint[], $12::int[])
		  AS t(eid, typ, mem, porg, oid, st, det, cr, occ, rec, seq, att)`,
		eventIDs, types, members, orgs, orgIDs, statuses, details, created, occurred, received, seqs, attempts)
	if err != nil {
		return fmt.Errorf("insert log: %w", err)
	}
	return nil
}
