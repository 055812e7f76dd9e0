package consumer

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"
	"go.uber.org/zap/zaptest"

	"github.com/likeperson/portalsync/pkg/event"
	"github.com/likeperson/portalsync/pkg/stream"
	"github.com/likeperson/portalsync/syncer/deadletter"
	"github.com/likeperson/portalsync/syncer/store"
	"github.com/likeperson/portalsync/testkit/natstest"
)

// fakeApplier answers each batch with what outcome returns for it, and
// records what it was asked.
type fakeApplier struct {
	mu       sync.Mutex
	outcome  func(items []store.Item) error
	applied  map[string]int // event id -> successful applications
	batches  [][]string
	failures []store.Failure
	down     atomic.Bool // Ping fails and every call is unavailable
	block    chan struct{}
	// logHangs makes that many LogFailure calls hang until their context
	// ends, as a call on a connection that stopped answering does.
	logHangs atomic.Int32
}

func newFakeApplier() *fakeApplier {
	return &fakeApplier{applied: map[string]int{}}
}

var errDown = &store.Error{Kind: store.KindUnavailable, Err: errors.New("connection refused")}

func (f *fakeApplier) ApplyBatch(ctx context.Context, items []store.Item) ([]store.Result, error) {
	if f.block != nil {
		select {
		case <-f.block:
		case <-ctx.Done():
			return nil, &store.Error{Kind: store.KindUnavailable, Err: ctx.Err()}
		}
	}
	if f.down.Load() {
		return nil, errDown
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	ids := make([]string, len(items))
	for i, it := range items {
		ids[i] = it.Event.ID
	}
	f.batches = append(f.batches, ids)
	if f.outcome != nil {
		if err := f.outcome(items); err != nil {
			return nil, err
		}
	}
	res := make([]store.Result, len(items))
	for i, it := range items {
		f.applied[it.Event.ID]++
		res[i] = store.Result{Status: store.StatusSuccess}
	}
	return res, nil
}

func (f *fakeApplier) LogFailure(ctx context.Context, fl store.Failure, _ store.Meta) error {
	if f.logHangs.Add(-1) >= 0 {
		<-ctx.Done()
		return &store.Error{Kind: store.KindRetry, Err: ctx.Err()}
	}
	if f.down.Load() {
		return errDown
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.failures = append(f.failures, fl)
	return nil
}

func (f *fakeApplier) Ping(context.Context) error {
	if f.down.Load() {
		return errDown
	}
	return nil
}

func (f *fakeApplier) appliedCount(id string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.applied[id]
}

func (f *fakeApplier) failed() []store.Failure {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]store.Failure(nil), f.failures...)
}

// testBundle is one consumer under test over an embedded JetStream server.
type testBundle struct {
	srv     *natstest.Server
	js      jetstream.JetStream
	applier *fakeApplier
	dlq     *deadletter.Queue
	cons    *Consumer
	// settled receives every settlement, paused and resumed every pause
	// reason, kept every keep-alive round's count.
	settled   chan settlement
	paused    chan string
	resumed   chan string
	recreated chan struct{}
	kept      chan int
	cancel    context.CancelFunc
	done      chan error
	n         int
	cfg       Config
}

type settlement struct {
	seq uint64
	a   action
}

const testStream = "EVENTS"

func setup(t *testing.T, cfg Config) *testBundle {
	t.Helper()
	b := &testBundle{srv: natstest.Run(t), applier: newFakeApplier(),
		settled: make(chan settlement, 1000), paused: make(chan string, 10), resumed: make(chan string, 10),
		recreated: make(chan struct{}, 10), kept: make(chan int, 1000)}
	b.js = b.srv.JetStream(t, nats.MaxReconnects(-1), nats.ReconnectWait(50*time.Millisecond))
	ctx := context.Background()
	_, err := stream.Ensure(ctx, b.js, stream.Config{Name: testStream})
	require.NoError(t, err)
	b.dlq, err = deadletter.Open(ctx, b.js, deadletter.Config{EventStream: testStream})
	require.NoError(t, err)
	cfg.Stream = testStream
	// Held events are signalled at least every 2/3 of AckWait: 2 s leaves
	// a loaded machine more than half a second of slack.
	cfg.AckWait = cmpOr(cfg.AckWait, 2*time.Second)
	cfg.PullExpiry = cmpOr(cfg.PullExpiry, time.Second)
	cfg.ProbeMax = cmpOr(cfg.ProbeMax, 200*time.Millisecond)
	if cfg.BackOff == nil {
		cfg.BackOff = []time.Duration{50 * time.Millisecond}
	}
	b.cfg = cfg
	b.newConsumer(t)
	return b
}

