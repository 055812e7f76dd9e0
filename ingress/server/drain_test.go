package server_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptrace"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/zap/zaptest"

	"github.com/likeperson/portalsync/ingress/server"
	"github.com/likeperson/portalsync/pkg/signature"
	"github.com/likeperson/portalsync/pkg/stream"
	"github.com/likeperson/portalsync/testkit/natstest"
	"github.com/likeperson/portalsync/testkit/servicetest"
)

// drainOutcomes counts what 50 keep-alive senders saw across a shutdown.
type drainOutcomes struct {
	answered     atomic.Int64 // 2xx or 503, on any connection
	accepted     atomic.Int64 // 2xx
	closeInGrace atomic.Int64 // answers after SIGTERM that carried Connection: close
	// refused counts dials that failed: the listener had closed.
	refused atomic.Int64
	// unaccepted counts connections the kernel had completed but the
	// server never accepted, reset when the listener closed: like a
	// refused dial, the request never reached the server.
	unaccepted atomic.Int64
	mu         sync.Mutex
	failures   []string // anything else: a request on a connection the server had, not answered
}

// acceptLog is the webhook listener as the test sees it: when each peer
// address was last accepted.
type acceptLog struct {
	net.Listener
	accepted sync.Map // remote address -> time.Time
}

func (l *acceptLog) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err == nil {
		l.accepted.Store(c.RemoteAddr().String(), time.Now())
	}
	return c, err
}

// acceptedSince says whether the server accepted the connection from addr
// dialled at or after t.
func (l *acceptLog) acceptedSince(addr string, t time.Time) bool {
	v, ok := l.accepted.Load(addr)
	return ok && !v.(time.Time).Before(t)
}

// TestDrainOnShutdown runs 50 senders posting continuously over kept-alive
// connections and ends Run's context mid-stream: /readyz turns 503 at
// once, the webhook listener keeps serving through DrainGrace with
// "Connection: close", and every request written on an open connection is
// answered (2xx or 503). A dial refused after the listener has closed is
// fine and counted apart, and so is a connection the kernel completed but
// the server never accepted (in the listen queue when the listener
// closed: the request never reached the server; a load balancer that
// heeds /readyz sends none by then). On Linux the shutdown first waits
// for the serve loop to empty the listen queue, which leaves only the
// dials completed between that look and the close: 0 in 5 of 5 runs
// without the race detector (0 to 14 per run before the wait), a few per
// run under -race on a loaded machine, as senders that keep dialling
// refill the queue. Every 2xx event is in the stream.
// Against the Run before the grace, 1 to 30 requests per run failed with
// EOF or a reset on kept-alive connections, and /readyz answered 200 or
// not at all; with the grace but http.Server.Shutdown straight after it,
// 11 to 29 fresh connections per run were accepted and closed unanswered.
func TestDrainOnShutdown(t *testing.T) {
	t.Parallel()
	ns := natstest.Run(t)
	tcp, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	ln := &acceptLog{Listener: tcp}
	opsLn, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	secret := testSecret(t)
	const grace = time.Second
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() {
		// The 50 senders share one address, far above the per-source rate
		// limit: it is off, as it was before it became Config's default,
		// so that every request reaches the drain.
		done <- server.Run(ctx, server.Config{Listener: ln, OpsListener: opsLn, NATSURL: ns.URL(),
			Secrets: []signature.Secret{secret}, Stream: stream.Config{Name: "EVENTS"}, RateLimit: -1,
			DrainGrace: grace, ShutdownTimeout: 5 * time.Second, PublishTimeout: 2 * time.Second}, zaptest.NewLogger(t))
	}()
	opsBase := "http://" + opsLn.Addr().String()
	servicetest.WaitReady(t, opsBase, nil)
	url := "http://" + ln.Addr().String() + server.WebhookPath

	var out drainOutcomes
	var cancelled atomic.Bool
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for s := range 50 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			// One kept-alive connection per sender, as a portal's pool.
			client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 1}}
			defer client.CloseIdleConnections()
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				sendDuring(t, client, url, secret, fmt.Sprintf("evt_drain_%d_%d", s, i), ln, &out, &cancelled)
			}
		}()
	}
	// Steady traffic: every sender has been answered a few times over.
	require.Eventually(t, func() bool { return out.answered.Load() >= 3*50 }, 20*time.Second, 5*time.Millisecond,
		"traffic flows before the shutdown")
	cancelled.Store(true)
	cancel()

	// Readiness turns 503 first, while the webhook listener still serves.
	r, err := http.Get(opsBase + "/readyz")
	require.NoError(t, err)
	_, _ = io.Copy(io.Discard, r.Body)
	r.Body.Close()
	require.Equal(t, http.StatusServiceUnavailable, r.StatusCode)

	select {
	case err := <-done:
		require.NoError(t, err)
	case <-time.After(20 * time.Second):
		t.Fatal("Run did not return")
	}
	// Senders meet the closed listener.
	require.Eventually(t, func() bool { return out.refused.Load() > 0 }, 10*time.Second, 5*time.Millisecond,
		"a dial refused after the listener closed")
	close(stop)
	wg.Wait()

	t.Logf("answered %d (accepted %d, with Connection: close after SIGTERM %d), dials refused after close %d, "+
		"connections reset in the listen queue at close %d, failures %d",
		out.answered.Load(), out.accepted.Load(), out.closeInGrace.Load(), out.refused.Load(), out.unaccepted.Load(), len(out.failures))
	require.Empty(t, out.failures, "requests on connections the server had, not answered")
	require.LessOrEqual(t, out.unaccepted.Load(), int64(50), "at most one queued connection per sender")
	require.Positive(t, out.closeInGrace.Load(), "the listener served during the grace, closing connections")
	require.Positive(t, out.refused.Load(), "the listener closed in the end")

	js := ns.JetStream(t)
	s, err := js.Stream(context.Background(), "EVENTS")
	require.NoError(t, err)
	info, err := s.Info(context.Background())
	require.NoError(t, err)
	require.EqualValues(t, out.accepted.Load(), info.State.Msgs, "every 2xx is stored")
}

