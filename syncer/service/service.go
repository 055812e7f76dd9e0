// Package service wires the syncer: database pool, NATS connection, stream,
// consumer and the health endpoints, with an ordered shutdown.
package service

import (
	"cmp"
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/jackc/pgx/v5/stdlib"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.uber.org/zap"

	"github.com/likeperson/portalsync/pkg/stream"
	"github.com/likeperson/portalsync/pkg/wait"
	"github.com/likeperson/portalsync/schema"
	"github.com/likeperson/portalsync/syncer/backlog"
	"github.com/likeperson/portalsync/syncer/consumer"
	"github.com/likeperson/portalsync/syncer/deadletter"
	"github.com/likeperson/portalsync/syncer/erase"
	"github.com/likeperson/portalsync/syncer/history"
	"github.com/likeperson/portalsync/syncer/store"
	"github.com/likeperson/portalsync/syncer/synchealth"
)

// Defaults for Config.
const (
	DefaultNATSURL          = "nats://127.0.0.1:4222"
	DefaultHTTPAddr         = "127.0.0.1:8081"
	DefaultLogRetention     = 90 * 24 * time.Hour
	DefaultLogPurgeInterval = time.Hour
)

// Config configures the syncer service.
type Config struct {
	// DatabaseURL connects to PostgreSQL as a login role that is a member
	// of portalsync_syncer (on plain PostgreSQL also the owner). Required.
	DatabaseURL string
	// NATSURL is the NATS server. Default "nats://127.0.0.1:4222".
	NATSURL string
	// HTTPAddr serves /healthz, /readyz, /status and /metrics. Default
	// "127.0.0.1:8081", loopback: set a private address (or "0.0.0.0:8081"
	// in a container) for probes and Prometheus from elsewhere, never a
	// public one. Ignored when HTTPListener is set.
	HTTPAddr string
	// HTTPListener, when set, is served instead of listening on HTTPAddr.
	HTTPListener net.Listener
	// Migrate applies the schema migrations before consuming.
	Migrate bool
	// Stream is the event stream (its defaults: stream.Config).
	Stream stream.Config
	// Consumer configures the durable consumer (its defaults:
	// consumer.Config); its Stream is always Stream's name.
	Consumer consumer.Config
	// DeadLetterStream names the dead-letter stream. Default
	// "PORTAL_DEADLETTER".
	DeadLetterStream string
	// Pprof serves /debug/pprof/ on the health address, for profiling.
	Pprof bool
	// LogRetention is how long sync-log rows are kept. Default 90 days;
	// negative keeps them for ever. Every LogPurgeInterval (default 1 h)
	// older rows are deleted.
	LogRetention     time.Duration
	LogPurgeInterval time.Duration
	// HistoryInterval is how often the stream's settled history is trimmed
	// (past Stream.MaxAge, or over three quarters of the stream's size
	// limit: then every second instead) and its size read into the
	// metrics. Default 15 s (history.DefaultInterval).
	HistoryInterval time.Duration
	// BacklogInterval is how often the oldest event not settled yet is
	// read (portalsync_syncer_oldest_unapplied_seconds, catching_up in
	// sync_health). Default 5 s (backlog.DefaultInterval).
	BacklogInterval time.Duration
	// CatchingUpAfter is how long the oldest event not settled yet may
	// have waited before this process reports catching_up instead of
	// running in portalsync.sync_health. Default 10 s.
	CatchingUpAfter time.Duration
	// HealthProcess names this process's row of portalsync.sync_health.
	// Default "syncer:<host>:<pid>".
	HealthProcess string
	// HealthTick is how often the state is looked at for that row (it is
	// written on every change and at least every 30 s). Default 1 s.
	HealthTick time.Duration
}

// Defaults for Config's sync_health fields.
const (
	DefaultCatchingUpAfter = 10 * time.Second
	// HealthRetention is how long a sync_health row not reported any more
	// (a process killed, or restarted under another pid) is kept before
	// the purge loop deletes it.
	HealthRetention = 24 * time.Hour
)

