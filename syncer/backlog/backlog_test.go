package backlog_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/require"
	"go.uber.org/zap/zaptest"

	"github.com/likeperson/portalsync/pkg/event"
	"github.com/likeperson/portalsync/pkg/stream"
	"github.com/likeperson/portalsync/syncer/backlog"
	"github.com/likeperson/portalsync/testkit/natstest"
)

const durable = "syncer"

type testBundle struct {
	js     jetstream.JetStream
	stream jetstream.Stream
	cons   jetstream.Consumer
	reg    *prometheus.Registry
	now    time.Time // what the watcher's clock says; zero: time.Now
}

func setup(t *testing.T) (*backlog.Watcher, *testBundle) {
	t.Helper()
	ctx := context.Background()
	js, s := natstest.JetStream(t, stream.Config{Name: "EVENTS"})
	c, err := s.CreateConsumer(ctx, jetstream.ConsumerConfig{Durable: durable, AckPolicy: jetstream.AckExplicitPolicy,
		MaxDeliver: -1, FilterSubject: event.SubjectWildcard})
	require.NoError(t, err)
	b := &testBundle{js: js, stream: s, cons: c, reg: prometheus.NewRegistry()}
	w, err := backlog.New(js, backlog.Config{Stream: "EVENTS", Durable: durable, Now: func() time.Time {
		if b.now.IsZero() {
			return time.Now()
		}
		return b.now
	}}, b.reg, zaptest.NewLogger(t))
	require.NoError(t, err)
	return w, b
}

// publish stores n events and returns their stream sequences.
func (b *testBundle) publish(t *testing.T, n int) []uint64 {
	t.Helper()
	var seqs []uint64
	for i := range n {
		ack, err := b.js.Publish(context.Background(), event.Subject(fmt.Sprintf("m%d", i)), []byte("{}"))
		require.NoError(t, err)
		seqs = append(seqs, ack.Sequence)
	}
	return seqs
}

// stored returns when the stream stored seq.
func (b *testBundle) stored(t *testing.T, seq uint64) time.Time {
	t.Helper()
	m, err := b.stream.GetMsg(context.Background(), seq)
	require.NoError(t, err)
	return m.Time
}

// fetch delivers n events and returns them by stream sequence.
func (b *testBundle) fetch(t *testing.T, n int) map[uint64]jetstream.Msg {
	t.Helper()
	batch, err := b.cons.Fetch(n, jetstream.FetchMaxWait(2*time.Second))
	require.NoError(t, err)
	out := map[uint64]jetstream.Msg{}
	for m := range batch.Messages() {
		md, err := m.Metadata()
		require.NoError(t, err)
		out[md.Sequence.Stream] = m
	}
	require.NoError(t, batch.Error())
	require.Len(t, out, n)
	return out
}

func ack(t *testing.T, m jetstream.Msg) {
	t.Helper()
	require.NoError(t, m.DoubleAck(context.Background()))
}

func refresh(t *testing.T, w *backlog.Watcher) time.Time {
	t.Helper()
	at, err := w.Refresh(context.Background())
	require.NoError(t, err)
	return at
}

