package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"github.com/likeperson/portalsync/ingress/server"
	"github.com/likeperson/portalsync/pkg/event"
	"github.com/likeperson/portalsync/pkg/portalclient"
	"github.com/likeperson/portalsync/pkg/signature"
	"github.com/likeperson/portalsync/syncer/consumer"
	"github.com/likeperson/portalsync/syncer/deadletter"
	"github.com/likeperson/portalsync/syncer/service"
	"github.com/likeperson/portalsync/testkit/natstest"
	"github.com/likeperson/portalsync/testkit/schematest"
	"github.com/likeperson/portalsync/testkit/servicetest"
)

// outageLength is how long the outages of these tests last: longer than the
// whole retry budget (SYNCER_MAX_DELIVER=3 with a 100 ms backoff spends it
// in well under a second) and than AckWait many times over.
const outageLength = 30 * time.Second

// tightBudget is the setting: three deliveries, 100 ms apart.
func tightBudget(c *service.Config) {
	c.Consumer.MaxDeliver = 3
	c.Consumer.BackOff = []time.Duration{100 * time.Millisecond}
	c.Consumer.ProbeMax = 500 * time.Millisecond
}

// readyStatus returns the status code and body of base/readyz.
func readyStatus(base string) (int, string) {
	resp, err := http.Get(base + "/readyz")
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	var b strings.Builder
	buf := make([]byte, 4096)
	n, _ := resp.Body.Read(buf)
	b.Write(buf[:n])
	return resp.StatusCode, b.String()
}

// syncerStatus reads the syncer's /status.
func syncerStatus(t *testing.T, base string) service.Status {
	t.Helper()
	resp, err := http.Get(base + "/status")
	require.NoError(t, err)
	defer resp.Body.Close()
	var st service.Status
	require.NoError(t, json.NewDecoder(resp.Body).Decode(&st))
	return st
}

// waitPausedHolding waits until the syncer at health reports a pause for
// reason with events held: it has tried them, found the dependency gone
// and keeps them alive instead of spending their deliveries.
func waitPausedHolding(t *testing.T, health, reason string) {
	t.Helper()
	require.Eventually(t, func() bool {
		st := syncerStatus(t, health)
		return st.Consumer.Paused == reason && st.Consumer.Held > 0
	}, 20*time.Second, 20*time.Millisecond, "the syncer pauses (%s) and holds events", reason)
}

// holds checks, about four times a second until deadline, that check
// finds nothing wrong. It is for a test that lets time pass on purpose (an
// outage of a set length): the claim is checked all along, and the test
// fails at the moment it breaks, not when the time is up.
func holds(t *testing.T, deadline time.Time, check func() error) {
	t.Helper()
	for {
		if err := check(); err != nil {
			t.Fatalf("%s before the end of the outage: %v", time.Until(deadline).Round(time.Millisecond), err)
		}
		left := time.Until(deadline)
		if left <= 0 {
			return
		}
		time.Sleep(min(left, 250*time.Millisecond)) // time passing is the point
	}
}

// requireNothingLost checks that every event has exactly one success row (or skipped, when newer data superseded it),
// none failed, none dead-lettered, and the database equals the model.
func (s *system) requireNothingLost(t *testing.T, events []event.Event) {
	t.Helper()
	s.waitApplied(t, ids(events), 90*time.Second)
	require.Equal(t, len(events), s.countLog(t, "processed"), "one success (or superseded: skipped) row per event")
	require.Zero(t, s.countLog(t, "failed"), "no failed rows")
	n, err := deadletter.New(s.jetStream(t), deadletter.Config{EventStream: s.stream.Name}).Count(context.Background())
	require.NoError(t, err)
	require.Zero(t, n, "nothing dead-lettered")
	s.requireMatchesModel(t, events)
}