// sendDuring posts one signed event and records its outcome.
func sendDuring(t *testing.T, client *http.Client, url string, secret signature.Secret, id string, ln *acceptLog, out *drainOutcomes, cancelled *atomic.Bool) {
	body := fmt.Sprintf(`{"id":%q,"type":"membership-created","occurred_at":"2026-11-25T10:00:00Z","organization":{"id":"o1","name":"HLF"},"member":{"id":"m-%s"},"role":"peer_mentor"}`, id, id)
	var gotConn, reused bool
	var local string
	var dialled time.Time
	trace := &httptrace.ClientTrace{
		ConnectStart: func(string, string) { dialled = time.Now() },
		GotConn: func(info httptrace.GotConnInfo) {
			gotConn, reused, local = true, info.Reused, info.Conn.LocalAddr().String()
		},
	}
	req, err := http.NewRequestWithContext(httptrace.WithClientTrace(context.Background(), trace), http.MethodPost, url, strings.NewReader(body))
	require.NoError(t, err)
	req.Header.Set("Content-Type", "application/json")
	signature.NewSigner(secret).SetHeaders(req.Header, id, time.Now(), []byte(body))
	resp, err := client.Do(req)
	if err != nil {
		switch {
		case !gotConn && (errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.ECONNRESET)):
			out.refused.Add(1)
			return
		case gotConn && !reused && !ln.acceptedSince(local, dialled):
			out.unaccepted.Add(1)
			return
		}
		out.mu.Lock()
		out.failures = append(out.failures, fmt.Sprintf("%s (connection reused %v): %v", id, reused, err))
		out.mu.Unlock()
		return
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	switch {
	case resp.StatusCode/100 == 2:
		out.accepted.Add(1)
	case resp.StatusCode == http.StatusServiceUnavailable:
	default:
		out.mu.Lock()
		out.failures = append(out.failures, fmt.Sprintf("%s: status %d", id, resp.StatusCode))
		out.mu.Unlock()
		return
	}
	out.answered.Add(1)
	if cancelled.Load() && resp.Close {
		out.closeInGrace.Add(1)
	}
}

// TestConnectionOpenedBeforeCloseIsAnswered: a connection accepted before
// the listener closed, whose request arrives only after, is answered.
// http.Server.Shutdown alone would read that request and close the
// connection without an answer.
func TestConnectionOpenedBeforeCloseIsAnswered(t *testing.T) {
	t.Parallel()
	b := setup(t, nil)
	addr := strings.TrimPrefix(b.base, "http://")
	conn, err := net.Dial("tcp", addr)
	require.NoError(t, err)
	defer conn.Close()

	b.cancel()
	require.Eventually(t, func() bool {
		c, err := net.Dial("tcp", addr)
		if err == nil {
			c.Close()
		}
		return err != nil
	}, 5*time.Second, 10*time.Millisecond, "the listener closes after the grace")

	body := mustJSON(t, sampleEvent("evt_late", "m-late"))
	h := http.Header{}
	signature.NewSigner(b.secret).SetHeaders(h, "evt_late", time.Now(), body)
	_, err = fmt.Fprintf(conn, "POST %s HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: %d\r\n"+
		"webhook-id: %s\r\nwebhook-timestamp: %s\r\nwebhook-signature: %s\r\n\r\n%s",
		server.WebhookPath, len(body), h.Get("webhook-id"), h.Get("webhook-timestamp"), h.Get("webhook-signature"), body)
	require.NoError(t, err)
	require.NoError(t, conn.SetReadDeadline(time.Now().Add(5*time.Second)))
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	require.NoError(t, err, "answered, not closed")
	resp.Body.Close()
	require.Equal(t, http.StatusAccepted, resp.StatusCode)
	require.True(t, resp.Close, "Connection: close")
}