// WithDefaults returns c with every zero field set to its default, the
// values the syncer binary's flags default to.
func (c Config) WithDefaults() Config {
	c.NATSURL = cmp.Or(c.NATSURL, DefaultNATSURL)
	c.HTTPAddr = cmp.Or(c.HTTPAddr, DefaultHTTPAddr)
	c.Stream = c.Stream.WithDefaults()
	c.Consumer.Stream = c.Stream.Name
	c.Consumer = c.Consumer.WithDefaults()
	c.DeadLetterStream = cmp.Or(c.DeadLetterStream, deadletter.DefaultName)
	c.LogRetention = cmp.Or(c.LogRetention, DefaultLogRetention)
	c.LogPurgeInterval = cmp.Or(c.LogPurgeInterval, DefaultLogPurgeInterval)
	c.HistoryInterval = cmp.Or(c.HistoryInterval, history.DefaultInterval)
	c.BacklogInterval = cmp.Or(c.BacklogInterval, backlog.DefaultInterval)
	c.CatchingUpAfter = cmp.Or(c.CatchingUpAfter, DefaultCatchingUpAfter)
	c.HealthProcess = cmp.Or(c.HealthProcess, healthProcess())
	c.HealthTick = cmp.Or(c.HealthTick, synchealth.DefaultTick)
	return c
}

// healthProcess is this process's default row name.
func healthProcess() string {
	host, err := os.Hostname()
	if err != nil || host == "" {
		host = "unknown"
	}
	return fmt.Sprintf("syncer:%s:%d", host, os.Getpid())
}

// DeadLetter returns the dead-letter configuration for the event stream s.
func (c Config) DeadLetter(s stream.Config) deadletter.Config {
	return deadletter.Config{Name: c.DeadLetterStream, EventStream: s.Name, Replicas: s.Replicas}
}

// NewPool returns a pgx pool over url without connecting: connections
// are opened when first used.
func NewPool(url string) (*pgxpool.Pool, error) {
	if url == "" {
		return nil, errors.New("DATABASE_URL is required")
	}
	cfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		return nil, fmt.Errorf("parse DATABASE_URL: %w", err)
	}
	cfg.ConnConfig.RuntimeParams["application_name"] = "portalsync-syncer"
	// Statements keep PostgreSQL's default plan_cache_mode (auto): a
	// session-wide force_custom_plan re-planned every foreign-key check
	// and cost 23 % of the ceiling. No function forces it either: the
	// account functions read by key, with sequential scans off (migration
	// 00021).
	pool, err := pgxpool.NewWithConfig(context.Background(), cfg)
	if err != nil {
		return nil, fmt.Errorf("open database: %w", err)
	}
	return pool, nil
}

// OpenPool connects a pgx pool and checks the connection (for commands,
// which fail at once instead of waiting).
func OpenPool(ctx context.Context, url string) (*pgxpool.Pool, error) {
	pool, err := NewPool(url)
	if err != nil {
		return nil, err
	}
	pingCtx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := pool.Ping(pingCtx); err != nil {
		pool.Close()
		return nil, fmt.Errorf("connect to database: %w", err)
	}
	return pool, nil
}

// Migrate applies the schema over pool.
func Migrate(ctx context.Context, pool *pgxpool.Pool, log *zap.Logger) error {
	db := stdlib.OpenDBFromPool(pool)
	defer func(db *sql.DB) { _ = db.Close() }(db)
	res, err := schema.Migrate(ctx, db)
	if err != nil {
		return err
	}
	log.Info("schema up to date", zap.Bool("auth_bootstrap", res.Bootstrapped),
		zap.Strings("applied", res.Applied), zap.Int64("version", res.Version))
	return nil
}

// Run runs the syncer until ctx ends. It serves its health endpoints
// first and then waits for PostgreSQL and NATS as long as they are down
// (readiness answers 503 meanwhile), instead of exiting.
func Run(ctx context.Context, cfg Config, log *zap.Logger) error {
	cfg = cfg.WithDefaults()
	if err := cfg.Consumer.Validate(); err != nil {
		return err
	}
	if err := cfg.Stream.Validate(); err != nil {
		return err
	}
	pool, err := NewPool(cfg.DatabaseURL)
	if err != nil {
		return err
	}
	defer pool.Close()
	nc, js, err := stream.Dial(cfg.NATSURL, "portalsync-syncer", log)
	if err != nil {
		return err
	}
	defer nc.Close()
	d := newDaemon(cfg, pool, nc, js, log)
	stopHealth, err := d.serveHealth(ctx)
	if err != nil {
		return err
	}
	defer stopHealth()
	runErr := d.consume(ctx)
	if err := nc.Drain(); err != nil && !errors.Is(err, nats.ErrConnectionClosed) {
		log.Warn("drain nats", zap.Error(err))
	}
	return runErr
}

