// Package history trims the event stream's replay history. The server
// keeps every event (no max age, discard new when full); this loop purges
// the events the durable consumer has settled (applied, or logged failed
// and dead-lettered: at or below its ack floor) once they are older than
// the history window (STREAM_MAX_AGE), and, on a stream with a size limit,
// the oldest settled events once the stream holds more than three
// quarters of it. An event not settled yet is never purged: accepted
// means kept. It also exports the stream's size as metrics, so that an
// alert can fire before the stream is full.
package history

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/likeperson/portalsync/pkg/stream"
)

// DefaultInterval is the default time between two trims.
const DefaultInterval = 15 * time.Second

// DefaultSizeInterval is the default time between two trims while the
// stream has a size limit: a stream trimmed to three quarters of its limit
// takes at most a quarter of it between two trims, however fast the
// syncer settles, so the size trim runs often (a stream read, a consumer
// list, and a purge only when there is something to purge).
const DefaultSizeInterval = time.Second

// Reasons a trim purges events, as metric labels.
const (
	ReasonAge  = "age"
	ReasonSize = "size"
)

// apiPrefix is the JetStream API subject prefix (the project uses no
// JetStream domain): the two requests below carry what nats.go's Stream
// methods cannot (a get by start time; the purged count).
const apiPrefix = jetstream.DefaultAPIPrefix

// Config configures the trim loop.
type Config struct {
	// Stream is the event stream: its Name and its history window MaxAge.
	// Its MaxBytes is not used: the size trim works from the limit the
	// stream has on the server (trimmed above its TrimBytes), whoever set
	// it. Defaults as stream.Config's.
	Stream stream.Config
	// Durable is the consumer whose ack floor says what is settled.
	// Required.
	Durable string
	// Interval is the time between two trims (and two readings of the
	// stream's size). Default 15 s.
	Interval time.Duration
	// SizeInterval replaces Interval while the stream has a size limit
	// (read from the stream itself). Default 1 s.
	SizeInterval time.Duration
	// Now returns the current time. Default time.Now.
	Now func() time.Time
}

// JetStream is what the loop needs of a JetStream client.
type JetStream interface {
	Stream(ctx context.Context, name string) (jetstream.Stream, error)
	Conn() *nats.Conn
}

var _ JetStream = (jetstream.JetStream)(nil)

// Trimmer trims the stream's settled history.
type Trimmer struct {
	js  JetStream
	cfg Config
	m   *Metrics
	log *zap.Logger
	// limited says the stream had a size limit at the last reading.
	limited atomic.Bool
}

// New returns a trimmer; Run runs it.
func New(js JetStream, cfg Config, m *Metrics, log *zap.Logger) (*Trimmer, error) {
	cfg.Stream = cfg.Stream.WithDefaults()
	cfg.Interval = cmp.Or(cfg.Interval, DefaultInterval)
	cfg.SizeInterval = cmp.Or(cfg.SizeInterval, min(DefaultSizeInterval, cfg.Interval))
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	switch {
	case cfg.Durable == "":
		return nil, errors.New("history: durable consumer name required")
	case cfg.Interval < 0 || cfg.SizeInterval < 0:
		return nil, fmt.Errorf("history: interval must not be negative, got %s (size interval %s)", cfg.Interval, cfg.SizeInterval)
	}
	return &Trimmer{js: js, cfg: cfg, m: m, log: log}, nil
}

// Run trims now and then every interval until ctx ends. Every replica may
// run it: purging up to a sequence twice purges nothing the second time.
func (t *Trimmer) Run(ctx context.Context) {
	wait := time.NewTimer(0)
	defer wait.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-wait.C:
		}
		if _, err := t.Trim(ctx); err != nil && ctx.Err() == nil {
			t.log.Warn("trim stream history", zap.Error(err))
		}
		next := t.cfg.Interval
		if t.limited.Load() {
			next = t.cfg.SizeInterval
		}
		wait.Reset(next)
	}
}

