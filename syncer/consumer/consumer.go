// Package consumer reads membership events from the JetStream stream with a
// durable pull consumer and hands them to the store, one member at a time
// per worker, acknowledging each only after its transaction committed.
//
// It fetches only what its workers have room for, keeps every held event
// alive until it is settled, settles every outcome in one place
// (settle.go), waits out an unavailable database or NATS server without
// spending any event's deliveries, and recreates its durable consumer when
// it is removed.
//
// Replay applies the stream through the same outcome table (Settle, with a
// Settler of its own), reads messages the same way (Meta) and routes a
// member's events to a worker the same way (Worker).
package consumer

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/likeperson/portalsync/pkg/event"
	"github.com/likeperson/portalsync/syncer/deadletter"
	"github.com/likeperson/portalsync/syncer/store"
)

// Applier applies events; *store.Store satisfies it. A single event is a
// batch of one.
type Applier interface {
	ApplyBatch(ctx context.Context, items []store.Item) ([]store.Result, error)
	LogFailure(ctx context.Context, f store.Failure, meta store.Meta) error
	// Ping reports whether the database answers; its errors are
	// classified like the others.
	Ping(ctx context.Context) error
}

var _ Applier = (*store.Store)(nil)

// DeadLetters keeps events that cannot be applied; *deadletter.Queue
// satisfies it.
type DeadLetters interface {
	Add(ctx context.Context, l deadletter.Letter) error
}

var _ DeadLetters = (*deadletter.Queue)(nil)

// Pause reasons, as State, logs and metrics name them.
const (
	ReasonDatabase = "database unavailable"
	ReasonNATS     = "NATS unavailable"
	ReasonConsumer = "durable consumer missing"
)

// State is what the consumer is doing, for readiness, metrics and `syncer
// status`.
type State struct {
	// Consuming is true while events are pulled from the durable
	// consumer.
	Consuming bool `json:"consuming"`
	// Paused names why the consumer waits ("database unavailable", "NATS
	// unavailable", "durable consumer missing"), empty when it does not.
	Paused string `json:"paused,omitempty"`
	// PausedSince is when the pause began.
	PausedSince time.Time `json:"paused_since,omitzero"`
	// PauseError is the error that started the pause.
	PauseError string `json:"pause_error,omitempty"`
	// Held counts events fetched and not yet settled (kept alive).
	Held int `json:"held"`
}

// Consumer applies the stream's events to the database.
type Consumer struct {
	cfg     Config
	js      jetstream.JetStream
	applier Applier
	dlq     DeadLetters
	metrics *Metrics
	log     *zap.Logger

	held  *heldSet
	rate  rate // one busy worker's apply rate, for fetchLimit
	db    *gate
	pause *pauses
	// bg runs the database probe; bgCtx ends with the work.
	bg    sync.WaitGroup
	bgCtx context.Context

	// hooks let tests wait for what the consumer did instead of sleeping.
	hooks hooks
}

// hooks are called, when set, as things happen; tests set them.
type hooks struct {
	settled   func(seq uint64, a action)
	paused    func(reason string)
	resumed   func(reason string)
	recreated func()
	fetched   func(n int)
	kept      func(n int)
}

// New returns a consumer; Run starts it. metrics may be nil.
func New(js jetstream.JetStream, applier Applier, dlq DeadLetters, metrics *Metrics, cfg Config, log *zap.Logger) (*Consumer, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("consumer config: %w", err)
	}
	if metrics == nil {
		metrics = NewMetrics(prometheus.NewRegistry())
	}
	c := &Consumer{cfg: cfg.WithDefaults(), js: js, applier: applier, dlq: dlq, metrics: metrics, log: log,
		db: newGate(), pause: &pauses{since: map[string]pauseInfo{}}}
	c.held = newHeldSet(metrics)
	return c, nil
}

// ConsumerConfig is the durable consumer's server-side configuration. Its
// MaxDeliver is unlimited: the server must never drop an event for its
// delivery count (it would do so silently); the consumer decides when an
// event's own failures have used up Config.MaxDeliver.
func (c *Consumer) ConsumerConfig() jetstream.ConsumerConfig {
	return jetstream.ConsumerConfig{
		Durable:       c.cfg.Durable,
		Description:   "portalsync syncer: applies membership events to the database",
		DeliverPolicy: jetstream.DeliverAllPolicy,
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       c.cfg.AckWait,
		MaxDeliver:    -1,
		MaxAckPending: c.cfg.MaxAckPending,
		FilterSubject: event.SubjectWildcard,
	}
}

