package server_test

import (
	"net"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// readsListener is a webhook listener that counts, for each connection,
// the bytes the server has read from it: a test waits on those counts to
// know that what it sent has reached the server, instead of sleeping.
type readsListener struct {
	net.Listener
	mu   sync.Mutex
	read map[string]int64 // the client's address -> bytes read
}

// countReads wraps ln.
func countReads(ln net.Listener) *readsListener {
	return &readsListener{Listener: ln, read: map[string]int64{}}
}

func (l *readsListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return &countedConn{Conn: c, l: l, peer: c.RemoteAddr().String()}, nil
}

// SyscallConn exposes the socket as the unwrapped listener does, so the
// server's look at the listen queue on shutdown works as in production.
func (l *readsListener) SyscallConn() (syscall.RawConn, error) {
	return l.Listener.(syscall.Conn).SyscallConn()
}

// counts returns the bytes read so far, by the client's address.
func (l *readsListener) counts() map[string]int64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := make(map[string]int64, len(l.read))
	for k, v := range l.read {
		out[k] = v
	}
	return out
}

// waitRead waits until at least conns connections have each had at least
// more bytes read since before (a connection not in before counts from
// zero).
func (l *readsListener) waitRead(t *testing.T, before map[string]int64, conns int, more int64) {
	t.Helper()
	require.Eventually(t, func() bool {
		n := 0
		for peer, read := range l.counts() {
			if read-before[peer] >= more {
				n++
			}
		}
		return n >= conns
	}, 10*time.Second, 2*time.Millisecond, "the server read %d bytes more from %d connections", more, conns)
}

type countedConn struct {
	net.Conn
	l    *readsListener
	peer string
}

func (c *countedConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	c.l.mu.Lock()
	c.l.read[c.peer] += int64(n)
	c.l.mu.Unlock()
	return n, err
}
