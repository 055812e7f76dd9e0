// Package e2e tests portalsync end to end: a signed HTTP request through the
// real ingress, a real JetStream server, the real syncer and a real
// PostgreSQL database.
package e2e

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest"

	"github.com/likeperson/portalsync/ingress/dataverse"
	"github.com/likeperson/portalsync/ingress/server"
	"github.com/likeperson/portalsync/pkg/portalclient"
	"github.com/likeperson/portalsync/pkg/signature"
	"github.com/likeperson/portalsync/pkg/stream"
	"github.com/likeperson/portalsync/syncer/consumer"
	"github.com/likeperson/portalsync/syncer/service"
	"github.com/likeperson/portalsync/testkit/natstest"
	"github.com/likeperson/portalsync/testkit/schematest"
	"github.com/likeperson/portalsync/testkit/servicetest"
	"github.com/likeperson/portalsync/testkit/supabasetest"
)

// system is one running portalsync: ingress, JetStream, syncer, database.
type system struct {
	pool   *pgxpool.Pool
	dbURL  string
	nats   *natstest.Server
	client *portalclient.Client
	secret signature.Secret
	seq    atomic.Int64

	ingressURL string
	ingressOps string // the ingress's /healthz, /readyz, /metrics
	syncerURL  string
	natsURL    string
	stream     stream.Config

	// Everything the services log, and the personal data of every event
	// sent, to prove the one never holds the other.
	mu      sync.Mutex
	outputs []*lockedBuffer
	pii     map[string]bool
}

// logger logs to the test and to a buffer that is scanned for personal
// data when the test ends.
func (s *system) logger(t *testing.T, name string) *zap.Logger {
	buf := s.output()
	enc := zap.NewProductionEncoderConfig()
	core := zapcore.NewCore(zapcore.NewJSONEncoder(enc), zapcore.AddSync(buf), zapcore.DebugLevel)
	return zap.New(zapcore.NewTee(zaptest.NewLogger(t).Core(), core)).Named(name)
}

func (s *system) output() *lockedBuffer {
	s.mu.Lock()
	defer s.mu.Unlock()
	b := &lockedBuffer{}
	s.outputs = append(s.outputs, b)
	return b
}

// remember records an event's personal data.
func (s *system) remember(values ...string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, v := range values {
		if v != "" {
			s.pii[v] = true
		}
	}
}

// scanForPersonalData fails the test if a log line holds a name, e-mail
// or phone number of an event the test sent.
func (s *system) scanForPersonalData(t *testing.T) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.pii) == 0 {
		return
	}
	for _, out := range s.outputs {
		text := out.String()
		for v := range s.pii {
			if i := strings.Index(text, v); i >= 0 {
				lineStart := strings.LastIndex(text[:i], "\n") + 1
				lineEnd := strings.Index(text[i:], "\n")
				if lineEnd < 0 {
					lineEnd = len(text) - i
				}
				t.Errorf("personal data %q in a log line: %s", v, text[lineStart:i+lineEnd])
			}
		}
	}
}

// options change what start runs.
type options struct {
	// noSyncer leaves the syncer out (a test runs its own).
	noSyncer bool
	// cluster runs a three-node JetStream cluster and an R3 stream.
	cluster *natstest.Cluster
	// supabase runs on a database of the Supabase-shaped cluster, the
	// syncer as the least-privileged login role.
	supabase *supabasetest.Database
	// dataverse serves POST /webhooks/dataverse with this configuration.
	dataverse *dataverse.Config
	// stream replaces the test stream's configuration, and maxBody the
	// ingress's largest body (which must fit the stream's messages).
	stream  *stream.Config
	maxBody int64
	// nats are the options of the test's JetStream server.
	nats []natstest.Option
}

// Option changes what start runs.
type Option func(*options)

// withoutSyncer starts everything but the syncer.
func withoutSyncer() Option { return func(o *options) { o.noSyncer = true } }

// onSupabase runs on db, a database of the Supabase-shaped cluster.
func onSupabase(db *supabasetest.Database) Option { return func(o *options) { o.supabase = db } }

// withDataverse serves the Dataverse intake with cfg.
func withDataverse(cfg dataverse.Config) Option { return func(o *options) { o.dataverse = &cfg } }

// withStream runs with the stream configuration c and the ingress's
// largest body maxBody (0: the default).
func withStream(c stream.Config, maxBody int64) Option {
	return func(o *options) { o.stream, o.maxBody = &c, maxBody }
}

