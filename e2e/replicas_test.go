package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"github.com/likeperson/portalsync/pkg/event"
	"github.com/likeperson/portalsync/pkg/stream"
	"github.com/likeperson/portalsync/syncer/consumer"
)

// appliedBy counts, per process, the events of one member it applied, from
// its JSON log lines.
func appliedBy(out, member string) int {
	n := 0
	for _, line := range strings.Split(out, "\n") {
		var rec struct {
			Msg      string `json:"msg"`
			MemberID string `json:"member_id"`
		}
		if json.Unmarshal([]byte(line), &rec) == nil && rec.Msg == "applied" && rec.MemberID == member {
			n++
		}
	}
	return n
}

// Three `syncer run` processes share one durable consumer; one member's
// events are spread across them; the result is the model's, with exactly
// one success row per event.
func TestThreeReplicasShareTheConsumer(t *testing.T) {
	t.Parallel()
	sys := start(t, withoutSyncer())
	events := workload(11, "rep", 20, 300)
	for i := range events {
		if i%2 == 0 { // half of all events hit one member
			events[i].Member.ID = "rep-hot"
			events[i].Member.Email = "rep-hot@example.invalid"
		}
	}
	// App accounts for some members exist before: linked, banned and
	// logged out by whichever replica applies their events.
	accounts := sys.addAccounts(t, "rep-hot@example.invalid", "rep-m1@example.invalid", "rep-m2@example.invalid", "rep-m3@example.invalid")
	// Fill the stream first, so the replicas compete for the same backlog.
	accepted := sys.sendAll(t, events, 4)
	procs := make([]*syncerProcess, 3)
	for i := range procs {
		procs[i] = sys.syncerProcess(t, sys.dbURL, func(c *consumer.Config) { c.Workers, c.MaxAckPending = 2, 64 })
		procs[i].Start()
	}
	sys.waitApplied(t, ids(accepted), 60*time.Second)
	for i, p := range procs {
		_, err := p.Stop()
		require.NoError(t, err)
		n := appliedBy(p.output.String(), "rep-hot")
		t.Logf("replica %d applied %d of the hot member's events", i, n)
		require.Positive(t, n, "replica %d got none of the hot member's events", i)
	}
	require.Equal(t, len(events), sys.countLog(t, "processed"))
	var distinct int
	require.NoError(t, sys.pool.QueryRow(context.Background(), `SELECT count(DISTINCT event_id) FROM portal_sync_log`).Scan(&distinct))
	require.Equal(t, len(events), distinct)
	sys.requireMatchesModel(t, accepted)
	sys.requireIdentity(t, accepted, accounts)
}

// TestReplicaThroughput measures how fast 1, 2 and 3 replicas drain a
// backlog. It runs with PORTALSYNC_BENCH=1 (docs/OPERATIONS.md).
func TestReplicaThroughput(t *testing.T) {
	if os.Getenv("PORTALSYNC_BENCH") == "" {
		t.Skip("set PORTALSYNC_BENCH=1 to measure replica throughput")
	}
	const total = 100000
	var report strings.Builder
	report.WriteString("| replicas | events | seconds | events/s |\n|---|---|---|---|\n")
	for _, replicas := range []int{1, 2, 3} {
		sys := start(t, withoutSyncer())
		events := workload(uint64(replicas), fmt.Sprintf("tp%d", replicas), 10000, total)
		publishDirect(t, sys, events)
		started := time.Now()
		procs := make([]*syncerProcess, replicas)
		for i := range procs {
			procs[i] = sys.syncerProcess(t, sys.dbURL, nil, "LOG_LEVEL=warn")
			procs[i].Start()
		}
		sys.waitApplied(t, ids(events), 5*time.Minute)
		took := time.Since(started)
		for _, p := range procs {
			_, err := p.Stop()
			require.NoError(t, err)
		}
		fmt.Fprintf(&report, "| %d | %d | %.1f | %.0f |\n", replicas, total, took.Seconds(), float64(total)/took.Seconds())
	}
	t.Log("\n" + report.String())
	if path := os.Getenv("BENCH_REPORT"); path != "" {
		require.NoError(t, os.WriteFile(path, []byte(report.String()), 0o644))
	}
}

// publishDirect stores events in the stream as the ingress would, quickly.
func publishDirect(t *testing.T, sys *system, events []event.Event) {
	t.Helper()
	js := sys.jetStream(t)
	futures := make([]jetstream.PubAckFuture, 0, len(events))
	for _, e := range events {
		body, err := json.Marshal(e)
		require.NoError(t, err)
		msg := nats.NewMsg(event.Subject(e.Member.ID))
		msg.Data = body
		msg.Header.Set(jetstream.MsgIDHeader, e.ID)
		msg.Header.Set(stream.HeaderEventType, string(e.Type))
		msg.Header.Set(stream.HeaderMemberID, e.Member.ID)
		msg.Header.Set(stream.HeaderReceivedAt, time.Now().UTC().Format(time.RFC3339Nano))
		f, err := js.PublishMsgAsync(msg)
		require.NoError(t, err)
		futures = append(futures, f)
	}
	select {
	case <-js.PublishAsyncComplete():
	case <-time.After(time.Minute):
		t.Fatal("publish did not complete")
	}
	for _, f := range futures {
		select {
		case <-f.Ok():
		case err := <-f.Err():
			t.Fatal(err)
		}
	}
}
