// Package natstest runs a real, current NATS server with JetStream inside the
// test process, so tests need neither Docker nor the machine's own (older)
// nats-server.
package natstest

import (
	"context"
	"fmt"
	"net"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/likeperson/portalsync/pkg/stream"
)

// Server is an embedded JetStream server that can be stopped and started
// again on the same port and store, to test outages.
type Server struct {
	t        testing.TB
	opts     server.Options
	srv      *server.Server
	storeDir string
}

// Option changes the server's options before it starts.
type Option func(*server.Options)

// SyncAlways makes the server write every stored message through to disk
// (fsync) before it acknowledges it, as every configuration the project
// ships does (`jetstream { sync_interval: always }`). Tests that claim
// durability use it; the others keep the server's default (a sync every
// two minutes), which costs the shared test machine less.
func SyncAlways() Option {
	return func(o *server.Options) { o.SyncAlways = true }
}

// Run starts a JetStream server on a free loopback port with its store in a
// temporary directory. It is shut down when the test ends.
func Run(t testing.TB, opts ...Option) *Server {
	t.Helper()
	s := newServer(t, opts...)
	s.Start()
	t.Cleanup(s.Stop)
	return s
}

// New returns a JetStream server like Run's without starting it, to test
// services that start while NATS is down; Start starts it. It is shut down
// when the test ends.
func New(t testing.TB, opts ...Option) *Server {
	t.Helper()
	s := newServer(t, opts...)
	t.Cleanup(s.Stop)
	return s
}

func newServer(t testing.TB, opts ...Option) *Server {
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
	for _, o := range opts {
		o(&s.opts)
	}
	return s
}

// JetStream starts a server as Run does, connects a client to it and
// returns the client's JetStream API and the stream cfg, ensured as the
// services ensure it (stream.Ensure). Server.JetStream connects to a
// server the test keeps (to stop it, or to connect with other options).
func JetStream(t testing.TB, cfg stream.Config) (jetstream.JetStream, jetstream.Stream) {
	t.Helper()
	js := Run(t).JetStream(t)
	s, err := stream.Ensure(context.Background(), js, cfg)
	if err != nil {
		t.Fatalf("natstest: ensure stream %s: %v", cfg.Name, err)
	}
	return js, s
}

// JetStream connects a client to the server with opts and returns its
// JetStream API. The connection is closed when the test ends.
func (s *Server) JetStream(t testing.TB, opts ...nats.Option) jetstream.JetStream {
	t.Helper()
	nc, err := nats.Connect(s.URL(), opts...)
	if err != nil {
		t.Fatalf("natstest: connect: %v", err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatalf("natstest: jetstream: %v", err)
	}
	return js
}

// Cluster is a JetStream cluster of embedded servers on loopback ports.
type Cluster struct {
	Servers []*Server
}

// RunCluster starts n clustered JetStream servers, named n1..nN, and waits
// until they have formed a cluster. They are shut down when the test ends.
func RunCluster(t testing.TB, n int) *Cluster {
	t.Helper()
	c := &Cluster{}
	routes := make([]string, n)
	ports := make([]int, n)
	for i := range n {
		ports[i] = freePort(t)
		routes[i] = fmt.Sprintf("nats://127.0.0.1:%d", ports[i])
	}
	for i := range n {
		s := newServer(t)
		s.opts.ServerName = fmt.Sprintf("n%d", i+1)
		s.opts.Cluster = server.ClusterOpts{Name: "portalsync-test", Host: "127.0.0.1", Port: ports[i]}
		for j, r := range routes {
			if j != i {
				u, err := url.Parse(r)
				if err != nil {
					t.Fatalf("natstest: route: %v", err)
				}
				s.opts.Routes = append(s.opts.Routes, u)
			}
		}
		c.Servers = append(c.Servers, s)
	}
	// Servers start together: each waits for the routes to the others.
	for _, s := range c.Servers {
		s.startAsync()
	}
	for _, s := range c.Servers {
		s.waitReady()
	}
	t.Cleanup(func() {
		for _, s := range c.Servers {
			s.Stop()
		}
	})
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		// Ready: every server is in step with the meta group, and its
		// leader sees all n servers online with JetStream.
		ready, peers := true, 0
		for _, s := range c.Servers {
			if !s.srv.JetStreamIsClustered() || !s.srv.JetStreamIsCurrent() {
				ready = false
			}
			if s.srv.JetStreamIsLeader() {
				peers = len(s.srv.JetStreamClusterPeers())
			}
		}
		ready = ready && peers == n
		if ready {
			return c
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("natstest: cluster did not elect a JetStream meta leader")
	return nil
}

// URL returns a client URL listing every server of the cluster.
func (c *Cluster) URL() string {
	urls := make([]string, len(c.Servers))
	for i, s := range c.Servers {
		urls[i] = s.URL()
	}
	return strings.Join(urls, ",")
}

// ByName returns the server with the given name, or nil.
func (c *Cluster) ByName(name string) *Server {
	for _, s := range c.Servers {
		if s.opts.ServerName == name {
			return s
		}
	}
	return nil
}

// URL returns the client URL; it stays the same across restarts.
func (s *Server) URL() string {
	return "nats://" + net.JoinHostPort(s.opts.Host, strconv.Itoa(s.opts.Port))
}

// Start starts the server (again) on the same port and store.
func (s *Server) Start() {
	s.t.Helper()
	s.startAsync()
	s.waitReady()
}

func (s *Server) startAsync() {
	opts := s.opts
	srv, err := server.NewServer(&opts)
	if err != nil {
		s.t.Fatalf("natstest: new server: %v", err)
	}
	go srv.Start()
	s.srv = srv
}

func (s *Server) waitReady() {
	if !s.srv.ReadyForConnections(20 * time.Second) {
		s.t.Fatalf("natstest: server not ready on %s", s.URL())
	}
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
