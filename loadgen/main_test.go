package main

import (
	"bytes"
	"context"
	"encoding/json"
	"net"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/zap/zaptest"

	"github.com/likeperson/portalsync/ingress/server"
	"github.com/likeperson/portalsync/loadgen/load"
	"github.com/likeperson/portalsync/pkg/event"
	"github.com/likeperson/portalsync/pkg/signature"
	"github.com/likeperson/portalsync/pkg/stream"
	"github.com/likeperson/portalsync/syncer/service"
	"github.com/likeperson/portalsync/testkit/flagtest"
	"github.com/likeperson/portalsync/testkit/natstest"
	"github.com/likeperson/portalsync/testkit/schematest"
	"github.com/likeperson/portalsync/testkit/servicetest"
)

// The load generator against a real ingress, JetStream, syncer and
// database: every event accepted and applied, latencies measured.
func TestLoadgenEndToEnd(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithCancel(context.Background())
	db := schematest.NewDB(t)
	ns := natstest.Run(t)
	secret, err := signature.NewSecret([]byte("loadgen-test-secret-32-bytes-ok!"))
	require.NoError(t, err)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	hl, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	opsLn, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	sc := stream.Config{Name: "EVENTS"}
	done := make(chan error, 2)
	go func() {
		done <- server.Run(ctx, server.Config{Listener: ln, OpsListener: opsLn, DrainGrace: 50 * time.Millisecond, NATSURL: ns.URL(), Secrets: []signature.Secret{secret}, Stream: sc}, zaptest.NewLogger(t))
	}()
	go func() {
		done <- service.Run(ctx, service.Config{DatabaseURL: db.URL, NATSURL: ns.URL(), HTTPListener: hl, Stream: sc}, zaptest.NewLogger(t))
	}()
	t.Cleanup(func() { cancel(); <-done; <-done })
	servicetest.WaitReady(t, "http://"+hl.Addr().String(), nil)

	var out bytes.Buffer
	err = run(ctx, []string{"--url", "http://" + ln.Addr().String() + server.WebhookPath, "--secrets", secret.Text(),
		"--database-url", db.URL, "--events", "300", "-c", "8", "--members", "40", "--orgs", "3", "--json", "--run-id", "lg"}, &out, &out)
	require.NoError(t, err, out.String())
	var rep load.Report
	require.NoError(t, json.Unmarshal(out.Bytes(), &rep), out.String())
	require.EqualValues(t, 300, rep.Sent)
	require.EqualValues(t, 300, rep.Accepted)
	require.Equal(t, 300, rep.Accept.N)
	require.Equal(t, 300, rep.Applied)
	require.Zero(t, rep.Unapplied)
	require.Positive(t, rep.EndToEnd.P50)
	require.GreaterOrEqual(t, rep.EndToEnd.Max, rep.EndToEnd.P99)
	require.Positive(t, rep.Throughput())

	// A fixed rate is kept: 100 events at 200/s take about half a second.
	out.Reset()
	err = run(ctx, []string{"--url", "http://" + ln.Addr().String() + server.WebhookPath, "--secrets", secret.Text(),
		"--events", "100", "--rate", "200", "-c", "4", "--json"}, &out, &out)
	require.NoError(t, err, out.String())
	require.NoError(t, json.Unmarshal(out.Bytes(), &rep))
	require.EqualValues(t, 100, rep.Accepted)
	require.Greater(t, rep.Elapsed, 400*time.Millisecond)
}

func TestParseMix(t *testing.T) {
	t.Parallel()
	m, err := parseMix("created=1,role=3")
	require.NoError(t, err)
	require.Equal(t, map[event.Type]int{event.MembershipCreated: 1, event.RoleUpdated: 3}, m)
	for _, bad := range []string{"created", "merged=1", "role=-1", "role=x"} {
		_, err := parseMix(bad)
		require.Error(t, err, bad)
	}
}

// The flags default to load.Config's defaults, the mix included.
func TestFlagDefaultsAreConfigDefaults(t *testing.T) {
	t.Parallel()
	var c cli
	flagtest.Parse(t, &c, []string{"--secrets", "x"})
	got := c.config()
	var err error
	got.Mix, err = parseMix(c.Mix)
	require.NoError(t, err)
	require.Equal(t, load.Config{}.WithDefaults(), got)
}
