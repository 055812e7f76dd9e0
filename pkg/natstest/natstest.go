// Package natstest runs a real, current NATS server with JetStream inside the
// test process, so tests need neither Docker nor the machine's own (older)
// nats-server.
package natstest

import (
	"net"
	"strconv"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

// Server is an embedded JetStream server that can be stopped and started
// again on the same port and store, to test outages.
type Server struct {
	t        testing.TB
	opts     server.Options
	srv      *server.Server
	storeDir string
}

// Run starts a JetStream server on a free loopback port with its store in a
// temporary directory. It is shut down when the test ends.
func Run(t testing.TB) *Server {
	t.Helper()
	s := &Server{t: t, storeDir: t.TempDir()}
	s.opts = server.Options{
		Host:      "127.0.0.1",
		Port:      freePort(t),
		JetStream: true,
		StoreDir:  s.storeDir,
		NoLog:     true,
		NoSigs:    true,
		// A short write deadline keeps a stopped test client from slowing
		// the server down.
		WriteDeadline: 5 * time.Second,
	}
	s.Start()
	t.Cleanup(s.Stop)
	return s
}

// URL returns the client URL; it stays the same across restarts.
func (s *Server) URL() string {
	return "nats://" + net.JoinHostPort(s.opts.Host, strconv.Itoa(s.opts.Port))
}

// StoreDir returns the JetStream store directory.
func (s *Server) StoreDir() string { return s.storeDir }

// Start starts the server (again) on the same port and store.
func (s *Server) Start() {
	s.t.Helper()
	opts := s.opts
	srv, err := server.NewServer(&opts)
	if err != nil {
		s.t.Fatalf("natstest: new server: %v", err)
	}
	go srv.Start()
	if !srv.ReadyForConnections(10 * time.Second) {
		s.t.Fatalf("natstest: server not ready on %s", s.URL())
	}
	s.srv = srv
}

// Stop shuts the server down and waits until it is gone. It is safe to call
// twice.
func (s *Server) Stop() {
	if s.srv == nil {
		return
	}
	s.srv.Shutdown()
	s.srv.WaitForShutdown()
	s.srv = nil
}

func freePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("natstest: free port: %v", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}