// syncAlways runs JetStream as the project ships it: every write synced
// to disk before it is acknowledged (for tests that claim durability).
func syncAlways() Option { return func(o *options) { o.nats = append(o.nats, natstest.SyncAlways()) } }

// onCluster runs on the given JetStream cluster with an R3 stream.
func onCluster(c *natstest.Cluster) Option { return func(o *options) { o.cluster = c } }

func start(t *testing.T, opts ...Option) *system {
	t.Helper()
	var o options
	for _, fn := range opts {
		fn(&o)
	}
	var pool *pgxpool.Pool
	var dbURL, syncerURL string
	if o.supabase != nil {
		// The test reads and arranges as the superuser; the syncer runs as
		// the role docs/CONTRACT.md documents.
		dbURL, syncerURL = o.supabase.URL("supabase_admin"), o.supabase.URL(supabasetest.SyncerRole)
		var err error
		pool, err = pgxpool.New(context.Background(), dbURL)
		require.NoError(t, err)
		t.Cleanup(pool.Close)
	} else {
		db := schematest.NewDB(t)
		pool, dbURL, syncerURL = db.Pool, db.URL, db.URL
	}
	secret, err := signature.NewSecret([]byte("portalsync-e2e-test-secret-32by!"))
	require.NoError(t, err)
	sys := &system{pool: pool, dbURL: dbURL, secret: secret, stream: testStream, pii: map[string]bool{}}
	if o.stream != nil {
		sys.stream = *o.stream
	}
	// Registered first, so it runs last, after every service has stopped.
	t.Cleanup(func() { sys.scanForPersonalData(t) })
	if o.cluster != nil {
		sys.natsURL = o.cluster.URL()
		sys.stream.Replicas = 3
	} else {
		sys.nats = natstest.Run(t, o.nats...)
		sys.natsURL = sys.nats.URL()
	}
	ctx, cancel := context.WithCancel(context.Background())

	ingressLn, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	opsLn, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	runUntilCleanup(t, "the ingress", cancel, func() error {
		return server.Run(ctx, server.Config{Listener: ingressLn, OpsListener: opsLn, DrainGrace: 50 * time.Millisecond, NATSURL: sys.natsURL, Secrets: []signature.Secret{secret},
			Stream: sys.stream, PublishTimeout: time.Second, RetryAfter: time.Second, Dataverse: o.dataverse,
			MaxBodyBytes: o.maxBody}, sys.logger(t, "ingress"))
	})
	sys.ingressURL = "http://" + ingressLn.Addr().String()
	sys.ingressOps = "http://" + opsLn.Addr().String()
	servicetest.WaitReady(t, sys.ingressOps, nil)
	sys.client = &portalclient.Client{
		URL:    sys.ingressURL + server.WebhookPath,
		Signer: signature.NewSigner(secret),
		HTTP:   &http.Client{Timeout: 10 * time.Second},
	}
	if !o.noSyncer {
		sys.syncerURL = sys.startSyncer(t, syncerURL)
	}
	return sys
}

// runUntilCleanup runs a service in the background; when the test ends it
// cancels it and requires a clean stop within 20 s.
func runUntilCleanup(t *testing.T, what string, cancel context.CancelFunc, run func() error) {
	done := make(chan error, 1)
	go func() { done <- run() }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			require.NoError(t, err, what)
		case <-time.After(20 * time.Second):
			t.Errorf("%s did not stop", what)
		}
	})
}

// jetStream connects a test client to the system's NATS.
func (s *system) jetStream(t *testing.T) jetstream.JetStream {
	t.Helper()
	nc, err := nats.Connect(s.natsURL)
	require.NoError(t, err)
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	require.NoError(t, err)
	return js
}

// testStream is the event stream of every test (each has its own server).
var testStream = stream.Config{Name: "EVENTS"}

// harnessConsumer is the consumer configuration of every syncer the e2e
// tests run, in process (runSyncer) or as a `syncer run` subprocess
// (syncerProcess): retries, redeliveries and probes of a dependency that
// is down come within seconds, and the delivery budget is one no test
// spends by accident. A test changes it through its mod function.
func harnessConsumer() consumer.Config {
	return consumer.Config{
		BackOff:    []time.Duration{50 * time.Millisecond, 100 * time.Millisecond, 200 * time.Millisecond},
		MaxDeliver: 1000,
		PullExpiry: 2 * time.Second,
		AckWait:    3 * time.Second,
		ProbeMax:   500 * time.Millisecond,
	}
}