// newConsumer replaces b.cons with a new consumer of the same
// configuration over the same stream, applier and dead letters, as a
// restarted syncer has.
func (b *testBundle) newConsumer(t *testing.T) {
	t.Helper()
	var err error
	b.cons, err = New(b.js, b.applier, b.dlq, nil, b.cfg, zaptest.NewLogger(t))
	require.NoError(t, err)
	b.cons.hooks = hooks{
		settled:   func(seq uint64, a action) { b.settled <- settlement{seq, a} },
		paused:    func(r string) { b.paused <- r },
		resumed:   func(r string) { b.resumed <- r },
		recreated: func() { b.recreated <- struct{}{} },
		kept: func(n int) {
			select {
			case b.kept <- n:
			default:
			}
		},
	}
}

func cmpOr(d, def time.Duration) time.Duration {
	if d == 0 {
		return def
	}
	return d
}

// run starts the consumer; it is stopped when the test ends.
func (b *testBundle) run(t *testing.T) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done, cons := make(chan error, 1), b.cons
	b.cancel, b.done = cancel, done
	go func() { done <- cons.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case <-done:
		case <-time.After(20 * time.Second):
			t.Error("consumer did not stop")
		}
	})
}

// publish stores n events of distinct members (or of one member when
// member is set) and returns their ids.
func (b *testBundle) publish(t *testing.T, n int, member string) []string {
	t.Helper()
	ids := make([]string, n)
	for i := range n {
		b.n++
		m := member
		if m == "" {
			m = fmt.Sprintf("m%d", b.n)
		}
		ev := event.Event{ID: fmt.Sprintf("e%d", b.n), Type: event.MembershipCreated, OccurredAt: time.Now().UTC(),
			Organization: event.Organization{ID: "o1"}, Member: event.Member{ID: m}, Role: event.RolePeerMentor}
		body, err := json.Marshal(ev)
		require.NoError(t, err)
		msg := nats.NewMsg(event.Subject(m))
		msg.Data = body
		msg.Header.Set(jetstream.MsgIDHeader, ev.ID)
		msg.Header.Set(stream.HeaderEventType, string(ev.Type))
		msg.Header.Set(stream.HeaderMemberID, m)
		_, err = b.js.PublishMsg(context.Background(), msg)
		require.NoError(t, err)
		ids[i] = ev.ID
	}
	return ids
}

// wait collects n settlements.
func (b *testBundle) wait(t *testing.T, n int) map[action]int {
	t.Helper()
	got := map[action]int{}
	for range n {
		select {
		case s := <-b.settled:
			got[s.a]++
		case <-time.After(30 * time.Second):
			t.Fatalf("only %v settled of %d", got, n)
		}
	}
	return got
}

func (b *testBundle) info(t *testing.T) *jetstream.ConsumerInfo {
	t.Helper()
	c, err := b.js.Consumer(context.Background(), testStream, DefaultDurable)
	require.NoError(t, err)
	info, err := c.Info(context.Background())
	require.NoError(t, err)
	return info
}

func (b *testBundle) deadLetters(t *testing.T) uint64 {
	t.Helper()
	n, err := b.dlq.Count(context.Background())
	require.NoError(t, err)
	return n
}

// waitKept waits for a keep-alive round that signalled n held events,
// failing (not hanging) when none comes within 30 s.
func (b *testBundle) waitKept(t *testing.T, n int) {
	t.Helper()
	deadline := time.After(30 * time.Second)
	for {
		select {
		case got := <-b.kept:
			if got == n {
				return
			}
		case <-deadline:
			t.Fatalf("no keep-alive round with %d held events within 30 s (state %+v)", n, b.cons.State())
		}
	}
}