// daemon is a running syncer: what Run opened, and what start-up has
// reached so far, for the health endpoints and sync_health.
type daemon struct {
	cfg            Config
	pool           *pgxpool.Pool
	st             *store.Store
	nc             *nats.Conn
	js             jetstream.JetStream
	reg            *prometheus.Registry
	metrics        *consumer.Metrics
	historyMetrics *history.Metrics
	log            *zap.Logger
	// startup names what start-up waits for; nil once consuming.
	startup atomic.Pointer[string]
	// natsDown is set when a start-up attempt to reach NATS failed.
	natsDown atomic.Bool
	cons     atomic.Pointer[consumer.Consumer]
	backlog  atomic.Pointer[backlog.Watcher]
}

func newDaemon(cfg Config, pool *pgxpool.Pool, nc *nats.Conn, js jetstream.JetStream, log *zap.Logger) *daemon {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	d := &daemon{cfg: cfg, pool: pool, st: store.New(pool), nc: nc, js: js, reg: reg,
		metrics: consumer.NewMetrics(reg), historyMetrics: history.NewMetrics(reg), log: log}
	d.setStartup("starting")
	return d
}

func (d *daemon) setStartup(s string) { d.startup.Store(&s) }

// ready is the readiness check: consuming, NATS connected and the
// database answering.
func (d *daemon) ready(ctx context.Context) error {
	if p := d.startup.Load(); p != nil {
		return errors.New(*p)
	}
	c := d.cons.Load()
	if c == nil {
		return errors.New("not consuming")
	}
	if err := c.Ready(); err != nil {
		return err
	}
	if err := stream.Connected(d.nc); err != nil {
		return err
	}
	if err := d.st.Ping(ctx); err != nil {
		return fmt.Errorf("database unavailable: %w", err)
	}
	return nil
}

// status is what GET /status answers.
func (d *daemon) status() Status {
	var s Status
	if p := d.startup.Load(); p != nil {
		s.Starting = *p
	}
	if c := d.cons.Load(); c != nil {
		s.Consumer = c.State()
	}
	return s
}

// serveHealth serves the health endpoints until the function it returns
// shuts the server down and waits for it.
func (d *daemon) serveHealth(ctx context.Context) (func(), error) {
	srv, ln, err := healthServer(d.cfg, notWhenStopping(ctx, d.ready), d.status,
		promhttp.HandlerFor(d.reg, promhttp.HandlerOpts{Registry: d.reg}))
	if err != nil {
		return nil, err
	}
	var wg sync.WaitGroup
	wg.Go(func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			d.log.Error("health server", zap.Error(err))
		}
	})
	d.log.Info("syncer health endpoints", zap.String("addr", ln.Addr().String()))
	return func() {
		shutdownCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(shutdownCtx)
		wg.Wait()
	}, nil
}

// consume waits for the database, checks the schema, reports in
// sync_health, waits for NATS and consumes until ctx ends. Stopped while
// waiting, it returns nil.
func (d *daemon) consume(ctx context.Context) error {
	d.setStartup("waiting for the database")
	if err := wait.Until(ctx, "the database", d.log, d.st.Ping); err != nil {
		return nil // stopped while waiting
	}
	if err := checkSchema(ctx, d.cfg, d.pool, d.log); err != nil {
		return err
	}
	d.setStartup("waiting for NATS")
	// This process's row of sync_health, from now on (the database
	// answers): written on every change and every 30 s, removed on stop;
	// joined before the pool closes.
	reporter, err := synchealth.New(d.st, synchealth.Config{Process: d.cfg.HealthProcess, Kind: store.HealthKindSyncer,
		Tick: d.cfg.HealthTick, RemoveOnStop: true}, d.health, d.log.Named("health"))
	if err != nil {
		return err
	}
	defer reporter.Start(ctx)()
	dlq, err := d.waitForNATS(ctx)
	if err != nil {
		if ctx.Err() != nil {
			return nil // stopped while waiting
		}
		return err
	}
	cons, watcher, err := d.newConsumer(dlq)
	if err != nil {
		return err
	}
	d.backlog.Store(watcher)
	d.cons.Store(cons)
	d.startup.Store(nil)
	reporter.Wake() // no longer waiting for NATS

	// Joined here, before nc.Drain in Run and the deferred pool.Close.
	stopBackground, err := startBackground(ctx, d.cfg, d.js, d.st, cons.ConsumerConfig().Durable, watcher, d.historyMetrics, d.log)
	if err != nil {
		return err
	}
	defer stopBackground()
	return cons.Run(ctx)
}