// A 30-second PostgreSQL outage with SYNCER_MAX_DELIVER=3 and a 100 ms
// backoff: the syncer pauses (not ready, "paused: database unavailable" in
// /status and the metrics, the held events kept alive), and after the
// outage applies every event once; nothing is dead-lettered or failed.
func TestDatabaseOutageSpendsNoDeliveries(t *testing.T) {
	t.Parallel()
	sys, proxy, health := startBehindProxy(t, tightBudget)

	first := workload(21, "pgout-a", 10, 50)
	sys.sendAll(t, first, 2)
	sys.waitApplied(t, ids(first), 20*time.Second)

	proxy.Cut()
	began := time.Now()
	during := workload(22, "pgout-b", 20, 200)
	accepted := sys.sendAll(t, during, 4)
	require.Len(t, accepted, len(during), "the ingress accepts while the database is down")
	waitPausedHolding(t, health, consumer.ReasonDatabase)
	code, body := readyStatus(health)
	require.Equal(t, http.StatusServiceUnavailable, code)
	require.Contains(t, body, "paused: database unavailable since")
	metrics := scrape(t, health)
	require.Equal(t, "1", metricValue(t, metrics, `portalsync_syncer_paused{reason="database unavailable"}`))
	require.NotEqual(t, "0", metricValue(t, metrics, "portalsync_syncer_held_events"))

	// The outage itself: the syncer stays paused with its events held,
	// applies nothing and dead-letters nothing until the database is back.
	dlq := deadletter.New(sys.jetStream(t), deadletter.Config{EventStream: sys.stream.Name})
	holds(t, began.Add(outageLength), func() error {
		if st := syncerStatus(t, health).Consumer; st.Paused != consumer.ReasonDatabase || st.Held == 0 {
			return fmt.Errorf("no longer paused on the database holding events: %+v", st)
		}
		if n := sys.countLog(t, "processed") - len(first); n != 0 {
			return fmt.Errorf("%d events applied while the database is down", n)
		}
		if n, err := dlq.Count(context.Background()); err != nil || n != 0 {
			return fmt.Errorf("dead letters: %d (%v)", n, err)
		}
		return nil
	})
	proxy.Restore()

	sys.requireNothingLost(t, append(first, during...))
	servicetest.WaitReady(t, health, nil)
	require.Equal(t, "0", metricValue(t, scrape(t, health), `portalsync_syncer_paused{reason="database unavailable"}`))
	var spent int
	require.NoError(t, sys.pool.QueryRow(context.Background(), `SELECT coalesce(max(attempt), 0) FROM portal_sync_log`).Scan(&spent))
	require.Less(t, spent, 3, "the outage spent no event's delivery budget")
}

// A 30-second NATS outage with events held by the syncer: the syncer and
// the ingress report not ready, and afterwards every event is applied
// once, nothing dead-lettered; events sent after the outage flow too.
func TestNATSOutageSpendsNoDeliveries(t *testing.T) {
	t.Parallel()
	sys, proxy, health := startBehindProxy(t, tightBudget)

	// Events held by the syncer when NATS goes: the database is cut first
	// so that they are fetched and not yet acknowledged.
	proxy.Cut()
	before := workload(23, "natsout-a", 20, 150)
	accepted := sys.sendAll(t, before, 4)
	require.Len(t, accepted, len(before))
	// Paused, it pulls no more: what it fetched before is held, the rest
	// waits in the stream.
	waitPausedHolding(t, health, consumer.ReasonDatabase)

	sys.nats.Stop()
	began := time.Now()
	proxy.Restore() // applied now; their acknowledgements cannot reach the server
	require.Eventually(t, func() bool { return syncerStatus(t, health).Consumer.Paused == consumer.ReasonNATS },
		20*time.Second, 20*time.Millisecond, "the syncer pauses for NATS")
	code, _ := readyStatus(health)
	require.Equal(t, http.StatusServiceUnavailable, code)
	code, body := readyStatus(sys.ingressOps)
	require.Equal(t, http.StatusServiceUnavailable, code, body)
	// A publish during the outage may yet be stored (the client buffers it
	// until it reconnects): the portal sends it again after the 503.
	x := workload(24, "natsout-x", 1, 1)[0]
	resp, err := sys.client.SendEvent(context.Background(), x)
	require.NoError(t, err)
	require.Equal(t, http.StatusServiceUnavailable, resp.Status)
	require.Contains(t, string(resp.Body), "may not have been stored")

	// The outage itself: both services stay not ready, the syncer paused
	// for NATS, until the server is back.
	holds(t, began.Add(outageLength), func() error {
		if st := syncerStatus(t, health).Consumer; st.Paused != consumer.ReasonNATS {
			return fmt.Errorf("the syncer is no longer paused for NATS: %+v", st)
		}
		if code, body := readyStatus(sys.ingressOps); code != http.StatusServiceUnavailable {
			return fmt.Errorf("the ingress is ready without NATS: %d %s", code, body)
		}
		return nil
	})
	sys.nats.Start()
	servicetest.WaitReady(t, sys.ingressOps, nil)
	after := append(workload(25, "natsout-b", 20, 100), x)
	require.Len(t, sys.sendAll(t, after, 4), len(after))
	servicetest.WaitReady(t, health, nil)
	sys.requireNothingLost(t, append(before, after...))
}

