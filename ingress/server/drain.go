package server

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"sync"
	"syscall"
	"time"

	"go.uber.org/zap"
)

// The webhook listener shuts down in steps, so that no request a client
// has sent on a connection the server accepted goes unanswered:
//
//  1. draining, from the moment Run's context ends: /readyz answers 503
//     and every answer carries "Connection: close" (closeWhileDraining),
//     for DrainGrace; a load balancer stops sending, clients leave their
//     kept-alive connections after an answer;
//  2. the listener closes (new connections are refused), connections idle
//     through the whole grace are closed, and Run waits until no accepted
//     connection is new or active (connStates), within ShutdownTimeout;
//  3. only then http.Server.Shutdown, which drops a request it reads after
//     it has begun: by now there is none to read.

// closeWhileDraining answers with "Connection: close" once stopping is
// closed: the client leaves the connection after this answer, at a moment
// it knows, rather than finding it closed under its next request when the
// listener shuts down (net/http closes the connection after a response
// whose handler set that header; HTTP/2 sends GOAWAY).
func closeWhileDraining(next http.Handler, stopping <-chan struct{}) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-stopping:
			w.Header().Set("Connection", "close")
		default:
		}
		next.ServeHTTP(w, r)
	})
}

// connStates follows the webhook server's connections (http.Server's
// ConnState hook).
type connStates struct {
	mu    sync.Mutex
	state map[net.Conn]http.ConnState
}

func newConnStates() *connStates { return &connStates{state: map[net.Conn]http.ConnState{}} }

func (c *connStates) track(conn net.Conn, s http.ConnState) {
	c.mu.Lock()
	defer c.mu.Unlock()
	switch s {
	case http.StateClosed, http.StateHijacked:
		delete(c.state, conn)
	default:
		c.state[conn] = s
	}
}

// busy counts the connections accepted and not yet answered: new (a
// request may be on its way) or active.
func (c *connStates) busy() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := 0
	for _, s := range c.state {
		if s == http.StateNew || s == http.StateActive {
			n++
		}
	}
	return n
}

// waitQuiet waits until no connection is busy, or ctx ends. Polling, as
// http.Server.Shutdown does: connections close on their own once
// answered, with nothing to signal.
func (c *connStates) waitQuiet(ctx context.Context) error {
	t := time.NewTicker(10 * time.Millisecond)
	defer t.Stop()
	for c.busy() > 0 {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
	}
	return nil
}

// closeOnceListener lets Run close the webhook listener before
// http.Server.Shutdown does: the second Close returns nil.
type closeOnceListener struct {
	net.Listener
	once sync.Once
	err  error
}

func (l *closeOnceListener) Close() error {
	l.once.Do(func() { l.err = l.Listener.Close() })
	return l.err
}

// SyscallConn exposes the wrapped listener's socket, so that
// waitListenQueueEmpty can read its accept queue: embedding net.Listener
// passes on only Accept, Close and Addr.
func (l *closeOnceListener) SyscallConn() (syscall.RawConn, error) {
	sc, ok := l.Listener.(syscall.Conn)
	if !ok {
		return nil, fmt.Errorf("%T has no socket: %w", l.Listener, errors.ErrUnsupported)
	}
	return sc.SyscallConn()
}

// drainWebhooks runs the steps above once Run's context has ended: not
// ready (readiness.stopping) while the webhook listener still serves for
// DrainGrace, so that a load balancer stops sending before it closes;
// then the listener closed, every connection the server has answered
// before http.Server.Shutdown, which would drop a request read after it
// began; then closeNATS.
func drainWebhooks(ctx context.Context, cfg Config, srv *http.Server, ln net.Listener, conns *connStates,
	serveErr <-chan error, closeNATS func(), log *zap.Logger,
) error {
	if cfg.DrainGrace > 0 {
		log.Info("draining: not ready, still serving", zap.Duration("grace", cfg.DrainGrace))
		grace := time.NewTimer(cfg.DrainGrace)
		select {
		case <-grace.C:
		case err := <-serveErr:
			grace.Stop()
			log.Warn("serve ended during the grace", zap.Error(err))
		}
	}
	log.Info("shutting down")
	shutdownCtx, cancelShutdown := context.WithTimeout(context.WithoutCancel(ctx), cfg.ShutdownTimeout)
	defer cancelShutdown()
	waitListenQueueEmpty(shutdownCtx, ln)
	_ = ln.Close()
	srv.SetKeepAlivesEnabled(false) // closes connections idle through the grace
	if err := conns.waitQuiet(shutdownCtx); err != nil {
		log.Warn("requests still in flight at the shutdown timeout", zap.Int("connections", conns.busy()))
	}
	shutdownErr := srv.Shutdown(shutdownCtx)
	if shutdownErr != nil {
		_ = srv.Close() // past the deadline: cut what is left
	}
	closeNATS()
	if shutdownErr != nil {
		return fmt.Errorf("shutdown: %w", shutdownErr)
	}
	return nil
}

// listenQueueWait bounds how long the shutdown waits for the serve loop to
// accept what the kernel has queued.
const listenQueueWait = 500 * time.Millisecond

// waitListenQueueEmpty waits, briefly, until the serve loop has accepted
// every connection the kernel completed on ln: closing a listener resets
// the connections still in its accept queue, whose senders have written
// their requests and would get a reset instead of an answer. A dial that
// completes between the last look and the close is still reset (TCP
// offers no way to stop accepting without that window, only to make it
// short). Without a readable queue (not Linux, not TCP) it returns at once.
func waitListenQueueEmpty(ctx context.Context, ln net.Listener) {
	deadline := time.Now().Add(listenQueueWait)
	for {
		n, ok := listenQueue(ln)
		if !ok || n == 0 || time.Now().After(deadline) || ctx.Err() != nil {
			return
		}
		time.Sleep(200 * time.Microsecond)
	}
}
