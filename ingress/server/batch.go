package server

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/synadia-io/orbit.go/jetstreamext"
	"go.uber.org/zap"

	"github.com/likeperson/portalsync/pkg/stream"
)

// batchSender publishes single messages and atomic batches; *pool is one.
type batchSender interface {
	Publisher
	PublishMsgBatch(ctx context.Context, msgs []*nats.Msg) (*jetstreamext.BatchAck, error)
}

// batcher is a Publisher that gathers the messages published at about the
// same time into one atomic batch (group commit). With the server's
// sync_interval always, a single publish costs a disk flush; a batch costs
// one flush for all its messages, plus a fixed price: nats-server stages
// an R1 file stream's batch in a store of its own, created, flushed and
// removed for each batch (measured at 2.5-5 ms on the reference machine,
// the price of 10-20 single publishes, and the server handles one batch
// at a time per stream). So only groups of at least min messages are
// published as a batch; smaller ones, and every message while too few
// callers are publishing for a group to form, are published alone at
// once.
//
// Every message keeps its Nats-Msg-Id. An atomic batch is stored whole or
// not at all, so a batch the server refuses (one of its ids stored before,
// too many batches in flight, atomic publishing disabled, stream full) is
// published again message by message, each by its own caller: each then
// gets its own acknowledgement (duplicate or not, or its own error), and
// one bad event never fails its neighbours.
type batcher struct {
	pub     batchSender
	min     int
	max     int
	wait    time.Duration // < 0: none
	timeout time.Duration
	metrics *Metrics
	log     *zap.Logger

	// active counts the callers in PublishMsg: fewer than min cannot form
	// a batch, so their messages go alone without waiting.
	active atomic.Int64
	in     chan *pending
	work   chan []*pending
	// stored signals the collector that a batch was answered: its callers
	// are about to publish again, so the next group waits for them.
	stored    chan struct{}
	quit      chan struct{}
	closeOnce sync.Once
	wg        sync.WaitGroup
	// lat holds how long single publishes and batches take now.
	lat latencies
	// warnDisabled logs once that the stream refuses atomic batches.
	warnDisabled sync.Once
}

var _ Publisher = (*batcher)(nil)

// pending is one message waiting for its batch's outcome.
type pending struct {
	msg  *nats.Msg
	id   string
	done chan outcome // buffered: the batcher never waits for the caller
}

// outcome is a message's share of its batch's result: its
// acknowledgement, an error, or alone, to publish it by itself.
type outcome struct {
	ack   *jetstream.PubAck
	err   error
	alone bool
}

// errBatcherClosed is returned to a publish that arrives after shutdown.
var errBatcherClosed = errors.New("ingress shutting down: publisher closed")

// newBatcher starts a batcher over pub with cfg's Batch settings
// (cfg has its defaults); close stops it.
func newBatcher(pub batchSender, cfg Config, metrics *Metrics, log *zap.Logger) *batcher {
	b := &batcher{
		pub: pub, min: cfg.BatchMin, max: cfg.BatchMax, wait: cfg.BatchWait, timeout: cfg.PublishTimeout,
		metrics: metrics, log: log,
		in: make(chan *pending), work: make(chan []*pending), stored: make(chan struct{}, cfg.BatchPublishers),
		quit: make(chan struct{}),
	}
	b.wg.Add(1 + cfg.BatchPublishers)
	go b.collect()
	for range cfg.BatchPublishers {
		go b.publishLoop()
	}
	return b
}

// close stops taking messages, publishes those already taken and waits
// for every goroutine of the batcher. It is safe to call twice, and on nil.
func (b *batcher) close() {
	if b == nil {
		return
	}
	b.closeOnce.Do(func() { close(b.quit) })
	b.wg.Wait()
}

