// Package consumer reads membership events from the JetStream stream with a
// durable pull consumer and hands them to the store, one member at a time
// per worker, acknowledging each only after its transaction committed.
package consumer

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/likeperson/portalsync/pkg/event"
	"github.com/likeperson/portalsync/pkg/stream"
	"github.com/likeperson/portalsync/syncer/deadletter"
	"github.com/likeperson/portalsync/syncer/store"
)

// Applier applies events; *store.Store satisfies it.
type Applier interface {
	Apply(ctx context.Context, ev *event.Event, meta store.Meta) (store.Result, error)
	ApplyBatch(ctx context.Context, items []store.Item) ([]store.Result, error)
	LogFailure(ctx context.Context, f store.Failure, meta store.Meta) error
}

var _ Applier = (*store.Store)(nil)

// DeadLetters keeps events that cannot be applied; *deadletter.Queue
// satisfies it.
type DeadLetters interface {
	Add(ctx context.Context, l deadletter.Letter) error
}

var _ DeadLetters = (*deadletter.Queue)(nil)

// Defaults for Config.
const (
	DefaultDurable         = "portalsync-syncer"
	DefaultAckWait         = 30 * time.Second
	DefaultMaxDeliver      = 20
	DefaultWorkers         = 4
	DefaultBatchSize       = 1024
	DefaultMaxAckPending   = 10000
	DefaultShutdownTimeout = 10 * time.Second
	DefaultPullExpiry      = 10 * time.Second
	DefaultApplyTimeout    = 2 * time.Minute
)

// DefaultBackOff is the redelivery delay after each failed attempt; the
// last value repeats.
var DefaultBackOff = []time.Duration{time.Second, 5 * time.Second, 15 * time.Second, 30 * time.Second, time.Minute}

// Config configures the consumer. Zero fields take the defaults.
type Config struct {
	// Stream is the stream name. Default stream.DefaultName.
	Stream string
	// Durable is the consumer name shared by every replica. Default
	// "portalsync-syncer".
	Durable string
	// AckWait is how long the server waits for an ack before redelivering.
	// Default 30 s.
	AckWait time.Duration
	// MaxDeliver bounds deliveries of one event; the last failed one is
	// logged as failed and terminated. Default 20.
	MaxDeliver int
	// BackOff lists redelivery delays after a transient failure. Default
	// 1s, 5s, 15s, 30s, 1m.
	BackOff []time.Duration
	// Workers is how many transactions run at once; one member's events
	// always go to the same worker, in stream order. Default 4.
	Workers int
	// BatchSize is the most events one transaction applies; a worker takes
	// what is waiting, up to this many, so batches are small when traffic
	// is light. 1 applies every event on its own. Default 1024 (measured:
	// docs/BENCHMARKS.md).
	BatchSize int
	// MaxAckPending bounds unacknowledged events across all replicas.
	// Default 10000.
	MaxAckPending int
	// ShutdownTimeout bounds how long in-flight events may finish after
	// the context ends. Default 10 s.
	ShutdownTimeout time.Duration
	// ApplyTimeout bounds one transaction, so a hung database call is
	// retried instead of holding a worker. It may exceed AckWait: work in
	// progress tells the server so every AckWait/3. Default 2 min.
	ApplyTimeout time.Duration
	// PullExpiry bounds one pull request; heartbeats come at half of it,
	// so a lost consumer leader (a cluster node failing) is noticed within
	// about this long. Default 10 s.
	PullExpiry time.Duration
}

func (c Config) withDefaults() Config {
	c.Stream = cmp.Or(c.Stream, stream.DefaultName)
	c.Durable = cmp.Or(c.Durable, DefaultDurable)
	c.AckWait = cmp.Or(c.AckWait, DefaultAckWait)
	c.MaxDeliver = cmp.Or(c.MaxDeliver, DefaultMaxDeliver)
	c.Workers = cmp.Or(c.Workers, DefaultWorkers)
	c.BatchSize = cmp.Or(c.BatchSize, DefaultBatchSize)
	c.MaxAckPending = cmp.Or(c.MaxAckPending, DefaultMaxAckPending)
	c.ShutdownTimeout = cmp.Or(c.ShutdownTimeout, DefaultShutdownTimeout)
	c.PullExpiry = cmp.Or(c.PullExpiry, DefaultPullExpiry)
	c.ApplyTimeout = cmp.Or(c.ApplyTimeout, DefaultApplyTimeout)
	if len(c.BackOff) == 0 {
		c.BackOff = DefaultBackOff
	}
	return c
}

