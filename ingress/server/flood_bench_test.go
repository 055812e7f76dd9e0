package server_test

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/likeperson/portalsync/ingress/server"
	"github.com/likeperson/portalsync/pkg/signature"
)

// BenchmarkLegitimateSenderUnderFlood measures one legitimate sender's
// latency through the whole webhook handler (rate limit, signature,
// decoding, an acknowledging publisher) quiet, while 200,000 other sources
// (loopback IPv4 addresses and IPv6 /64s, one unsigned request each, as an
// attacker's bad-signature flood) arrive interleaved with its requests,
// and after them. It reports the sender's p50 and p99 per phase in
// microseconds, with the rate limit on and off. Run it once:
//
//	go test ./ingress/server -run '^$' -bench LegitimateSenderUnderFlood -benchtime 1x
func BenchmarkLegitimateSenderUnderFlood(b *testing.B) {
	// The limit is on, high enough for the sender's 3,000 events; off, for
	// comparison: what the flood costs the sender without a limiter.
	b.Run("limit=on", func(b *testing.B) { benchFlood(b, 100_000) })
	b.Run("limit=off", func(b *testing.B) { benchFlood(b, -1) })
}

func benchFlood(b *testing.B, rateLimit float64) {
	const (
		events  = 1000
		sources = 200_000
	)
	secret, err := signature.NewSecret([]byte("portalsync-ingress-test-secret!!"))
	if err != nil {
		b.Fatal(err)
	}
	h, err := server.NewHandler(server.Config{Secrets: []signature.Secret{secret}, RateLimit: rateLimit},
		&ackingPublisher{}, nil, nil, zap.NewNop())
	if err != nil {
		b.Fatal(err)
	}
	flooded := 0
	flood := func(n int) {
		for range n {
			req := httptest.NewRequest(http.MethodPost, server.WebhookPath, strings.NewReader(`{"id":"x"}`))
			req.Header.Set("Content-Type", "application/json")
			req.Header.Set("webhook-id", "x")
			req.Header.Set("webhook-timestamp", fmt.Sprint(time.Now().Unix()))
			req.Header.Set("webhook-signature", "v1,"+strings.Repeat("A", 43)+"=")
			req.RemoteAddr = netip.AddrPortFrom(floodSource(flooded), 40000).String()
			flooded++
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, req)
			if rec.Code != http.StatusUnauthorized {
				b.Fatalf("flood request: status %d", rec.Code)
			}
		}
	}
	sent := 0
	phase := func(name string, floodPerEvent int) {
		latencies := make([]time.Duration, 0, events)
		runtime.GC()
		for range events {
			flood(floodPerEvent)
			req := signedRequest(b, secret, fmt.Sprintf("evt_legit_%d", sent))
			req.RemoteAddr = "127.0.0.1:50000"
			sent++
			rec := httptest.NewRecorder()
			start := time.Now()
			h.ServeHTTP(rec, req)
			latencies = append(latencies, time.Since(start))
			if rec.Code != http.StatusAccepted {
				b.Fatalf("%s: legitimate sender got %d", name, rec.Code)
			}
		}
		slices.Sort(latencies)
		b.ReportMetric(float64(latencies[events/2].Nanoseconds())/1e3, name+"-p50-µs")
		b.ReportMetric(float64(latencies[events*99/100].Nanoseconds())/1e3, name+"-p99-µs")
	}
	// Warm up, so that the quiet phase does not pay for first use.
	for i := range 200 {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, signedRequest(b, secret, fmt.Sprintf("evt_warm_%d", i)))
	}
	b.ResetTimer()
	phase("quiet", 0)
	phase("flood", sources/events)
	phase("after", 0)
	b.ReportMetric(float64(flooded), "sources")
	b.ReportMetric(0, "ns/op")
}

// floodSource is the i-th flooding source: every 4th an IPv6 /64 of the
// documentation prefix, the others loopback IPv4 addresses from 127.1.0.0.
func floodSource(i int) netip.Addr {
	if i%4 == 3 {
		return netip.AddrFrom16([16]byte{0x20, 0x01, 0x0d, 0xb8, 0, byte(i >> 16), byte(i >> 8), byte(i), 15: 1})
	}
	return netip.AddrFrom4([4]byte{127, 1 + byte(i>>16), byte(i >> 8), byte(i)})
}
