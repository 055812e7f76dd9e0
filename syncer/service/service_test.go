package service

import (
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"
	"go.uber.org/zap/zaptest"

	"github.com/likeperson/portalsync/pkg/event"
	"github.com/likeperson/portalsync/pkg/stream"
	"github.com/likeperson/portalsync/syncer/consumer"
	"github.com/likeperson/portalsync/testkit/natstest"
	"github.com/likeperson/portalsync/testkit/pgtest"
	"github.com/likeperson/portalsync/testkit/schematest"
	"github.com/likeperson/portalsync/testkit/servicetest"
)

func readyz(t *testing.T, base string) (int, string, error) {
	t.Helper()
	r, err := http.Get(base + "/readyz")
	if err != nil {
		return 0, "", err
	}
	defer r.Body.Close()
	b, err := io.ReadAll(r.Body)
	return r.StatusCode, string(b), err
}

// running is a syncer that startRun runs in the background.
type running struct {
	base   string             // its health server, http://host:port
	cancel context.CancelFunc // ends Run's context
	done   chan error
	exited chan struct{} // closed when Run has returned
}

// startRun runs the syncer with cfg on a fresh loopback listener and the
// event stream "EVENTS" until the test calls cancel (or ends: a test that
// stops early still waits for Run to return before its database and NATS
// server are closed).
func startRun(t *testing.T, cfg Config) *running {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	cfg.HTTPListener = ln
	cfg.Stream = stream.Config{Name: "EVENTS"}
	ctx, cancel := context.WithCancel(context.Background())
	r := &running{base: "http://" + ln.Addr().String(), cancel: cancel, done: make(chan error, 1), exited: make(chan struct{})}
	t.Cleanup(func() {
		cancel()
		select {
		case <-r.exited:
		case <-time.After(20 * time.Second):
			t.Error("Run did not return")
		}
	})
	go func() {
		defer close(r.exited)
		r.done <- Run(ctx, cfg, zaptest.NewLogger(t))
	}()
	return r
}

// wait waits until Run has returned, and fails the test if it returned an
// error or took longer than 20 s.
func (r *running) wait(t *testing.T) {
	t.Helper()
	select {
	case err := <-r.done:
		require.NoError(t, err)
	case <-time.After(20 * time.Second):
		t.Fatal("Run did not return")
	}
}

// lockProfiles locks the profiles table in a transaction, so that an
// event's transaction waits for it; rolling tx back releases it, as the
// test's end does.
func lockProfiles(t *testing.T, db *pgtest.DB) pgx.Tx {
	t.Helper()
	tx, err := db.Pool.Begin(context.Background())
	require.NoError(t, err)
	t.Cleanup(func() { _ = tx.Rollback(context.Background()) })
	_, err = tx.Exec(context.Background(), "LOCK TABLE profiles IN ACCESS EXCLUSIVE MODE")
	require.NoError(t, err)
	return tx
}

// publishMembership publishes the event id (member m1 becomes a peer
// mentor of o1) to ns's stream "EVENTS" as the ingress would, with the
// member header, and returns it as the stream stored it.
func publishMembership(t *testing.T, ns *natstest.Server, id string) *jetstream.RawStreamMsg {
	t.Helper()
	ctx := context.Background()
	js := ns.JetStream(t)
	ev := event.Event{ID: id, Type: event.MembershipCreated, OccurredAt: time.Date(2026, 11, 25, 10, 0, 0, 0, time.UTC),
		Organization: event.Organization{ID: "o1"}, Member: event.Member{ID: "m1"}, Role: event.RolePeerMentor}
	body, err := json.Marshal(ev)
	require.NoError(t, err)
	msg := nats.NewMsg(event.Subject(ev.Member.ID))
	msg.Data = body
	msg.Header.Set(stream.HeaderMemberID, ev.Member.ID)
	ack, err := js.PublishMsg(ctx, msg)
	require.NoError(t, err)
	s, err := js.Stream(ctx, "EVENTS")
	require.NoError(t, err)
	stored, err := s.GetMsg(ctx, ack.Sequence)
	require.NoError(t, err)
	return stored
}

// TestNotReadyOnceStopping: the health server's /readyz answers 503
// "shutting down" as soon as the run context ends, whatever the checks say.
func TestNotReadyOnceStopping(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	runCtx, stop := context.WithCancel(context.Background())
	ready := notWhenStopping(runCtx, func(context.Context) error { return nil })
	srv, ln, err := healthServer(Config{HTTPListener: ln}, ready, func() Status { return Status{} }, http.NotFoundHandler())
	require.NoError(t, err)
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
	base := "http://" + ln.Addr().String()

	code, _, err := readyz(t, base)
	require.NoError(t, err)
	require.Equal(t, http.StatusOK, code)
	stop()
	code, body, err := readyz(t, base)
	require.NoError(t, err)
	require.Equal(t, http.StatusServiceUnavailable, code)
	require.Contains(t, body, "shutting down")
}