// health is what this process reports in sync_health now.
func (d *daemon) health() synchealth.Status {
	return healthStatus(d.startup.Load() != nil, d.natsDown.Load(), d.cons.Load(), d.backlog.Load(), d.cfg.CatchingUpAfter)
}

// waitForNATS waits until NATS answers, the event stream is created or
// updated and the dead-letter stream is open; a server too old fails at
// once.
func (d *daemon) waitForNATS(ctx context.Context) (*deadletter.Queue, error) {
	var dlq *deadletter.Queue
	err := wait.Until(ctx, "NATS", d.log, func(ctx context.Context) error {
		if err := stream.Connected(d.nc); err != nil {
			if errors.Is(err, stream.ErrServerTooOld) {
				return wait.Permanent(err)
			}
			d.natsDown.Store(true)
			return err
		}
		sctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		if _, err := stream.Ensure(sctx, d.js, d.cfg.Stream); err != nil {
			return err
		}
		var err error
		dlq, err = deadletter.Open(sctx, d.js, d.cfg.DeadLetter(d.cfg.Stream))
		return err
	})
	return dlq, err
}

// newConsumer builds the consumer and the backlog watcher that feeds its
// lag gauges.
func (d *daemon) newConsumer(dlq *deadletter.Queue) (*consumer.Consumer, *backlog.Watcher, error) {
	// A member-deleted event also purges the member's messages (erasure).
	applier := erase.NewApplier(d.st, erase.NewPurger(d.js, d.cfg.Stream.Name, dlq), d.log.Named("erase"))
	cons, err := consumer.New(d.js, applier, dlq, d.metrics, d.cfg.Consumer, d.log.Named("consumer"))
	if err != nil {
		return nil, nil, err
	}
	metrics := d.metrics
	watcher, err := backlog.New(d.js, backlog.Config{Stream: d.cfg.Stream.Name, Durable: cons.ConsumerConfig().Durable,
		FilterSubject: cons.ConsumerConfig().FilterSubject, Interval: d.cfg.BacklogInterval,
		OnInfo: func(info *jetstream.ConsumerInfo) {
			metrics.Pending.Set(float64(info.NumPending))
			metrics.AckPending.Set(float64(info.NumAckPending))
		}}, d.reg, d.log.Named("backlog"))
	if err != nil {
		return nil, nil, err
	}
	return cons, watcher, nil
}

// startBackground starts the loops beside the consumer: the backlog
// watcher (which also feeds the lag gauges) and the history trimmer, which
// use NATS, and the purge loop, which uses
// the pool. The function it returns stops them and waits for each.
func startBackground(ctx context.Context, cfg Config, js jetstream.JetStream, st *store.Store, durable string,
	watcher *backlog.Watcher, historyMetrics *history.Metrics, log *zap.Logger,
) (func(), error) {
	trimmer, err := history.New(js, history.Config{Stream: cfg.Stream, Durable: durable, Interval: cfg.HistoryInterval},
		historyMetrics, log.Named("history"))
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(ctx)
	var bg sync.WaitGroup
	bg.Go(func() { trimmer.Run(ctx) })
	bg.Go(func() { watcher.Run(ctx) })
	// Always: besides the sync log (when LogRetention is set) it removes
	// sync_health rows not reported for a day.
	bg.Go(func() {
		purgeLoop(ctx, st, cfg.LogRetention, cfg.LogPurgeInterval, log.Named("purge"))
	})
	return func() { cancel(); bg.Wait() }, nil
}

// notWhenStopping is the readiness check of a service whose run context
// is runCtx: once that has ended (SIGTERM) the service is shutting down,
// and /readyz answers 503 at once, while held events are still being
// finished, whatever check would say.
func notWhenStopping(runCtx context.Context, check func(context.Context) error) func(context.Context) error {
	return func(ctx context.Context) error {
		if runCtx.Err() != nil {
			return errors.New("shutting down")
		}
		return check(ctx)
	}
}

