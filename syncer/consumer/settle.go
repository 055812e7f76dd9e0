package consumer

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap"

	"github.com/likeperson/portalsync/pkg/event"
	"github.com/likeperson/portalsync/syncer/deadletter"
	"github.com/likeperson/portalsync/syncer/store"
)

// action is what the outcome table calls for after one attempt.
type action int

const (
	// actAck: applied (or applied before); acknowledge.
	actAck action = iota
	// actPause: the database is unavailable; keep the events held and
	// alive, wait until it answers, apply them again. No delivery spent.
	actPause
	// actRetryNow: a conflict (deadlock, serialization) or timeout; apply
	// again at once, in process. No delivery spent.
	actRetryNow
	// actNak: still failing after the immediate retries; redeliver after
	// the backoff delay. Spends a delivery.
	actNak
	// actSplit: a batch failed for one event's sake; apply each event as
	// a batch of one, so only the bad one fails.
	actSplit
	// actFail: the event cannot be applied: a failed sync-log row, then
	// the dead letter, then Term.
	actFail
	// actTerm: a message that is not an event at all (no metadata).
	actTerm
)

func (a action) String() string {
	return [...]string{"ack", "pause", "retry now", "nak", "split", "fail", "term"}[a]
}

// retriesNow is how often a conflict or timeout is retried at once before
// it spends a delivery.
const retriesNow = 3

// decide is the outcome table: what to do after an attempt whose error
// has kind k, given the batch size, the immediate retries made so far and
// whether the events may be delivered again later (the durable consumer's:
// while none has used up MaxDeliver; replay's: always, as a rerun). An
// unavailable database that answers a ping after all is reported as
// KindRetry by Settle.
func decide(k store.Kind, size, retried int, redeliverable bool) action {
	switch k {
	case store.KindNone:
		return actAck
	case store.KindUnavailable:
		return actPause
	case store.KindRetry:
		switch {
		case retried < retriesNow:
			return actRetryNow
		case redeliverable:
			return actNak
		case size > 1:
			return actSplit
		default:
			return actFail
		}
	default: // KindEventFault
		if size > 1 {
			return actSplit
		}
		return actFail
	}
}

// Settler carries out the outcome table's decisions for batches of units
// of type U, each holding one event: the durable consumer's deliveries,
// acknowledged to the server, or replay's items, counted. Settle calls it;
// an error from Ack, Pause, Nak or Fail ends Settle and leaves the units
// not yet settled as they are.
type Settler[U any] interface {
	// Apply applies the units' events as one batch, in one transaction.
	Apply(ctx context.Context, us []U) ([]store.Result, error)
	// Ping reports whether the database answers, to tell an unreachable
	// database from an error that only looks like one.
	Ping(ctx context.Context) error
	// Redeliverable reports whether the units may be delivered again
	// later: a conflict that the immediate retries did not resolve is then
	// given back (Nak), and otherwise split and failed.
	Redeliverable(us []U) bool
	// Ack settles applied units; results are theirs, in order, and took
	// is how long the batch's transaction took.
	Ack(us []U, results []store.Result, took time.Duration) error
	// Pause waits while the database is unavailable (err); Settle then
	// applies the same units again.
	Pause(ctx context.Context, us []U, err error) error
	// Nak gives the units back, to be delivered again later, after err.
	Nak(us []U, err error) error
	// Fail settles a unit that cannot be applied; err, of kind k, is its
	// last attempt's.
	Fail(ctx context.Context, u U, k store.Kind, err error) error
}

// Settle applies us as one batch (a single event is a batch of one) and
// settles the units by the outcome table through s. It retries a conflict
// at once, and applies a batch that failed for one event's sake again
// unit by unit, so that only the bad one fails: the one split fallback. It
// returns nil once every unit is settled, or the error that ended it (ctx
// ending during a retry's wait, or an error s returned).
func Settle[U any](ctx context.Context, s Settler[U], us []U, log *zap.Logger) error {
	retried := 0
	for {
		started := time.Now()
		results, err := s.Apply(ctx, us)
		kind := store.KindOf(err)
		if kind == store.KindUnavailable && answers(ctx, s) {
			kind = store.KindRetry
		}
		switch decide(kind, len(us), retried, s.Redeliverable(us)) {
		case actAck:
			return s.Ack(us, results, time.Since(started))
		case actPause:
			if err := s.Pause(ctx, us, err); err != nil {
				return err
			}
		case actRetryNow:
			retried++
			log.Debug("conflict, retrying at once", zap.Int("events", len(us)), zap.Int("retry", retried), zap.Error(err))
			if !sleepCtx(ctx, time.Duration(10+rand.IntN(90*retried))*time.Millisecond) {
				return ctx.Err()
			}
		case actNak:
			return s.Nak(us, err)
		case actSplit:
			log.Warn("batch failed, applying its events one by one", zap.Int("events", len(us)), zap.Error(err))
			for _, u := range us {
				if err := Settle(ctx, s, []U{u}, log); err != nil {
					return err
				}
			}
			return nil
		default: // actFail
			return s.Fail(ctx, us[0], kind, err)
		}
	}
}

