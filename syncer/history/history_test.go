package history_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"
	"go.uber.org/zap/zaptest"

	"github.com/likeperson/portalsync/pkg/stream"
	"github.com/likeperson/portalsync/syncer/history"
	"github.com/likeperson/portalsync/testkit/natstest"
)

const durable = "syncer"

type testBundle struct {
	js      jetstream.JetStream
	stream  jetstream.Stream
	cons    jetstream.Consumer
	reg     *prometheus.Registry
	metrics *history.Metrics
	cfg     stream.Config
}

func setup(t *testing.T, cfg stream.Config) *testBundle {
	t.Helper()
	ctx := context.Background()
	cfg.Name = "EVENTS"
	js, s := natstest.JetStream(t, cfg)
	c, err := s.CreateConsumer(ctx, jetstream.ConsumerConfig{Durable: durable, AckPolicy: jetstream.AckExplicitPolicy, MaxDeliver: -1})
	require.NoError(t, err)
	reg := prometheus.NewRegistry()
	return &testBundle{js: js, stream: s, cons: c, reg: reg, metrics: history.NewMetrics(reg), cfg: cfg}
}

// publish stores n events of size bytes each.
func (b *testBundle) publish(t *testing.T, n, size int) {
	t.Helper()
	for i := range n {
		_, err := b.js.Publish(context.Background(), fmt.Sprintf("portal.member.m%d", i%7), make([]byte, size))
		require.NoError(t, err)
	}
}

// settle fetches every stored event and acknowledges those whose stream
// sequence ack says (synchronously, so the ack floor has moved on return).
func (b *testBundle) settle(t *testing.T, ack func(seq uint64) bool) {
	t.Helper()
	info, err := b.stream.Info(context.Background())
	require.NoError(t, err)
	batch, err := b.cons.Fetch(int(info.State.Msgs), jetstream.FetchMaxWait(2*time.Second))
	require.NoError(t, err)
	for msg := range batch.Messages() {
		md, err := msg.Metadata()
		require.NoError(t, err)
		if ack(md.Sequence.Stream) {
			require.NoError(t, msg.DoubleAck(context.Background()))
		}
	}
	require.NoError(t, batch.Error())
}

func (b *testBundle) trim(t *testing.T, now time.Time) history.Result {
	t.Helper()
	tr, err := history.New(b.js, history.Config{Stream: b.cfg, Durable: durable, Now: func() time.Time { return now }}, b.metrics, zaptest.NewLogger(t))
	require.NoError(t, err)
	res, err := tr.Trim(context.Background())
	require.NoError(t, err)
	return res
}

func (b *testBundle) state(t *testing.T) jetstream.StreamState {
	t.Helper()
	info, err := b.stream.Info(context.Background())
	require.NoError(t, err)
	return info.State
}

func all(uint64) bool { return true }

