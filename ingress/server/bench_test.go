package server_test

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap"

	"github.com/likeperson/portalsync/ingress/server"
	"github.com/likeperson/portalsync/pkg/natstest"
	"github.com/likeperson/portalsync/pkg/signature"
	"github.com/likeperson/portalsync/pkg/stream"
)

// BenchmarkReceive measures the whole webhook handler (signature check,
// decoding, validation, synchronous publish to a real JetStream with a
// message id) without the network, with parallel callers.
func BenchmarkReceive(b *testing.B) {
	ns := natstest.Run(b)
	nc, err := nats.Connect(ns.URL())
	if err != nil {
		b.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		b.Fatal(err)
	}
	if _, err := stream.Ensure(context.Background(), js, stream.Config{Name: "EVENTS"}); err != nil {
		b.Fatal(err)
	}
	secret, err := signature.NewSecret([]byte("bench-secret-bench-secret-32byte"))
	if err != nil {
		b.Fatal(err)
	}
	h, err := server.NewHandler(server.Config{Secrets: []signature.Secret{secret}, Stream: stream.Config{Name: "EVENTS"}}, js, nil, nil, zap.NewNop())
	if err != nil {
		b.Fatal(err)
	}
	signer := signature.NewSigner(secret)
	var n atomic.Int64
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			id := fmt.Sprintf("evt_b%d", n.Add(1))
			body := fmt.Sprintf(`{"id":%q,"type":"membership-created","occurred_at":"2026-11-25T10:00:00Z","organization":{"id":"o1","name":"HLF"},"member":{"id":"m%d","email":"a@example.invalid","first_name":"A","last_name":"B","phone":"+47 1"},"role":"peer_mentor"}`, id, n.Load()%1000)
			req, _ := http.NewRequest(http.MethodPost, server.WebhookPath, strings.NewReader(body))
			req.Header.Set("Content-Type", "application/json")
			signer.SetHeaders(req.Header, id, time.Now(), []byte(body))
			rec := &discardWriter{h: http.Header{}}
			h.ServeHTTP(rec, req)
			if rec.code != http.StatusAccepted {
				b.Fatalf("status %d", rec.code)
			}
		}
	})
}

type discardWriter struct {
	h    http.Header
	code int
}

func (w *discardWriter) Header() http.Header { return w.h }
func (w *discardWriter) Write(p []byte) (int, error) {
	if w.code == 0 {
		w.code = http.StatusOK
	}
	return len(p), nil
}
func (w *discardWriter) WriteHeader(code int) { w.code = code }
