package e2e

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net/http"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/likeperson/portalsync/pkg/event"
	"github.com/likeperson/portalsync/syncer/consumer"
	"github.com/likeperson/portalsync/syncer/deadletter"
)

// TestSoak sends SOAK_EVENTS (default 20,000) events over many members with
// colliding times, resending some as the portal would, while the syncer
// process is killed and restarted at least three times; then it counts.
// It runs with `make soak` (PORTALSYNC_SOAK=1), not in `make test`.
func TestSoak(t *testing.T) {
	if os.Getenv("PORTALSYNC_SOAK") == "" {
		t.Skip("set PORTALSYNC_SOAK=1 (make soak) to run the soak test")
	}
	total := 20000
	if v, err := strconv.Atoi(os.Getenv("SOAK_EVENTS")); err == nil && v > 0 {
		total = v
	}
	sys := start(t, withoutSyncer())
	proc := sys.syncerProcess(t, sys.dbURL, func(c *consumer.Config) { c.Workers = 8 })
	events := workload(42, "soak", total/10, total)
	for _, e := range events {
		sys.remember(e.Member.Email, e.Member.FirstName, e.Member.Phone)
	}
	ctx := context.Background()

	var sent, accepted, duplicates, unavailable atomic.Int64
	var mu sync.Mutex
	var acceptedEvents []event.Event
	work := make(chan event.Event)
	var wg sync.WaitGroup
	for w := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(w), 1))
			for e := range work {
				copies := 1
				if rng.IntN(20) == 0 { // the portal delivers 5 % twice
					copies = 2
				}
				deadline := time.Now().Add(time.Minute)
				for c := 0; c < copies; {
					if time.Now().After(deadline) {
						t.Errorf("event %s not accepted within a minute of retries", e.ID)
						break
					}
					sent.Add(1)
					resp, err := sys.client.SendEvent(ctx, e)
					switch {
					case err == nil && resp.Status == http.StatusAccepted:
						accepted.Add(1)
						mu.Lock()
						acceptedEvents = append(acceptedEvents, e)
						mu.Unlock()
						c++
					case err == nil && resp.Status == http.StatusOK:
						duplicates.Add(1)
						c++
					default:
						unavailable.Add(1)
						time.Sleep(20 * time.Millisecond) // the portal's pause before it retries
					}
				}
			}
		}()
	}

	start := time.Now()
	proc.Start()
	stopKiller := make(chan struct{})
	var kills atomic.Int64
	killerDone := make(chan struct{})
	go func() {
		defer close(killerDone)
		for {
			select {
			case <-stopKiller:
				return
			case <-time.After(1500 * time.Millisecond): // a kill every 1.5 s, on purpose
				proc.Kill()
				kills.Add(1)
				proc.Start()
			}
		}
	}()
	for _, e := range events {
		work <- e
	}
	close(work)
	wg.Wait()
	require.Eventually(t, func() bool { return kills.Load() >= 3 }, time.Minute, 100*time.Millisecond, "three kills")
	close(stopKiller)
	<-killerDone
	sendTime := time.Since(start)

	sys.waitApplied(t, ids(acceptedEvents), 5*time.Minute)
	elapsed := time.Since(start)
	took, err := proc.Stop()
	require.NoError(t, err)

	var applied, failed, redelivered int
	require.NoError(t, sys.pool.QueryRow(ctx, `SELECT count(*) FILTER (WHERE status IN ('success', 'skipped')),
		count(*) FILTER (WHERE status = 'failed'), count(*) FILTER (WHERE attempt > 1) FROM portal_sync_log`).Scan(&applied, &failed, &redelivered))
	js := sys.jetStream(t)
	q, err := deadletter.Open(ctx, js, deadletter.Config{EventStream: testStream.Name})
	require.NoError(t, err)
	dead, err := q.Count(ctx)
	require.NoError(t, err)
	s, err := js.Stream(ctx, testStream.Name)
	require.NoError(t, err)
	info, err := s.Info(ctx)
	require.NoError(t, err)

	lost := int(accepted.Load()) - applied
	report := fmt.Sprintf(`| measure | count |
|---|---|
| events generated | %d |
| requests sent (with the portal's repeats and retries) | %d |
| accepted (202) | %d |
| duplicates suppressed by the ingress (200, duplicate) | %d |
| answered 503 and retried | %d |
| stored in the stream | %d |
| applied (one success row each, or skipped when superseded) | %d |
| applied on a redelivery (attempt > 1) | %d |
| failed rows | %d |
| dead-lettered | %d |
| syncer SIGKILLs | %d |
| **lost** | **%d** |

Sending took %s; all applied after %s; final SIGTERM exit took %s.
`, len(events), sent.Load(), accepted.Load(), duplicates.Load(), unavailable.Load(), info.State.Msgs,
		applied, redelivered, failed, dead, kills.Load(), lost,
		sendTime.Round(time.Millisecond), elapsed.Round(time.Millisecond), took.Round(time.Millisecond))
	t.Log("\n" + report)
	if path := os.Getenv("SOAK_REPORT"); path != "" {
		require.NoError(t, os.WriteFile(path, []byte(report), 0o644))
	}

	require.EqualValues(t, len(events), accepted.Load())
	require.EqualValues(t, len(events), info.State.Msgs, "one stored message per event")
	require.Equal(t, len(events), applied)
	require.Zero(t, lost)
	require.Zero(t, failed)
	require.Zero(t, dead)
	require.GreaterOrEqual(t, kills.Load(), int64(3))
	sys.requireMatchesModel(t, acceptedEvents)
}