// PublishMsg publishes msg in the next batch and waits for its
// acknowledgement. Publish options are refused: set their headers on msg
// (Nats-Msg-Id, Nats-Expected-Stream), which hold for a batch as for a
// single publish.
func (b *batcher) PublishMsg(ctx context.Context, msg *nats.Msg, opts ...jetstream.PublishOpt) (*jetstream.PubAck, error) {
	if len(opts) > 0 {
		return nil, errors.New("batcher: publish options are not supported; set the headers instead")
	}
	n := b.active.Add(1)
	defer b.active.Add(-1)
	if n < int64(b.min) || !b.lat.batchPays(b.wait, time.Now(), false) {
		// No batch can form, or none pays now: no detour through the
		// collector.
		b.metrics.batchSize.Observe(1)
		return b.alone(ctx, msg)
	}
	p := &pending{msg: msg, id: msg.Header.Get(jetstream.MsgIDHeader), done: make(chan outcome, 1)}
	select {
	case b.in <- p:
	case <-b.quit:
		return nil, errBatcherClosed
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	select {
	case o := <-p.done:
		if o.alone {
			return b.alone(ctx, msg)
		}
		return o.ack, o.err
	case <-ctx.Done():
		// The batch may still be stored: the caller answers 503, and a
		// retry is deduplicated.
		return nil, ctx.Err()
	}
}

// alone publishes msg by itself and measures it.
func (b *batcher) alone(ctx context.Context, msg *nats.Msg) (*jetstream.PubAck, error) {
	start := time.Now()
	ack, err := b.pub.PublishMsg(ctx, msg)
	if err == nil {
		b.lat.single(time.Since(start))
	}
	return ack, err
}

// Stream opens a stream (to read a duplicate back).
func (b *batcher) Stream(ctx context.Context, name string) (jetstream.Stream, error) {
	return b.pub.Stream(ctx, name)
}

// collect forms the groups: the first message waits up to b.wait for
// others; the group goes to the first free publisher once it is full or
// has waited, and grows (up to b.max) while every publisher is busy. When
// a batch is answered the group waits b.wait again: the answered callers
// publish again at once, and one batch of all is cheaper than two halves
// (group commit). While fewer than b.min callers are publishing no batch
// can form: each message goes alone at once; so does every message while
// batches take longer than single publishes (latencies).
func (b *batcher) collect() {
	defer b.wg.Done()
	defer close(b.work)
	var (
		batch []*pending
		ids   = map[string]struct{}{}
		ready bool // the batch has waited long enough
		timer = time.NewTimer(time.Hour)
	)
	timer.Stop()
	for {
		in, work := b.in, chan<- []*pending(nil)
		if len(batch) >= b.max {
			in = nil
		}
		if len(batch) > 0 && (ready || len(batch) >= b.max) {
			work = b.work
		}
		if len(batch) > 0 && (len(batch) < b.min && b.active.Load() < int64(b.min) || !b.lat.batchPays(b.wait, time.Now(), false)) {
			b.sendAlone(batch)
			batch, ready = batch[:0], false
			clear(ids)
			timer.Stop()
			continue
		}
		select {
		case <-b.quit:
			if len(batch) > 0 {
				b.work <- batch
			}
			return
		case p := <-in:
			if _, seen := ids[p.id]; seen {
				// The server refuses a batch holding one id twice: the
				// repeat goes alone (and is answered as a duplicate, or
				// compared, once the first is stored).
				b.metrics.batchFallbacks.WithLabelValues("same_id").Inc()
				b.sendAlone([]*pending{p})
				continue
			}
			ids[p.id] = struct{}{}
			batch = append(batch, p)
			if len(batch) == 1 {
				if b.wait > 0 {
					timer.Reset(b.wait)
				} else {
					ready = true
				}
			}
		case <-timer.C:
			ready = true
		case <-b.stored:
			if len(batch) > 0 && len(batch) < b.max && b.wait > 0 {
				ready = false
				timer.Reset(b.wait)
			}
		case work <- batch:
			batch, ready = nil, false
			clear(ids)
			timer.Stop()
		}
	}
}

// sendAlone hands each message of group back to its caller to publish
// by itself, each counted as a group of one.
func (b *batcher) sendAlone(group []*pending) {
	for _, p := range group {
		b.metrics.batchSize.Observe(1)
		p.done <- outcome{alone: true}
	}
}

func (b *batcher) publishLoop() {
	defer b.wg.Done()
	for batch := range b.work {
		if b.publish(batch) {
			select {
			case b.stored <- struct{}{}:
			default: // the collector has a signal to read already
			}
		}
	}
}

// publish stores one group as an atomic batch and hands each message its
// outcome; a group smaller than b.min (it did not grow while waiting), or
// any group while batches take longer than single publishes, goes alone,
// message by message, each published by its caller. It reports whether it
// published a batch.
func (b *batcher) publish(batch []*pending) bool {
	if len(batch) < max(b.min, 2) || !b.lat.batchPays(b.wait, time.Now(), true) {
		b.sendAlone(batch)
		return false
	}
	b.metrics.batchSize.Observe(float64(len(batch)))
	msgs := make([]*nats.Msg, len(batch))
	for i, p := range batch {
		msgs[i] = p.msg
	}
	ctx, cancel := context.WithTimeout(context.Background(), b.timeout)
	defer cancel()
	start := time.Now()
	ack, err := b.pub.PublishMsgBatch(ctx, msgs)
	if err == nil && ack.BatchSize == uint64(len(batch)) && ack.Sequence >= ack.BatchSize {
		b.lat.batch(time.Since(start))
		// A batch is stored under contiguous sequences (the server holds
		// the stream for the whole commit), ending at the acknowledged one.
		first := ack.Sequence - ack.BatchSize + 1
		for i, p := range batch {
			p.done <- outcome{ack: &jetstream.PubAck{Stream: ack.Stream, Sequence: first + uint64(i), Domain: ack.Domain}}
		}
		return true
	}
	reason := fallbackReason(err)
	if reason == "" {
		// Not refused but not acknowledged (timeout, connection lost): the
		// batch may or may not be stored, as for a single publish.
		for _, p := range batch {
			p.done <- outcome{err: err}
		}
		return true
	}
	b.metrics.batchFallbacks.WithLabelValues(reason).Inc()
	if reason == "atomic_disabled" || reason == "server_version" {
		b.warnDisabled.Do(func() {
			b.log.Warn("atomic batch publishing unavailable; events are published one by one", zap.String("reason", reason), zap.Error(err))
		})
	} else {
		b.log.Debug("atomic batch refused; publishing its events one by one", zap.String("reason", reason), zap.Int("size", len(batch)), zap.Error(err))
	}
	for _, p := range batch {
		p.done <- outcome{alone: true}
	}
	return true
}

// JetStream error codes of a refused atomic batch (nats-server
// jetstream_errors_generated.go).
const (
	errCodeAtomicDisabled        = 10174 // JSAtomicPublishDisabledErr
	errCodeAtomicDuplicate       = 10201 // JSAtomicPublishContainsDuplicateMessageErr
	errCodeAtomicTooManyInflight = 10210 // JSAtomicPublishTooManyInflight
)

// fallbackReason names why a batch publish that failed with err may be
// published again message by message ("" when it may not: the batch may
// have been stored). An atomic batch the server answered with an error is
// stored not at all.
func fallbackReason(err error) string {
	var apiErr *jetstream.APIError
	switch {
	case err == nil, errors.Is(err, jetstreamext.ErrInvalidBatchAck):
		// An acknowledgement that does not match the batch: a server that
		// does not know atomic batches stored the messages one by one.
		// Publishing them again is deduplicated.
		return "invalid_ack"
	case errors.Is(err, errAtomicUnsupported):
		return "server_version"
	case stream.IsFull(err):
		// Some events may still fit.
		return reasonStreamFull
	case !errors.As(err, &apiErr):
		return ""
	}
	switch apiErr.ErrorCode {
	case errCodeAtomicDuplicate:
		return "duplicate"
	case errCodeAtomicTooManyInflight:
		return "too_many_inflight"
	case errCodeAtomicDisabled:
		return "atomic_disabled"
	}
	return "refused"
}

// latencies follows how long an atomic batch and a single publish take
// (moving averages), to publish groups as batches only while that pays.
//
// With the callers' requests in flight either way, a group is answered
// sooner, and the stream stores more per second, as a batch exactly when
// a batch (plus the wait that formed it) takes less than a single publish
// does at that load: a single's time grows with the publishes queued at
// the server, a batch's is mostly the server's fixed price per batch,
// which depends on the disk (its staging store is created, flushed and
// removed per batch). Each way is tried again after explore without a
// measurement of it, as the load and the disk change.
type latencies struct {
	mu                     sync.Mutex
	singleAvg, batchAvg    time.Duration
	singleSeen, batchTried time.Time
}

const (
	// latencyShift gives the newest measurement a weight of 1/8.
	latencyShift = 3
	// explore is how long a way goes untried before it is tried again.
	explore = time.Second
)

func ewma(avg, d time.Duration) time.Duration {
	if avg == 0 {
		return d
	}
	return avg + (d-avg)>>latencyShift
}

func (l *latencies) single(d time.Duration) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.singleAvg, l.singleSeen = ewma(l.singleAvg, d), time.Now()
}

func (l *latencies) batch(d time.Duration) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.batchAvg = ewma(l.batchAvg, d)
}

// batchPays reports whether the next group should be a batch: yes until
// both ways are measured, then while a batch (and its wait) is faster, and
// now and then the way not taken, to measure it again. take records the
// choice (the publisher takes it; the collector only asks).
func (l *latencies) batchPays(wait time.Duration, now time.Time, take bool) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	switch {
	case l.batchAvg == 0 || l.singleAvg == 0:
	case l.batchAvg+max(wait, 0) < l.singleAvg:
		if now.Sub(l.singleSeen) > explore {
			if take {
				l.singleSeen = now // one group alone
			}
			return false
		}
	case now.Sub(l.batchTried) <= explore:
		return false
	}
	if take {
		l.batchTried = now
	}
	return true
}
