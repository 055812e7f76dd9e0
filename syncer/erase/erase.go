// Package erase erases members everywhere portalsync keeps them, and is
// the one place that says how: in the database through the store's
// member-deleted event (profile, memberships, roles, account locked out,
// sync-log member IDs pseudonymized, tombstone: store/erase.go), then in
// the event stream and the dead-letter stream (Purger). The portal's
// member-deleted events reach the streams through Applier, which the
// consumer applies with; `syncer erase` erases one member on request
// (Database, then Purger).
package erase

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap"

	"github.com/likeperson/portalsync/pkg/event"
	"github.com/likeperson/portalsync/pkg/stream"
	"github.com/likeperson/portalsync/syncer/consumer"
	"github.com/likeperson/portalsync/syncer/store"
)

// Streams is what the purger needs of JetStream; jetstream.JetStream
// satisfies it.
type Streams interface {
	Stream(ctx context.Context, name string) (jetstream.Stream, error)
}

// DeadLetters purges a member's dead letters; *deadletter.Queue satisfies
// it.
type DeadLetters interface {
	PurgeMember(ctx context.Context, memberID string) error
}

// Purger deletes a member's messages from the event stream (the subject
// portal.member.<key>: every event of the member is under it) and from the
// dead-letter stream, so that neither a replay nor a redrive can bring the
// member back.
type Purger struct {
	js     Streams
	stream string
	dlq    DeadLetters
}

// NewPurger returns a Purger of the event stream named stream.
func NewPurger(js Streams, stream string, dlq DeadLetters) *Purger {
	return &Purger{js: js, stream: stream, dlq: dlq}
}

// Purge deletes the member's messages from both streams and returns how
// many events the event stream held for the member.
func (p *Purger) Purge(ctx context.Context, memberID string) (uint64, error) {
	memberID = event.CanonicalID(memberID)
	subject := event.Subject(memberID)
	s, err := p.js.Stream(ctx, p.stream)
	if err != nil {
		return 0, fmt.Errorf("stream %s: %w", p.stream, err)
	}
	info, err := s.Info(ctx, jetstream.WithSubjectFilter(subject))
	if err != nil {
		return 0, fmt.Errorf("stream %s info: %w", p.stream, err)
	}
	n := info.State.Subjects[subject]
	if err := s.Purge(ctx, jetstream.WithPurgeSubject(subject)); err != nil {
		return 0, fmt.Errorf("purge the member's events: %w", err)
	}
	if err := p.dlq.PurgeMember(ctx, memberID); err != nil {
		return n, err
	}
	return n, nil
}

// EventApplier applies one event by its clock; *store.Store satisfies it.
type EventApplier interface {
	Apply(ctx context.Context, ev *event.Event, meta store.Meta) (store.Result, error)
	Now() time.Time
}

var _ EventApplier = (*store.Store)(nil)

// Database erases one member in the database on request (`syncer erase`):
// it applies, through st, a member-deleted event of the member dated now
// by st's clock,
// logged with source erase-command under an id of its own, which it
// returns. The member's messages are then Purger's to delete; the
// tombstone keeps a replay from bringing the member back before that.
func Database(ctx context.Context, st EventApplier, memberID string) (res store.Result, eventID string, err error) {
	now := st.Now()
	eventID = fmt.Sprintf("erase-cli-%d", now.UnixNano())
	ev := &event.Event{ID: eventID, Type: event.MemberDeleted, OccurredAt: now.UTC().Truncate(time.Microsecond),
		Member: event.Member{ID: event.CanonicalID(memberID)}}
	res, err = st.Apply(ctx, ev, store.Meta{Attempt: 1, ReceivedAt: now, Source: stream.SourceEraseCommand})
	if err != nil {
		return res, eventID, fmt.Errorf("erase in the database: %w", err)
	}
	return res, eventID, nil
}

// Applier is the consumer's applier that, once a member-deleted event is
// committed (or an event of an erased member skipped: the portal sent it
// again), purges the member's messages. When the purge fails it returns
// the error, so the event is delivered again: the store then finds it
// done and the purge is retried.
type Applier struct {
	consumer.Applier
	purger *Purger
	log    *zap.Logger
}

var _ consumer.Applier = (*Applier)(nil)

// NewApplier wraps st, what the consumer would apply with otherwise.
func NewApplier(st consumer.Applier, p *Purger, log *zap.Logger) *Applier {
	return &Applier{Applier: st, purger: p, log: log}
}

// ApplyBatch applies a batch, then purges the messages of the members it
// erased.
func (a *Applier) ApplyBatch(ctx context.Context, items []store.Item) ([]store.Result, error) {
	res, err := a.Applier.ApplyBatch(ctx, items)
	if err != nil {
		return res, err
	}
	var errs []error
	for i, it := range items {
		errs = append(errs, a.purge(ctx, it.Event, res[i]))
	}
	return res, errors.Join(errs...)
}

func (a *Applier) purge(ctx context.Context, ev *event.Event, res store.Result) error {
	if !res.MemberErased && !(ev.Type == event.MemberDeleted && res.AlreadyDone && res.Status == store.StatusSuccess) {
		return nil
	}
	n, err := a.purger.Purge(ctx, ev.Member.ID)
	if err != nil {
		return fmt.Errorf("erase event %s: %w", ev.ID, err)
	}
	a.log.Info("erased member's messages purged", zap.String("event_id", ev.ID), zap.Uint64("events", n))
	return nil
}
