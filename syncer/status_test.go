package main

import (
	"bytes"
	"context"
	"encoding/json"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"regexp"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"github.com/likeperson/portalsync/pkg/command"
	"github.com/likeperson/portalsync/syncer/consumer"
	"github.com/likeperson/portalsync/syncer/service"
	"github.com/likeperson/portalsync/testkit/natstest"
	"github.com/likeperson/portalsync/testkit/schematest"
)

// exitCode is the exit status `syncer` would end with after err.
func exitCode(t *testing.T, err error) int {
	t.Helper()
	if err == nil {
		return 0
	}
	var code command.ExitCode
	require.ErrorAs(t, err, &code, "an error that is not an exit status: %v", err)
	return int(code)
}

// fakeSyncer answers GET /status as a running syncer would.
func fakeSyncer(t *testing.T, st service.Status) string {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/status" {
			http.NotFound(w, r)
			return
		}
		_ = json.NewEncoder(w).Encode(st)
	}))
	t.Cleanup(srv.Close)
	return srv.URL
}

// closedPort returns an address that refuses connections for the whole
// test: a socket is bound to the port but never listens. A port closed
// right after listening could be handed to another test's server (an
// embedded NATS) before this test dials it.
func closedPort(t *testing.T) string {
	t.Helper()
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM, 0)
	require.NoError(t, err)
	t.Cleanup(func() { _ = syscall.Close(fd) })
	require.NoError(t, syscall.Bind(fd, &syscall.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}))
	sa, err := syscall.Getsockname(fd)
	require.NoError(t, err)
	return net.JoinHostPort("127.0.0.1", strconv.Itoa(sa.(*syscall.SockaddrInet4).Port))
}

// `syncer status` counts an event that failed and later succeeded as
// failed no more, and shows what the running syncer reports: paused, since
// when, how many events held. Paused, a failed event and a stream not
// created yet are "degraded": exit status 2.
func TestStatusFailedThenSucceededAndPaused(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := schematest.NewDB(t)
	ns := natstest.Run(t)
	_, err := db.Pool.Exec(ctx, `
		INSERT INTO portal_sync_log (event_id, event_type, status, detail, stream_seq, attempt)
		VALUES ('e-fixed', 'membership-created', 'failed', 'x', 1, 1),
		       ('e-fixed', 'membership-created', 'success', '', 2, 1),
		       ('e-still', 'membership-created', 'failed', 'x', 3, 1)`)
	require.NoError(t, err)

	since := time.Date(2026, 11, 27, 1, 0, 0, 0, time.UTC)
	syncerURL := fakeSyncer(t, service.Status{Consumer: consumer.State{
		Paused: consumer.ReasonDatabase, PausedSince: since, Held: 37,
	}})

	args := []string{"status", "--database-url", db.URL, "--nats-url", ns.URL(), "--stream-name", "EVENTS", "--syncer-url", syncerURL}
	var out, errOut bytes.Buffer
	require.Equal(t, 2, exitCode(t, run(ctx, args, &out, &errOut)), errOut.String())
	require.Regexp(t, `health +degraded: syncer degraded, nats degraded, database degraded \(exit 2\)`, out.String())
	require.Contains(t, out.String(), "paused: database unavailable since 2026-11-27T01:00:00Z")
	require.Contains(t, out.String(), "37 events held")
	require.Regexp(t, `failed \(24 h\) +1\n`, out.String())
	// The stream does not exist: status says so and still prints the rest.
	require.Regexp(t, `stream +not created yet`, out.String())
	require.NotContains(t, out.String(), "unreachable")

	out.Reset()
	require.Equal(t, 2, exitCode(t, run(ctx, append(args, "--json"), &out, &errOut)))
	var st status
	require.NoError(t, json.Unmarshal(out.Bytes(), &st))
	require.Equal(t, degraded, st.Health)
	require.Equal(t, 2, st.ExitCode)
	require.Equal(t, 1, *st.Database.FailedLast24h)
	require.Equal(t, degraded, st.Database.Health)
	require.Equal(t, degraded, st.Syncer.Health)
	require.Equal(t, 37, st.Syncer.Status.Consumer.Held)
	require.Nil(t, st.NATS.Stream)
}

