package synchealth_test

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/zap/zaptest"

	"github.com/likeperson/portalsync/syncer/store"
	"github.com/likeperson/portalsync/syncer/synchealth"
)

// writer records reports; it fails while failing is set.
type writer struct {
	mu      sync.Mutex
	reports []store.Health
	removed []string
	failing atomic.Bool
	wrote   chan store.Health
}

func (w *writer) ReportHealth(_ context.Context, h store.Health) error {
	if w.failing.Load() {
		return &store.Error{Kind: store.KindUnavailable, Err: errors.New("connection refused")}
	}
	w.mu.Lock()
	w.reports = append(w.reports, h)
	w.mu.Unlock()
	w.wrote <- h
	return nil
}

func (w *writer) RemoveHealth(_ context.Context, process string) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.removed = append(w.removed, process)
	return nil
}

func (w *writer) count() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return len(w.reports)
}

type testBundle struct {
	w      *writer
	mu     sync.Mutex
	status synchealth.Status
	now    time.Time
	ticks  atomic.Int64 // how often the source was read
	// stop stops the reporter and waits for it.
	stop func()
}

func (b *testBundle) set(s synchealth.Status) {
	b.mu.Lock()
	b.status = s
	b.mu.Unlock()
}

func (b *testBundle) advance(d time.Duration) {
	b.mu.Lock()
	b.now = b.now.Add(d)
	b.mu.Unlock()
}

// next waits for the next report.
func (b *testBundle) next(t *testing.T) store.Health {
	t.Helper()
	select {
	case h := <-b.w.wrote:
		return h
	case <-time.After(10 * time.Second):
		t.Fatal("no report")
		return store.Health{}
	}
}

// waitTicks waits until the source has been read n more times.
func (b *testBundle) waitTicks(t *testing.T, n int64) {
	t.Helper()
	from := b.ticks.Load()
	require.Eventually(t, func() bool { return b.ticks.Load() >= from+n }, 10*time.Second, time.Millisecond)
}

var t0 = time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)

func setup(t *testing.T, removeOnStop bool, initial synchealth.Status) *testBundle {
	t.Helper()
	b := &testBundle{w: &writer{wrote: make(chan store.Health, 100)}, status: initial, now: t0}
	r, err := synchealth.New(b.w, synchealth.Config{Process: "syncer:h:1", Kind: store.HealthKindSyncer, Tick: 2 * time.Millisecond,
		RemoveOnStop: removeOnStop, Now: func() time.Time { b.mu.Lock(); defer b.mu.Unlock(); return b.now }},
		func() synchealth.Status {
			b.ticks.Add(1)
			b.mu.Lock()
			defer b.mu.Unlock()
			return b.status
		}, zaptest.NewLogger(t))
	require.NoError(t, err)
	b.stop = r.Start(context.Background())
	t.Cleanup(b.stop)
	return b
}