// The durable consumer removed while events flow: the syncer notices,
// recreates it with the same configuration and goes on; every event is
// applied once.
func TestConsumerDeletedMidFlow(t *testing.T) {
	t.Parallel()
	sys := start(t, withoutSyncer())
	health := sys.runSyncer(t, sys.dbURL, tightBudget)
	servicetest.WaitReady(t, health, nil)
	js := sys.jetStream(t)
	ctx := context.Background()

	first := workload(26, "cdel-a", 20, 200)
	sent := make(chan []event.Event, 1)
	go func() { sent <- sys.sendAll(t, first, 2) }()
	require.Eventually(t, func() bool { return sys.countLog(t, "processed") >= 20 }, 20*time.Second, 10*time.Millisecond)
	require.NoError(t, js.DeleteConsumer(ctx, sys.stream.Name, consumer.DefaultDurable))
	accepted := <-sent
	second := workload(27, "cdel-b", 20, 200)
	accepted = append(accepted, sys.sendAll(t, second, 2)...)
	require.Len(t, accepted, len(first)+len(second))

	sys.requireNothingLost(t, accepted)
	require.Equal(t, "1", metricValue(t, scrape(t, health), "portalsync_syncer_consumer_recreated_total"))
	cons, err := js.Consumer(ctx, sys.stream.Name, consumer.DefaultDurable)
	require.NoError(t, err, "recreated")
	info, err := cons.Info(ctx)
	require.NoError(t, err)
	require.Equal(t, jetstream.AckExplicitPolicy, info.Config.AckPolicy)
	require.Equal(t, harnessConsumer().AckWait, info.Config.AckWait, "same configuration")
}

