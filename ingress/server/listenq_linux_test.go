package server

import (
	"net"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// The accept queue is read through the listener Run serves, which wraps
// the TCP listener: a connection the kernel completed and the server has
// not accepted yet is seen, and waitListenQueueEmpty waits for its
// accept.
func TestListenQueueSeenThroughRunsListener(t *testing.T) {
	t.Parallel()
	tcp, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	ln := &closeOnceListener{Listener: tcp}
	t.Cleanup(func() { _ = ln.Close() })

	n, ok := listenQueue(ln)
	require.True(t, ok, "the accept queue is readable through closeOnceListener")
	require.Zero(t, n)

	conn, err := net.Dial("tcp", tcp.Addr().String())
	require.NoError(t, err)
	t.Cleanup(func() { _ = conn.Close() })
	require.Eventually(t, func() bool { n, ok := listenQueue(ln); return ok && n == 1 }, 5*time.Second, time.Millisecond,
		"the completed connection is queued")

	accepted := make(chan net.Conn, 1)
	go func() {
		time.Sleep(50 * time.Millisecond)
		c, err := ln.Accept()
		if err == nil {
			accepted <- c
		}
		close(accepted)
	}()
	start := time.Now()
	waitListenQueueEmpty(t.Context(), ln)
	require.GreaterOrEqual(t, time.Since(start), 40*time.Millisecond, "waited for the accept")
	n, ok = listenQueue(ln)
	require.True(t, ok)
	require.Zero(t, n)
	if c := <-accepted; c != nil {
		_ = c.Close()
	}
}