// silentPort returns an address that accepts connections and never says
// anything: a server that hangs.
func silentPort(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	var conns []net.Conn
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			conns = append(conns, c)
		}
	}()
	t.Cleanup(func() {
		_ = ln.Close()
		<-done
		for _, c := range conns {
			_ = c.Close()
		}
	})
	return ln.Addr().String()
}

// With every part hanging, status waits --timeout for them together, not
// once for each: the parts are read at the same time.
func TestStatusReadsThePartsAtOnce(t *testing.T) {
	t.Parallel()
	const timeout = 2 * time.Second
	args := []string{"status", "--timeout", timeout.String(), "--database-url", "postgres://postgres@" + silentPort(t) + "/portalsync?sslmode=disable",
		"--nats-url", "nats://" + silentPort(t), "--syncer-url", "http://" + silentPort(t)}
	var out, errOut bytes.Buffer
	start := time.Now()
	require.Equal(t, 3, exitCode(t, run(context.Background(), args, &out, &errOut)), errOut.String())
	took := time.Since(start)
	require.GreaterOrEqual(t, took, timeout, "each part was waited for")
	require.Less(t, took, 2*timeout, "the parts were waited for together:\n%s", out.String())
	require.Regexp(t, `health +unreachable: syncer unreachable, nats unreachable, database unreachable \(exit 3\)`, out.String())
}

// With the stack stopped (nothing listens at the database, NATS and syncer
// addresses), every part is "unreachable", no value is shown as a zero, and
// the exit status is 3.
func TestStatusStoppedStackIsUnreachable(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	args := []string{"status", "--database-url", "postgres://postgres@" + closedPort(t) + "/portalsync?sslmode=disable",
		"--nats-url", "nats://" + closedPort(t), "--syncer-url", "http://" + closedPort(t)}
	var out, errOut bytes.Buffer
	start := time.Now()
	require.Equal(t, 3, exitCode(t, run(ctx, args, &out, &errOut)), errOut.String())
	require.Less(t, time.Since(start), 10*time.Second, "a refused connection is not waited out")
	text := out.String()
	for _, line := range []string{
		`health +unreachable: syncer unreachable, nats unreachable, database unreachable \(exit 3\)`,
		`syncer +unreachable at http://`,
		`nats +unreachable: `,
		`stream +unknown: nats unreachable`,
		`consumer +unknown: nats unreachable`,
		`dead letters +unknown: nats unreachable`,
		`database +unreachable: `,
		`last applied +unknown: database unreachable`,
		`failed \(24 h\) +unknown: database unreachable`,
	} {
		require.Regexp(t, line, text)
	}
	require.NotRegexp(t, `\b0 events|dead letters +0|not created yet|nothing yet`, text, "nothing unknown is shown as zero or absent")

	out.Reset()
	require.Equal(t, 3, exitCode(t, run(ctx, append(args, "--json"), &out, &errOut)))
	var raw map[string]map[string]any
	var top struct {
		Health   string `json:"health"`
		ExitCode int    `json:"exit_code"`
	}
	require.NoError(t, json.Unmarshal(out.Bytes(), &top))
	require.Equal(t, "unreachable", top.Health)
	require.Equal(t, 3, top.ExitCode)
	var parts struct {
		Syncer, NATS, Database map[string]any
	}
	require.NoError(t, json.Unmarshal(out.Bytes(), &parts))
	raw = map[string]map[string]any{"syncer": parts.Syncer, "nats": parts.NATS, "database": parts.Database}
	for name, p := range raw {
		require.Equal(t, "unreachable", p["health"], name)
		require.NotEmpty(t, p["reasons"], name)
	}
	for _, k := range []string{"stream", "consumer", "dead_letters"} {
		require.Contains(t, parts.NATS, k)
		require.Nil(t, parts.NATS[k], "nats %s is unknown: null, not zero", k)
	}
	for _, k := range []string{"last_applied", "failed_last_24h"} {
		require.Contains(t, parts.Database, k)
		require.Nil(t, parts.Database[k], "database %s is unknown: null, not zero", k)
	}
	require.Nil(t, parts.Syncer["status"])
}

