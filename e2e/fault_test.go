package e2e

import (
	"context"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"github.com/likeperson/portalsync/pkg/event"
	"github.com/likeperson/portalsync/syncer/consumer"
	"github.com/likeperson/portalsync/syncer/deadletter"
	"github.com/likeperson/portalsync/testkit/servicetest"
)

// sendAll posts events with a few concurrent senders, retrying what is not
// answered 2xx as the portal does, and returns the accepted events.
func (s *system) sendAll(t *testing.T, events []event.Event, senders int) []event.Event {
	t.Helper()
	ctx := context.Background()
	var mu sync.Mutex
	var accepted []event.Event
	var wg sync.WaitGroup
	for _, e := range events {
		s.remember(e.Member.Email, e.Member.FirstName, e.Member.LastName, e.Member.Phone)
	}
	work := make(chan event.Event)
	for range senders {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for e := range work {
				for attempt := 0; ; attempt++ {
					resp, err := s.client.SendEvent(ctx, e)
					if err == nil && resp.Status/100 == 2 {
						mu.Lock()
						accepted = append(accepted, e)
						mu.Unlock()
						break
					}
					if attempt > 200 {
						t.Errorf("event %s never accepted: %v %v", e.ID, err, resp)
						break
					}
					time.Sleep(50 * time.Millisecond) // the portal's pause before it retries
				}
			}
		}()
	}
	for _, e := range events {
		work <- e
	}
	close(work)
	wg.Wait()
	return accepted
}

// countLog counts log rows of a status; "processed" counts success and
// skipped (superseded by newer data) rows: the events that were handled.
func (s *system) countLog(t *testing.T, status string) int {
	t.Helper()
	var n int
	statuses := []string{status}
	if status == "processed" {
		statuses = []string{"success", "skipped"}
	}
	require.NoError(t, s.pool.QueryRow(context.Background(), `SELECT count(*) FROM portal_sync_log WHERE status = ANY($1)`, statuses).Scan(&n))
	return n
}

// Fault 1: the syncer process is killed hard while events flow, three
// times, then restarted: every accepted event takes effect exactly once and
// the database equals the model.
func TestSyncerKilledHard(t *testing.T) {
	t.Parallel()
	sys := start(t, withoutSyncer())
	proc := sys.syncerProcess(t, sys.dbURL, nil)
	events := workload(1, "kill", 40, 2000)

	proc.Start()
	sent := make(chan []event.Event, 1)
	go func() { sent <- sys.sendAll(t, events, 4) }()
	for range 4 {
		// Kill once this process is applying (its first commits are in),
		// not after a fixed time: on a loaded machine it may not have
		// started consuming yet.
		before := sys.countLog(t, "processed")
		require.Eventually(t, func() bool { return sys.countLog(t, "processed") > before }, 30*time.Second, 2*time.Millisecond)
		proc.Kill()
		proc.Start()
	}
	accepted := <-sent
	require.Len(t, accepted, len(events))
	sys.waitApplied(t, ids(accepted), 60*time.Second)

	took, err := proc.Stop()
	require.NoError(t, err, "graceful exit after SIGTERM: %s", tail(proc.output.String(), 2000))
	require.Less(t, took, 11*time.Second)
	require.Equal(t, len(events), sys.countLog(t, "processed"), "one success row per event")
	require.Zero(t, sys.countLog(t, "failed"))
	var redelivered int
	require.NoError(t, sys.pool.QueryRow(context.Background(), `SELECT count(*) FROM portal_sync_log WHERE attempt > 1`).Scan(&redelivered))
	t.Logf("%d events, %d applied on a redelivery after a kill", len(events), redelivered)
	require.Positive(t, redelivered, "the kills hit events in flight")
	sys.requireMatchesModel(t, accepted)
}

