package store

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/likeperson/portalsync/pkg/event"
)

// Item is one event of a batch with its delivery metadata.
type Item struct {
	Event *event.Event
	Meta  Meta
}

// ApplyBatch applies many events with set-based statements, in one
// transaction on the Store's DBTX (over a transaction: in a savepoint of
// it). The batch is reduced first (reduce.go: which event wins for every
// row, which is what applying the events one by one yields, whatever the
// order), then each table gets one multi-row upsert whose rows are sorted
// by key, so concurrent batches lock rows in the same order (write.go),
// then each event is judged by what the tables hold and logged (judge.go).
// It returns one Result per item, in order. When the transaction fails, no
// item is applied: the caller retries or falls back to one batch per event
// to isolate a bad one. Errors are classified here, once (KindOf). A
// single event is a batch of one (Apply).
//
// Organizations first: organization rows are shared by every member of an
// organization, and an upsert locks the rows it meets even when it writes
// nothing, so inside the batch's transaction every concurrent batch of an
// organization would queue on its row until the first commits (measured in
// a27998c: part of the step from 8k to 25k events/s, docs/BENCHMARKS.md).
// They are upserted first, in a short transaction of their own
// (upsertOrganizationsFirst). That is safe on its own: the newest-event
// rule makes it idempotent, and a failed or retried batch finds them done.
func (s *Store) ApplyBatch(ctx context.Context, items []Item) ([]Result, error) {
	now := s.now()
	orgs := reduceOrganizations(items, now)
	if err := s.upsertOrganizationsFirst(ctx, orgs); err != nil {
		return nil, interpretError(fmt.Errorf("apply batch of %d: %w", len(items), err))
	}
	var res []Result
	err := pgx.BeginFunc(ctx, s.db, func(tx pgx.Tx) error {
		var err error
		res, err = applyBatch(ctx, tx, items, orgs, now)
		return err
	})
	if err != nil {
		return nil, interpretError(fmt.Errorf("apply batch of %d: %w", len(items), err))
	}
	return res, nil
}

// upsertOrganizationsFirst writes the organization rows before the batch's
// transaction. On a pool the statement is a transaction of its own (one
// round trip; BEGIN and COMMIT around it cost single events 5 % in
// BenchmarkApplyBatchCeiling with BATCH=1). In a caller's transaction it
// runs in a savepoint, so that its failure leaves the caller's transaction
// usable; the caller holds the rows' locks until it commits.
func (s *Store) upsertOrganizationsFirst(ctx context.Context, orgs []orgRow) error {
	if len(orgs) == 0 {
		return nil
	}
	if _, inTx := s.db.(pgx.Tx); inTx {
		return pgx.BeginFunc(ctx, s.db, func(tx pgx.Tx) error { return upsertOrganizations(ctx, tx, orgs) })
	}
	return upsertOrganizations(ctx, s.db, orgs)
}

// Apply applies one event: a batch of one.
func (s *Store) Apply(ctx context.Context, ev *event.Event, meta Meta) (Result, error) {
	res, err := s.ApplyBatch(ctx, []Item{{Event: ev, Meta: meta}})
	if err != nil {
		return Result{}, fmt.Errorf("apply event %s: %w", ev.ID, err)
	}
	return res[0], nil
}

// applyBatch is the batch's transaction: look up what the database held
// before, reduce, write, erase, judge, log.
func applyBatch(ctx context.Context, tx pgx.Tx, items []Item, orgs []orgRow, now time.Time) ([]Result, error) {
	before, err := lookUp(ctx, tx, items)
	if err != nil {
		return nil, err
	}
	p := reduce(items, before, now)
	w := written{}
	if len(p.live)+len(p.skipped)+len(p.erasures) > 0 {
		if w.orgIDs, err = organizationIDs(ctx, tx, orgs); err != nil {
			return nil, err
		}
	}
	if len(p.live) > 0 {
		if err := write(ctx, tx, items, p, &w); err != nil {
			return nil, err
		}
	}
	erasures, err := eraseMembers(ctx, tx, items, p.erasures)
	if err != nil {
		return nil, err
	}
	res := judge(items, p, w, erasures)
	rows, failed := logRows(items, p, res, w.orgIDs, erasures)
	if err := insertFailed(ctx, tx, failed); err != nil {
		return nil, err
	}
	return res, insertLog(ctx, tx, rows)
}

// write sends the live events' row sets, in the order that keeps
// concurrent batches and the account trigger from deadlocking: profiles,
// account links, memberships, roles, then status and access (which read
// the memberships); then it reads the stamps judge needs of the rows the
// upserts left alone.
func write(ctx context.Context, tx pgx.Tx, items []Item, p plan, w *written) error {
	w.notes = map[string][]string{}
	if err := upsertProfiles(ctx, tx, p.profiles, w); err != nil {
		return err
	}
	if err := identity(ctx, tx, linkMembersSQL, "link accounts", w.notes, p.members, p.seenMembers, p.seenEmails); err != nil {
		return err
	}
	if err := upsertMemberships(ctx, tx, p.memberships, w); err != nil {
		return err
	}
	if err := upsertRoles(ctx, tx, p.roles, w); err != nil {
		return err
	}
	if err := identity(ctx, tx, applyAccessSQL, "apply status and account access", w.notes, p.members); err != nil {
		return err
	}
	members, pairs := unjudged(items, p, *w)
	return readStamps(ctx, tx, members, pairs, w)
}