func TestReporter(t *testing.T) {
	t.Parallel()

	// The first state is written at once; a change is written at the next
	// tick with the time it was seen; no change writes nothing until the
	// heartbeat is due.
	t.Run("WritesOnChangeAndHeartbeat", func(t *testing.T) {
		t.Parallel()
		b := setup(t, false, synchealth.Status{State: store.HealthRunning})
		h := b.next(t)
		require.Equal(t, store.HealthRunning, h.State)
		require.Equal(t, t0, h.Since)
		require.Equal(t, "syncer:h:1", h.Process)
		b.waitTicks(t, 20)
		require.Equal(t, 1, b.w.count(), "no change, no heartbeat due: nothing written")

		b.advance(10 * time.Second)
		oldest := t0.Add(-time.Minute)
		b.set(synchealth.Status{State: store.HealthCatchingUp, OldestUnappliedAt: oldest})
		h = b.next(t)
		require.Equal(t, store.HealthCatchingUp, h.State)
		require.Equal(t, t0.Add(10*time.Second), h.Since)
		require.Equal(t, oldest, h.OldestUnappliedAt)

		// The backlog's oldest event moves on: written, same state, same since.
		b.set(synchealth.Status{State: store.HealthCatchingUp, OldestUnappliedAt: oldest.Add(time.Second)})
		h = b.next(t)
		require.Equal(t, t0.Add(10*time.Second), h.Since)
		require.Equal(t, oldest.Add(time.Second), h.OldestUnappliedAt)

		b.advance(synchealth.DefaultHeartbeat)
		h = b.next(t)
		require.Equal(t, store.HealthCatchingUp, h.State, "the heartbeat repeats the state")
		require.Equal(t, t0.Add(10*time.Second), h.Since)
	})

	// A pause's start comes from the source; its reason is written.
	t.Run("PauseSinceFromSource", func(t *testing.T) {
		t.Parallel()
		b := setup(t, false, synchealth.Status{State: store.HealthRunning})
		b.next(t)
		b.set(synchealth.Status{State: store.HealthPaused, Since: t0.Add(-5 * time.Second), Reason: "NATS unavailable"})
		h := b.next(t)
		require.Equal(t, store.HealthPaused, h.State)
		require.Equal(t, "NATS unavailable", h.Reason)
		require.Equal(t, t0.Add(-5*time.Second), h.Since)
		b.set(synchealth.Status{State: store.HealthPaused, Since: t0.Add(-5 * time.Second), Reason: "durable consumer missing"})
		require.Equal(t, "durable consumer missing", b.next(t).Reason, "another reason is another state")
	})

	// While the database cannot be written nothing is; once it can, the
	// state of that moment is written at once, with since from when it
	// began, not from when it could be written.
	t.Run("WrittenWhenTheDatabaseIsBack", func(t *testing.T) {
		t.Parallel()
		b := setup(t, false, synchealth.Status{State: store.HealthRunning})
		b.next(t)
		b.w.failing.Store(true)
		b.advance(time.Second)
		b.set(synchealth.Status{State: store.HealthPaused, Since: t0.Add(time.Second), Reason: "database unavailable"})
		b.waitTicks(t, 10)
		b.advance(time.Minute)
		b.set(synchealth.Status{State: store.HealthCatchingUp, OldestUnappliedAt: t0})
		b.waitTicks(t, 10)
		require.Equal(t, 1, b.w.count(), "nothing written while the database is down")
		b.advance(time.Second)
		b.w.failing.Store(false)
		h := b.next(t)
		require.Equal(t, store.HealthCatchingUp, h.State)
		require.Equal(t, t0.Add(61*time.Second), h.Since, "since: when catching up began, not when written")
		require.Equal(t, t0, h.OldestUnappliedAt)
	})

	t.Run("RemoveOnStop", func(t *testing.T) {
		t.Parallel()
		b := setup(t, true, synchealth.Status{State: store.HealthRunning})
		b.next(t)
		b.stop()
		require.Equal(t, []string{"syncer:h:1"}, b.w.removed)

		keep := setup(t, false, synchealth.Status{State: store.HealthRunning})
		keep.next(t)
		keep.stop()
		require.Empty(t, keep.w.removed)
	})

	t.Run("Validates", func(t *testing.T) {
		t.Parallel()
		src := func() synchealth.Status { return synchealth.Status{} }
		_, err := synchealth.New(&writer{}, synchealth.Config{Kind: store.HealthKindSyncer}, src, zaptest.NewLogger(t))
		require.Error(t, err)
		_, err = synchealth.New(&writer{}, synchealth.Config{Process: "p", Kind: store.HealthKindSyncer, Tick: -1}, src, zaptest.NewLogger(t))
		require.Error(t, err)
		_, err = synchealth.New(&writer{}, synchealth.Config{Process: "p", Kind: store.HealthKindSyncer}, nil, zaptest.NewLogger(t))
		require.Error(t, err)
	})
}

// Wake reads the state at once, without waiting for the tick.
func TestReporterWake(t *testing.T) {
	t.Parallel()
	w := &writer{wrote: make(chan store.Health, 10)}
	var state atomic.Value
	state.Store(store.HealthPaused)
	r, err := synchealth.New(w, synchealth.Config{Process: "p", Kind: store.HealthKindSyncer, Tick: time.Hour},
		func() synchealth.Status { return synchealth.Status{State: state.Load().(string)} }, zaptest.NewLogger(t))
	require.NoError(t, err)
	defer r.Start(context.Background())()
	require.Equal(t, store.HealthPaused, (<-w.wrote).State)
	state.Store(store.HealthRunning)
	r.Wake()
	select {
	case h := <-w.wrote:
		require.Equal(t, store.HealthRunning, h.State)
	case <-time.After(10 * time.Second):
		t.Fatal("not written on Wake")
	}
}

// A source with nothing to say yet (no state) writes nothing.
func TestReporterNothingYet(t *testing.T) {
	t.Parallel()
	b := setup(t, false, synchealth.Status{})
	b.waitTicks(t, 20)
	require.Zero(t, b.w.count())
	b.set(synchealth.Status{State: store.HealthRunning})
	require.Equal(t, store.HealthRunning, b.next(t).State)
}
