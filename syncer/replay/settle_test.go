package replay

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"
	"go.uber.org/zap/zaptest"

	"github.com/likeperson/portalsync/pkg/event"
	"github.com/likeperson/portalsync/pkg/stream"
	"github.com/likeperson/portalsync/syncer/consumer"
	"github.com/likeperson/portalsync/syncer/store"
)

// fakeApplier answers each batch with what outcome returns for it, and
// counts the batches it was asked to apply.
type fakeApplier struct {
	mu      sync.Mutex
	outcome func(items []store.Item) error
	down    bool // Ping fails
	hang    bool // ApplyBatch returns only when its context ends
	batches int
}

func (f *fakeApplier) ApplyBatch(ctx context.Context, items []store.Item) ([]store.Result, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.batches++
	if f.hang {
		<-ctx.Done()
		return nil, fmt.Errorf("upsert organizations: %w", ctx.Err())
	}
	if err := f.outcome(items); err != nil {
		return nil, err
	}
	res := make([]store.Result, len(items))
	for i := range res {
		res[i] = store.Result{Status: store.StatusSuccess}
	}
	return res, nil
}

func (f *fakeApplier) Ping(context.Context) error {
	if f.down {
		return &store.Error{Kind: store.KindUnavailable, Err: errors.New("connection refused")}
	}
	return nil
}

func items(n int, firstSeq uint64) []store.Item {
	out := make([]store.Item, n)
	for i := range out {
		out[i] = store.Item{
			Event: &event.Event{ID: fmt.Sprintf("e%d", firstSeq+uint64(i)), Member: event.Member{ID: fmt.Sprintf("m%d", i)}},
			Meta:  store.Meta{StreamSeq: firstSeq + uint64(i), Attempt: 1, Replay: true},
		}
	}
	return out
}

// Replay settles by the consumer's outcome table; where it differs (no
// acknowledgement, no delivery budget, no waiting), its settler says so.
func TestApplySettlesByTheOutcomeTable(t *testing.T) {
	t.Parallel()
	setup := func(t *testing.T, outcome func([]store.Item) error) (*Replayer, *fakeApplier) {
		return &Replayer{log: zaptest.NewLogger(t), applyTimeout: time.Minute}, &fakeApplier{outcome: outcome}
	}

	t.Run("AppliedEventsAreCounted", func(t *testing.T) {
		t.Parallel()
		r, db := setup(t, func([]store.Item) error { return nil })
		var rep Report
		require.NoError(t, r.apply(context.Background(), db, items(5, 10), &rep))
		require.Equal(t, Report{Applied: 5}, rep)
		require.Equal(t, 1, db.batches)
	})

	t.Run("EventFaultIsAppliedOneByOneAndTheBadOneLeftOut", func(t *testing.T) {
		t.Parallel()
		r, db := setup(t, func(its []store.Item) error {
			for _, it := range its {
				if it.Event.ID == "e12" {
					return &store.Error{Kind: store.KindEventFault, Err: errors.New("value too long")}
				}
			}
			return nil
		})
		var rep Report
		require.NoError(t, r.apply(context.Background(), db, items(5, 10), &rep))
		require.Equal(t, Report{Applied: 4, Invalid: 1}, rep)
		require.Equal(t, 1+5, db.batches, "the batch, then each event alone")
	})

	t.Run("ConflictIsRetriedAtOnce", func(t *testing.T) {
		t.Parallel()
		calls := 0
		r, db := setup(t, func([]store.Item) error {
			if calls++; calls <= 2 {
				return &store.Error{Kind: store.KindRetry, Err: errors.New("deadlock detected")}
			}
			return nil
		})
		var rep Report
		require.NoError(t, r.apply(context.Background(), db, items(3, 10), &rep))
		require.Equal(t, Report{Applied: 3}, rep)
	})

	t.Run("PersistentConflictStopsWhereARerunStarts", func(t *testing.T) {
		t.Parallel()
		r, db := setup(t, func([]store.Item) error {
			return &store.Error{Kind: store.KindRetry, Err: errors.New("statement timeout")}
		})
		var rep Report
		err := r.apply(context.Background(), db, items(3, 10), &rep)
		require.ErrorContains(t, err, "replay stopped at stream seq 10 (rerun with --from-seq 10): statement timeout")
		require.Equal(t, Report{}, rep, "not split and failed: nothing is wrong with the events")
		require.Equal(t, 4, db.batches, "the attempt and three immediate retries, as the consumer makes")
	})

	t.Run("HungTransactionStopsWhereARerunStarts", func(t *testing.T) {
		t.Parallel()
		r, db := setup(t, nil)
		r.applyTimeout = 50 * time.Millisecond
		db.hang = true // a lock held elsewhere: the call returns only when its context ends
		var rep Report
		err := r.apply(context.Background(), db, items(3, 20), &rep)
		require.ErrorContains(t, err, "replay stopped at stream seq 20 (rerun with --from-seq 20)")
		require.ErrorIs(t, err, context.DeadlineExceeded)
		require.Equal(t, 4, db.batches, "the attempt and three immediate retries, each bounded")
	})

	t.Run("UnavailableDatabaseStopsAtOnce", func(t *testing.T) {
		t.Parallel()
		r, db := setup(t, func([]store.Item) error {
			return &store.Error{Kind: store.KindUnavailable, Err: errors.New("connection refused")}
		})
		db.down = true
		var rep Report
		err := r.apply(context.Background(), db, items(3, 7), &rep)
		require.ErrorContains(t, err, "rerun with --from-seq 7")
		require.True(t, store.IsUnavailable(err))
		require.Equal(t, 1, db.batches)
	})

	t.Run("UnavailableErrorWhileTheDatabaseAnswersIsRetried", func(t *testing.T) {
		t.Parallel()
		calls := 0
		r, db := setup(t, func([]store.Item) error {
			if calls++; calls == 1 {
				return &store.Error{Kind: store.KindUnavailable, Err: errors.New("conn busy")}
			}
			return nil
		})
		var rep Report
		require.NoError(t, r.apply(context.Background(), db, items(2, 1), &rep))
		require.Equal(t, Report{Applied: 2}, rep)
	})
}

