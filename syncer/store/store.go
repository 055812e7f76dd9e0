// Package store applies membership events to the Likeperson database: the
// profile, organization, membership and role rows, the auth side effects of
// deactivation, and the sync log, in one transaction per batch of events
// (ApplyBatch: the organizations they name go first, in a short one of
// their own; a single event is a batch of one).
package store

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
)

// Log statuses, as the sync log stores them.
const (
	StatusSuccess = "success"
	StatusFailed  = "failed"
	StatusSkipped = "skipped"
)

// DBTX is what the store needs of a pool or a transaction (River's
// dbsqlc.DBTX, with Begin): Begin opens a transaction on a pool and a
// savepoint in a transaction, so the same code serves both.
type DBTX interface {
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
	Begin(ctx context.Context) (pgx.Tx, error)
}

var (
	_ DBTX = (*pgxpool.Pool)(nil)
	_ DBTX = (pgx.Tx)(nil)
)

// Store applies events on a DBTX: a pool (the syncer, replay, the
// commands), or a transaction (a dry run, a test), in which each batch is
// a savepoint and the caller commits or rolls back.
type Store struct {
	db DBTX
	// now is the store's one clock: the refusal of events dated ahead
	// (MaxAhead), erasure's event time, the future-times repair.
	now func() time.Time
}

// New returns a Store over db.
func New(db DBTX) *Store { return &Store{db: db, now: time.Now} }

// Now is the time by the store's clock.
func (s *Store) Now() time.Time { return s.now() }

// Meta is what the stream tells about one delivery of an event.
type Meta struct {
	// StreamSeq is the event's sequence in the stream.
	StreamSeq uint64
	// Attempt counts deliveries, from 1.
	Attempt int
	// ReceivedAt is when the ingress received the webhook.
	ReceivedAt time.Time
	// Replay applies the event even when the log says it was applied, to
	// repair the database; no second log row is written.
	Replay bool
	// Source is where the event came in (stream.HeaderSource: a
	// stream.Source* value), written to the log row's source; "" for
	// none (events stored before the header existed): NULL.
	Source string
}

// Result says what applying one event did.
type Result struct {
	// Status is the logged status: success (the tables hold the event's
	// change, or part of it: see Detail), skipped (unknown type, or every
	// part superseded by newer data) or failed (refused: dated in the
	// future; nothing applied).
	Status string
	// AlreadyDone is true when the event had been applied (or skipped)
	// before; nothing was written.
	AlreadyDone bool
	// MemberCreated is true when the event created a member the app did not
	// know.
	MemberCreated bool
	// Detail describes what changed, without personal data.
	Detail string
	// MemberErased is true when the event erased its member or was
	// skipped because the member is erased: the member's messages are to
	// be purged from the streams.
	MemberErased bool
	// Changes is what a successful event changed, as the log's changes
	// column holds it; nil when it applied nothing (skipped, failed,
	// erasures).
	Changes *Changes
}

// Changes is what an event changed, in the shape of
// public.portal_sync_log.changes (migration 00028): each part only when it
// changed, and of the profile only the names of the fields, never their
// values.
type Changes struct {
	// Role is the member's role in the event's organization before (nil:
	// none) and after.
	Role *Change `json:"role,omitempty"`
	// Status is the membership's status before (nil: no membership) and
	// after.
	Status *Change `json:"status,omitempty"`
	// ProfileFields names the profile fields whose value changed, in
	// event.ProfileFields order.
	ProfileFields []string `json:"profile_fields,omitempty"`
}

// Change is one value's change; Old is nil when there was none.
type Change struct {
	Old *string `json:"old"`
	New string  `json:"new"`
}

// Failure describes an event that cannot be applied.
type Failure struct {
	EventID    string
	EventType  string
	MemberID   string
	OrgID      string
	OccurredAt time.Time
	Reason     string
}

// LogFailure writes one failed row to the sync log (insertFailedSQL).
func (s *Store) LogFailure(ctx context.Context, f Failure, meta Meta) error {
	err := insertFailedRow(ctx, s.db, logRow{
		eventID: f.EventID, eventType: f.EventType, member: f.MemberID, org: f.OrgID, detail: f.Reason,
		occurred: f.OccurredAt, received: meta.ReceivedAt, seq: int64(meta.StreamSeq), attempt: int32(meta.Attempt),
		source: meta.Source,
	})
	if err != nil {
		return interpretError(fmt.Errorf("log failure of event %s: %w", f.EventID, err))
	}
	return nil
}

// Ping checks that the database answers a query (not only that a
// connection opens: a database in recovery accepts none, one shutting down
// refuses the query).
func (s *Store) Ping(ctx context.Context) error {
	var one int
	if err := s.db.QueryRow(ctx, pingSQL).Scan(&one); err != nil {
		return interpretError(fmt.Errorf("ping database: %w", err))
	}
	return nil
}

func nullTime(t time.Time) any {
	if t.IsZero() {
		return nil
	}
	return t
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n]
}

// PurgeLog deletes sync-log rows processed more than retention ago, in
// batches so that it never holds long locks, and returns how many it
// deleted. Purged events lose their idempotency guard: one delivered again
// after its retention is applied again (a no-op by the ordering rule) and
// logged again.
func (s *Store) PurgeLog(ctx context.Context, retention time.Duration, batch int) (int64, error) {
	if retention <= 0 {
		return 0, errors.New("purge log: retention must be positive")
	}
	batch = max(batch, 1)
	var total int64
	for {
		tag, err := s.db.Exec(ctx, purgeLogSQL, retention.Seconds(), batch)
		if err != nil {
			return total, fmt.Errorf("purge log: %w", err)
		}
		total += tag.RowsAffected()
		if tag.RowsAffected() < int64(batch) {
			return total, nil
		}
	}
}