// Status is what GET /status answers: start-up progress, then what the
// consumer does (`syncer status` prints it).
type Status struct {
	// Starting names what start-up waits for; empty once consuming.
	Starting string         `json:"starting,omitempty"`
	Consumer consumer.State `json:"consumer"`
}

// checkSchema migrates, or checks that no migration is pending.
func checkSchema(ctx context.Context, cfg Config, pool *pgxpool.Pool, log *zap.Logger) error {
	if cfg.Migrate {
		return Migrate(ctx, pool, log)
	}
	db := stdlib.OpenDBFromPool(pool)
	pending, err := schema.Pending(ctx, db)
	_ = db.Close()
	if err != nil {
		return fmt.Errorf("check schema (run `syncer migrate` first): %w", err)
	}
	if pending > 0 {
		return fmt.Errorf("%d schema migrations are pending: run `syncer migrate` first", pending)
	}
	return nil
}

// healthStatus is what this process reports in sync_health: nothing while
// start-up has not yet found NATS down (it usually takes milliseconds);
// paused while start-up waits for NATS (the database answers by then) or
// the consumer is paused (its reason, a fixed phrase, and its start);
// catching_up while the oldest event not settled yet has waited longer
// than catchingUpAfter; running otherwise.
func healthStatus(starting, natsDown bool, c *consumer.Consumer, w *backlog.Watcher, catchingUpAfter time.Duration) synchealth.Status {
	if starting || c == nil {
		if !natsDown {
			return synchealth.Status{}
		}
		return synchealth.Status{State: store.HealthPaused, Reason: consumer.ReasonNATS}
	}
	if st := c.State(); st.Paused != "" {
		return synchealth.Status{State: store.HealthPaused, Since: st.PausedSince, Reason: st.Paused}
	}
	if w != nil {
		if oldest, known := w.Oldest(); known && !oldest.IsZero() && time.Since(oldest) > catchingUpAfter {
			return synchealth.Status{State: store.HealthCatchingUp, OldestUnappliedAt: oldest}
		}
	}
	return synchealth.Status{State: store.HealthRunning}
}

// purgeLoop deletes sync-log rows past their retention (none when it is
// negative) and sync_health rows not reported for HealthRetention, now and then
// every interval, until ctx ends. Replicas may all run it: deletes are
// idempotent.
func purgeLoop(ctx context.Context, st *store.Store, retention, interval time.Duration, log *zap.Logger) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		if retention > 0 {
			n, err := st.PurgeLog(ctx, retention, 5000)
			switch {
			case err != nil && ctx.Err() == nil:
				log.Warn("purge sync log", zap.Error(err))
			case n > 0:
				log.Info("purged sync log", zap.Int64("rows", n), zap.Duration("retention", retention))
			}
		}
		n, err := st.PurgeHealth(ctx, HealthRetention)
		switch {
		case err != nil && ctx.Err() == nil:
			log.Warn("purge sync_health", zap.Error(err))
		case n > 0:
			log.Info("purged sync_health rows not reported for a day", zap.Int64("rows", n))
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

func healthServer(cfg Config, ready func(context.Context) error, state func() Status, metrics http.Handler) (*http.Server, net.Listener, error) {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", metrics)
	mux.HandleFunc("GET /status", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(state())
	})
	if cfg.Pprof {
		mux.HandleFunc("/debug/pprof/", pprof.Index)
		mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	}
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{"status":"ok"}`))
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
		defer cancel()
		if err := ready(ctx); err != nil {
			w.Header().Set("Content-Type", "application/problem+json")
			w.WriteHeader(http.StatusServiceUnavailable)
			_, _ = fmt.Fprintf(w, `{"type":"urn:portalsync:problem:not-ready","title":"Not ready","status":503,"detail":%q}`, err.Error())
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{"status":"ready"}`))
	})
	ln := cfg.HTTPListener
	if ln == nil {
		var err error
		if ln, err = net.Listen("tcp", cfg.HTTPAddr); err != nil {
			return nil, nil, fmt.Errorf("listen on %s: %w", cfg.HTTPAddr, err)
		}
	}
	return &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}, ln, nil
}