// Validate reports a specific problem with the configuration.
func (c Config) Validate() error {
	c = c.withDefaults()
	switch {
	case c.Workers < 1 || c.Workers > 1024:
		return fmt.Errorf("workers must be 1 to 1024, got %d", c.Workers)
	case c.BatchSize < 1 || c.BatchSize > 10000:
		return fmt.Errorf("batch size must be 1 to 10000, got %d", c.BatchSize)
	case c.MaxDeliver < 2:
		return fmt.Errorf("max deliver must be at least 2, got %d", c.MaxDeliver)
	case c.AckWait < time.Second:
		return fmt.Errorf("ack wait must be at least 1s, got %s", c.AckWait)
	case c.PullExpiry < time.Second:
		return fmt.Errorf("pull expiry must be at least 1s, got %s", c.PullExpiry)
	}
	for _, d := range c.BackOff {
		if d <= 0 {
			return fmt.Errorf("backoff delays must be positive, got %s", d)
		}
	}
	return nil
}

// Consumer applies the stream's events to the database.
type Consumer struct {
	cfg     Config
	js      jetstream.JetStream
	applier Applier
	dlq     DeadLetters
	metrics *Metrics
	log     *zap.Logger

	lastErr atomic.Pointer[timedErr]
}

type timedErr struct {
	err error
	at  time.Time
}

// degradedFor is how long a transient failure keeps readiness degraded
// when no later event succeeds.
const degradedFor = 30 * time.Second

// New returns a consumer; Run starts it. metrics may be nil.
func New(js jetstream.JetStream, applier Applier, dlq DeadLetters, metrics *Metrics, cfg Config, log *zap.Logger) (*Consumer, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("consumer config: %w", err)
	}
	if metrics == nil {
		metrics = NewMetrics(prometheus.NewRegistry())
	}
	return &Consumer{cfg: cfg.withDefaults(), js: js, applier: applier, dlq: dlq, metrics: metrics, log: log}, nil
}

// ConsumerConfig is the durable consumer's server-side configuration.
func (c *Consumer) ConsumerConfig() jetstream.ConsumerConfig {
	return jetstream.ConsumerConfig{
		Durable:       c.cfg.Durable,
		Description:   "portalsync syncer: applies membership events to the database",
		DeliverPolicy: jetstream.DeliverAllPolicy,
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       c.cfg.AckWait,
		MaxDeliver:    c.cfg.MaxDeliver,
		MaxAckPending: c.cfg.MaxAckPending,
		FilterSubject: event.SubjectWildcard,
	}
}

// Degraded returns the last transient error while it is current, or nil.
func (c *Consumer) Degraded() error {
	if p := c.lastErr.Load(); p != nil && time.Since(p.at) < degradedFor {
		return p.err
	}
	return nil
}

func (c *Consumer) setDegraded(err error) {
	if err == nil {
		c.lastErr.Store(nil)
		return
	}
	c.lastErr.Store(&timedErr{err: err, at: time.Now()})
}