// State returns what the consumer is doing now.
func (c *Consumer) State() State {
	st := State{Held: c.held.len()}
	st.Consuming, st.Paused, st.PausedSince, st.PauseError = c.pause.state()
	return st
}

// Ready returns nil while the consumer pulls and applies events, and says
// why not otherwise.
func (c *Consumer) Ready() error {
	st := c.State()
	switch {
	case st.Paused != "":
		return fmt.Errorf("not consuming: paused: %s since %s (%d events held)", st.Paused, st.PausedSince.UTC().Format(time.RFC3339), st.Held)
	case !st.Consuming:
		return errors.New("not consuming")
	}
	return nil
}

// Run consumes until ctx ends, then stops fetching, lets held events
// finish and be acknowledged within ShutdownTimeout, and returns. It never
// stops consuming by itself: an unavailable database or NATS server, or a
// removed durable consumer, is waited out, probed and recovered from.
func (c *Consumer) Run(ctx context.Context) error {
	// Work goes on after ctx ends, until the shutdown deadline.
	workCtx, cancelWork := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelWork()
	// Probes end when fetching does: nothing waits for them after that.
	bgCtx, cancelBg := context.WithCancel(workCtx)
	defer cancelBg()
	c.bgCtx = bgCtx

	queues := make([]chan jetstream.Msg, c.cfg.Workers)
	// stop tells the workers that fetching has ended.
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for i := range queues {
		// Never full: the consumer holds at most capacity events.
		queues[i] = make(chan jetstream.Msg, c.cfg.capacity())
		wg.Add(1)
		go func(q <-chan jetstream.Msg) {
			defer wg.Done()
			c.work(workCtx, q, stop)
		}(queues[i])
	}
	// Held events are kept alive until the workers are done with them.
	keepCtx, stopKeep := context.WithCancel(workCtx)
	keepDone := make(chan struct{})
	go func() {
		defer close(keepDone)
		c.keepAlive(keepCtx)
	}()

	c.log.Info("consuming", zap.String("stream", c.cfg.Stream), zap.String("consumer", c.cfg.Durable),
		zap.Int("workers", c.cfg.Workers), zap.Int("batch_size", c.cfg.BatchSize), zap.Int("capacity", c.cfg.capacity()))
	c.fetchLoop(ctx, queues)

	c.log.Info("stopping: finishing held events", zap.Duration("timeout", c.cfg.ShutdownTimeout), zap.Int("held", c.held.len()))
	close(stop)
	cancelBg()
	finished := make(chan struct{})
	go func() { wg.Wait(); stopKeep(); <-keepDone; c.bg.Wait(); close(finished) }()
	defer c.pause.setConsuming(false)
	select {
	case <-finished:
		c.log.Info("stopped")
		return nil
	case <-time.After(c.cfg.ShutdownTimeout):
		cancelWork()
		<-finished
		return fmt.Errorf("shutdown: held events did not finish within %s; they will be redelivered", c.cfg.ShutdownTimeout)
	}
}

// fetchLoop pulls events while ctx lasts: only as many as the workers have
// room for, not while the database is unavailable, and recreating the
// durable consumer when it is gone.
func (c *Consumer) fetchLoop(ctx context.Context, queues []chan jetstream.Msg) {
	var cons jetstream.Consumer
	probe := c.newProbe()
	for ctx.Err() == nil {
		if !c.db.wait(ctx, nil) {
			break
		}
		if nc := c.js.Conn(); nc != nil && !nc.IsConnected() {
			c.pauseFor(ReasonNATS, nats.ErrConnectionReconnecting)
			c.pause.setConsuming(false)
			if !probe.sleep(ctx) {
				break
			}
			continue
		}
		if cons == nil {
			var err error
			cons, err = c.ensureConsumer(ctx)
			if err != nil {
				if ctx.Err() != nil {
					break
				}
				c.log.Warn("create durable consumer, will retry", zap.Error(err))
				if !probe.sleep(ctx) {
					break
				}
				continue
			}
			c.fetchOK()
		}
		free := c.held.waitFree(ctx, func() int { return c.cfg.fetchLimit(c.rate.get()) })
		if free == 0 {
			break
		}
		n, err := c.fetch(ctx, cons, free, queues)
		if c.hooks.fetched != nil && n > 0 {
			c.hooks.fetched(n)
		}
		if err == nil {
			probe.reset()
			c.fetchOK()
			continue
		}
		if ctx.Err() != nil {
			break
		}
		cons = c.fetchFailed(ctx, cons, err)
		if !probe.sleep(ctx) {
			break
		}
	}
}

