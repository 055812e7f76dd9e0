package server_test

import (
	"context"
	"net/http"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"github.com/likeperson/portalsync/ingress/server"
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