// Run consumes until ctx ends, then stops fetching, lets in-flight events
// finish and be acknowledged within ShutdownTimeout, and returns.
func (c *Consumer) Run(ctx context.Context) error {
	cons, err := c.js.CreateOrUpdateConsumer(ctx, c.cfg.Stream, c.ConsumerConfig())
	if err != nil {
		return fmt.Errorf("create consumer %s: %w", c.cfg.Durable, err)
	}
	// Work goes on after ctx ends, until the shutdown deadline.
	workCtx, cancelWork := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelWork()

	queues := make([]chan jetstream.Msg, c.cfg.Workers)
	// stop tells the consume callback and the workers that fetching has
	// ended; queues are never closed, so a late callback cannot panic.
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for i := range queues {
		queues[i] = make(chan jetstream.Msg, 2*c.cfg.BatchSize)
		wg.Add(1)
		go func(q <-chan jetstream.Msg) {
			defer wg.Done()
			c.work(workCtx, q, stop)
		}(queues[i])
	}

	cc, err := cons.Consume(func(msg jetstream.Msg) {
		h := fnv.New32a()
		h.Write([]byte(msg.Subject()))
		select {
		case queues[h.Sum32()%uint32(len(queues))] <- msg:
		case <-stop:
			// Not acknowledged: redelivered after AckWait.
		}
	},
		jetstream.PullMaxMessages(min(max(2*c.cfg.Workers*c.cfg.BatchSize, 64), c.cfg.MaxAckPending)),
		jetstream.PullExpiry(c.cfg.PullExpiry),
		jetstream.ConsumeErrHandler(func(_ jetstream.ConsumeContext, err error) {
			if errors.Is(err, jetstream.ErrNoHeartbeat) || errors.Is(err, context.Canceled) {
				c.log.Debug("consume", zap.Error(err))
				return
			}
			c.log.Warn("consume error", zap.Error(err))
		}),
	)
	if err != nil {
		close(stop)
		wg.Wait()
		return fmt.Errorf("consume: %w", err)
	}
	c.log.Info("consuming", zap.String("stream", c.cfg.Stream), zap.String("consumer", c.cfg.Durable),
		zap.Int("workers", c.cfg.Workers), zap.Int("batch_size", c.cfg.BatchSize))

	<-ctx.Done()
	c.log.Info("stopping: finishing in-flight events", zap.Duration("timeout", c.cfg.ShutdownTimeout))
	deadline := time.Now().Add(c.cfg.ShutdownTimeout)
	// Stop fetching; what the client holds already is handed over.
	cc.Drain()
	select {
	case <-cc.Closed():
	case <-time.After(time.Until(deadline)):
		cc.Stop()
	}
	close(stop)
	finished := make(chan struct{})
	go func() { wg.Wait(); close(finished) }()
	select {
	case <-finished:
		c.log.Info("stopped")
		return nil
	case <-time.After(time.Until(deadline)):
		cancelWork()
		<-finished
		return fmt.Errorf("shutdown: in-flight events did not finish within %s; they will be redelivered", c.cfg.ShutdownTimeout)
	}
}

// work takes what is waiting on q, up to BatchSize messages, and applies
// it; at least one message, without waiting for more. After stop it
// finishes what is queued and returns.
func (c *Consumer) work(ctx context.Context, q <-chan jetstream.Msg, stop <-chan struct{}) {
	for {
		var first jetstream.Msg
		select {
		case first = <-q:
		case <-stop:
			select {
			case first = <-q:
			default:
				return
			}
		}
		batch := []jetstream.Msg{first}
	fill:
		for len(batch) < c.cfg.BatchSize {
			select {
			case m := <-q:
				batch = append(batch, m)
			default:
				break fill
			}
		}
		c.handleBatch(ctx, batch)
	}
}

// delivery is one decoded message.
type delivery struct {
	msg  jetstream.Msg
	ev   *event.Event
	meta store.Meta
	// log is built on first use: most deliveries are never logged above
	// debug, and building a logger per message costs more than applying it.
	c      *Consumer
	logger *zap.Logger
}

func (d *delivery) log() *zap.Logger {
	if d.logger == nil {
		d.logger = d.c.log.With(zap.Uint64("stream_seq", d.meta.StreamSeq), zap.Int("attempt", d.meta.Attempt),
			zap.String("event_id", d.ev.ID), zap.String("event_type", string(d.ev.Type)), zap.String("member_id", d.ev.Member.ID))
	}
	return d.logger
}

// prepare reads a message's metadata and event; an undecodable message is
// failed right away and nil returned.
func (c *Consumer) prepare(ctx context.Context, msg jetstream.Msg) *delivery {
	md, err := msg.Metadata()
	if err != nil {
		c.log.Error("message without metadata", zap.Error(err))
		c.ack(msg.Term, "term")
		return nil
	}
	meta := store.Meta{StreamSeq: md.Sequence.Stream, Attempt: int(md.NumDelivered)}
	if ts := msg.Headers().Get(stream.HeaderReceivedAt); ts != "" {
		meta.ReceivedAt, _ = time.Parse(time.RFC3339Nano, ts)
	}
	if meta.Attempt > 1 {
		c.metrics.redelivered.Inc()
	}
	ev, err := event.Decode(msg.Data())
	if err != nil {
		c.fail(ctx, msg, meta, failureFromHeaders(msg, err), c.log.With(zap.Uint64("stream_seq", meta.StreamSeq), zap.Int("attempt", meta.Attempt)))
		return nil
	}
	return &delivery{msg: msg, ev: ev, meta: meta, c: c}
}

