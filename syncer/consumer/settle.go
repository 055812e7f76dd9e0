package consumer

import (
	"context"
	"fmt"
	"math/rand/v2"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap"

	"github.com/likeperson/portalsync/pkg/event"
	"github.com/likeperson/portalsync/syncer/deadletter"
	"github.com/likeperson/portalsync/syncer/store"
)

// action is what the consumer does with the events of one attempt.
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
// the highest delivery count among the events. An unavailable database
// that answers a ping after all is reported as KindRetry by the caller.
func decide(k store.Kind, size, retried, attempt, maxDeliver int) action {
	switch k {
	case store.KindNone:
		return actAck
	case store.KindUnavailable:
		return actPause
	case store.KindRetry:
		switch {
		case retried < retriesNow:
			return actRetryNow
		case attempt < maxDeliver:
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

// handle applies deliveries as one batch (a single event is a batch of
// one) and settles them by the outcome table. It returns with every
// delivery settled, or, when stop closes while the database is
// unavailable, with them left held for redelivery.
func (c *Consumer) handle(ctx context.Context, stop <-chan struct{}, ds []*delivery) {
	items := make([]store.Item, len(ds))
	attempt := 0
	for i, d := range ds {
		items[i] = store.Item{Event: d.ev, Meta: d.meta}
		attempt = max(attempt, d.meta.Attempt)
	}
	retried := 0
	for {
		started := time.Now()
		results, err := c.apply(ctx, items)
		kind := store.KindOf(err)
		if kind == store.KindUnavailable && c.dbAnswers(ctx) {
			kind = store.KindRetry
		}
		a := decide(kind, len(ds), retried, attempt, c.cfg.MaxDeliver)
		switch a {
		case actAck:
			c.rate.observe(len(ds), time.Since(started))
			c.metrics.applySeconds.Observe(time.Since(started).Seconds())
			c.metrics.batchSize.Observe(float64(len(ds)))
			for i, d := range ds {
				c.done(d, results[i])
			}
			return
		case actPause:
			c.pauseDB(err)
			if !c.db.wait(ctx, stop) {
				return // shutting down: redelivered after AckWait
			}
		case actRetryNow:
			retried++
			c.log.Debug("conflict, retrying at once", zap.Int("events", len(ds)), zap.Int("retry", retried), zap.Error(err))
			if !sleepCtx(ctx, time.Duration(10+rand.IntN(90*retried))*time.Millisecond) {
				return
			}
		case actNak:
			delay := c.backoff(attempt)
			c.log.Warn("retryable failure, will redeliver", zap.Int("events", len(ds)), zap.Duration("delay", delay), zap.Error(err))
			for _, d := range ds {
				c.metrics.events.WithLabelValues(typeLabel(d.ev.Type), "retry").Inc()
				c.settle(d, actNak, delay, "")
			}
			return
		case actSplit:
			c.log.Warn("batch failed, applying its events one by one", zap.Int("events", len(ds)), zap.Error(err))
			for _, d := range ds {
				c.handle(ctx, stop, []*delivery{d})
			}
			return
		case actFail:
			d := ds[0]
			reason := err.Error()
			if kind == store.KindRetry {
				reason = fmt.Sprintf("gave up after %d deliveries: %v", d.meta.Attempt, err)
			}
			c.fail(ctx, stop, d.msg, d.meta, d.failure(reason), d.log())
			return
		}
	}
}

// apply runs one batch's transaction, bounded by ApplyTimeout.
func (c *Consumer) apply(ctx context.Context, items []store.Item) ([]store.Result, error) {
	ctx, cancel := context.WithTimeout(ctx, c.cfg.ApplyTimeout)
	defer cancel()
	return c.applier.ApplyBatch(ctx, items)
}

// logFailure writes an event's failed sync-log row, bounded by
// ApplyTimeout like a transaction: a hung call would otherwise hold the
// worker, and every member routed to it, until shutdown.
func (c *Consumer) logFailure(ctx context.Context, f store.Failure, meta store.Meta) error {
	ctx, cancel := context.WithTimeout(ctx, c.cfg.ApplyTimeout)
	defer cancel()
	return c.applier.LogFailure(ctx, f, meta)
}

// dbAnswers tells an unreachable database from another error.
func (c *Consumer) dbAnswers(ctx context.Context) bool {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	return c.applier.Ping(ctx) == nil
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
		if store.IsUnavailable(err) && !c.dbAnswers(ctx) {
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
