package deadletter_test

import (
	"context"
	"testing"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"github.com/likeperson/portalsync/pkg/stream"
	"github.com/likeperson/portalsync/syncer/deadletter"
	"github.com/likeperson/portalsync/testkit/natstest"
)

// An event that fails again after a redrive is dead-lettered, listed and
// redriven again under the id it was sent with.
func TestRedriveAgainByOriginalID(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	js, _ := natstest.JetStream(t, stream.Config{Name: "EVENTS"})
	q, err := deadletter.Open(ctx, js, deadletter.Config{EventStream: "EVENTS"})
	require.NoError(t, err)

	h := nats.Header{}
	h.Set(jetstream.MsgIDHeader, "evt-1")
	h.Set(stream.HeaderMemberID, "m1")
	require.NoError(t, q.Add(ctx, deadletter.Letter{Subject: "portal.member.m1", Header: h, Data: []byte(`{}`), StreamSeq: 7, Deliveries: 3, Reason: "bad"}))

	for round := range 3 {
		n, err := q.Redrive(ctx, deadletter.Filter{EventID: "evt-1"})
		require.NoError(t, err, "round %d", round)
		require.Equal(t, 1, n)
		// The syncer fails it again: it dead-letters what it was delivered.
		s, err := js.Stream(ctx, "EVENTS")
		require.NoError(t, err)
		info, err := s.Info(ctx)
		require.NoError(t, err)
		raw, err := s.GetMsg(ctx, info.State.LastSeq)
		require.NoError(t, err)
		require.Equal(t, "evt-1", raw.Header.Get(deadletter.HeaderOriginalID))
		require.NoError(t, q.Add(ctx, deadletter.Letter{Subject: raw.Subject, Header: raw.Header, Data: raw.Data, StreamSeq: raw.Sequence, Deliveries: 3, Reason: "bad again"}))
		entries, err := q.List(ctx)
		require.NoError(t, err)
		require.Len(t, entries, 1)
		require.Equal(t, "evt-1", entries[0].EventID)
		require.Equal(t, "bad again", entries[0].Error)
	}
}