// handleBatch applies a batch in one transaction. When the transaction
// fails for a reason no retry fixes, every event is applied on its own, so
// that only the bad one fails; on a transient failure all are retried.
func (c *Consumer) handleBatch(ctx context.Context, msgs []jetstream.Msg) {
	ds := make([]*delivery, 0, len(msgs))
	for _, m := range msgs {
		if d := c.prepare(ctx, m); d != nil {
			ds = append(ds, d)
		}
	}
	switch len(ds) {
	case 0:
		return
	case 1:
		c.handle(ctx, ds[0])
		return
	}
	items := make([]store.Item, len(ds))
	for i, d := range ds {
		items[i] = store.Item{Event: d.ev, Meta: d.meta}
	}
	started := time.Now()
	results, err := c.inProgress(ds, func() ([]store.Result, error) {
		ctx, cancel := context.WithTimeout(ctx, c.cfg.ApplyTimeout)
		defer cancel()
		return c.applier.ApplyBatch(ctx, items)
	})
	if err == nil {
		c.metrics.applySeconds.Observe(time.Since(started).Seconds())
		c.metrics.batchSize.Observe(float64(len(ds)))
		c.setDegraded(nil)
		for i, d := range ds {
			c.done(d, results[i])
		}
		return
	}
	exhausted := false
	for _, d := range ds {
		exhausted = exhausted || d.meta.Attempt >= c.cfg.MaxDeliver
	}
	if store.IsPermanent(err) || exhausted {
		c.log.Warn("batch failed, applying its events one by one", zap.Int("events", len(ds)), zap.Error(err))
		for _, d := range ds {
			c.handle(ctx, d)
		}
		return
	}
	c.setDegraded(err)
	c.log.Warn("transient failure, will retry the batch", zap.Int("events", len(ds)), zap.Error(err))
	for _, d := range ds {
		c.metrics.events.WithLabelValues(typeLabel(d.ev.Type), "retry").Inc()
		delay := c.backoff(d.meta.Attempt)
		c.ack(func() error { return d.msg.NakWithDelay(delay) }, "nak")
	}
}

// done acknowledges an applied event and records it.
func (c *Consumer) done(d *delivery, res store.Result) {
	status := res.Status
	if res.AlreadyDone {
		status = "duplicate"
		if ce := d.c.log.Check(zap.DebugLevel, "already applied"); ce != nil {
			d.log().Debug("already applied", zap.String("status", res.Status))
		}
	} else {
		if ce := d.c.log.Check(zap.InfoLevel, "applied"); ce != nil {
			d.log().Info("applied", zap.String("status", res.Status), zap.Bool("member_created", res.MemberCreated))
		}
		if !d.meta.ReceivedAt.IsZero() {
			c.metrics.endToEnd.Observe(time.Since(d.meta.ReceivedAt).Seconds())
		}
	}
	c.metrics.events.WithLabelValues(typeLabel(d.ev.Type), status).Inc()
	c.ack(d.msg.Ack, "ack")
}

// handle applies one event in its own transaction and acknowledges it
// according to the outcome.
func (c *Consumer) handle(ctx context.Context, d *delivery) {
	msg, ev, meta, log := d.msg, d.ev, d.meta, d.log()
	started := time.Now()
	res, err := c.apply(ctx, msg, ev, meta)
	switch {
	case err == nil:
		c.metrics.applySeconds.Observe(time.Since(started).Seconds())
		c.metrics.batchSize.Observe(1)
		c.setDegraded(nil)
		c.done(d, res)
	case store.IsPermanent(err):
		c.fail(ctx, msg, meta, store.Failure{
			EventID: ev.ID, EventType: string(ev.Type), MemberID: ev.Member.ID, OrgID: ev.Organization.ID,
			OccurredAt: ev.OccurredAt, Reason: err.Error(),
		}, log)
	default:
		c.setDegraded(err)
		if meta.Attempt >= c.cfg.MaxDeliver {
			c.fail(ctx, msg, meta, store.Failure{
				EventID: ev.ID, EventType: string(ev.Type), MemberID: ev.Member.ID, OrgID: ev.Organization.ID,
				OccurredAt: ev.OccurredAt, Reason: fmt.Sprintf("gave up after %d deliveries: %v", meta.Attempt, err),
			}, log)
			return
		}
		delay := c.backoff(meta.Attempt)
		log.Warn("transient failure, will retry", zap.Duration("delay", delay), zap.Error(err))
		c.metrics.events.WithLabelValues(typeLabel(ev.Type), "retry").Inc()
		c.ack(func() error { return msg.NakWithDelay(delay) }, "nak")
	}
}

