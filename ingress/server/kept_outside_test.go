package server_test

import (
	"context"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"
	"go.uber.org/zap/zaptest"

	"github.com/likeperson/portalsync/ingress/server"
	"github.com/likeperson/portalsync/pkg/event"
	"github.com/likeperson/portalsync/pkg/portalclient"
	"github.com/likeperson/portalsync/pkg/signature"
	"github.com/likeperson/portalsync/pkg/stream"
	"github.com/likeperson/portalsync/testkit/natstest"
)

// Accepted means kept only while the stream keeps its settings: discard
// new and no server max age. Found by an outside test of issue 19: the
// stream edited under a running ingress to discard old with a max age of
// 10 s (what an ingress or syncer of an earlier version sets at its start,
// e.g. one replica of a rolling deploy or a rollback) left the ingress
// ready and answering 202 for hours, and the server deleted 47,753 stored,
// unapplied events 10 s later. The stream is checked every
// ReadinessInterval anyway: the ingress must notice the change within a
// few intervals, by setting the stream back or by answering /readyz 503.
func TestStreamSettingsChangedUnderRunningIngressAreNoticed(t *testing.T) {
	t.Parallel()
	b := setup(t, func(c *server.Config) { c.ReadinessInterval = 50 * time.Millisecond })
	ctx := context.Background()
	s, err := b.js.Stream(ctx, "EVENTS")
	require.NoError(t, err)
	cfg := s.CachedInfo().Config
	require.Equal(t, jetstream.DiscardNew, cfg.Discard)
	cfg.Discard, cfg.MaxAge = jetstream.DiscardOld, time.Hour
	_, err = b.js.UpdateStream(ctx, cfg)
	require.NoError(t, err)

	noticed := func() bool {
		info, err := s.Info(ctx)
		if err == nil && info.Config.Discard == jetstream.DiscardNew && info.Config.MaxAge == 0 {
			return true // set back
		}
		code, _ := get(t, b.ops+"/readyz")
		return code == http.StatusServiceUnavailable
	}
	require.Eventually(t, noticed, 3*time.Second, 20*time.Millisecond,
		"a stream that discards old events and expires them by age must be set back, or the ingress not ready")
}

// An event is answered 2xx only once it is in the stream the ingress
// ensured: while a stream of that name exists that the ingress cannot
// bring to its settings (here memory storage, discard old, a one-minute
// max age: an update cannot change the storage type), the ingress is not
// ready ("waiting for stream EVENTS") and must refuse webhooks too. Found
// by an outside test of issue 19: the real ingress, not ready, answered
// 202 and stored the event in such a stream, in memory and expiring
// unapplied after a minute.
func TestNoTwoHundredIntoAStreamNotEnsured(t *testing.T) {
	t.Parallel()
	ns := natstest.Run(t)
	js := ns.JetStream(t)
	nc := js.Conn()
	ctx := context.Background()
	s, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "EVENTS", Subjects: []string{event.SubjectWildcard},
		Storage: jetstream.MemoryStorage, Discard: jetstream.DiscardOld, MaxAge: time.Minute, Duplicates: time.Minute})
	require.NoError(t, err)

	// The ingress's attempts to bring the stream to its settings.
	updates, err := nc.SubscribeSync("$JS.API.STREAM.UPDATE.EVENTS")
	require.NoError(t, err)
	require.NoError(t, nc.Flush())

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	opsLn, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	secret := testSecret(t)
	runCtx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() {
		done <- server.Run(runCtx, server.Config{Listener: ln, OpsListener: opsLn, NATSURL: ns.URL(),
			Secrets: []signature.Secret{secret}, PublishTimeout: time.Second, Stream: stream.Config{Name: "EVENTS"}}, zaptest.NewLogger(t))
	}()
	t.Cleanup(func() { cancel(); <-done })
	ops := "http://" + opsLn.Addr().String()
	require.Eventually(t, func() bool {
		r, err := http.Get(ops + "/readyz")
		if err != nil {
			return false
		}
		r.Body.Close()
		return r.StatusCode == http.StatusServiceUnavailable
	}, 5*time.Second, 20*time.Millisecond)
	// The ensure has been tried, and refused: still not ready.
	_, err = updates.NextMsg(10 * time.Second)
	require.NoError(t, err, "the ingress tries to update the stream")
	code, body := get(t, ops+"/readyz")
	require.Equal(t, http.StatusServiceUnavailable, code, body)
	require.Contains(t, body, "waiting for stream EVENTS")

	client := &portalclient.Client{URL: "http://" + ln.Addr().String() + server.WebhookPath, Signer: signature.NewSigner(secret),
		HTTP: &http.Client{Timeout: 5 * time.Second}}
	resp, err := client.SendEvent(ctx, sampleEvent("evt_not_ensured", "member-1"))
	require.NoError(t, err)
	info, err := s.Info(ctx)
	require.NoError(t, err)
	require.Equal(t, http.StatusServiceUnavailable, resp.Status,
		"answered %d while not ready (%s); the stream it went to keeps %d messages in %s storage, discarding old ones",
		resp.Status, body, info.State.Msgs, info.Config.Storage)
}
