package store

import (
	"cmp"
	"context"
	"fmt"
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

// ApplyBatch applies many events in one transaction with set-based
// statements: the batch's events are reduced, per row, to the newest one in
// portal order (which is what applying them one by one yields, whatever
// the order), then each table gets one multi-row upsert whose rows are
// sorted by key, so concurrent batches lock rows in the same order. It
// returns one Result per item, in order. When the transaction fails, no
// item is applied: the caller retries or falls back to one batch per event
// to isolate a bad one. Errors are classified (KindOf).
//
// Organization rows are shared by every member of an organization, so
// every concurrent batch would queue on them for its whole transaction:
// ApplyBatch upserts them first in a short statement of their own (safe on
// its own: the newest-event rule makes it idempotent, and a retried batch
// finds them done). A batch of one does the same (Apply).
func (s *Store) ApplyBatch(ctx context.Context, items []Item) ([]Result, error) {
	orgArgs := organizationArgs(items)
	if _, err := s.pool.Exec(ctx, upsertOrganizationsSQL, orgArgs...); err != nil {
		return nil, interpretError(fmt.Errorf("apply batch of %d: upsert organizations: %w", len(items), err))
	}
	var res []Result
	err := pgx.BeginTxFunc(ctx, s.pool, pgx.TxOptions{}, func(tx pgx.Tx) error {
		b := &batch{tx: tx, items: items, results: make([]Result, len(items)), orgArgs: orgArgs}
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

// Apply applies one event: a batch of one, with its organization upserted
// before the transaction exactly as ApplyBatch does.
func (s *Store) Apply(ctx context.Context, ev *event.Event, meta Meta) (Result, error) {
	res, err := s.ApplyBatch(ctx, []Item{{Event: ev, Meta: meta}})
	if err != nil {
		return Result{}, fmt.Errorf("apply event %s: %w", ev.ID, err)
	}
	return res[0], nil
}

// ApplyBatchTx is ApplyBatch inside the caller's transaction.
func ApplyBatchTx(ctx context.Context, tx pgx.Tx, items []Item) ([]Result, error) {
	b := &batch{tx: tx, items: items, results: make([]Result, len(items))}
	if err := b.run(ctx); err != nil {
		return nil, err
	}
	return b.results, nil
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
	// orgArgs, when set, are the organizations already upserted before the
	// transaction (organizationArgs of the items).
	orgArgs []any
	profIDs map[string]string // portal member id -> uuid
	created map[string]bool   // portal member ids inserted by this batch
}

// key orders events the way the portal does: by time, then by id.
type key struct {
	at time.Time
	id string
}

func keyOf(e *event.Event) key { return key{e.OccurredAt, e.ID} }

func (k key) after(o key) bool {
	if c := k.at.Compare(o.at); c != 0 {
		return c > 0
	}
	return k.id > o.id
}

func (b *batch) run(ctx context.Context) error {
	if err := b.sort(ctx); err != nil {
		return err
	}
	if len(b.live) > 0 {
		for _, step := range []func(context.Context) error{
			b.organizations, b.profiles, b.linkAuthUsers, b.memberships, b.roles, b.accessAndStatus,
		} {
			if err := step(ctx); err != nil {
				return err
			}
		}
	}
	return b.log(ctx)
}

// sort finds what is already done, skipped, or repeated in the batch.
func (b *batch) sort(ctx context.Context) error {
	ids := make([]string, 0, len(b.items))
	for _, it := range b.items {
		if !it.Meta.Replay {
			ids = append(ids, it.Event.ID)
		}
	}
	done := map[string]string{}
	if len(ids) > 0 {
		rows, err := b.tx.Query(ctx, `SELECT event_id, status FROM public.portal_sync_log
			WHERE event_id = ANY($1) AND status IN ('success', 'skipped')`, ids)
		if err != nil {
			return fmt.Errorf("look up log: %w", err)
		}
		for rows.Next() {
			var id, status string
			if err := rows.Scan(&id, &status); err != nil {
				rows.Close()
				return fmt.Errorf("look up log: %w", err)
			}
			done[id] = status
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return fmt.Errorf("look up log: %w", err)
		}
	}
	first := map[string]int{}
	for i, it := range b.items {
		ev := it.Event
		if status, ok := done[ev.ID]; ok && !it.Meta.Replay {
			b.results[i] = Result{Status: status, AlreadyDone: true}
			continue
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
		b.results[i] = Result{Status: StatusSuccess}
		b.live = append(b.live, i)
	}
	return nil
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
		if ev.Organization.Name != "" && (!o.named || keyOf(ev).after(o.k)) {
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
	SELECT * FROM unnest($1::text[], $2::text[], $3::timestamptz[], $4::text[]) ORDER BY 1
	ON CONFLICT (portal_org_id) DO UPDATE
	SET name = excluded.name, portal_updated_at = excluded.portal_updated_at,
	    portal_event_id = excluded.portal_event_id, updated_at = now()
	WHERE excluded.portal_updated_at IS NOT NULL AND ` + newerExcluded("o", "o.name IS DISTINCT FROM excluded.name")

func (b *batch) organizations(ctx context.Context) error {
	args := b.orgArgs
	if args == nil {
		args = organizationArgs(b.items)
		if _, err := b.tx.Exec(ctx, upsertOrganizationsSQL, args...); err != nil {
			return fmt.Errorf("upsert organizations: %w", err)
		}
	}
	var err error
	b.orgIDs, err = b.ids(ctx, `SELECT portal_org_id, id::text FROM public.organizations WHERE portal_org_id = ANY($1)`, args[0].([]string))
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

func (b *batch) profiles(ctx context.Context) error {
	// Per member: the newest profile snapshot, or else the fields of the
	// batch's first event, to create a member the app does not know.
	type prof struct {
		snap bool
		k    key
		m    event.Member
	}
	profs := map[string]*prof{}
	for _, i := range b.live {
		ev := b.items[i].Event
		p, ok := profs[ev.Member.ID]
		if !ok {
			p = &prof{m: ev.Member}
			profs[ev.Member.ID] = p
		}
		if ev.HasProfile() && (!p.snap || keyOf(ev).after(p.k)) {
			p.snap, p.k, p.m = true, keyOf(ev), ev.Member
		}
	}
	keys := sortedKeys(profs)
	n := len(keys)
	emails, firsts, lasts, phones := make([]string, n), make([]string, n), make([]string, n), make([]string, n)
	ats, eids := make([]pgtype.Timestamptz, n), make([]pgtype.Text, n)
	for i, k := range keys {
		p := profs[k]
		emails[i], firsts[i], lasts[i], phones[i] = p.m.Email, p.m.FirstName, p.m.LastName, p.m.Phone
		if p.snap {
			ats[i], eids[i] = stamp(p.k.at), text(p.k.id)
		}
	}
	rows, err := b.tx.Query(ctx, `
		INSERT INTO public.profiles AS p (portal_member_id, email, first_name, last_name, phone, portal_updated_at, portal_event_id)
		SELECT k, nullif(e, ''), nullif(f, ''), nullif(l, ''), nullif(ph, ''), ts, eid
		FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::timestamptz[], $7::text[]) AS t(k, e, f, l, ph, ts, eid)
		ORDER BY k
		ON CONFLICT (portal_member_id) DO UPDATE
		SET email = excluded.email, first_name = excluded.first_name, last_name = excluded.last_name,
		    phone = excluded.phone, portal_updated_at = excluded.portal_updated_at,
		    portal_event_id = excluded.portal_event_id, updated_at = now()
		WHERE excluded.portal_updated_at IS NOT NULL AND `+newerExcluded("p",
		"(p.email, p.first_name, p.last_name, p.phone) IS DISTINCT FROM (excluded.email, excluded.first_name, excluded.last_name, excluded.phone)")+`
		RETURNING portal_member_id, xmax = 0`,
		keys, emails, firsts, lasts, phones, ats, eids)
	if err != nil {
		return fmt.Errorf("upsert profiles: %w", err)
	}
	b.created = map[string]bool{}
	for rows.Next() {
		var k string
		var inserted bool
		if err := rows.Scan(&k, &inserted); err != nil {
			rows.Close()
			return fmt.Errorf("upsert profiles: %w", err)
		}
		if inserted {
			b.created[k] = true
		}
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return fmt.Errorf("upsert profiles: %w", err)
	}
	b.profIDs, err = b.ids(ctx, `SELECT portal_member_id, id::text FROM public.profiles WHERE portal_member_id = ANY($1)`, keys)
	if err != nil {
		return fmt.Errorf("read profile ids: %w", err)
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
	_, err := b.tx.Exec(ctx, `
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
		   OR (m.status_portal_at IS NULL AND (m.status <> 'active' OR m.deactivated_at IS NOT NULL))`,
		profs, orgs, statuses, deact, ats, eids, latest)
	if err != nil {
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
	_, err := b.tx.Exec(ctx, `
		INSERT INTO public.role_assignments AS r (profile_id, organization_id, role, portal_updated_at, portal_event_id)
		SELECT * FROM unnest($1::text[]::uuid[], $2::text[]::uuid[], $3::text[], $4::timestamptz[], $5::text[]) ORDER BY 1, 2
		ON CONFLICT (profile_id, organization_id) DO UPDATE
		SET role = excluded.role, portal_updated_at = excluded.portal_updated_at,
		    portal_event_id = excluded.portal_event_id, updated_at = now()
		WHERE `+newerExcluded("r", "r.role <> excluded.role"),
		profs, orgs, roles, ats, eids)
	if err != nil {
		return fmt.Errorf("upsert roles: %w", err)
	}
	return nil
}

// accessAndStatus derives the affected profiles' status from their
// memberships, then brings their accounts in line (identity.go).
func (b *batch) accessAndStatus(ctx context.Context) error {
	_, err := b.tx.Exec(ctx, `
		WITH want AS (
		  SELECT profile_id,
		         CASE WHEN bool_or(status = 'active') THEN 'active' ELSE 'inactive' END AS status,
		         CASE WHEN bool_or(status = 'active') THEN NULL ELSE max(deactivated_at) END AS deactivated_at
		  FROM public.organization_memberships WHERE profile_id = ANY($1::text[]::uuid[]) GROUP BY profile_id)
		UPDATE public.profiles p SET status = want.status, deactivated_at = want.deactivated_at, updated_at = now()
		FROM want
		WHERE p.id = want.profile_id AND (p.status <> want.status OR p.deactivated_at IS DISTINCT FROM want.deactivated_at)`,
		b.profileIDs())
	if err != nil {
		return fmt.Errorf("derive profile status: %w", err)
	}
	return b.identity(ctx, applyAccessSQL, "apply account access")
}

// log writes one row per applied or skipped event, in stream order.
func (b *batch) log(ctx context.Context) error {
	idx := append(append([]int(nil), b.live...), b.skipped...)
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
		last[b.items[i].Event.Member.ID] = i
	}
	for j, i := range idx {
		it, r := b.items[i], &b.results[i]
		ev := it.Event
		if r.Status == StatusSuccess {
			parts := []string{string(ev.Type) + " applied"}
			if len(b.live) > 1 {
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
		if ev.Organization.ID != "" {
			orgs[j] = text(ev.Organization.ID)
			if id, ok := b.orgIDs[ev.Organization.ID]; ok && r.Status == StatusSuccess {
				orgIDs[j] = text(id)
			}
		}
		created[j], occurred[j], seqs[j], attempts[j] = r.MemberCreated, ev.OccurredAt, int64(it.Meta.StreamSeq), int32(max(it.Meta.Attempt, 1))
		if !it.Meta.ReceivedAt.IsZero() {
			received[j] = stamp(it.Meta.ReceivedAt)
		}
	}
	_, err := b.tx.Exec(ctx, `
		INSERT INTO public.portal_sync_log
		  (event_id, event_type, portal_member_id, portal_org_id, organization_id, status, detail, member_created,
		   occurred_at, received_at, stream_seq, attempt)
		SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[]::uuid[], $6::text[], $7::text[], $8::bool[],
		                     $9::timestamptz[], $10::timestamptz[], $11::bigint[], $12::int[])
		ON CONFLICT (event_id) WHERE status IN ('success', 'skipped') DO NOTHING`,
		eventIDs, types, members, orgs, orgIDs, statuses, details, created, occurred, received, seqs, attempts)
	if err != nil {
		return fmt.Errorf("insert log: %w", err)
	}
	return nil
}