// apply runs one event's transaction, bounded by ApplyTimeout.
func (c *Consumer) apply(ctx context.Context, msg jetstream.Msg, ev *event.Event, meta store.Meta) (store.Result, error) {
	var res store.Result
	_, err := c.inProgress([]*delivery{{msg: msg}}, func() ([]store.Result, error) {
		ctx, cancel := context.WithTimeout(ctx, c.cfg.ApplyTimeout)
		defer cancel()
		var err error
		res, err = c.applier.Apply(ctx, ev, meta)
		return nil, err
	})
	return res, err
}

// inProgress runs fn, telling the server every AckWait/3 that the
// deliveries are still being worked on, so long work is not redelivered.
func (c *Consumer) inProgress(ds []*delivery, fn func() ([]store.Result, error)) ([]store.Result, error) {
	done := make(chan struct{})
	defer close(done)
	go func() {
		t := time.NewTicker(c.cfg.AckWait / 3)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-t.C:
				for _, d := range ds {
					c.ack(d.msg.InProgress, "in progress")
				}
			}
		}
	}()
	return fn()
}

// fail copies the event to the dead-letter stream, logs it as failed and
// terminates it, so it is not redelivered. When the dead letter or the
// failure cannot be written, the message is redelivered later instead.
func (c *Consumer) fail(ctx context.Context, msg jetstream.Msg, meta store.Meta, f store.Failure, log *zap.Logger) {
	retry := func(what string, err error) {
		c.setDegraded(err)
		log.Warn("cannot "+what+", will retry", zap.Error(err))
		c.ack(func() error { return msg.NakWithDelay(c.backoff(meta.Attempt)) }, "nak")
	}
	if err := c.dlq.Add(ctx, deadletter.Letter{
		Subject: msg.Subject(), Header: msg.Headers(), Data: msg.Data(),
		StreamSeq: meta.StreamSeq, Deliveries: meta.Attempt, Reason: f.Reason,
	}); err != nil {
		retry("dead-letter", err)
		return
	}
	if err := c.applier.LogFailure(ctx, f, meta); err != nil {
		retry("log failure", err)
		return
	}
	c.metrics.deadLetters.Inc()
	c.metrics.events.WithLabelValues(typeLabel(event.Type(f.EventType)), store.StatusFailed).Inc()
	log.Warn("event failed", zap.String("reason", f.Reason))
	c.ack(func() error { return msg.TermWithReason(truncate(f.Reason, 200)) }, "term")
}

func (c *Consumer) ack(fn func() error, what string) {
	if err := fn(); err != nil {
		// The server redelivers after AckWait; the database keeps the
		// second application from doubling anything.
		c.log.Warn("acknowledgement failed", zap.String("ack", what), zap.Error(err))
	}
}

func (c *Consumer) backoff(attempt int) time.Duration {
	i := min(max(attempt-1, 0), len(c.cfg.BackOff)-1)
	return c.cfg.BackOff[i]
}

// failureFromHeaders describes an undecodable event from what the ingress
// put in its headers.
func failureFromHeaders(msg jetstream.Msg, err error) store.Failure {
	h := msg.Headers()
	id := h.Get(jetstream.MsgIDHeader)
	if id == "" {
		if md, mdErr := msg.Metadata(); mdErr == nil {
			id = fmt.Sprintf("stream-seq-%d", md.Sequence.Stream)
		}
	}
	return store.Failure{
		EventID:   id,
		EventType: h.Get(stream.HeaderEventType),
		MemberID:  h.Get(stream.HeaderMemberID),
		Reason:    "invalid payload: " + err.Error(),
	}
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n]
}