// Fault 2: PostgreSQL becomes unreachable for a while: the syncer retries,
// reports itself not ready, writes no failed row, and catches up.
func TestDatabaseUnreachable(t *testing.T) {
	t.Parallel()
	sys, proxy, health := startBehindProxy(t, nil)

	first := workload(2, "pgcut-a", 10, 50)
	sys.sendAll(t, first, 2)
	sys.waitApplied(t, ids(first), 20*time.Second)

	proxy.Cut()
	during := workload(3, "pgcut-b", 10, 100)
	sys.sendAll(t, during, 2)
	require.Eventually(t, func() bool {
		resp, err := http.Get(health + "/readyz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusServiceUnavailable
	}, 10*time.Second, 50*time.Millisecond, "readiness reports the outage")
	// Not a failure of the events: the syncer pauses on the database with
	// them held, probing until it answers.
	waitPausedHolding(t, health, consumer.ReasonDatabase)
	require.Zero(t, sys.countLog(t, "failed"))

	proxy.Restore()
	sys.waitApplied(t, ids(during), 60*time.Second)
	servicetest.WaitReady(t, health, nil)
	require.Zero(t, sys.countLog(t, "failed"), "retries wrote no failed rows")
	require.Equal(t, len(first)+len(during), sys.countLog(t, "processed"))
	sys.requireMatchesModel(t, append(first, during...))
}

func hostOf(t *testing.T, dbURL string) string {
	t.Helper()
	u := strings.SplitN(strings.TrimPrefix(dbURL, "postgres://"), "/", 2)[0]
	if i := strings.LastIndex(u, "@"); i >= 0 {
		u = u[i+1:]
	}
	return u
}

// Fault 3: NATS restarts on the same store: the ingress answers 503 while
// it is down and 2xx after; the syncer reconnects; nothing accepted is lost.
func TestNATSRestart(t *testing.T) {
	t.Parallel()
	sys := start(t)
	ctx := context.Background()
	before := workload(4, "natsrs-a", 10, 50)
	accepted := sys.sendAll(t, before, 2)
	sys.waitApplied(t, ids(accepted), 20*time.Second)

	sys.nats.Stop()
	down := workload(5, "natsrs-b", 10, 30)
	for _, e := range down[:5] {
		resp, err := sys.client.SendEvent(ctx, e)
		require.NoError(t, err)
		require.Equal(t, http.StatusServiceUnavailable, resp.Status)
		require.NotEmpty(t, resp.Header.Get("Retry-After"))
	}
	sys.nats.Start()
	servicetest.WaitReady(t, sys.ingressOps, nil)
	// The portal retries what got 503, and sends more.
	accepted = append(accepted, sys.sendAll(t, down, 2)...)
	require.Len(t, accepted, len(before)+len(down))
	sys.waitApplied(t, ids(accepted), 60*time.Second)
	require.Equal(t, len(accepted), sys.countLog(t, "processed"))
	sys.requireMatchesModel(t, accepted)
}

// Fault 5: a poison message gets one failed row, lands in the dead-letter
// stream with its headers and error, and the consumer keeps going.
func TestPoisonMessageDeadLettered(t *testing.T) {
	t.Parallel()
	sys := start(t)
	ctx := context.Background()
	js := sys.jetStream(t)

	poison := nats.NewMsg(event.Subject("m-poison"))
	poison.Data = []byte(`{"id":"evt_poison","type":"membership-created","occurred_at":"not a time"}`)
	poison.Header.Set(jetstream.MsgIDHeader, "evt_poison")
	poison.Header.Set("Portal-Event-Type", "membership-created")
	poison.Header.Set("Portal-Member-Id", "m-poison")
	_, err := js.PublishMsg(ctx, poison)
	require.NoError(t, err)
	after := sys.event("membership-created", "m-after", "org-1", "peer_mentor", base)
	sys.send(t, after)
	require.Equal(t, "success", sys.waitLogged(t, after.ID))
	require.Equal(t, "failed", sys.waitLogged(t, "evt_poison"))
	require.Equal(t, 1, sys.countLog(t, "failed"))

	q, err := deadletter.Open(ctx, js, deadletter.Config{EventStream: testStream.Name})
	require.NoError(t, err)
	var entries []deadletter.Entry
	require.Eventually(t, func() bool {
		entries, err = q.List(ctx)
		return err == nil && len(entries) == 1
	}, 10*time.Second, 20*time.Millisecond)
	e := entries[0]
	require.Equal(t, "evt_poison", e.EventID)
	require.Equal(t, "membership-created", e.EventType)
	require.Equal(t, "m-poison", e.MemberID)
	require.Contains(t, e.Error, "occurred_at")
	require.Equal(t, 1, e.Deliveries)
	require.NotZero(t, e.StreamSeq)
}

// A permanent failure whose cause is then fixed: dead-lettered, redriven,
// applied, and the log ends with success.
func TestRedriveAfterFix(t *testing.T) {
	t.Parallel()
	sys := start(t)
	ctx := context.Background()
	// A constraint the syncer cannot satisfy: profiles from this member are
	// rejected until an operator drops the rule.
	sys.beforeProfileInsert(t, "reject_member", "m-blocked", rejectMember)

	blocked := sys.event("membership-created", "m-blocked", "org-1", "coordinator", base)
	sys.send(t, blocked)
	require.Equal(t, "failed", sys.waitLogged(t, blocked.ID))

	js := sys.jetStream(t)
	q, err := deadletter.Open(ctx, js, deadletter.Config{EventStream: testStream.Name})
	require.NoError(t, err)
	require.Eventually(t, func() bool {
		n, err := q.Count(ctx)
		return err == nil && n == 1
	}, 10*time.Second, 20*time.Millisecond)

	_, err = q.Redrive(ctx, deadletter.Filter{EventID: "other"})
	require.ErrorIs(t, err, deadletter.ErrNoneMatched)

	_, err = sys.pool.Exec(ctx, `DROP TRIGGER reject_member ON profiles`)
	require.NoError(t, err)
	n, err := q.Redrive(ctx, deadletter.Filter{EventID: blocked.ID})
	require.NoError(t, err)
	require.Equal(t, 1, n)
	require.Eventually(t, func() bool { return sys.waitLogged(t, blocked.ID) == "success" }, 20*time.Second, 20*time.Millisecond)
	left, err := q.Count(ctx)
	require.NoError(t, err)
	require.Zero(t, left)
	var role string
	require.NoError(t, sys.pool.QueryRow(ctx, `SELECT r.role FROM role_assignments r JOIN profiles p ON p.id = r.profile_id
		WHERE p.portal_member_id = 'm-blocked'`).Scan(&role))
	require.Equal(t, "coordinator", role)
}

func tail(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[len(s)-n:]
}

// SIGTERM while events are in flight: the syncer stops fetching, finishes
// and acknowledges what it applied, and exits in time. Its successor is
// never handed an event the first process had applied (it would log it as
// "already applied"); events still on the wire when it unsubscribed come
// back after AckWait and are applied once.
func TestSyncerGracefulStopAcksInFlight(t *testing.T) {
	t.Parallel()
	sys := start(t, withoutSyncer())
	events := workload(31, "term", 500, 6000)
	publishDirect(t, sys, events)
	first := sys.syncerProcess(t, sys.dbURL, func(c *consumer.Config) { c.BatchSize, c.Workers = 64, 2 })
	first.Start()
	require.Eventually(t, func() bool { return sys.countLog(t, "processed") > 300 }, 30*time.Second, 5*time.Millisecond)
	took, err := first.Stop()
	require.NoError(t, err, tail(first.output.String(), 2000))
	require.Less(t, took, 11*time.Second)
	applied := sys.countLog(t, "processed")
	require.Less(t, applied, len(events), "stopped while work remained")

	// Small batches for the successor too: with the default 1024 it pulls
	// thousands of events at once, and on a loaded machine those queued
	// longer than the harness's AckWait come back to it while it still
	// holds them, a redelivery of its own that would read as the first
	// process's.
	next := sys.syncerProcess(t, sys.dbURL, func(c *consumer.Config) { c.BatchSize = 64 }, "LOG_LEVEL=debug")
	next.Start()
	sys.waitApplied(t, ids(events), 60*time.Second)
	_, err = next.Stop()
	require.NoError(t, err)
	require.Zero(t, strings.Count(next.output.String(), `"msg":"already applied"`),
		"an event the first process applied was not acknowledged: %s", firstLines(next.output.String(), `"msg":"already applied"`, 3))
	require.Equal(t, len(events), sys.countLog(t, "processed"))
	var redelivered int
	require.NoError(t, sys.pool.QueryRow(context.Background(), `SELECT count(*) FROM portal_sync_log WHERE attempt > 1`).Scan(&redelivered))
	t.Logf("stopped after %d of %d events in %s; %d in-transit events redelivered, none applied twice", applied, len(events), took, redelivered)
}

// One bad event in a batch: the batch's transaction fails, its events are
// applied one by one, and only the bad one fails — the others succeed.
func TestBadEventDoesNotFailItsBatch(t *testing.T) {
	t.Parallel()
	sys := start(t, withoutSyncer())
	sys.beforeProfileInsert(t, "reject_member", "batch-m7", rejectMember)
	events := workload(41, "batch", 20, 400)
	var bad, good []event.Event
	for _, e := range events {
		if e.Member.ID == "batch-m7" {
			bad = append(bad, e)
		} else {
			good = append(good, e)
		}
	}
	require.NotEmpty(t, bad)
	// Everything waits in the stream first, so the syncer takes big batches.
	publishDirect(t, sys, events)
	sys.syncerURL = sys.startSyncer(t, sys.dbURL)

	sys.waitApplied(t, ids(good), 60*time.Second)
	require.Eventually(t, func() bool { return sys.countLog(t, "failed") == len(bad) }, 30*time.Second, 20*time.Millisecond)
	require.Equal(t, len(good), sys.countLog(t, "processed"))
	// The events went in batches: more events than transactions.
	metrics := scrape(t, sys.syncerURL)
	sum, err := strconv.ParseFloat(metricValue(t, metrics, "portalsync_syncer_batch_size_sum"), 64)
	require.NoError(t, err)
	count, err := strconv.ParseFloat(metricValue(t, metrics, "portalsync_syncer_batch_size_count"), 64)
	require.NoError(t, err)
	require.Greater(t, sum/count, 2.0, "mean batch size")
	t.Logf("%d good events applied, %d bad failed alone; mean batch %.1f", len(good), len(bad), sum/count)
	sys.requireMatchesModel(t, good)
}

// Work longer than AckWait (3 s in the harness) is kept alive with
// in-progress acknowledgements: applied once, on its first delivery.
func TestLongWorkIsNotRedelivered(t *testing.T) {
	t.Parallel()
	sys := start(t)
	ctx := context.Background()
	sys.beforeProfileInsert(t, "slow_member", "slow-m", "PERFORM pg_sleep(4)")
	e := sys.event("membership-created", "slow-m", "org-1", "peer_mentor", base)
	start := time.Now()
	sys.send(t, e)
	require.Eventually(t, func() bool { return sys.countLog(t, "processed") == 1 }, 30*time.Second, 20*time.Millisecond)
	require.Greater(t, time.Since(start), 4*time.Second)
	var attempt, rows int
	require.NoError(t, sys.pool.QueryRow(ctx, `SELECT max(attempt), count(*) FROM portal_sync_log WHERE event_id = $1`, e.ID).Scan(&attempt, &rows))
	require.Equal(t, 1, rows)
	require.Equal(t, 1, attempt, "not redelivered while in progress")
	require.Equal(t, "0", metricValue(t, scrape(t, sys.syncerURL), "portalsync_syncer_redeliveries_total"))
}

// firstLines returns the first n lines of out that contain what.
func firstLines(out, what string, n int) string {
	var picked []string
	for _, line := range strings.Split(out, "\n") {
		if strings.Contains(line, what) {
			picked = append(picked, line)
			if len(picked) == n {
				break
			}
		}
	}
	return strings.Join(picked, "\n")
}
