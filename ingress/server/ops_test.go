package server_test

import (
	"context"
	"io"
	"net/http"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/stretchr/testify/require"

	"github.com/likeperson/portalsync/ingress/server"
)

func get(t *testing.T, url string) (int, string) {
	t.Helper()
	r, err := http.Get(url)
	require.NoError(t, err)
	defer r.Body.Close()
	b, err := io.ReadAll(r.Body)
	require.NoError(t, err)
	return r.StatusCode, string(b)
}

// TestOperationsRoutesApart: /healthz, /readyz and /metrics are served on
// the operations listener only; the webhook listener answers them 404,
// also to a source outside the allowlist (which used to get 200 on
// /metrics while its webhooks got 403).
func TestOperationsRoutesApart(t *testing.T) {
	t.Parallel()
	b := setup(t, func(c *server.Config) { c.AllowedSources = []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")} })
	for _, path := range []string{"/metrics", "/readyz", "/healthz"} {
		code, _ := get(t, b.base+path)
		require.Equal(t, http.StatusNotFound, code, "webhook listener %s", path)
		code, _ = get(t, b.ops+path)
		require.Equal(t, http.StatusOK, code, "operations listener %s", path)
	}
	code, _ := get(t, b.ops+server.WebhookPath)
	require.Equal(t, http.StatusNotFound, code, "no webhooks on the operations listener")
	_, metrics := get(t, b.ops+"/metrics")
	require.True(t, strings.Contains(metrics, "portalsync_ingress_request_seconds_count"), "the ingress's metrics")
}

// TestReadinessMakesNoJetStreamRequests probes /readyz 300 times while a
// subscriber counts every JetStream API request ($JS.API.>): none is made.
// Readiness answers from the connections' state, the ensured stream and
// the last periodic check (an hour apart here). Before, each probe asked
// for the stream's info: 300 requests.
func TestReadinessMakesNoJetStreamRequests(t *testing.T) {
	t.Parallel()
	b := setup(t, func(c *server.Config) { c.ReadinessInterval = time.Hour })
	nc, err := nats.Connect(b.nats.URL())
	require.NoError(t, err)
	t.Cleanup(nc.Close)
	sub, err := nc.SubscribeSync("$JS.API.>")
	require.NoError(t, err)
	require.NoError(t, nc.Flush())
	// requests counts the API requests the server has routed to sub: a
	// request a probe waited for was routed before the probe was answered,
	// so before the server's answer to this Flush, and the client queues
	// it on sub before it reads that answer.
	requests := func() int {
		require.NoError(t, nc.Flush())
		n, _, err := sub.Pending()
		require.NoError(t, err)
		return n
	}

	for range 300 {
		code, body := get(t, b.ops+"/readyz")
		require.Equal(t, http.StatusOK, code, body)
	}
	require.Zero(t, requests(), "JetStream API requests made by 300 probes")

	// The counter counts: one request of the test's own.
	_, err = b.js.Stream(context.Background(), "EVENTS")
	require.NoError(t, err)
	require.Equal(t, 1, requests())
}

// TestReadinessNoticesStreamGone: the periodic check finds a stream that
// was deleted while the connection stayed up.
func TestReadinessNoticesStreamGone(t *testing.T) {
	t.Parallel()
	b := setup(t, func(c *server.Config) { c.ReadinessInterval = 50 * time.Millisecond })
	require.NoError(t, b.js.DeleteStream(context.Background(), "EVENTS"))
	require.Eventually(t, func() bool {
		code, body := get(t, b.ops+"/readyz")
		return code == http.StatusServiceUnavailable && strings.Contains(body, "EVENTS")
	}, 5*time.Second, 20*time.Millisecond)
}