// Replay shares a fetch out among its workers as the syncer's consumer
// routes events (consumer.Worker on the subject), keeping stream order.
func TestGroupRoutesLikeTheConsumer(t *testing.T) {
	t.Parallel()
	var its []store.Item
	var subjects []string
	for i := range 40 {
		member := fmt.Sprintf("{3B2A1F00-0000-4000-8000-%012d}", i%7)
		its = append(its, store.Item{Event: &event.Event{ID: fmt.Sprintf("e%d", i)}, Meta: store.Meta{StreamSeq: uint64(i + 1)}})
		subjects = append(subjects, event.Subject(event.CanonicalID(member)))
	}
	groups := group(its, subjects, workers)
	require.Len(t, groups, workers)
	n := 0
	for w, g := range groups {
		for j, it := range g {
			i := int(it.Meta.StreamSeq - 1)
			require.Equal(t, consumer.Worker(subjects[i], workers), w, "event %d", i)
			if j > 0 {
				require.Less(t, g[j-1].Meta.StreamSeq, it.Meta.StreamSeq, "stream order")
			}
			n++
		}
	}
	require.Equal(t, len(its), n)
}

// When several workers stop, the replay names one place to rerun from: the
// lowest sequence, which covers every worker's unsettled events.
func TestFirstStopNamesTheLowestSequence(t *testing.T) {
	other := errors.New("fetch failed")
	err := firstStop([]error{
		nil,
		&StoppedError{Seq: 40, Err: errors.New("timeout")},
		&StoppedError{Seq: 12, Err: errors.New("unavailable")},
		other,
	})
	require.ErrorIs(t, err, other)
	require.Equal(t, 1, strings.Count(err.Error(), "replay stopped"), err.Error())
	require.ErrorContains(t, err, "replay stopped at stream seq 12 (rerun with --from-seq 12): unavailable")
	var s *StoppedError
	require.ErrorAs(t, err, &s)
	require.Equal(t, uint64(12), s.Seq)
	require.NoError(t, firstStop([]error{nil, nil}))
}

// fakeMsg is a stream message with headers and a body; nothing else of it
// is read by item.
type fakeMsg struct {
	jetstream.Msg
	h    nats.Header
	data []byte
}

func (m fakeMsg) Headers() nats.Header { return m.h }
func (m fakeMsg) Data() []byte         { return m.data }

// Every message read is counted once: a refused change's record as
// skipped (nothing to apply), a body that is no event as invalid.
func TestItemCountsEveryMessage(t *testing.T) {
	r := &Replayer{log: zaptest.NewLogger(t)}
	var rep Report
	refused := fakeMsg{h: nats.Header{stream.HeaderRefused: []string{"untranslatable"}}, data: []byte(`{}`)}
	_, ok := r.item(refused, store.Meta{StreamSeq: 1}, Options{}, &rep)
	require.False(t, ok)
	_, ok = r.item(fakeMsg{h: nats.Header{}, data: []byte(`not json`)}, store.Meta{StreamSeq: 2}, Options{}, &rep)
	require.False(t, ok)
	require.Equal(t, Report{Skipped: 1, Invalid: 1}, rep)
}