// TestRunNotReadyAfterSIGTERM runs the syncer against a real database and
// NATS with one event held (its transaction waits on a table lock the test
// holds), ends its context and probes /readyz while the syncer finishes
// the held event: 503 "shutting down". Before, readiness followed the
// consumer, which says it consumes until its held events are settled (200
// here).
func TestRunNotReadyAfterSIGTERM(t *testing.T) {
	t.Parallel()
	db := schematest.NewDB(t)
	ns := natstest.Run(t)
	svc := startRun(t, Config{DatabaseURL: db.URL, NATSURL: ns.URL(),
		Consumer: consumer.Config{ShutdownTimeout: 10 * time.Second}})
	base := svc.base
	servicetest.WaitReady(t, base, nil)

	// Hold the event: its transaction waits for the lock.
	tx := lockProfiles(t, db)
	publishMembership(t, ns, "e-held")
	require.Eventually(t, func() bool {
		r, err := http.Get(base + "/status")
		if err != nil {
			return false
		}
		defer r.Body.Close()
		var st Status
		return json.NewDecoder(r.Body).Decode(&st) == nil && st.Consumer.Held == 1
	}, 10*time.Second, 10*time.Millisecond, "the event is held")

	svc.cancel()
	code, body, err := readyz(t, base)
	require.NoError(t, err, "the health server answers while the held event finishes")
	require.Equal(t, http.StatusServiceUnavailable, code, body)
	require.Contains(t, body, "shutting down")

	require.NoError(t, tx.Rollback(context.Background()))
	svc.wait(t)
}

// TestRunReportsSyncHealth: the syncer writes its row of sync_health
// (running), reports catching_up with the oldest unapplied event's arrival
// once that event has waited longer than CatchingUpAfter (its transaction
// waits on a table lock the test holds; the age metric says the same),
// running again once it is applied, and removes the row when it stops.
func TestRunReportsSyncHealth(t *testing.T) {
	t.Parallel()
	db := schematest.NewDB(t)
	ns := natstest.Run(t)
	svc := startRun(t, Config{DatabaseURL: db.URL, NATSURL: ns.URL(),
		BacklogInterval: 50 * time.Millisecond, CatchingUpAfter: 500 * time.Millisecond,
		HealthProcess: "syncer:test:1", HealthTick: 20 * time.Millisecond})
	base := svc.base
	servicetest.WaitReady(t, base, nil)
	type row struct {
		state  string
		oldest *time.Time
		reason *string
	}
	read := func() (row, bool) {
		var r row
		err := db.Pool.QueryRow(context.Background(), `SELECT state, oldest_unapplied_at, reason FROM portalsync.sync_health
			WHERE process = 'syncer:test:1' AND kind = 'syncer' AND reported_at > now() - interval '1 minute'`).Scan(&r.state, &r.oldest, &r.reason)
		return r, err == nil
	}
	require.Eventually(t, func() bool { r, ok := read(); return ok && r.state == "running" }, 10*time.Second, 10*time.Millisecond)

	tx := lockProfiles(t, db)
	stored := publishMembership(t, ns, "e-late")

	var r row
	require.Eventually(t, func() bool { var ok bool; r, ok = read(); return ok && r.state == "catching_up" }, 10*time.Second, 10*time.Millisecond)
	require.NotNil(t, r.oldest)
	require.WithinDuration(t, stored.Time, *r.oldest, time.Millisecond, "the event's arrival: its stored time")
	require.Nil(t, r.reason)
	age := metric(t, base, "portalsync_syncer_oldest_unapplied_seconds")
	require.Greater(t, age, 0.5)
	require.LessOrEqual(t, age, time.Since(stored.Time).Seconds())

	require.NoError(t, tx.Rollback(context.Background()))
	require.Eventually(t, func() bool { var ok bool; r, ok = read(); return ok && r.state == "running" }, 10*time.Second, 10*time.Millisecond)
	require.Nil(t, r.oldest)
	require.Eventually(t, func() bool { return metric(t, base, "portalsync_syncer_oldest_unapplied_seconds") == 0 },
		10*time.Second, 10*time.Millisecond)

	svc.cancel()
	svc.wait(t)
	var n int
	require.NoError(t, db.Pool.QueryRow(context.Background(), `SELECT count(*) FROM portalsync.sync_health`).Scan(&n))
	require.Zero(t, n, "a clean stop removes the row")
}

// metric returns the value of an unlabelled metric at base/metrics.
func metric(t *testing.T, base, name string) float64 {
	t.Helper()
	r, err := http.Get(base + "/metrics")
	require.NoError(t, err)
	defer r.Body.Close()
	b, err := io.ReadAll(r.Body)
	require.NoError(t, err)
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, name+" "); ok {
			f, err := strconv.ParseFloat(v, 64)
			require.NoError(t, err)
			return f
		}
	}
	t.Fatalf("no %s", name)
	return 0
}

// TestRunReportsWaitingForNATS: a syncer started while NATS is down
// reports paused, "NATS unavailable", in sync_health (the database
// answers), and running once NATS is up.
func TestRunReportsWaitingForNATS(t *testing.T) {
	t.Parallel()
	db := schematest.NewDB(t)
	ns := natstest.New(t)
	svc := startRun(t, Config{DatabaseURL: db.URL, NATSURL: ns.URL(),
		HealthProcess: "syncer:test:2", HealthTick: 20 * time.Millisecond})
	state := func() (string, string) {
		var s string
		var reason *string
		err := db.Pool.QueryRow(context.Background(), `SELECT state, reason FROM portalsync.sync_health WHERE process = 'syncer:test:2'`).Scan(&s, &reason)
		if err != nil || reason == nil {
			return s, ""
		}
		return s, *reason
	}
	require.Eventually(t, func() bool { s, r := state(); return s == "paused" && r == consumer.ReasonNATS },
		20*time.Second, 20*time.Millisecond)
	ns.Start()
	servicetest.WaitReady(t, svc.base, nil)
	require.Eventually(t, func() bool { s, _ := state(); return s == "running" }, 10*time.Second, 20*time.Millisecond)
	svc.cancel()
	svc.wait(t)
}