// ensureConsumer creates the durable consumer, or updates it to this
// configuration.
func (c *Consumer) ensureConsumer(ctx context.Context) (jetstream.Consumer, error) {
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	cons, err := c.js.CreateOrUpdateConsumer(cctx, c.cfg.Stream, c.ConsumerConfig())
	if err != nil {
		return nil, fmt.Errorf("create consumer %s: %w", c.cfg.Durable, err)
	}
	return cons, nil
}

// fetch pulls up to n events and routes each to its member's worker as it
// arrives; it returns how many came and the pull's error, if any.
func (c *Consumer) fetch(ctx context.Context, cons jetstream.Consumer, n int, queues []chan jetstream.Msg) (int, error) {
	fctx, cancel := context.WithTimeout(ctx, c.cfg.PullExpiry)
	defer cancel()
	batch, err := cons.Fetch(n, jetstream.FetchContext(fctx))
	if err != nil {
		return 0, err
	}
	got := 0
	for msg := range batch.Messages() {
		if got == 0 {
			c.fetchOK()
		}
		c.held.add(msg)
		queues[Worker(msg.Subject(), len(queues))] <- msg
		got++
	}
	err = batch.Error()
	if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, nats.ErrTimeout) || errors.Is(err, jetstream.ErrNoMessages) {
		err = nil
	}
	return got, err
}

// Worker is the one of n workers that applies the events under subject, a
// member's subject in the event stream: every event of a member goes to
// the same worker, in stream order, so no two transactions apply one
// member's events at once. The durable consumer and replay both route by
// it.
func Worker(subject string, n int) int {
	h := fnv.New32a()
	h.Write([]byte(subject))
	return int(h.Sum32() % uint32(n))
}

// fetchOK records that pulling works: NATS and the durable consumer are
// there.
func (c *Consumer) fetchOK() {
	c.resumeFrom(ReasonNATS)
	c.resumeFrom(ReasonConsumer)
	c.pause.setConsuming(true)
}

// fetchFailed decides what a failed pull means: NATS unavailable, the
// durable consumer removed (recreated at once) or a passing error. It
// returns the consumer to go on with, nil to create it again.
func (c *Consumer) fetchFailed(ctx context.Context, cons jetstream.Consumer, err error) jetstream.Consumer {
	if nc := c.js.Conn(); nc != nil && !nc.IsConnected() {
		c.pauseFor(ReasonNATS, err)
		c.pause.setConsuming(false)
		return cons
	}
	ictx, cancel := context.WithTimeout(ctx, 5*time.Second)
	_, infoErr := c.js.Consumer(ictx, c.cfg.Stream, c.cfg.Durable)
	cancel()
	if errors.Is(err, jetstream.ErrConsumerDeleted) || errors.Is(infoErr, jetstream.ErrConsumerNotFound) {
		c.pauseFor(ReasonConsumer, err)
		c.pause.setConsuming(false)
		c.log.Warn("durable consumer removed: recreating it with the same configuration; events it had delivered are delivered again and the sync log skips what was applied",
			zap.String("consumer", c.cfg.Durable), zap.Error(err))
		c.metrics.recreated.Inc()
		if c.hooks.recreated != nil {
			c.hooks.recreated()
		}
		return nil
	}
	if infoErr != nil {
		c.pauseFor(ReasonNATS, infoErr)
		c.pause.setConsuming(false)
		return cons
	}
	c.log.Warn("pull failed, will retry", zap.Error(err))
	return cons
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
		c.handleMsgs(ctx, stop, batch)
	}
}

// keepAlive tells the server that held events are still being worked
// on, so that nothing held (queued behind a slow transaction, or waiting
// out an outage) is redelivered: each event the server has not heard of
// for AckWait/2 gets an in-progress signal, checked every AckWait/6, so
// the server hears of it at least every 2/3 of AckWait. Events settled
// sooner (most of them: fetchLimit holds about AckWait/2 of work) cost the
// server no signal at all.
func (c *Consumer) keepAlive(ctx context.Context) {
	t := time.NewTicker(c.cfg.AckWait / 6)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		held := c.held.stale(time.Now().Add(-c.cfg.AckWait / 2))
		for _, m := range held {
			if err := m.InProgress(); err != nil && !errors.Is(err, jetstream.ErrMsgAlreadyAckd) {
				c.log.Debug("in-progress signal failed", zap.Error(err))
			}
		}
		if c.hooks.kept != nil {
			c.hooks.kept(len(held))
		}
	}
}
