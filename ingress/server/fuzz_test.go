package server

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap"

	"github.com/likeperson/portalsync/pkg/signature"
)

// recordingPublisher stands in for JetStream in this fuzz target only; the
// integration tests use a real server.
type recordingPublisher struct{ n int }

func (p *recordingPublisher) PublishMsg(_ context.Context, _ *nats.Msg, _ ...jetstream.PublishOpt) (*jetstream.PubAck, error) {
	p.n++
	return &jetstream.PubAck{Stream: "EVENTS", Sequence: uint64(p.n)}, nil
}

// Stream is never called: this publisher never reports a duplicate.
func (p *recordingPublisher) Stream(context.Context, string) (jetstream.Stream, error) {
	return nil, errors.New("no stream in the fuzz target")
}

// FuzzWebhook sends arbitrary bodies, content types and signature headers
// (signed correctly or not) through the whole handler: it never answers
// 5xx, answers 2xx only after a publish, and every error is problem+json.
func FuzzWebhook(f *testing.F) {
	f.Add([]byte(`{"id":"e1","type":"membership-created","occurred_at":"2026-11-25T10:00:00Z","organization":{"id":"o"},"member":{"id":"m"},"role":"peer_mentor"}`), "application/json", "e1", true)
	f.Add([]byte(`{"id":"e1","type":"x","occurred_at":"2026-11-25T10:00:00Z","member":{"id":"a.>"}}`), "application/json; charset=utf-8", "e1", true)
	f.Add([]byte(`[`), "text/plain", "", false)
	f.Add([]byte(`{}`), "application/cloudevents+json", "e 1", true)
	f.Add([]byte(`{"id":"e2","type":"membership-updated","occurred_at":"2026-11-25T10:00:00Z","organization":{"id":"{0B9F2C1E-1A2B-4C3D-8E9F-00000000000A}","name":null},"member":{"id":"0B9F2C1E-1A2B-4C3D-8E9F-00000000000A","phone":null}}`), "application/json", "e2", true)
	f.Add([]byte("{\"id\":\"e3\",\"type\":\"membership-updated\",\"occurred_at\":\"2026-11-25T10:00:00Z\",\"organization\":{\"id\":\"o\"},\"member\":{\"id\":\"m\",\"first_name\":\"K\xe5re\"}}"), "application/json", "e3", true)
	f.Add([]byte(`{"id":"e4","type":"membership-deactivated","occurred_at":"2099-01-01T00:00:00Z","organization":{"id":"o"},"member":{"id":"m"}}`), "application/json", "e4", true)
	now := time.Unix(1_800_000_000, 0)
	secret, err := signature.NewSecret([]byte("fuzz-secret-fuzz-secret-fuzz-32b"))
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, body []byte, contentType, webhookID string, sign bool) {
		pub := &recordingPublisher{}
		h, err := NewHandler(Config{Secrets: []signature.Secret{secret}, MaxBodyBytes: 4096, Now: func() time.Time { return now }}, pub, nil, nil, zap.NewNop())
		if err != nil {
			t.Fatal(err)
		}
		req := httptest.NewRequest(http.MethodPost, WebhookPath, strings.NewReader(string(body)))
		req.Header.Set("Content-Type", contentType)
		if sign {
			signature.NewSigner(secret).SetHeaders(req.Header, webhookID, now, body)
		} else {
			req.Header.Set(signature.HeaderID, webhookID)
			req.Header.Set(signature.HeaderTimestamp, strconv.FormatInt(now.Unix(), 10))
			req.Header.Set(signature.HeaderSignature, "v1,"+webhookID)
		}
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		switch {
		case rec.Code >= 500:
			t.Fatalf("status %d", rec.Code)
		case rec.Code/100 == 2:
			if pub.n != 1 {
				t.Fatalf("answered %d without publishing", rec.Code)
			}
		default:
			if pub.n != 0 {
				t.Fatalf("published but answered %d", rec.Code)
			}
			if ct := rec.Header().Get("Content-Type"); ct != ProblemContentType {
				t.Fatalf("error with content type %q", ct)
			}
			var p Problem
			if err := json.Unmarshal(rec.Body.Bytes(), &p); err != nil || p.Status != rec.Code || p.Detail == "" {
				t.Fatalf("bad problem body %q: %v", rec.Body.String(), err)
			}
		}
	})
}