// A consuming syncer, a stream with its durable consumer, no dead letter
// and no failed event: "healthy", exit status 0.
func TestStatusHealthy(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	b := setupCLI(t)
	_, err := b.js.CreateOrUpdateConsumer(ctx, "EVENTS", jetstream.ConsumerConfig{Durable: "portalsync-syncer", AckPolicy: jetstream.AckExplicitPolicy})
	require.NoError(t, err)
	_, err = b.db.Pool.Exec(ctx, `
		INSERT INTO portal_sync_log (event_id, event_type, status, detail, stream_seq, attempt)
		VALUES ('e1', 'membership-created', 'success', '', 1, 1)`)
	require.NoError(t, err)
	args := append([]string{"status", "--syncer-url", fakeSyncer(t, service.Status{Consumer: consumer.State{Consuming: true, Held: 2}})}, b.common...)

	var out, errOut bytes.Buffer
	require.NoError(t, run(ctx, args, &out, &errOut), errOut.String())
	for _, line := range []string{
		`health +healthy \(exit 0\)`,
		`syncer +healthy: consuming, 2 events held`,
		`nats +healthy\n`,
		`stream +EVENTS: 0 events \(seq 0..0\)`,
		`consumer +portalsync-syncer: pending 0`,
		`dead letters +0\n`,
		`database +healthy\n`,
		`last applied +stream seq 1 at `,
		`failed \(24 h\) +0\n`,
	} {
		require.Regexp(t, line, out.String())
	}

	out.Reset()
	require.NoError(t, run(ctx, append(args, "--json"), &out, &errOut))
	var st status
	require.NoError(t, json.Unmarshal(out.Bytes(), &st))
	require.Equal(t, healthy, st.Health)
	require.Equal(t, 0, st.ExitCode)
	for _, p := range st.parts() {
		require.Equal(t, healthy, p.part.Health, p.name)
		require.Empty(t, p.part.Reasons, p.name)
	}
	require.EqualValues(t, 0, *st.NATS.DeadLetters)
	require.Equal(t, "portalsync-syncer", st.NATS.Consumer.Name)
	require.EqualValues(t, 1, st.Database.LastApplied.StreamSeq)

	// A dead letter degrades NATS: exit status 2.
	_, err = b.js.CreateStream(ctx, jetstream.StreamConfig{Name: "PORTAL_DEADLETTER", Subjects: []string{"dlq.test"}})
	require.NoError(t, err)
	_, err = b.js.Publish(ctx, "dlq.test", []byte("{}"))
	require.NoError(t, err)
	out.Reset()
	require.Equal(t, 2, exitCode(t, run(ctx, args, &out, &errOut)))
	require.Regexp(t, `nats +degraded: 1 dead letter\(s\)`, out.String())
	require.Regexp(t, `health +degraded: nats degraded \(exit 2\)`, out.String())
}

// The exit statuses are the ones docs/OPERATIONS.md documents.
func TestStatusExitCodesDocumented(t *testing.T) {
	t.Parallel()
	ops, err := os.ReadFile("../docs/OPERATIONS.md")
	require.NoError(t, err)
	row := regexp.MustCompile("(?m)^\\| `(\\d)` \\| `(\\w+)` \\|")
	documented := map[health]int{}
	for _, m := range row.FindAllStringSubmatch(string(ops), -1) {
		n, _ := strconv.Atoi(m[1])
		documented[health(m[2])] = n
	}
	require.Equal(t, exitCodes, documented)
}