func TestTrim(t *testing.T) {
	t.Parallel()
	const window = time.Hour
	later := func() time.Time { return time.Now().Add(2 * window) }

	t.Run("SettledPastTheWindow", func(t *testing.T) {
		t.Parallel()
		b := setup(t, stream.Config{MaxAge: window})
		b.publish(t, 10, 100)
		b.settle(t, func(seq uint64) bool { return seq <= 6 })

		res := b.trim(t, later())
		require.Equal(t, history.Result{Purged: 6, Below: 7, Reason: history.ReasonAge}, res)
		st := b.state(t)
		require.Equal(t, uint64(7), st.FirstSeq)
		require.Equal(t, uint64(4), st.Msgs, "the four unsettled events are kept, however old")
		require.InDelta(t, 6, trimmed(t, b.reg, history.ReasonAge), 0)

		require.Zero(t, b.trim(t, later()).Purged, "trimming again purges nothing")
	})
	t.Run("NothingWithinTheWindow", func(t *testing.T) {
		t.Parallel()
		b := setup(t, stream.Config{MaxAge: window})
		b.publish(t, 10, 100)
		b.settle(t, all)
		require.Zero(t, b.trim(t, time.Now()).Purged)
		require.Equal(t, uint64(10), b.state(t).Msgs)
	})
	t.Run("OnlyWhatIsOlderThanTheWindow", func(t *testing.T) {
		t.Parallel()
		b := setup(t, stream.Config{MaxAge: window})
		b.publish(t, 5, 100)
		between := time.Now()
		b.publish(t, 5, 100)
		b.settle(t, all)
		res := b.trim(t, between.Add(window))
		require.Equal(t, uint64(5), res.Purged, "the five stored before the cut")
		require.Equal(t, uint64(6), b.state(t).FirstSeq)
	})
	t.Run("NeverPastTheAckFloor", func(t *testing.T) {
		t.Parallel()
		b := setup(t, stream.Config{MaxAge: window})
		b.publish(t, 5, 100)
		// 3 is neither applied nor failed: the floor stays at 2, whatever
		// is settled after it.
		b.settle(t, func(seq uint64) bool { return seq != 3 })
		res := b.trim(t, later())
		require.Equal(t, uint64(2), res.Purged)
		require.Equal(t, uint64(3), res.Below)
		st := b.state(t)
		require.Equal(t, uint64(3), st.FirstSeq)
		require.Equal(t, uint64(3), st.Msgs)
	})
	t.Run("NothingSettled", func(t *testing.T) {
		t.Parallel()
		b := setup(t, stream.Config{MaxAge: window})
		b.publish(t, 5, 100)
		require.Zero(t, b.trim(t, later()).Purged)
		require.Equal(t, uint64(5), b.state(t).Msgs)
	})
	t.Run("NoConsumer", func(t *testing.T) {
		t.Parallel()
		b := setup(t, stream.Config{MaxAge: window})
		b.publish(t, 5, 100)
		b.settle(t, all)
		require.NoError(t, b.js.DeleteConsumer(context.Background(), "EVENTS", durable))
		require.Zero(t, b.trim(t, later()).Purged, "without the consumer nothing is known to be settled")
		require.Equal(t, uint64(5), b.state(t).Msgs)
	})
	t.Run("AnotherDurableHoldsItBack", func(t *testing.T) {
		t.Parallel()
		b := setup(t, stream.Config{MaxAge: window})
		// A second acknowledging durable (another deployment, or the
		// consumer renamed during a rolling update) has settled nothing:
		// what the first settled is still unapplied for it.
		_, err := b.stream.CreateConsumer(context.Background(), jetstream.ConsumerConfig{Durable: "other", AckPolicy: jetstream.AckExplicitPolicy})
		require.NoError(t, err)
		// A consumer that does not acknowledge (replay's ordered reads)
		// settles nothing and holds nothing back.
		_, err = b.stream.CreateConsumer(context.Background(), jetstream.ConsumerConfig{Durable: "reader", AckPolicy: jetstream.AckNonePolicy})
		require.NoError(t, err)
		b.publish(t, 5, 100)
		b.settle(t, all)
		require.Zero(t, b.trim(t, later()).Purged)
		require.Equal(t, uint64(5), b.state(t).Msgs)

		require.NoError(t, b.js.DeleteConsumer(context.Background(), "EVENTS", "other"))
		require.Equal(t, uint64(5), b.trim(t, later()).Purged, "once it is gone, the syncer's floor decides")
	})
	t.Run("SettledOverThreeQuartersOfMaxBytes", func(t *testing.T) {
		t.Parallel()
		cfg := stream.Config{MaxAge: window, MaxMsgSize: 1024, MaxBytes: stream.MinMaxBytes(1024)}
		b := setup(t, cfg)
		b.publish(t, 30, 200) // about 7 KiB of the 8 KiB
		st := b.state(t)
		require.Greater(t, st.Bytes, uint64(cfg.WithDefaults().TrimBytes()))

		require.Zero(t, b.trim(t, time.Now()).Purged, "over the threshold but nothing settled")
		b.settle(t, func(seq uint64) bool { return seq <= 25 })
		res := b.trim(t, time.Now())
		require.Equal(t, history.ReasonSize, res.Reason)
		require.Positive(t, res.Purged)
		st = b.state(t)
		require.LessOrEqual(t, st.Bytes, uint64(cfg.WithDefaults().TrimBytes()), "the oldest settled events made room")
		require.Equal(t, uint64(30), st.LastSeq)
		require.InDelta(t, float64(res.Purged), trimmed(t, b.reg, history.ReasonSize), 0)
		require.Zero(t, trimmed(t, b.reg, history.ReasonAge))
	})
	t.Run("FullnessMetrics", func(t *testing.T) {
		t.Parallel()
		cfg := stream.Config{MaxAge: window, MaxBytes: 64 << 20}
		b := setup(t, cfg)
		b.publish(t, 3, 100)
		b.trim(t, time.Now())
		st := b.state(t)
		require.Equal(t, float64(st.Bytes), gauge(t, b.reg, "portalsync_syncer_stream_bytes"))
		require.Equal(t, float64(64<<20), gauge(t, b.reg, "portalsync_syncer_stream_max_bytes"))
		require.Equal(t, float64(3), gauge(t, b.reg, "portalsync_syncer_stream_messages"))
	})
	t.Run("UnlimitedReadsAsZero", func(t *testing.T) {
		t.Parallel()
		b := setup(t, stream.Config{MaxAge: window})
		b.trim(t, time.Now())
		require.Zero(t, gauge(t, b.reg, "portalsync_syncer_stream_max_bytes"))
	})
}

// The loop trims until its context ends, and returns then.
func TestRun(t *testing.T) {
	t.Parallel()
	b := setup(t, stream.Config{MaxAge: time.Hour})
	b.publish(t, 4, 100)
	b.settle(t, all)
	now := time.Now().Add(2 * time.Hour)
	tr, err := history.New(b.js, history.Config{Stream: b.cfg, Durable: durable, Interval: 10 * time.Millisecond,
		Now: func() time.Time { return now }}, b.metrics, zaptest.NewLogger(t))
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { tr.Run(ctx); close(done) }()
	require.Eventually(t, func() bool { return b.state(t).Msgs == 0 }, 10*time.Second, 10*time.Millisecond)
	cancel()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return")
	}
}

func TestNewValidates(t *testing.T) {
	t.Parallel()
	_, err := history.New(nil, history.Config{}, nil, nil)
	require.ErrorContains(t, err, "durable consumer name required")
	_, err = history.New(nil, history.Config{Durable: "d", Interval: -time.Second}, nil, nil)
	require.ErrorContains(t, err, "interval must not be negative")
}

// trimmed returns the trimmed counter's value for reason.
func trimmed(t *testing.T, reg *prometheus.Registry, reason string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	require.NoError(t, err)
	for _, mf := range mfs {
		if mf.GetName() != "portalsync_syncer_stream_trimmed_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			if m.GetLabel()[0].GetValue() == reason {
				return m.GetCounter().GetValue()
			}
		}
	}
	t.Fatalf("no trimmed counter for %s", reason)
	return 0
}

func gauge(t *testing.T, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	require.NoError(t, err)
	for _, mf := range mfs {
		if mf.GetName() == name {
			return mf.GetMetric()[0].GetGauge().GetValue()
		}
	}
	t.Fatalf("no metric %s", name)
	return 0
}
