package replay

import (
	"context"
	"errors"
	"fmt"
	"time"

	"go.uber.org/zap"

	"github.com/likeperson/portalsync/syncer/consumer"
	"github.com/likeperson/portalsync/syncer/store"
)

// Applier applies batches of events; *store.Store satisfies it, over the
// pool or over the dry run's transaction.
type Applier interface {
	ApplyBatch(ctx context.Context, items []store.Item) ([]store.Result, error)
	Ping(ctx context.Context) error
}

var _ Applier = (*store.Store)(nil)

// settler is replay's consumer.Settler: the consumer's outcome table
// decides (applied, retried at once, split one by one, failed), and
// replay carries it out where it differs from the durable consumer:
//
//   - Applied events are counted in the report; there is no message to
//     acknowledge (the ordered consumer acknowledges nothing).
//   - The events are always redeliverable: replay has no delivery budget,
//     and its redelivery is a rerun. So a conflict or timeout that the
//     immediate retries did not resolve stops the replay (Nak) instead of
//     failing events that nothing is wrong with.
//   - An unavailable database stops the replay (Pause) instead of waiting:
//     a command does not wait out an outage unattended. Both stops say
//     where to rerun from; what was applied before stays applied.
//   - An event that cannot be applied (Fail) is counted as invalid and
//     logged; it gets no failed log row and no dead letter, as the live
//     syncer gave it those when it was consumed.
type settler struct {
	db  Applier
	rep *Report
	log *zap.Logger
	// timeout bounds each batch's transaction, as the syncer's
	// ApplyTimeout does: a lock held elsewhere stops the replay with its
	// --from-seq instead of hanging it.
	timeout time.Duration
}

var _ consumer.Settler[store.Item] = (*settler)(nil)

func (s *settler) Apply(ctx context.Context, items []store.Item) ([]store.Result, error) {
	ctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	return s.db.ApplyBatch(ctx, items)
}

func (s *settler) Ping(ctx context.Context) error { return s.db.Ping(ctx) }

// Redeliverable is always true: a rerun redelivers.
func (s *settler) Redeliverable([]store.Item) bool { return true }

// Ack counts what the batch did.
func (s *settler) Ack(_ []store.Item, results []store.Result, _ time.Duration) error {
	for _, res := range results {
		switch {
		case res.AlreadyDone:
		case res.Status == store.StatusSkipped:
			s.rep.Skipped++
		case res.Status == store.StatusFailed:
			s.rep.Invalid++
		default:
			s.rep.Applied++
		}
	}
	return nil
}

// Pause stops the replay.
func (s *settler) Pause(_ context.Context, items []store.Item, err error) error {
	return stopped(items, err)
}

// Nak stops the replay.
func (s *settler) Nak(items []store.Item, err error) error { return stopped(items, err) }

// Fail counts the event as invalid and leaves it out.
func (s *settler) Fail(_ context.Context, it store.Item, _ store.Kind, err error) error {
	s.rep.Invalid++
	s.log.Warn("replay: event not applied", zap.Uint64("stream_seq", it.Meta.StreamSeq),
		zap.String("event_id", it.Event.ID), zap.Error(err))
	return nil
}

// StoppedError stops a replay at stream sequence Seq, the first event not
// settled, and says where to rerun from.
type StoppedError struct {
	Seq uint64
	Err error
}

func (e *StoppedError) Error() string {
	return fmt.Sprintf("replay stopped at stream seq %d (rerun with --from-seq %d): %v", e.Seq, e.Seq, e.Err)
}

func (e *StoppedError) Unwrap() error { return e.Err }

// stopped is the error that stops a replay at the first of items.
func stopped(items []store.Item, err error) error {
	return &StoppedError{Seq: items[0].Meta.StreamSeq, Err: err}
}

// firstStop joins the workers' errors, keeping of their stops only the
// one at the lowest sequence: a rerun from there covers every worker's
// events (those applied since are applied again, which changes nothing).
func firstStop(errs []error) error {
	var first *StoppedError
	var others []error
	for _, err := range errs {
		var s *StoppedError
		switch {
		case err == nil:
		case errors.As(err, &s):
			if first == nil || s.Seq < first.Seq {
				first = s
			}
		default:
			others = append(others, err)
		}
	}
	if first != nil {
		others = append([]error{first}, others...)
	}
	return errors.Join(others...)
}
