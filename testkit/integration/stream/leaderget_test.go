package stream_test

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/likeperson/portalsync/pkg/stream"
	"github.com/likeperson/portalsync/testkit/natstest"
)

func TestLeaderGet(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	srv := natstest.Run(t)
	js := connectJS(t, srv)
	_, err := stream.Ensure(ctx, js, stream.Config{Name: "S"})
	require.NoError(t, err)
	for _, subj := range []string{"portal.member.a", "portal.member.b", "portal.member.a"} {
		_, err := js.Publish(ctx, subj, []byte("x"))
		require.NoError(t, err)
	}
	between := time.Now()
	_, err = js.Publish(ctx, "portal.member.b", []byte("x"))
	require.NoError(t, err)
	nc := js.Conn()

	m, found, err := stream.LeaderGet(ctx, nc, "S", stream.GetRequest{Seq: 2, NextBySubj: "portal.member.a"})
	require.NoError(t, err)
	require.True(t, found)
	require.Equal(t, uint64(3), m.Seq, "the first at or after 2 on the subject")
	require.False(t, m.Time.IsZero())

	m, found, err = stream.LeaderGet(ctx, nc, "S", stream.GetRequest{StartTime: between, NextBySubj: ">"})
	require.NoError(t, err)
	require.True(t, found)
	require.Equal(t, uint64(4), m.Seq, "the first stored at or after the time")

	_, found, err = stream.LeaderGet(ctx, nc, "S", stream.GetRequest{Seq: 5, NextBySubj: ">"})
	require.NoError(t, err)
	require.False(t, found)
}
