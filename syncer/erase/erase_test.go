package erase_test

import (
	"context"
	"errors"
	"testing"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"
	"go.uber.org/zap/zaptest"

	"github.com/likeperson/portalsync/pkg/event"
	"github.com/likeperson/portalsync/pkg/stream"
	"github.com/likeperson/portalsync/syncer/deadletter"
	"github.com/likeperson/portalsync/syncer/erase"
	"github.com/likeperson/portalsync/syncer/store"
	"github.com/likeperson/portalsync/testkit/natstest"
)

// fakeStore answers each item with the result results holds for its
// event id (success by default).
type fakeStore struct {
	results map[string]store.Result
}

func (f *fakeStore) ApplyBatch(_ context.Context, items []store.Item) ([]store.Result, error) {
	out := make([]store.Result, len(items))
	for i, it := range items {
		res, ok := f.results[it.Event.ID]
		if !ok {
			res = store.Result{Status: store.StatusSuccess}
		}
		out[i] = res
	}
	return out, nil
}

func (f *fakeStore) LogFailure(context.Context, store.Failure, store.Meta) error { return nil }

func (f *fakeStore) Ping(context.Context) error { return nil }

// The consumer's applier purges a member's messages once a batch erased
// the member, or found a member-deleted event done (its purge may have
// failed the first time), and leaves every other member's alone.
func TestApplierPurgesErasedMembers(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	js, _ := natstest.JetStream(t, stream.Config{Name: "EVENTS"})
	dlq, err := deadletter.Open(ctx, js, deadletter.Config{EventStream: "EVENTS"})
	require.NoError(t, err)

	// "kari.nordmann" is a subject token only once encoded.
	members := []string{"erased-now", "kari.nordmann", "kept", "skipped-again"}
	for _, m := range members {
		msg := nats.NewMsg(event.Subject(m))
		msg.Data = []byte(`{}`)
		msg.Header.Set(stream.HeaderMemberID, m)
		ack, err := js.PublishMsg(ctx, msg)
		require.NoError(t, err)
		require.NoError(t, dlq.Add(ctx, deadletter.Letter{Subject: msg.Subject, Header: msg.Header, Data: msg.Data, StreamSeq: ack.Sequence, Reason: "test"}))
	}
	st := &fakeStore{results: map[string]store.Result{
		"e1": {Status: store.StatusSuccess, MemberErased: true},
		"e2": {Status: store.StatusSuccess, AlreadyDone: true},                          // member-deleted, done before
		"e3": {Status: store.StatusSkipped, Detail: "member erased", AlreadyDone: true}, // not a member-deleted event
		"e4": {Status: store.StatusSkipped, Detail: "member erased"},
	}}
	a := erase.NewApplier(st, erase.NewPurger(js, "EVENTS", dlq), zaptest.NewLogger(t))
	item := func(id string, typ event.Type, member string) store.Item {
		return store.Item{Event: &event.Event{ID: id, Type: typ, Member: event.Member{ID: member}}}
	}
	_, err = a.ApplyBatch(ctx, []store.Item{
		item("e1", event.MemberDeleted, "erased-now"),
		item("e2", event.MemberDeleted, "kari.nordmann"),
		item("e3", event.MembershipUpdated, "kept"),
		item("e4", event.MembershipUpdated, "skipped-again"),
		item("e5", event.MembershipCreated, "kept"),
	})
	require.NoError(t, err)

	s, err := js.Stream(ctx, "EVENTS")
	require.NoError(t, err)
	info, err := s.Info(ctx, jetstream.WithSubjectFilter(event.SubjectWildcard))
	require.NoError(t, err)
	require.Equal(t, map[string]uint64{event.Subject("kept"): 1, event.Subject("skipped-again"): 1}, info.State.Subjects)
	letters, err := dlq.List(ctx)
	require.NoError(t, err)
	var left []string
	for _, l := range letters {
		left = append(left, l.MemberID)
	}
	require.Equal(t, []string{"kept", "skipped-again"}, left, "dead letters of the erased members are purged")

	t.Run("FailedPurgeFailsTheBatch", func(t *testing.T) {
		gone := erase.NewApplier(st, erase.NewPurger(js, "NO_SUCH_STREAM", dlq), zaptest.NewLogger(t))
		_, err := gone.ApplyBatch(ctx, []store.Item{item("e1", event.MemberDeleted, "erased-now")})
		require.ErrorContains(t, err, "erase event e1")
		require.True(t, errors.Is(err, jetstream.ErrStreamNotFound))
	})
}