// pinger is what answers needs of a database.
type pinger interface {
	Ping(ctx context.Context) error
}

// answers tells an unreachable database from another error.
func answers(ctx context.Context, db pinger) bool {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	return db.Ping(ctx) == nil
}

// errStopped ends Settle when fetching has stopped while the database is
// unavailable.
var errStopped = errors.New("stopped while the database is unavailable")

// handle applies deliveries as one batch and settles them by the outcome
// table. It returns with every delivery settled, or, when stop closes
// while the database is unavailable, with them left held: they are
// redelivered after AckWait.
func (c *Consumer) handle(ctx context.Context, stop <-chan struct{}, ds []*delivery) {
	_ = Settle(ctx, &settler{c: c, stop: stop}, ds, c.log)
}

// settler is the durable consumer's Settler: it acknowledges deliveries to
// the server, and fails an event with its failed sync-log row, its dead
// letter and Term.
type settler struct {
	c *Consumer
	// stop tells that fetching has ended: a pause then gives up.
	stop <-chan struct{}
}

var _ Settler[*delivery] = (*settler)(nil)

// Apply runs one batch's transaction, bounded by ApplyTimeout.
func (s *settler) Apply(ctx context.Context, ds []*delivery) ([]store.Result, error) {
	items := make([]store.Item, len(ds))
	for i, d := range ds {
		items[i] = store.Item{Event: d.ev, Meta: d.meta}
	}
	ctx, cancel := context.WithTimeout(ctx, s.c.cfg.ApplyTimeout)
	defer cancel()
	return s.c.applier.ApplyBatch(ctx, items)
}

func (s *settler) Ping(ctx context.Context) error { return s.c.applier.Ping(ctx) }

// Redeliverable: no delivery has used up MaxDeliver.
func (s *settler) Redeliverable(ds []*delivery) bool { return attempt(ds) < s.c.cfg.MaxDeliver }

// attempt is the highest delivery count among ds.
func attempt(ds []*delivery) int {
	n := 0
	for _, d := range ds {
		n = max(n, d.meta.Attempt)
	}
	return n
}

// Ack acknowledges the applied events and measures the batch.
func (s *settler) Ack(ds []*delivery, results []store.Result, took time.Duration) error {
	c := s.c
	c.rate.observe(len(ds), took)
	c.metrics.applySeconds.Observe(took.Seconds())
	c.metrics.batchSize.Observe(float64(len(ds)))
	for i, d := range ds {
		c.done(d, results[i])
	}
	return nil
}

// Pause waits until the database answers (no delivery spent), or returns
// errStopped when fetching stops first: the events stay unacknowledged.
func (s *settler) Pause(ctx context.Context, _ []*delivery, err error) error {
	s.c.pauseDB(err)
	if !s.c.db.wait(ctx, s.stop) {
		return errStopped
	}
	return nil
}

// Nak redelivers the events after the backoff delay, which spends a
// delivery.
func (s *settler) Nak(ds []*delivery, err error) error {
	c := s.c
	delay := c.backoff(attempt(ds))
	c.log.Warn("retryable failure, will redeliver", zap.Int("events", len(ds)), zap.Duration("delay", delay), zap.Error(err))
	for _, d := range ds {
		c.metrics.events.WithLabelValues(typeLabel(d.ev.Type), "retry").Inc()
		c.settle(d, actNak, delay, "")
	}
	return nil
}

// Fail fails the event: its failed sync-log row, its dead letter, Term.
func (s *settler) Fail(ctx context.Context, d *delivery, k store.Kind, err error) error {
	reason := err.Error()
	if k == store.KindRetry {
		reason = fmt.Sprintf("gave up after %d deliveries: %v", d.meta.Attempt, err)
	}
	s.c.fail(ctx, s.stop, d.msg, d.meta, d.failure(reason), d.log())
	return nil
}

// logFailure writes an event's failed sync-log row, bounded by
// ApplyTimeout like a transaction: a hung call would otherwise hold the
// worker, and every member routed to it, until shutdown.
func (c *Consumer) logFailure(ctx context.Context, f store.Failure, meta store.Meta) error {
	ctx, cancel := context.WithTimeout(ctx, c.cfg.ApplyTimeout)
	defer cancel()
	return c.applier.LogFailure(ctx, f, meta)
}

