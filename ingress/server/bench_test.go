package server_test

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	natsserver "github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/synadia-io/orbit.go/jetstreamext"
	"go.uber.org/zap"

	"github.com/likeperson/portalsync/ingress/server"
	"github.com/likeperson/portalsync/pkg/event"
	"github.com/likeperson/portalsync/pkg/signature"
	"github.com/likeperson/portalsync/pkg/stream"
	"github.com/likeperson/portalsync/testkit/natstest"
	"github.com/likeperson/portalsync/testkit/servicetest"
)

// BenchmarkReceive measures the whole webhook handler (signature check,
// decoding, validation, synchronous publish to a real JetStream with a
// message id) without the network, with parallel callers.
func BenchmarkReceive(b *testing.B) {
	js, _ := natstest.JetStream(b, stream.Config{Name: "EVENTS"})
	secret, err := signature.NewSecret([]byte("bench-secret-bench-secret-32byte"))
	if err != nil {
		b.Fatal(err)
	}
	// One sender far above the per-source limit: the limit is off, so
	// that every request is measured through to its publish.
	h, err := server.NewHandler(server.Config{Secrets: []signature.Secret{secret}, Stream: stream.Config{Name: "EVENTS"}, RateLimit: -1}, js, nil, nil, zap.NewNop())
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

// BenchmarkGroupCommit measures the ingress as deployed (server.Run over
// loopback HTTP, each sender a keep-alive connection that waits for each
// answer) against an embedded nats-server with file storage, under
// sync_interval always and under the default, with grouping off (every
// webhook published alone, INGRESS_BATCH_MAX=1) and on (the defaults),
// from 4, 50 and 200 senders. It reports webhooks answered per second, the
// p50 and p99 answer time and the mean batch size. Run with a fixed count
// (docs/BENCHMARKS.md):
//
//	go test ./ingress/server -run '^$' -bench GroupCommit -benchtime 20000x
//
// BENCH_ACK_FIRST=1 makes each batch wait for its first message's
// acknowledgement (jetstreamext's default flow control).
// BENCH_NATS_ALWAYS_URL and BENCH_NATS_DEFAULT_URL name external servers
// (configured with sync_interval always, and without) to use instead of
// embedded ones, so that nats bench can measure the same servers.
// BENCH_BATCH_PUBLISHERS, BENCH_BATCH_WAIT and BENCH_BATCH_MAX override
// those settings; BENCH_SENDERS (comma-separated) the sender counts.
func BenchmarkGroupCommit(b *testing.B) {
	sendersList := []int{4, 50, 200}
	if v := os.Getenv("BENCH_SENDERS"); v != "" {
		sendersList = nil
		for _, f := range strings.Split(v, ",") {
			n, err := strconv.Atoi(strings.TrimSpace(f))
			if err != nil || n < 1 {
				b.Fatalf("BENCH_SENDERS: %q is not a positive count", f)
			}
			sendersList = append(sendersList, n)
		}
	}
	if os.Getenv("BENCH_ACK_FIRST") == "1" {
		b.Cleanup(server.SetBatchAckFirst(true))
	}
	for _, syncAlways := range []bool{true, false} {
		for _, grouping := range []bool{false, true} {
			for _, senders := range sendersList {
				name := fmt.Sprintf("sync=%s/grouping=%s/senders=%d", map[bool]string{true: "always", false: "default"}[syncAlways],
					map[bool]string{true: "on", false: "off"}[grouping], senders)
				b.Run(name, func(b *testing.B) { benchIngress(b, syncAlways, grouping, senders) })
			}
		}
	}
}

// embeddedNATS starts a JetStream server in the process (file storage;
// sync_interval always when syncAlways) and returns its URL and the
// function that stops it.
func embeddedNATS(b *testing.B, syncAlways bool) (url string, stop func()) {
	ns, err := natsserver.NewServer(&natsserver.Options{
		Host: "127.0.0.1", Port: -1, JetStream: true, StoreDir: b.TempDir(), NoLog: true, NoSigs: true,
		SyncAlways: syncAlways, // sync_interval: always
	})
	if err != nil {
		b.Fatal(err)
	}
	go ns.Start()
	if !ns.ReadyForConnections(10 * time.Second) {
		b.Fatal("nats-server not ready")
	}
	return ns.ClientURL(), func() { ns.Shutdown(); ns.WaitForShutdown() }
}

func benchIngress(b *testing.B, syncAlways, grouping bool, senders int) {
	natsURL := os.Getenv(map[bool]string{true: "BENCH_NATS_ALWAYS_URL", false: "BENCH_NATS_DEFAULT_URL"}[syncAlways])
	if natsURL == "" {
		var stop func()
		natsURL, stop = embeddedNATS(b, syncAlways)
		defer stop()
	}
	// A stream of its own for each run (an external server keeps them).
	streamName := fmt.Sprintf("BENCH_%d", time.Now().UnixNano())
	defer deleteStream(b, natsURL, streamName)

	secret, err := signature.NewSecret([]byte("bench-secret-bench-secret-32byte"))
	if err != nil {
		b.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	opsLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	// One sending address far above the per-source limit: the limit is off.
	cfg := server.Config{Listener: ln, OpsListener: opsLn, NATSURL: natsURL, Secrets: []signature.Secret{secret}, Stream: stream.Config{Name: streamName}, RateLimit: -1}
	if !grouping {
		cfg.BatchMax = 1
	}
	if v, err := strconv.Atoi(os.Getenv("BENCH_BATCH_PUBLISHERS")); err == nil {
		cfg.BatchPublishers = v
	}
	if v, err := time.ParseDuration(os.Getenv("BENCH_BATCH_WAIT")); err == nil {
		cfg.BatchWait = v
	}
	if v, err := strconv.Atoi(os.Getenv("BENCH_BATCH_MAX")); err == nil && grouping {
		cfg.BatchMax = v
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- server.Run(ctx, cfg, zap.NewNop()) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			b.Error(err)
		}
	}()
	base, ops := "http://"+ln.Addr().String(), "http://"+opsLn.Addr().String()
	servicetest.WaitReady(b, ops, nil)

	// Every request is built and signed before the clock starts, and each
	// sender writes it on its own keep-alive connection and reads the
	// answer with a minimal HTTP/1.1 reader (rawSender): the load
	// generator shares the two cores with the ingress and nats-server, and
	// net/http's client (two goroutines and channel hand-offs per
	// connection, a header map per request) would take CPU the measured
	// ingress then lacks.
	signer := signature.NewSigner(secret)
	requests := make([][]byte, b.N)
	for n := range b.N {
		id := fmt.Sprintf("evt_gc%d", n+1)
		body := fmt.Sprintf(`{"id":%q,"type":"membership-created","occurred_at":"2026-11-25T10:00:00Z","organization":{"id":"o1","name":"HLF"},"member":{"id":"m%d","email":"a@example.invalid","first_name":"A","last_name":"B","phone":"+47 1"},"role":"peer_mentor"}`, id, (n+1)%1000)
		req, err := http.NewRequest(http.MethodPost, base+server.WebhookPath, strings.NewReader(body))
		if err != nil {
			b.Fatal(err)
		}
		req.Header.Set("Content-Type", "application/json")
		signer.SetHeaders(req.Header, id, time.Now(), []byte(body))
		var buf bytes.Buffer
		if err := req.Write(&buf); err != nil {
			b.Fatal(err)
		}
		requests[n] = buf.Bytes()
	}
	var next atomic.Int64
	latencies := make([][]time.Duration, senders)
	var wg sync.WaitGroup
	b.ResetTimer()
	start := time.Now()
	for s := range senders {
		wg.Go(func() {
			conn, err := dialRaw(ln.Addr().String())
			if err != nil {
				b.Error(err)
				return
			}
			defer conn.Close()
			for {
				n := next.Add(1)
				if n > int64(b.N) {
					return
				}
				t0 := time.Now()
				status, err := conn.roundTrip(requests[n-1])
				if err != nil {
					b.Error(err)
					return
				}
				latencies[s] = append(latencies[s], time.Since(t0))
				if status != http.StatusAccepted {
					b.Errorf("status %d", status)
					return
				}
			}
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	b.StopTimer()

	all := slices.Concat(latencies...)
	slices.Sort(all)
	if len(all) == 0 {
		return
	}
	at := func(q float64) float64 { return float64(all[int(q*float64(len(all)-1))].Microseconds()) / 1000 }
	b.ReportMetric(float64(len(all))/elapsed.Seconds(), "req/s")
	b.ReportMetric(at(0.50), "p50-ms")
	b.ReportMetric(at(0.99), "p99-ms")
	// Events published in atomic batches (not alone), and their mean batch.
	sum, count := scrape(b, ops, "portalsync_ingress_publish_batch_size_sum"), scrape(b, ops, "portalsync_ingress_publish_batch_size_count")
	alone := scrape(b, ops, `portalsync_ingress_publish_batch_size_bucket{le="1"}`)
	if batches := count - alone; batches > 0 {
		b.ReportMetric(100*(sum-alone)/sum, "%batched")
		b.ReportMetric((sum-alone)/batches, "events/batch")
	} else {
		b.ReportMetric(0, "%batched")
		b.ReportMetric(0, "events/batch")
	}
}

func deleteStream(b *testing.B, url, name string) {
	nc, err := nats.Connect(url)
	if err != nil {
		b.Error(err)
		return
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		b.Error(err)
		return
	}
	if err := js.DeleteStream(context.Background(), name); err != nil {
		b.Error(err)
	}
}

// scrape reads one sample from the ingress's /metrics (0 when absent).
func scrape(b *testing.B, base, sample string) float64 {
	resp, err := http.Get(base + "/metrics")
	if err != nil {
		b.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b.Fatalf("GET /metrics: %s", resp.Status)
	}
	text, err := io.ReadAll(resp.Body)
	if err != nil {
		b.Fatal(err)
	}
	for line := range strings.Lines(string(text)) {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), sample+" "); ok {
			f, _ := strconv.ParseFloat(v, 64)
			return f
		}
	}
	return 0
}

// BenchmarkAtomicBatchCost measures what one atomic batch costs the
// server against single publishes, without the ingress: one client
// publishing batches of each size (jetstreamext.PublishMsgBatch, no
// AckFirst, a Nats-Msg-Id on every message) one after the other to an
// embedded server with file storage and sync_interval always. size=1 is a
// plain synchronous publish. ns/op is one batch.
func BenchmarkAtomicBatchCost(b *testing.B) {
	natsURL, stop := embeddedNATS(b, true)
	defer stop()
	nc, err := nats.Connect(natsURL)
	if err != nil {
		b.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	if _, err := stream.Ensure(ctx, js, stream.Config{Name: "EVENTS"}); err != nil {
		b.Fatal(err)
	}
	var n atomic.Int64
	for _, size := range []int{1, 2, 10, 50, 200} {
		b.Run(fmt.Sprintf("size=%d", size), func(b *testing.B) {
			for b.Loop() {
				msgs := make([]*nats.Msg, size)
				for i := range msgs {
					msgs[i] = nats.NewMsg(event.Subject(fmt.Sprintf("m%d", i)))
					msgs[i].Data = make([]byte, 287)
					msgs[i].Header.Set(jetstream.MsgIDHeader, fmt.Sprintf("evt_cost%d", n.Add(1)))
				}
				var err error
				if size == 1 {
					_, err = js.PublishMsg(ctx, msgs[0])
				} else {
					_, err = jetstreamext.PublishMsgBatch(ctx, js, msgs, jetstreamext.BatchFlowControl{})
				}
				if err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(size)*float64(b.N)/b.Elapsed().Seconds(), "msgs/s")
		})
	}
}

// rawConn is one keep-alive HTTP/1.1 connection of the load generator:
// it writes a request built beforehand and reads the answer's status and
// body (which must have a Content-Length, as the ingress's answers do).
type rawConn struct {
	net.Conn
	r *bufio.Reader
}

func dialRaw(addr string) (*rawConn, error) {
	c, err := net.Dial("tcp", addr)
	if err != nil {
		return nil, err
	}
	return &rawConn{Conn: c, r: bufio.NewReaderSize(c, 4096)}, nil
}

// roundTrip sends req and returns the answer's status code.
func (c *rawConn) roundTrip(req []byte) (int, error) {
	if _, err := c.Write(req); err != nil {
		return 0, err
	}
	line, err := c.r.ReadSlice('\n')
	if err != nil {
		return 0, err
	}
	// "HTTP/1.1 202 Accepted\r\n"
	if len(line) < 12 || !bytes.HasPrefix(line, []byte("HTTP/1.1 ")) {
		return 0, fmt.Errorf("bad status line %q", line)
	}
	status, err := strconv.Atoi(string(line[9:12]))
	if err != nil {
		return 0, fmt.Errorf("bad status line %q", line)
	}
	length := -1
	for {
		line, err := c.r.ReadSlice('\n')
		if err != nil {
			return 0, err
		}
		h := bytes.TrimRight(line, "\r\n")
		if len(h) == 0 {
			break
		}
		if k, v, ok := bytes.Cut(h, []byte(":")); ok && strings.EqualFold(string(k), "Content-Length") {
			if length, err = strconv.Atoi(string(bytes.TrimSpace(v))); err != nil {
				return 0, fmt.Errorf("bad Content-Length %q", v)
			}
		}
	}
	if length < 0 {
		return 0, errors.New("answer without Content-Length")
	}
	if _, err := c.r.Discard(length); err != nil {
		return 0, err
	}
	return status, nil
}