// Result is what one trim did.
type Result struct {
	// Purged is how many events were purged.
	Purged uint64
	// Below is the sequence the events before which were purged (0 when
	// nothing was).
	Below uint64
	// Reason is ReasonAge or ReasonSize.
	Reason string
}

// Trim purges, once, what is settled and past the window or over the size
// threshold. A missing durable consumer means nothing is known to be
// settled: nothing is purged. Another durable consumer that acknowledges
// (a second deployment, a consumer renamed during a rolling update) holds
// the trim back at its own ack floor too.
func (t *Trimmer) Trim(ctx context.Context) (Result, error) {
	cutoff := t.cfg.Now().Add(-t.cfg.Stream.MaxAge)
	s, err := t.js.Stream(ctx, t.cfg.Stream.Name)
	if err != nil {
		return Result{}, fmt.Errorf("stream %s: %w", t.cfg.Stream.Name, err)
	}
	info := s.CachedInfo()
	t.m.observe(info)
	t.limited.Store(info.Config.MaxBytes > 0)
	st := info.State
	if st.Msgs == 0 {
		return Result{}, nil
	}
	ackFloor, ok, err := t.settledFloor(ctx, s)
	if err != nil || !ok {
		return Result{}, err
	}
	// Everything at or below the ack floor is settled; the first sequence
	// that may not be is its successor, and nothing from there on is ever
	// purged.
	limit := ackFloor + 1
	if limit <= st.FirstSeq {
		return Result{}, nil
	}

	below, err := t.firstAtOrAfter(ctx, cutoff, st.LastSeq)
	if err != nil {
		return Result{}, err
	}
	reason := ReasonAge
	// The limit the server refuses at is the stream's, whoever set it
	// (the ingress and the syncer each ensure the stream with their own
	// STREAM_MAX_BYTES at start): trim to three quarters of that one.
	live := stream.Config{MaxBytes: max(info.Config.MaxBytes, 0)}
	if sizeSeq := sizeCut(st, live.TrimBytes()); sizeSeq > below {
		below, reason = sizeSeq, ReasonSize
	}
	below = min(below, limit)
	if below <= st.FirstSeq {
		return Result{}, nil
	}
	purged, err := t.purge(ctx, below)
	if err != nil {
		return Result{}, err
	}
	t.m.trimmed.WithLabelValues(reason).Add(float64(purged))
	if purged > 0 {
		// The gauges say what the stream holds now, after the purge.
		if info, err := s.Info(ctx); err == nil {
			t.m.observe(info)
		}
		t.log.Info("trimmed stream history", zap.Uint64("purged", purged), zap.Uint64("below_seq", below),
			zap.Uint64("ack_floor", ackFloor), zap.String("reason", reason))
	}
	return Result{Purged: purged, Below: below, Reason: reason}, nil
}

// settledFloor returns the highest stream sequence at or below which every
// event is settled for every durable consumer that acknowledges: the
// lowest of their ack floors. ok is false when the syncer's own durable
// does not exist (nothing is known to be settled). Consumers that do not
// acknowledge (replay's ordered consumers) settle nothing and are not
// counted.
func (t *Trimmer) settledFloor(ctx context.Context, s jetstream.Stream) (floor uint64, ok bool, err error) {
	floor = math.MaxUint64
	list := s.ListConsumers(ctx)
	for info := range list.Info() {
		if info.Config.Durable == "" || info.Config.AckPolicy == jetstream.AckNonePolicy {
			continue
		}
		if info.Name == t.cfg.Durable {
			ok = true
		}
		floor = min(floor, info.AckFloor.Stream)
	}
	if err := list.Err(); err != nil {
		return 0, false, fmt.Errorf("consumers of %s: %w", t.cfg.Stream.Name, err)
	}
	return floor, ok, nil
}

