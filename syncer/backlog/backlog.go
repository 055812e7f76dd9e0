// Package backlog measures how long the oldest accepted event the syncer
// has not settled yet has waited: the story's promise is "within two
// minutes", and this is the figure that breaks it first.
//
// The durable consumer's ack floor says what is settled: every event at or
// below it is applied (or logged failed and dead-lettered). The first
// event after it is the oldest one that is not; its age is now minus the
// time the stream stored it (when the ingress accepted it). Every replica
// shares the durable consumer, so every replica computes the same
// stream-wide figure.
package backlog

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/likeperson/portalsync/pkg/stream"

	"github.com/likeperson/portalsync/pkg/event"
)

// DefaultInterval is the default time between two readings.
const DefaultInterval = 5 * time.Second

// MetricName is the age metric's name.
const MetricName = "portalsync_syncer_oldest_unapplied_seconds"

// Config configures a Watcher.
type Config struct {
	// Stream is the event stream's name. Required.
	Stream string
	// Durable is the consumer whose ack floor says what is settled.
	// Required.
	Durable string
	// FilterSubject is the consumer's subject filter: events outside it
	// are never settled by it and do not count. Default
	// event.SubjectWildcard.
	FilterSubject string
	// Interval is the time between two readings. Default 5 s.
	Interval time.Duration
	// Now returns the current time. Default time.Now.
	Now func() time.Time
	// OnInfo, when set, is given every consumer info a reading fetched
	// (the lag gauges read their counts from it: one request serves both).
	OnInfo func(*jetstream.ConsumerInfo)
}

// JetStream is what a Watcher needs of a JetStream client.
type JetStream interface {
	Consumer(ctx context.Context, stream, consumer string) (jetstream.Consumer, error)
	Conn() *nats.Conn
}

var _ JetStream = (jetstream.JetStream)(nil)

// Watcher reads the oldest unsettled event every Interval and exports its
// age.
type Watcher struct {
	js  JetStream
	cfg Config
	log *zap.Logger

	mu     sync.Mutex
	known  bool      // a reading has succeeded
	oldest time.Time // zero: every event is settled
}

// New returns a watcher and registers its metric with reg (nil: not
// registered). Run runs it.
func New(js JetStream, cfg Config, reg prometheus.Registerer, log *zap.Logger) (*Watcher, error) {
	cfg.FilterSubject = cmp.Or(cfg.FilterSubject, event.SubjectWildcard)
	cfg.Interval = cmp.Or(cfg.Interval, DefaultInterval)
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	switch {
	case cfg.Stream == "" || cfg.Durable == "":
		return nil, errors.New("backlog: stream and durable consumer names required")
	case cfg.Interval < 0:
		return nil, fmt.Errorf("backlog: interval must not be negative, got %s", cfg.Interval)
	}
	w := &Watcher{js: js, cfg: cfg, log: log}
	if reg != nil {
		if err := reg.Register(collector{w}); err != nil {
			return nil, fmt.Errorf("backlog: register metric: %w", err)
		}
	}
	return w, nil
}

// Run reads now and then every Interval until ctx ends. A failed reading
// keeps the last one, which goes on ageing: an event seen unsettled is
// not assumed settled for want of an answer.
func (w *Watcher) Run(ctx context.Context) {
	t := time.NewTicker(w.cfg.Interval)
	defer t.Stop()
	for {
		if _, err := w.Refresh(ctx); err != nil && ctx.Err() == nil {
			w.log.Debug("read the oldest unsettled event", zap.Error(err))
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// Oldest returns when the oldest unsettled event was stored (zero when
// every event is settled), and false before the first reading succeeded.
func (w *Watcher) Oldest() (time.Time, bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.oldest, w.known
}

// Age returns how long the oldest unsettled event has waited: 0 when every
// event is settled, false before the first reading succeeded.
func (w *Watcher) Age() (time.Duration, bool) {
	oldest, known := w.Oldest()
	if !known || oldest.IsZero() {
		return 0, known
	}
	return max(w.cfg.Now().Sub(oldest), 0), true
}

// Refresh reads, now, when the oldest unsettled event was stored (zero
// when every event is settled) and keeps it for Oldest, Age and the
// metric. A missing durable consumer is an error: until it is created
// again nothing is known to be settled or not.
func (w *Watcher) Refresh(ctx context.Context) (time.Time, error) {
	oldest, err := w.read(ctx)
	if err != nil {
		return time.Time{}, err
	}
	w.mu.Lock()
	w.known, w.oldest = true, oldest
	w.mu.Unlock()
	return oldest, nil
}

// read takes the syncer's own durable consumer's ack floor: the age is how
// long the syncer has kept an event waiting. The history trim instead
// takes the lowest floor of every acknowledging durable (history's
// settledFloor), because it must keep what any of them has not settled.
func (w *Watcher) read(ctx context.Context) (time.Time, error) {
	c, err := w.js.Consumer(ctx, w.cfg.Stream, w.cfg.Durable)
	if err != nil {
		return time.Time{}, fmt.Errorf("consumer %s: %w", w.cfg.Durable, err)
	}
	info := c.CachedInfo()
	if w.cfg.OnInfo != nil {
		w.cfg.OnInfo(info)
	}
	if info.NumPending == 0 && info.NumAckPending == 0 {
		// Nothing undelivered, nothing delivered and unsettled (a nak
		// with delay is still pending): every event is settled.
		return time.Time{}, nil
	}
	return w.firstAfter(ctx, info.AckFloor.Stream)
}

// firstAfter returns when the first event after sequence floor that the
// consumer's filter takes was stored, or zero when there is none (the
// events after the floor were erased). It asks the stream leader, so that
// a lagging replica cannot hide an event.
func (w *Watcher) firstAfter(ctx context.Context, floor uint64) (time.Time, error) {
	m, found, err := stream.LeaderGet(ctx, w.js.Conn(), w.cfg.Stream, stream.GetRequest{Seq: floor + 1, NextBySubj: w.cfg.FilterSubject})
	if err != nil {
		return time.Time{}, fmt.Errorf("get the event after seq %d: %w", floor, err)
	}
	if !found {
		return time.Time{}, nil
	}
	return m.Time, nil
}

// collector exports the age at scrape time from the last reading, so that
// it grows by the second between readings; nothing before the first
// reading (unknown is not 0).
type collector struct{ w *Watcher }

var desc = prometheus.NewDesc(MetricName,
	"Seconds the oldest accepted event not yet applied (or logged failed) has waited since the stream stored it; 0 when every event is settled. Read every 5 s from the durable consumer's ack floor: every replica reports the same stream-wide value.",
	nil, nil)

func (c collector) Describe(ch chan<- *prometheus.Desc) { ch <- desc }

func (c collector) Collect(ch chan<- prometheus.Metric) {
	age, known := c.w.Age()
	if !known {
		return
	}
	ch <- prometheus.MustNewConstMetric(desc, prometheus.GaugeValue, age.Seconds())
}