// The syncer and the ingress started while PostgreSQL and NATS are both
// down: they serve readiness (503) meanwhile, and come up by themselves,
// the syncer when both dependencies are back, the ingress when NATS is.
func TestStartWhileDependenciesDown(t *testing.T) {
	t.Parallel()
	db := schematest.NewDB(t)
	sys := &system{pool: db.Pool, dbURL: db.URL, stream: testStream, pii: map[string]bool{}}
	proxy := newTCPProxy(t, hostOf(t, db.URL))
	proxy.Cut()
	sys.nats = natstest.New(t) // not started
	sys.natsURL = sys.nats.URL()

	health := sys.runSyncer(t, viaProxy(t, db.URL, proxy), tightBudget)
	secret, err := signature.NewSecret([]byte("portalsync-e2e-test-secret-32by!"))
	require.NoError(t, err)
	ingressLn, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	opsLn, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	runUntilCleanup(t, "the ingress", cancel, func() error {
		return server.Run(ctx, server.Config{Listener: ingressLn, OpsListener: opsLn, DrainGrace: 50 * time.Millisecond, NATSURL: sys.natsURL, Secrets: []signature.Secret{secret},
			Stream: sys.stream, PublishTimeout: time.Second, RetryAfter: time.Second}, sys.logger(t, "ingress"))
	})
	sys.ingressURL = "http://" + ingressLn.Addr().String()
	sys.ingressOps = "http://" + opsLn.Addr().String()
	sys.client = &portalclient.Client{URL: sys.ingressURL + server.WebhookPath, Signer: signature.NewSigner(secret),
		HTTP: &http.Client{Timeout: 10 * time.Second}}

	require.Eventually(t, func() bool {
		code, body := readyStatus(health)
		return code == http.StatusServiceUnavailable && strings.Contains(body, "waiting for the database")
	}, 20*time.Second, 20*time.Millisecond, "the syncer serves readiness while the database is down")
	require.Eventually(t, func() bool {
		code, body := readyStatus(sys.ingressOps)
		return code == http.StatusServiceUnavailable && strings.Contains(body, "NATS")
	}, 20*time.Second, 20*time.Millisecond, "the ingress serves readiness while NATS is down")
	e := workload(28, "down", 5, 1)[0]
	resp, err := sys.client.SendEvent(context.Background(), e)
	require.NoError(t, err)
	require.Equal(t, http.StatusServiceUnavailable, resp.Status)

	proxy.Restore()
	require.Eventually(t, func() bool {
		_, body := readyStatus(health)
		return strings.Contains(body, "waiting for NATS")
	}, 20*time.Second, 20*time.Millisecond, "the syncer found the database and waits for NATS")

	sys.nats.Start()
	servicetest.WaitReady(t, sys.ingressOps, nil)
	servicetest.WaitReady(t, health, nil)
	events := append(workload(29, "up", 10, 60), e) // e is sent again, as the portal does after a 503
	require.Len(t, sys.sendAll(t, events, 2), len(events))
	sys.requireNothingLost(t, events)
}

// A 6-second transaction with AckWait 2 s and one worker, so that every
// other event queues behind it: all are kept alive, nothing is redelivered.
func TestSlowTransactionCausesNoRedelivery(t *testing.T) {
	t.Parallel()
	sys := start(t, withoutSyncer())
	ctx := context.Background()
	sys.beforeProfileInsert(t, "slow_member", "slow-m", "PERFORM pg_sleep(6)")
	health := sys.runSyncer(t, sys.dbURL, func(c *service.Config) {
		c.Consumer.Workers = 1
		c.Consumer.AckWait = 2 * time.Second
		c.Consumer.BatchSize = 16
	})
	servicetest.WaitReady(t, health, nil)

	slow := workload(30, "slow", 1, 1)
	slow[0].Member.ID = "slow-m"
	start := time.Now()
	require.Len(t, sys.sendAll(t, slow, 1), 1)
	require.Eventually(t, func() bool { return syncerStatus(t, health).Consumer.Held == 1 }, 10*time.Second, 5*time.Millisecond)
	queued := workload(31, "queued", 30, 300)
	require.Len(t, sys.sendAll(t, queued, 4), len(queued))
	all := append(slow, queued...)
	sys.requireNothingLost(t, all)
	require.Greater(t, time.Since(start), 6*time.Second)

	var redelivered int
	require.NoError(t, sys.pool.QueryRow(ctx, `SELECT count(*) FROM portal_sync_log WHERE attempt > 1`).Scan(&redelivered))
	require.Zero(t, redelivered, "no event applied on a redelivery")
	require.Equal(t, "0", metricValue(t, scrape(t, health), "portalsync_syncer_redeliveries_total"))
	cons, err := sys.jetStream(t).Consumer(ctx, sys.stream.Name, consumer.DefaultDurable)
	require.NoError(t, err)
	info, err := cons.Info(ctx)
	require.NoError(t, err)
	require.Zero(t, info.NumRedelivered, "the server redelivered nothing")
}
