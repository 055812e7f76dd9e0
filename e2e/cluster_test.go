package e2e

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/likeperson/portalsync/testkit/natstest"
)

// A three-server JetStream cluster with an R3 stream loses its stream
// leader while events flow: the ingress and the syncer keep working and
// every accepted event is applied once.
func TestClusterStreamLeaderKilled(t *testing.T) {
	t.Parallel()
	cluster := natstest.RunCluster(t, 3)
	sys := start(t, onCluster(cluster))
	ctx := context.Background()

	js := sys.jetStream(t)
	s, err := js.Stream(ctx, sys.stream.Name)
	require.NoError(t, err)
	info, err := s.Info(ctx)
	require.NoError(t, err)
	require.Equal(t, 3, info.Config.Replicas)
	leader := info.Cluster.Leader
	require.NotEmpty(t, leader)

	events := workload(21, "cluster", 30, 400)
	accepted := make(chan bool, 1)
	var got []string
	go func() {
		acc := sys.sendAll(t, events, 4)
		for _, e := range acc {
			got = append(got, e.ID)
		}
		accepted <- len(acc) == len(events)
	}()
	// Let events flow, then kill the stream leader.
	require.Eventually(t, func() bool { return sys.countLog(t, "processed") > 50 }, 30*time.Second, 10*time.Millisecond)
	cluster.ByName(leader).Stop()
	t.Logf("stopped stream leader %s with %d events applied", leader, sys.countLog(t, "processed"))

	require.True(t, <-accepted, "every event accepted, after retries")
	sys.waitApplied(t, got, 90*time.Second)
	require.Equal(t, len(events), sys.countLog(t, "processed"))
	require.Zero(t, sys.countLog(t, "failed"))
	info, err = s.Info(ctx)
	require.NoError(t, err)
	require.NotEqual(t, leader, info.Cluster.Leader, "a new leader took over")
	require.EqualValues(t, len(events), info.State.Msgs, "one stored message per event")
	sys.requireMatchesModel(t, events)
}