// waitFor waits for want on ch, failing when it has not come within 30 s
// (one deadline for the whole wait, however much else arrives).
func waitFor[T comparable](t *testing.T, ch <-chan T, want T) {
	t.Helper()
	deadline := time.After(30 * time.Second)
	for {
		select {
		case got := <-ch:
			if got == want {
				return
			}
		case <-deadline:
			t.Fatalf("no %v within 30 s", want)
		}
	}
}

func TestConsumer(t *testing.T) {
	t.Parallel()

	t.Run("AppliedEventsAreAcked", func(t *testing.T) {
		t.Parallel()
		b := setup(t, Config{})
		ids := b.publish(t, 20, "")
		b.run(t)
		require.Equal(t, map[action]int{actAck: 20}, b.wait(t, 20))
		for _, id := range ids {
			require.Equal(t, 1, b.applier.appliedCount(id))
		}
		info := b.info(t)
		require.Zero(t, info.NumAckPending)
		require.Zero(t, info.NumRedelivered)
		require.EqualValues(t, 20, info.AckFloor.Stream)
		require.Equal(t, -1, info.Config.MaxDeliver, "the server never drops an event for its deliveries")
	})

	t.Run("EventFaultFailsAloneWithRowThenDeadLetter", func(t *testing.T) {
		t.Parallel()
		b := setup(t, Config{})
		ids := b.publish(t, 10, "")
		bad := ids[4]
		b.applier.outcome = func(items []store.Item) error {
			for _, it := range items {
				if it.Event.ID == bad {
					return &store.Error{Kind: store.KindEventFault, Err: errors.New("value too long")}
				}
			}
			return nil
		}
		b.run(t)
		got := b.wait(t, 10)
		require.Equal(t, map[action]int{actAck: 9, actFail: 1}, got)
		require.Equal(t, uint64(1), b.deadLetters(t))
		f := b.applier.failed()
		require.Len(t, f, 1)
		require.Equal(t, bad, f[0].EventID)
		require.Zero(t, b.applier.appliedCount(bad))
		require.Zero(t, b.info(t).NumAckPending)
		require.Zero(t, b.info(t).NumRedelivered, "a fault of the event's own data is not retried")
	})

	t.Run("RefusalRecordIsLoggedAsFailedAndAcked", func(t *testing.T) {
		t.Parallel()
		b := setup(t, Config{})
		msg := nats.NewMsg(event.Subject("m-refused"))
		msg.Data = []byte("the ingress refused Dataverse Update of contact m-refused: size-exceeded")
		msg.Header.Set(jetstream.MsgIDHeader, "dv.op.contact.refused")
		msg.Header.Set(stream.HeaderRefused, "size-exceeded")
		msg.Header.Set(stream.HeaderEventType, stream.RefusedEventType)
		msg.Header.Set(stream.HeaderMemberID, "m-refused")
		msg.Header.Set(stream.HeaderOrgID, "o1")
		msg.Header.Set(stream.HeaderSource, stream.SourceDataverseWebhook)
		_, err := b.js.PublishMsg(context.Background(), msg)
		require.NoError(t, err)
		b.run(t)
		require.Equal(t, map[action]int{actAck: 1}, b.wait(t, 1), "acknowledged: nothing to apply or redrive")
		require.Equal(t, []store.Failure{{EventID: "dv.op.contact.refused", EventType: stream.RefusedEventType, MemberID: "m-refused",
			OrgID: "o1", Reason: "the ingress refused Dataverse Update of contact m-refused: size-exceeded"}}, b.applier.failed())
		require.Zero(t, b.deadLetters(t))
	})

	t.Run("HungFailureLogIsBoundedAndRedelivered", func(t *testing.T) {
		t.Parallel()
		b := setup(t, Config{ApplyTimeout: 200 * time.Millisecond})
		b.applier.logHangs.Store(1)
		b.applier.outcome = func([]store.Item) error {
			return &store.Error{Kind: store.KindEventFault, Err: errors.New("invalid input")}
		}
		b.publish(t, 1, "")
		b.run(t)
		// The hung write is given up after ApplyTimeout and the event
		// redelivered; the second delivery writes its row and fails.
		require.Equal(t, map[action]int{actNak: 1, actFail: 1}, b.wait(t, 2))
		require.Len(t, b.applier.failed(), 1)
		require.Equal(t, uint64(1), b.deadLetters(t))
	})

	t.Run("ConflictIsRetriedAtOnceWithoutRedelivery", func(t *testing.T) {
		t.Parallel()
		b := setup(t, Config{})
		var calls atomic.Int32
		b.applier.outcome = func([]store.Item) error {
			if calls.Add(1) <= 2 {
				return &store.Error{Kind: store.KindRetry, Err: errors.New("deadlock detected")}
			}
			return nil
		}
		b.publish(t, 1, "")
		b.run(t)
		require.Equal(t, map[action]int{actAck: 1}, b.wait(t, 1))
		require.Zero(t, b.info(t).NumRedelivered)
	})

	t.Run("PersistentTimeoutSpendsDeliveriesThenFails", func(t *testing.T) {
		t.Parallel()
		b := setup(t, Config{MaxDeliver: 3})
		b.applier.outcome = func([]store.Item) error {
			return &store.Error{Kind: store.KindRetry, Err: errors.New("statement timeout")}
		}
		b.publish(t, 1, "")
		b.run(t)
		require.Equal(t, map[action]int{actNak: 2, actFail: 1}, b.wait(t, 3))
		require.Equal(t, uint64(1), b.deadLetters(t))
		require.Len(t, b.applier.failed(), 1)
		require.Contains(t, b.applier.failed()[0].Reason, "gave up after 3 deliveries")
	})

	t.Run("DatabaseOutagePausesAndKeepsEventsAlive", func(t *testing.T) {
		t.Parallel()
		b := setup(t, Config{MaxDeliver: 2})
		b.applier.down.Store(true)
		ids := b.publish(t, 8, "")
		b.run(t)
		waitFor(t, b.paused, ReasonDatabase)
		require.Contains(t, b.cons.Ready().Error(), "paused: database unavailable since")
		// Keep-alive rounds spanning more than two AckWaits (every event is
		// signalled at least every 2/3 of it) with everything held.
		for range 4 {
			b.waitKept(t, 8)
		}
		st := b.cons.State()
		require.Equal(t, ReasonDatabase, st.Paused)
		require.Equal(t, 8, st.Held)
		info := b.info(t)
		require.Equal(t, 8, info.NumAckPending)
		require.Zero(t, info.NumRedelivered, "held events are not redelivered")
		require.Zero(t, b.deadLetters(t))

		b.applier.down.Store(false)
		waitFor(t, b.resumed, ReasonDatabase)
		require.Equal(t, map[action]int{actAck: 8}, b.wait(t, 8))
		for _, id := range ids {
			require.Equal(t, 1, b.applier.appliedCount(id))
		}
		require.Zero(t, b.deadLetters(t))
		require.Empty(t, b.applier.failed())
		require.NoError(t, b.cons.Ready())
	})

	t.Run("StopDuringDatabaseOutageAcknowledgesNothing", func(t *testing.T) {
		t.Parallel()
		b := setup(t, Config{})
		b.applier.down.Store(true)
		ids := b.publish(t, 8, "")
		b.run(t)
		waitFor(t, b.paused, ReasonDatabase)
		b.waitKept(t, 8)

		// Stopped while paused: the held events are left for redelivery,
		// neither acknowledged nor applied.
		b.cancel()
		select {
		case err := <-b.done:
			require.NoError(t, err)
		case <-time.After(30 * time.Second):
			t.Fatal("consumer paused on the database did not stop")
		}
		b.done <- nil // for the cleanup
		require.Equal(t, 8, b.info(t).NumAckPending, "nothing acknowledged that was not applied")
		for _, id := range ids {
			require.Zero(t, b.applier.appliedCount(id), "applied while the database was down")
		}
		select {
		case s := <-b.settled:
			t.Fatalf("settled while stopping during an outage: %+v", s)
		default:
		}

		// Restarted with the database back: every event applied exactly once.
		b.applier.down.Store(false)
		b.newConsumer(t)
		b.run(t)
		require.Equal(t, map[action]int{actAck: 8}, b.wait(t, 8))
		for _, id := range ids {
			require.Equal(t, 1, b.applier.appliedCount(id))
		}
		require.Zero(t, b.info(t).NumAckPending)
		require.Zero(t, b.deadLetters(t))
	})

	t.Run("FailureWaitsForTheDatabaseBeforeDeadLettering", func(t *testing.T) {
		t.Parallel()
		b := setup(t, Config{})
		b.applier.outcome = func([]store.Item) error {
			b.applier.down.Store(true) // the database goes as the event fails
			return &store.Error{Kind: store.KindEventFault, Err: errors.New("invalid input")}
		}
		b.publish(t, 1, "")
		b.run(t)
		waitFor(t, b.paused, ReasonDatabase)
		require.Zero(t, b.deadLetters(t), "not dead-lettered without its failed row")
		b.applier.outcome = nil
		b.applier.down.Store(false)
		require.Equal(t, map[action]int{actFail: 1}, b.wait(t, 1))
		require.Len(t, b.applier.failed(), 1)
		require.Equal(t, uint64(1), b.deadLetters(t))
	})

	t.Run("FetchesOnlyWhatWorkersCanHold", func(t *testing.T) {
		t.Parallel()
		b := setup(t, Config{Workers: 2, BatchSize: 3})
		b.applier.block = make(chan struct{})
		b.publish(t, 40, "")
		b.run(t)
		b.waitKept(t, 6)
		require.Equal(t, 6, b.cons.State().Held)
		require.Equal(t, 6, b.info(t).NumAckPending, "the server delivered no more than one batch per worker before measuring")
		close(b.applier.block)
		require.Equal(t, map[action]int{actAck: 40}, b.wait(t, 40))
		require.Zero(t, b.info(t).NumRedelivered)
	})

	t.Run("ShutdownFinishesHeldEvents", func(t *testing.T) {
		t.Parallel()
		b := setup(t, Config{})
		b.applier.block = make(chan struct{})
		b.publish(t, 5, "")
		b.run(t)
		b.waitKept(t, 5)
		b.cancel()
		close(b.applier.block)
		require.NoError(t, <-b.done)
		b.done <- nil // for the cleanup
		require.Equal(t, map[action]int{actAck: 5}, b.wait(t, 5))
		require.Zero(t, b.info(t).NumAckPending)
	})

	t.Run("ShutdownPastTheDeadlineLeavesEventsForRedelivery", func(t *testing.T) {
		t.Parallel()
		b := setup(t, Config{ShutdownTimeout: 200 * time.Millisecond})
		b.applier.block = make(chan struct{}) // never opened
		b.publish(t, 3, "")
		b.run(t)
		b.waitKept(t, 3)
		b.cancel()
		err := <-b.done
		b.done <- nil
		require.ErrorContains(t, err, "did not finish")
		require.Equal(t, 3, b.info(t).NumAckPending, "not acknowledged: redelivered")
		require.Zero(t, b.deadLetters(t))
	})

	t.Run("DeletedConsumerIsRecreated", func(t *testing.T) {
		t.Parallel()
		b := setup(t, Config{})
		b.publish(t, 5, "")
		b.run(t)
		require.Equal(t, map[action]int{actAck: 5}, b.wait(t, 5))
		require.NoError(t, b.js.DeleteConsumer(context.Background(), testStream, DefaultDurable))
		<-b.recreated
		ids := b.publish(t, 5, "")
		// The recreated consumer delivers the stream again from its start;
		// the store skips what was applied (the fake applies it again).
		b.wait(t, 10)
		for _, id := range ids {
			require.Equal(t, 1, b.applier.appliedCount(id))
		}
		require.NoError(t, b.cons.Ready())
		require.Equal(t, -1, b.info(t).Config.MaxDeliver, "same configuration")
	})

	t.Run("NATSOutagePausesAndResumes", func(t *testing.T) {
		t.Parallel()
		b := setup(t, Config{})
		b.publish(t, 3, "")
		b.run(t)
		require.Equal(t, map[action]int{actAck: 3}, b.wait(t, 3))
		b.srv.Stop()
		waitFor(t, b.paused, ReasonNATS)
		require.Error(t, b.cons.Ready())
		b.srv.Start()
		waitFor(t, b.resumed, ReasonNATS)
		ids := b.publish(t, 3, "")
		require.Equal(t, map[action]int{actAck: 3}, b.wait(t, 3))
		for _, id := range ids {
			require.Equal(t, 1, b.applier.appliedCount(id))
		}
		require.NoError(t, b.cons.Ready())
	})
}

