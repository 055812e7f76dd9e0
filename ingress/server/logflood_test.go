package server_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/likeperson/portalsync/ingress/server"
	"github.com/likeperson/portalsync/pkg/signature"
)

// ackingPublisher acknowledges every publish at once: the tests of the
// HTTP edge measure the edge, not JetStream.
type ackingPublisher struct{ n atomic.Uint64 }

func (p *ackingPublisher) PublishMsg(context.Context, *nats.Msg, ...jetstream.PublishOpt) (*jetstream.PubAck, error) {
	return &jetstream.PubAck{Stream: "EVENTS", Sequence: p.n.Add(1)}, nil
}

func (p *ackingPublisher) Stream(context.Context, string) (jetstream.Stream, error) {
	return nil, errors.New("ackingPublisher never reports a duplicate")
}

// signedRequest is a valid webhook request for event id.
func signedRequest(t testing.TB, secret signature.Secret, id string) *http.Request {
	t.Helper()
	body := fmt.Sprintf(`{"id":%q,"type":"membership-created","occurred_at":"2026-11-25T10:00:00Z","organization":{"id":"o1","name":"HLF"},"member":{"id":"m1"},"role":"peer_mentor"}`, id)
	req := httptest.NewRequest(http.MethodPost, server.WebhookPath, strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	signature.NewSigner(secret).SetHeaders(req.Header, id, time.Now(), []byte(body))
	return req
}

// TestRejectionsDoNotFloodTheLog sends 1,000 webhooks with a bad signature:
// each is counted, but at info the log gets at most a handful of lines
// (rejectLinesPerSecond per second), while accepted webhooks are all
// logged. Before, each rejection wrote its own line (1,000 lines).
func TestRejectionsDoNotFloodTheLog(t *testing.T) {
	t.Parallel()
	core, logs := observer.New(zapcore.InfoLevel)
	secret := testSecret(t)
	metrics := server.NewMetrics()
	h, err := server.NewHandler(server.Config{Secrets: []signature.Secret{secret}}, &ackingPublisher{}, nil, metrics, zap.New(core))
	require.NoError(t, err)

	start := time.Now()
	for i := range 1000 {
		req := signedRequest(t, secret, fmt.Sprintf("evt_bad_%d", i))
		req.Header.Set("webhook-signature", "v1,"+strings.Repeat("A", 43)+"=")
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		require.Equal(t, http.StatusUnauthorized, rec.Code)
	}
	seconds := int(time.Since(start)/time.Second) + 1
	rejected := logs.FilterMessage("webhook").FilterField(zap.Int("status", http.StatusUnauthorized)).Len()
	t.Logf("1,000 rejections in %d s wrote %d log lines", seconds, rejected)
	require.LessOrEqual(t, rejected, 5*seconds, "at most 5 rejection lines a second")
	require.Positive(t, rejected, "rejections still show in the log")
	require.Contains(t, scrapeMetrics(t, metrics.Handler()), `portalsync_ingress_rejected_total{reason="no_matching_signature"} 1000`+"\n", "every rejection is counted")

	for i := range 20 {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, signedRequest(t, secret, fmt.Sprintf("evt_ok_%d", i)))
		require.Equal(t, http.StatusAccepted, rec.Code)
	}
	require.Equal(t, 20, logs.FilterMessage("webhook").FilterField(zap.Int("status", http.StatusAccepted)).Len(), "accepted webhooks: one line each")
}

// scrapeMetrics returns what a metrics handler serves.
func scrapeMetrics(t testing.TB, h http.Handler) string {
	t.Helper()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/metrics", nil))
	require.Equal(t, http.StatusOK, rec.Code)
	return rec.Body.String()
}
