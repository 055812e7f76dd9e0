package stream_test

import (
	"context"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/likeperson/portalsync/pkg/stream"
	"github.com/likeperson/portalsync/testkit/natstest"
)

// Every stream setting that makes the server delete stored events must be
// set back by Ensure, not only those it compares today. Found by an
// outside test of issue 19: a stream with max_msgs_per_subject 2 (set by
// an operator, or by another tool) and otherwise the right settings was
// left as it was by the real ingress, which then answered 202 to five
// events of one member while the server kept two: three unapplied events
// deleted, no refusal, no warning.
func TestEnsureSetsBackAPerSubjectLimit(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	js := connectJS(t, natstest.Run(t))

	cfg := stream.Config{Name: "EVENTS"}
	s, err := stream.Ensure(ctx, js, cfg)
	require.NoError(t, err)
	edited := s.CachedInfo().Config
	edited.MaxMsgsPerSubject = 2
	_, err = js.UpdateStream(ctx, edited)
	require.NoError(t, err)

	s, err = stream.Ensure(ctx, js, cfg)
	require.NoError(t, err)
	for range 5 {
		_, err := js.Publish(ctx, "portal.member.m1", []byte(`{}`))
		require.NoError(t, err)
	}
	info, err := s.Info(ctx)
	require.NoError(t, err)
	require.Equal(t, uint64(5), info.State.Msgs, "every event of the member is kept (max_msgs_per_subject %d)", info.Config.MaxMsgsPerSubject)
}