func TestConfigValidate(t *testing.T) {
	t.Parallel()
	require.NoError(t, Config{}.Validate(), "the defaults are valid")
	for name, tc := range map[string]struct {
		cfg  Config
		want string
	}{
		"NegativeApplyTimeout":    {Config{ApplyTimeout: -time.Second}, "apply timeout"},
		"TinyApplyTimeout":        {Config{ApplyTimeout: time.Millisecond}, "apply timeout"},
		"NegativeShutdownTimeout": {Config{ShutdownTimeout: -time.Second}, "shutdown timeout"},
		"NegativeAckWait":         {Config{AckWait: -time.Second}, "ack wait"},
		"NoWorkers":               {Config{Workers: -1}, "workers"},
		"MaxDeliverOne":           {Config{MaxDeliver: 1}, "max deliver"},
		"ZeroBackOff":             {Config{BackOff: []time.Duration{0}}, "backoff"},
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			require.ErrorContains(t, tc.cfg.Validate(), tc.want)
		})
	}
}

// decide is the outcome table; every row is here. redeliver says whether
// the events may be delivered again later (the durable consumer: none has
// used up MaxDeliver, PersistentTimeoutSpendsDeliveriesThenFails holds
// that boundary; replay: always).
func TestDecide(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		kind          store.Kind
		size, retried int
		redeliver     bool
		want          action
	}{
		{store.KindNone, 5, 0, true, actAck},
		{store.KindUnavailable, 5, 0, true, actPause},
		{store.KindUnavailable, 1, 3, false, actPause}, // never spends the budget
		{store.KindRetry, 5, 0, true, actRetryNow},
		{store.KindRetry, 5, 2, false, actRetryNow},
		{store.KindRetry, 5, 3, true, actNak},
		{store.KindRetry, 1, 3, true, actNak},
		{store.KindRetry, 5, 3, false, actSplit},
		{store.KindRetry, 1, 3, false, actFail},
		{store.KindEventFault, 5, 0, true, actSplit},
		{store.KindEventFault, 1, 0, true, actFail},
	} {
		t.Run(fmt.Sprintf("%s/size%d/retried%d/redeliver%t", tc.kind, tc.size, tc.retried, tc.redeliver), func(t *testing.T) {
			require.Equal(t, tc.want, decide(tc.kind, tc.size, tc.retried, tc.redeliver))
		})
	}
}

// The consumer holds what its workers can apply within half of AckWait,
// between one event per worker and 2×Workers×BatchSize (and
// MaxAckPending); one batch per worker before it has measured.
func TestFetchLimit(t *testing.T) {
	t.Parallel()
	cfg := Config{Workers: 4, BatchSize: 100, AckWait: 2 * time.Second}.WithDefaults()
	for _, tc := range []struct {
		rate float64
		want int
	}{
		{0, 400},     // not measured yet: one batch per worker
		{1000, 800},  // fast: capacity
		{50, 200},    // 50/s × 4 workers × 1 s
		{1.0 / 6, 4}, // a 6-second transaction: one per worker
		{0.001, 4},   // never below one per worker
	} {
		require.Equal(t, tc.want, cfg.fetchLimit(tc.rate), "rate %g", tc.rate)
	}
	require.Equal(t, 500, Config{Workers: 4, BatchSize: 200, MaxAckPending: 500}.WithDefaults().fetchLimit(1e6))
}
