package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.uber.org/zap"

	"github.com/likeperson/portalsync/pkg/command"
	"github.com/likeperson/portalsync/pkg/dvmap"
	"github.com/likeperson/portalsync/pkg/stream"
	"github.com/likeperson/portalsync/syncer/reconcile"
	"github.com/likeperson/portalsync/syncer/store"
	"github.com/likeperson/portalsync/syncer/synchealth"
)

type reconcileCmd struct {
	dbFlags
	natsFlags
	URL             string        `name:"dataverse-url" env:"DATAVERSE_URL" required:"" help:"The Dataverse environment, e.g. https://hlf.crm4.dynamics.com."`
	TokenURL        string        `name:"token-url" env:"DATAVERSE_TOKEN_URL" required:"" help:"Microsoft Entra ID token endpoint: https://login.microsoftonline.com/<tenant id>/oauth2/v2.0/token."`
	ClientID        string        `name:"client-id" env:"DATAVERSE_CLIENT_ID" required:"" help:"The application user's client id."`
	ClientSecret    string        `name:"client-secret" env:"DATAVERSE_CLIENT_SECRET" required:"" help:"The application user's client secret."`
	Scope           string        `env:"DATAVERSE_SCOPE" help:"Token scope (default: <dataverse-url>/.default)."`
	MappingFile     string        `name:"mapping-file" env:"DATAVERSE_MAPPING_FILE" type:"existingfile" help:"JSON mapping of tables and columns (docs/DATAVERSE.md); empty: the defaults."`
	PageSize        int           `name:"page-size" env:"RECONCILE_PAGE_SIZE" default:"5000" help:"Rows per page (Prefer: odata.maxpagesize)."`
	Interval        time.Duration `env:"RECONCILE_INTERVAL" default:"15m" help:"Wait between passes."`
	MaxThrottleWait time.Duration `name:"max-throttle-wait" env:"RECONCILE_MAX_THROTTLE_WAIT" default:"5m" help:"Longest Retry-After waited out after a 429."`
	Bucket          string        `env:"RECONCILE_BUCKET" default:"PORTALSYNC_RECONCILE" help:"NATS KV bucket holding the delta links."`
	HTTPAddr        string        `name:"http-addr" env:"RECONCILE_HTTP_ADDR" default:"127.0.0.1:8082" help:"Address of /healthz and /metrics while running as a loop (loopback by default)."`
	Once            bool          `help:"Make one pass and exit."`
	Full            bool          `help:"Read every table in full (ignore the stored delta links)."`
	DryRun          bool          `name:"dry-run" help:"Read the portal in full and print what differs from the app; publish and store nothing."`
}

// Run reconciles the app against the portal: one pass (--once, --dry-run)
// or a pass every --interval.
func (c *reconcileCmd) Run(ctx context.Context, g *command.Globals) error {
	m, err := dvmap.LoadMapping(c.MappingFile)
	if err != nil {
		return err
	}
	s, err := c.start(ctx, g)
	if err != nil {
		return err
	}
	defer s.close()
	if err := c.connect(ctx, s, "portalsync-reconcile"); err != nil {
		return err
	}
	if !c.DryRun {
		// Like the other binaries: the stream is created or updated first.
		if _, err := stream.Ensure(ctx, s.js, c.Config()); err != nil {
			return err
		}
	}
	started := time.Now()
	// The process collector's start time lets the alert on a stale
	// reconciliation give a fresh process two intervals for its first pass.
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	r, err := reconcile.New(ctx, c.config(&m), s.js, s.pool, reconcile.NewMetrics(reg), s.log.Named("reconcile"))
	if err != nil {
		return err
	}
	if c.Once || c.DryRun {
		return c.once(ctx, g, s, r, started)
	}
	if c.Full {
		if _, err := r.Once(ctx, reconcile.Options{Full: true}); err != nil {
			return err
		}
	}
	return c.loop(ctx, s, r, reg, started)
}

// config is the reconciler's configuration the flags describe.
func (c *reconcileCmd) config(m *dvmap.Mapping) reconcile.Config {
	return reconcile.Config{
		URL: c.URL, TokenURL: c.TokenURL, ClientID: c.ClientID, ClientSecret: c.ClientSecret, Scope: c.Scope,
		PageSize: c.PageSize, Interval: c.Interval, MaxThrottleWait: c.MaxThrottleWait, Mapping: m,
		Stream: c.Config(), Bucket: c.Bucket,
	}
}

// once makes one pass (--once or --dry-run) and prints what it did.
func (c *reconcileCmd) once(ctx context.Context, g *command.Globals, s *session, r *reconcile.Reconciler, started time.Time) error {
	rep, err := r.Once(ctx, reconcile.Options{Full: c.Full, DryRun: c.DryRun, Out: g.Stdout})
	if err != nil {
		return err
	}
	if c.DryRun {
		fmt.Fprintf(g.Stdout, "%d difference(s); rows read %v; nothing published\n", rep.Differences, rep.Rows)
		return nil
	}
	// The app's sync_health shows when reconciliation last succeeded,
	// by a loop or by hand.
	if err := store.New(s.pool).ReportHealth(ctx, reconcilerHealth(started, r.LastSuccess())); err != nil {
		s.log.Warn("cannot report the reconciliation in sync_health", zap.Error(err))
	}
	fmt.Fprintf(g.Stdout, "rows read %v, full read %v, %d events published (repeats are dropped by id), %d correction(s), %d row(s) skipped (refused by reason: %v)\n",
		rep.Rows, rep.FullRead, rep.Published, rep.Corrections, rep.Skipped, rep.Refused)
	return nil
}

// loop makes a pass every --interval until ctx ends, serving /healthz and
// /metrics and reporting its row of sync_health meanwhile.
func (c *reconcileCmd) loop(ctx context.Context, s *session, r *reconcile.Reconciler, reg *prometheus.Registry, started time.Time) error {
	ln, err := net.Listen("tcp", c.HTTPAddr)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", c.HTTPAddr, err)
	}
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte(`{"status":"ok"}`)) })
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	s.log.Info("reconciler running", zap.String("http", ln.Addr().String()), zap.Duration("interval", c.Interval))
	// Its row of sync_health: running since the start, with the last
	// success once a pass succeeds; kept on stop, for that last success.
	reporter, err := synchealth.New(store.New(s.pool), synchealth.Config{Process: reconcilerProcess, Kind: store.HealthKindReconciler},
		func() synchealth.Status {
			return synchealth.Status{State: store.HealthRunning, Since: started, LastSuccessAt: r.LastSuccess()}
		}, s.log.Named("health"))
	if err != nil {
		_ = srv.Close()
		<-served
		return err
	}
	stopReport := reporter.Start(ctx)
	runErr := r.Run(ctx)
	stopReport()
	shutdownCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	_ = srv.Shutdown(shutdownCtx)
	if err := <-served; err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return runErr
}

// reconcilerProcess is the reconciler's row in portalsync.sync_health:
// one reconciler runs per deployment.
const reconcilerProcess = "reconciler"

func reconcilerHealth(started, lastSuccess time.Time) store.Health {
	return store.Health{Process: reconcilerProcess, Kind: store.HealthKindReconciler, State: store.HealthRunning,
		Since: started, LastSuccessAt: lastSuccess}
}
