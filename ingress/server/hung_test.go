package server_test

import (
	"context"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/likeperson/portalsync/ingress/server"
)

// freezer is a TCP proxy that can stop forwarding in both directions
// without closing anything: what a hung NATS server, or a host that lost
// power, looks like from the client (no FIN, no RST).
type freezer struct {
	ln     net.Listener
	mu     sync.Mutex
	frozen bool
	wake   chan struct{}
}

func newFreezer(t *testing.T, target string) *freezer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	f := &freezer{ln: ln, wake: make(chan struct{})}
	t.Cleanup(func() { _ = ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			s, err := net.Dial("tcp", target)
			if err != nil {
				_ = c.Close()
				continue
			}
			t.Cleanup(func() { _ = c.Close(); _ = s.Close() })
			go f.pipe(c, s)
			go f.pipe(s, c)
		}
	}()
	return f
}

func (f *freezer) pipe(dst, src net.Conn) {
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		f.mu.Lock()
		frozen, wake := f.frozen, f.wake
		f.mu.Unlock()
		if frozen {
			<-wake // hold what was read: the peer never sees it
		}
		if n > 0 {
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			if err != io.EOF {
				_ = dst.Close()
			}
			return
		}
	}
}

func (f *freezer) freeze(on bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.frozen && !on {
		close(f.wake)
		f.wake = make(chan struct{})
	}
	f.frozen = on
}

// TestHungNATSIsKnownDown: a NATS server that stops answering without
// closing the connection (hung, or its host lost power) is known down
// within a few ping intervals (5 s, two outstanding), and webhooks are then
// answered 503 at once instead of after the whole publish timeout. Found
// by an outside test of issue 19: with the client's default keep-alive
// (2 minutes) every webhook waited the 5 s timeout for minutes.
func TestHungNATSIsKnownDown(t *testing.T) {
	t.Parallel()
	const publishTimeout = 5 * time.Second
	var f *freezer
	b := setup(t, func(c *server.Config) {
		f = newFreezer(t, c.NATSURL[len("nats://"):])
		c.NATSURL = "nats://" + f.ln.Addr().String()
		c.PublishTimeout = publishTimeout
	})
	ctx := context.Background()
	r, err := b.client.SendEvent(ctx, sampleEvent("evt_h1", "m-h"))
	require.NoError(t, err)
	require.Equal(t, http.StatusAccepted, r.Status, string(r.Body))

	f.freeze(true)
	frozeAt := time.Now()
	require.Eventually(t, func() bool {
		code, body := get(t, b.ops+"/readyz")
		return code == http.StatusServiceUnavailable && strings.Contains(body, "not connected to NATS")
	}, 30*time.Second, 100*time.Millisecond, "the hung connection is known down")
	t.Logf("known down %v after the freeze", time.Since(frozeAt).Round(100*time.Millisecond))
	start := time.Now()
	r, err = b.client.SendEvent(ctx, sampleEvent("evt_h2", "m-h"))
	require.NoError(t, err)
	require.Equal(t, http.StatusServiceUnavailable, r.Status, string(r.Body))
	require.Less(t, time.Since(start), time.Second, "answered at once, not after the publish timeout (%v)", publishTimeout)
	f.freeze(false)
}