func TestWatcher(t *testing.T) {
	t.Parallel()

	// Nothing is known before the first reading: no sample, not a 0.
	t.Run("UnknownBeforeFirstReading", func(t *testing.T) {
		t.Parallel()
		w, b := setup(t)
		_, known := w.Age()
		require.False(t, known)
		n, err := testutil.GatherAndCount(b.reg, backlog.MetricName)
		require.NoError(t, err)
		require.Zero(t, n)
		require.True(t, refresh(t, w).IsZero(), "an empty stream has nothing unsettled")
		require.Equal(t, 0.0, gauge(t, b))
	})

	// The first event after the ack floor is the oldest unsettled one,
	// whatever was acknowledged above it; a nak keeps it unsettled, a term
	// settles it.
	t.Run("FirstAfterAckFloor", func(t *testing.T) {
		t.Parallel()
		w, b := setup(t)
		seqs := b.publish(t, 4)
		require.Equal(t, b.stored(t, seqs[0]), refresh(t, w), "undelivered events count")

		got := b.fetch(t, 4)
		require.Equal(t, b.stored(t, seqs[0]), refresh(t, w), "delivered, not settled")
		ack(t, got[seqs[0]])
		ack(t, got[seqs[2]]) // out of order: the floor stays below seqs[1]
		require.Equal(t, b.stored(t, seqs[1]), refresh(t, w))
		require.NoError(t, got[seqs[1]].NakWithDelay(300*time.Millisecond))
		require.Equal(t, b.stored(t, seqs[1]), refresh(t, w), "a nak with delay is still unsettled")
		again := b.fetch(t, 1)
		require.NoError(t, again[seqs[1]].TermWithReason("poison"))
		require.Eventually(t, func() bool { return refresh(t, w) == b.stored(t, seqs[3]) }, 5*time.Second, 10*time.Millisecond,
			"a terminated event is settled")
		ack(t, got[seqs[3]])
		require.True(t, refresh(t, w).IsZero(), "every event settled")
		require.Equal(t, 0.0, gauge(t, b))
	})

	// An erased event after the floor is skipped; events of other
	// subjects are not the consumer's and never count.
	t.Run("SkipsDeletedAndUnfiltered", func(t *testing.T) {
		t.Parallel()
		w, b := setup(t)
		seqs := b.publish(t, 2)
		require.NoError(t, b.stream.DeleteMsg(context.Background(), seqs[0]))
		require.Equal(t, b.stored(t, seqs[1]), refresh(t, w))
		got := b.fetch(t, 1)
		ack(t, got[seqs[1]])
		require.True(t, refresh(t, w).IsZero())
	})

	// The age grows with the clock between readings; a failed reading
	// (the consumer removed) keeps the last one, still ageing.
	t.Run("AgeGrowsAndSurvivesFailedReadings", func(t *testing.T) {
		t.Parallel()
		w, b := setup(t)
		seqs := b.publish(t, 1)
		at := refresh(t, w)
		require.Equal(t, b.stored(t, seqs[0]), at)
		b.now = at.Add(61 * time.Second)
		require.Equal(t, 61.0, gauge(t, b))
		require.NoError(t, b.stream.DeleteConsumer(context.Background(), durable))
		_, err := w.Refresh(context.Background())
		require.ErrorIs(t, err, jetstream.ErrConsumerNotFound)
		b.now = at.Add(121 * time.Second)
		require.Equal(t, 121.0, gauge(t, b))
	})

	// Two replicas read the same stream-wide value.
	t.Run("ReplicasAgree", func(t *testing.T) {
		t.Parallel()
		w, b := setup(t)
		w2, err := backlog.New(b.js, backlog.Config{Stream: "EVENTS", Durable: durable}, nil, zaptest.NewLogger(t))
		require.NoError(t, err)
		seqs := b.publish(t, 3)
		ack(t, b.fetch(t, 1)[seqs[0]])
		require.Equal(t, refresh(t, w), refresh(t, w2))
		require.Equal(t, b.stored(t, seqs[1]), refresh(t, w2))
	})

	// Run reads every interval until its context ends.
	t.Run("RunRefreshes", func(t *testing.T) {
		t.Parallel()
		_, b := setup(t)
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		w2, err := backlog.New(b.js, backlog.Config{Stream: "EVENTS", Durable: durable, Interval: 20 * time.Millisecond}, nil, zaptest.NewLogger(t))
		require.NoError(t, err)
		go func() { defer close(done); w2.Run(ctx) }()
		require.Eventually(t, func() bool { _, known := w2.Oldest(); return known }, 5*time.Second, 10*time.Millisecond)
		seqs := b.publish(t, 1)
		require.Eventually(t, func() bool { at, _ := w2.Oldest(); return at.Equal(b.stored(t, seqs[0])) }, 5*time.Second, 10*time.Millisecond)
		cancel()
		<-done
	})

	t.Run("Validates", func(t *testing.T) {
		t.Parallel()
		_, err := backlog.New(nil, backlog.Config{Stream: "EVENTS"}, nil, zaptest.NewLogger(t))
		require.ErrorContains(t, err, "required")
		_, err = backlog.New(nil, backlog.Config{Stream: "EVENTS", Durable: "d", Interval: -time.Second}, nil, zaptest.NewLogger(t))
		require.ErrorContains(t, err, "negative")
	})
}

// gauge returns the exported age.
func gauge(t *testing.T, b *testBundle) float64 {
	t.Helper()
	mfs, err := b.reg.Gather()
	require.NoError(t, err)
	for _, mf := range mfs {
		if mf.GetName() == backlog.MetricName {
			require.Len(t, mf.GetMetric(), 1)
			return mf.GetMetric()[0].GetGauge().GetValue()
		}
	}
	t.Fatalf("no %s", backlog.MetricName)
	return 0
}