// runSyncer runs an in-process syncer against dbURL until the test ends
// and returns its health URL, without waiting for it to be ready. mod,
// when not nil, changes the harness's configuration.
func (s *system) runSyncer(t *testing.T, dbURL string, mod func(*service.Config)) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	cfg := service.Config{DatabaseURL: dbURL, NATSURL: s.natsURL, HTTPListener: ln, Stream: s.stream, Consumer: harnessConsumer()}
	if mod != nil {
		mod(&cfg)
	}
	ctx, cancel := context.WithCancel(context.Background())
	runUntilCleanup(t, "the syncer", cancel, func() error { return service.Run(ctx, cfg, s.logger(t, "syncer")) })
	return "http://" + ln.Addr().String()
}

// startSyncer runs an in-process syncer with the harness's configuration
// against dbURL until the test ends, and returns its health URL once it is
// ready.
func (s *system) startSyncer(t *testing.T, dbURL string) string {
	t.Helper()
	url := s.runSyncer(t, dbURL, nil)
	servicetest.WaitReady(t, url, nil)
	return url
}

// evt builds an event body as the portal sends it.
type evt struct {
	ID         string         `json:"id"`
	Type       string         `json:"type"`
	OccurredAt time.Time      `json:"occurred_at"`
	Org        map[string]any `json:"organization"`
	Member     map[string]any `json:"member"`
	Role       string         `json:"role,omitempty"`
}

var base = time.Date(2026, 11, 25, 10, 0, 0, 0, time.UTC)

func (s *system) event(typ, member, org, role string, at time.Time) evt {
	n := s.seq.Add(1)
	return evt{
		ID: fmt.Sprintf("evt_%s_%d", typ, n), Type: typ, OccurredAt: at,
		Org: map[string]any{"id": org, "name": "HLF " + org},
		Member: map[string]any{"id": member, "email": member + "@example.invalid",
			"first_name": "Fornavn" + member, "last_name": "Etternavn", "phone": "+47 555 00 " + fmt.Sprintf("%03d", n%1000)},
		Role: role,
	}
}

// send posts e and requires a 2xx.
func (s *system) send(t *testing.T, e evt) portalclient.Accepted {
	t.Helper()
	for _, k := range []string{"email", "first_name", "last_name", "phone"} {
		if v, ok := e.Member[k].(string); ok {
			s.remember(v)
		}
	}
	resp, err := s.client.SendEvent(context.Background(), e)
	require.NoError(t, err)
	acc, err := resp.Accepted()
	require.NoError(t, err)
	return acc
}

// waitLogged waits until the event has a log row and returns its status.
func (s *system) waitLogged(t *testing.T, eventID string) string {
	t.Helper()
	var status string
	require.Eventually(t, func() bool {
		err := s.pool.QueryRow(context.Background(), `SELECT status FROM portal_sync_log WHERE event_id = $1 ORDER BY id DESC LIMIT 1`, eventID).Scan(&status)
		return err == nil
	}, 20*time.Second, 5*time.Millisecond, "event %s never logged", eventID)
	return status
}

// addAuthUser creates an app user with a confirmed e-mail and returns its id.
func (s *system) addAuthUser(t *testing.T, email string) string {
	t.Helper()
	var id string
	require.NoError(t, s.pool.QueryRow(context.Background(),
		`INSERT INTO auth.users (id, email, email_confirmed_at) VALUES (gen_random_uuid(), $1, now()) RETURNING id::text`, email).Scan(&id))
	return id
}

// asUser runs fn the way Supabase runs an API request: as the
// authenticated role, with the user's JWT claims set.
func (s *system) asUser(t *testing.T, authUserID string, fn func(tx pgx.Tx)) {
	t.Helper()
	schematest.AsAuthenticated(t, s.pool, authUserID, fn)
}

// queryStrings runs a query of one text column on conn (a pool, a
// connection or a transaction) and returns its rows.
func queryStrings(t *testing.T, conn querier, sql string, args ...any) []string {
	t.Helper()
	rows, err := conn.Query(context.Background(), sql, args...)
	require.NoError(t, err)
	out, err := pgx.CollectRows(rows, pgx.RowTo[string])
	require.NoError(t, err)
	return out
}