// sizeCut returns the sequence below which the oldest events must go for
// the stream to hold about trimBytes: as many as the excess over it holds
// at the stream's average message size (interior gaps, from erasure, make
// it purge fewer; the next trim goes on). 0 when the stream is under it or
// unlimited (trimBytes 0).
func sizeCut(st jetstream.StreamState, trimBytes int64) uint64 {
	if trimBytes <= 0 || st.Bytes <= uint64(trimBytes) || st.Msgs == 0 {
		return 0
	}
	avg := max(st.Bytes/st.Msgs, 1)
	n := (st.Bytes - uint64(trimBytes) + avg - 1) / avg
	return st.FirstSeq + n
}

// firstAtOrAfter returns the sequence of the first event stored at or
// after t, or lastSeq+1 when every event is older. It asks the stream
// leader (a get by start time over every subject), so that a lagging
// replica cannot make younger events look older.
func (t *Trimmer) firstAtOrAfter(ctx context.Context, at time.Time, lastSeq uint64) (uint64, error) {
	m, found, err := stream.LeaderGet(ctx, t.js.Conn(), t.cfg.Stream.Name, stream.GetRequest{StartTime: at, NextBySubj: ">"})
	if err != nil {
		return 0, fmt.Errorf("find the first event after %s: %w", at.UTC().Format(time.RFC3339), err)
	}
	if !found {
		return lastSeq + 1, nil
	}
	return m.Seq, nil
}

// request sends a JetStream API request (subject after the API prefix)
// and decodes the answer into resp.
func (t *Trimmer) request(ctx context.Context, subject string, req, resp any) error {
	data, err := json.Marshal(req)
	if err != nil {
		return err
	}
	msg, err := t.js.Conn().RequestWithContext(ctx, apiPrefix+subject, data)
	if err != nil {
		return err
	}
	return json.Unmarshal(msg.Data, resp)
}

// purgeResponse is a JetStream purge answer.
type purgeResponse struct {
	Error   *jetstream.APIError `json:"error,omitempty"`
	Success bool                `json:"success"`
	Purged  uint64              `json:"purged"`
}

// purge purges every event below seq and returns how many there were (the
// request Stream.Purge(ctx, jetstream.WithPurgeSequence(seq)) sends, whose
// answer it does not return).
func (t *Trimmer) purge(ctx context.Context, seq uint64) (uint64, error) {
	var resp purgeResponse
	err := t.request(ctx, "STREAM.PURGE."+t.cfg.Stream.Name, jetstream.StreamPurgeRequest{Sequence: seq}, &resp)
	switch {
	case err == nil && resp.Error != nil:
		err = resp.Error
	case err == nil && !resp.Success:
		err = errors.New("not done")
	}
	if err != nil {
		return 0, fmt.Errorf("purge below seq %d: %w", seq, err)
	}
	return resp.Purged, nil
}

// Metrics are the stream's size and the trims, for Prometheus.
type Metrics struct {
	bytes    prometheus.Gauge
	maxBytes prometheus.Gauge
	messages prometheus.Gauge
	trimmed  *prometheus.CounterVec
}

// NewMetrics registers the metrics with reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		bytes: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "portalsync_syncer_stream_bytes",
			Help: "Bytes the event stream holds, read every history interval.",
		}),
		maxBytes: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "portalsync_syncer_stream_max_bytes",
			Help: "The event stream's size limit (STREAM_MAX_BYTES); 0 when unlimited. A full stream refuses new events.",
		}),
		messages: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "portalsync_syncer_stream_messages",
			Help: "Events the event stream holds.",
		}),
		trimmed: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "portalsync_syncer_stream_trimmed_total",
			Help: "Settled events purged from the event stream, by reason: age (older than STREAM_MAX_AGE) or size (over three quarters of STREAM_MAX_BYTES).",
		}, []string{"reason"}),
	}
	reg.MustRegister(m.bytes, m.maxBytes, m.messages, m.trimmed)
	m.trimmed.WithLabelValues(ReasonAge)
	m.trimmed.WithLabelValues(ReasonSize)
	return m
}

func (m *Metrics) observe(info *jetstream.StreamInfo) {
	m.bytes.Set(float64(info.State.Bytes))
	m.messages.Set(float64(info.State.Msgs))
	m.maxBytes.Set(float64(max(info.Config.MaxBytes, 0)))
}