// done acknowledges an applied event and records it.
func (c *Consumer) done(d *delivery, res store.Result) {
	status := res.Status
	if res.AlreadyDone {
		status = "duplicate"
		if ce := c.log.Check(zap.DebugLevel, "already applied"); ce != nil {
			ce.Write(append(d.fields(), zap.String("status", res.Status))...)
		}
	} else {
		// One line per applied event at info: written straight from the
		// event's fields, with no per-event child logger.
		if ce := c.log.Check(zap.InfoLevel, "applied"); ce != nil {
			ce.Write(append(d.fields(), zap.String("status", res.Status), zap.Bool("member_created", res.MemberCreated))...)
		}
		if !d.meta.ReceivedAt.IsZero() {
			c.metrics.endToEnd.Observe(time.Since(d.meta.ReceivedAt).Seconds())
		}
	}
	c.metrics.events.WithLabelValues(typeLabel(d.ev.Type), status).Inc()
	c.settle(d, actAck, 0, "")
}

// fail settles an event that cannot be applied: its failed sync-log row
// first, then its dead letter, then Term, so that it is never dead-lettered
// without the row admins look at. While the database is unavailable it
// waits (no delivery spent); when the row or the letter cannot be written
// otherwise, the event is redelivered later and fails again.
func (c *Consumer) fail(ctx context.Context, stop <-chan struct{}, msg jetstream.Msg, meta store.Meta, f store.Failure, log *zap.Logger) {
	if !c.logFailureOrNak(ctx, stop, msg, meta, f, log) {
		return
	}
	if err := c.dlq.Add(ctx, deadletter.Letter{
		Subject: msg.Subject(), Header: msg.Headers(), Data: msg.Data(),
		StreamSeq: meta.StreamSeq, Deliveries: meta.Attempt, Reason: f.Reason,
	}); err != nil {
		log.Warn("cannot dead-letter, will redeliver", zap.Error(err))
		c.settleMsg(msg, meta.StreamSeq, actNak, c.backoff(meta.Attempt), "")
		return
	}
	c.metrics.deadLetters.Inc()
	c.metrics.events.WithLabelValues(typeLabel(event.Type(f.EventType)), store.StatusFailed).Inc()
	log.Warn("event failed", zap.String("reason", f.Reason))
	c.settleMsg(msg, meta.StreamSeq, actFail, 0, f.Reason)
}

// logFailureOrNak writes f's failed sync-log row, waiting while the
// database is unavailable (no delivery spent). It returns false when the
// row was not written: stopped while waiting, or naked for redelivery
// after another error.
func (c *Consumer) logFailureOrNak(ctx context.Context, stop <-chan struct{}, msg jetstream.Msg, meta store.Meta, f store.Failure, log *zap.Logger) bool {
	for {
		err := c.logFailure(ctx, f, meta)
		if err == nil {
			return true
		}
		if store.IsUnavailable(err) && !answers(ctx, c.applier) {
			c.pauseDB(err)
			if !c.db.wait(ctx, stop) {
				return false
			}
			continue
		}
		log.Warn("cannot log the failure, will redeliver", zap.Error(err))
		c.settleMsg(msg, meta.StreamSeq, actNak, c.backoff(meta.Attempt), "")
		return false
	}
}

// refused settles a refused-change record: its failed sync-log row, then
// Ack (there is nothing to apply or redrive: reconciliation brings the
// row). While the database is unavailable it waits, as fail does.
func (c *Consumer) refused(ctx context.Context, stop <-chan struct{}, msg jetstream.Msg, meta store.Meta, f store.Failure) {
	if !c.logFailureOrNak(ctx, stop, msg, meta, f, c.log.With(zap.Uint64("stream_seq", meta.StreamSeq))) {
		return
	}
	c.metrics.events.WithLabelValues("refused", store.StatusFailed).Inc()
	c.settleMsg(msg, meta.StreamSeq, actAck, 0, "")
}

// settle acknowledges one delivery per its action.
func (c *Consumer) settle(d *delivery, a action, delay time.Duration, reason string) {
	c.settleMsg(d.msg, d.meta.StreamSeq, a, delay, reason)
}

// settleMsg sends the acknowledgement an action calls for and releases
// the held message: Ack, Nak with delay, or Term with reason.
func (c *Consumer) settleMsg(msg jetstream.Msg, seq uint64, a action, delay time.Duration, reason string) {
	var err error
	switch a {
	case actAck:
		err = msg.Ack()
	case actNak:
		err = msg.NakWithDelay(delay)
	case actFail, actTerm:
		err = msg.TermWithReason(truncate(reason, 200))
	default:
		panic("settle: no acknowledgement for " + a.String())
	}
	if err != nil {
		// The server redelivers after AckWait; the database keeps the
		// second application from doubling anything.
		c.log.Warn("acknowledgement failed", zap.Stringer("ack", a), zap.Uint64("stream_seq", seq), zap.Error(err))
	}
	c.held.remove(msg)
	if c.hooks.settled != nil {
		c.hooks.settled(seq, a)
	}
}

func (c *Consumer) backoff(attempt int) time.Duration {
	i := min(max(attempt-1, 0), len(c.cfg.BackOff)-1)
	return c.cfg.BackOff[i]
}

func sleepCtx(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
