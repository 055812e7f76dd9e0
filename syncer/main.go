// Command syncer applies the portal's membership events from JetStream to
// the Likeperson database (run, the default), and holds the operator's
// tools beside it: migrate, replay, dlq, status, repair, erase, reconcile
// and healthcheck (`syncer --help` says what each does).
package main

import (
	"context"
	"io"
	"os"
	"runtime/debug"
	"time"

	"github.com/alecthomas/kong"

	"github.com/likeperson/portalsync/pkg/command"

	"github.com/likeperson/portalsync/syncer/consumer"
	"github.com/likeperson/portalsync/syncer/service"
)

func main() {
	// The syncer allocates briefly per batch and keeps little: collecting
	// less often buys about 10 % throughput for about 100 MB of memory
	// (docs/BENCHMARKS.md). GOGC still wins when set.
	if os.Getenv("GOGC") == "" {
		debug.SetGCPercent(400)
	}
	command.Main("syncer", run)
}

type cli struct {
	Run         runCmd              `cmd:"" default:"withargs" help:"Consume events and apply them (the default)."`
	Migrate     migrateCmd          `cmd:"" help:"Apply the database migrations (safe with several replicas)."`
	Replay      replayCmd           `cmd:"" help:"Re-apply the stream to the database (resync or repair); safe while run replicas consume."`
	DLQ         dlqCmd              `cmd:"" name:"dlq" help:"Inspect and redrive events that could not be applied."`
	Status      statusCmd           `cmd:"" help:"Show stream, consumer, dead-letter and per-organization sync state."`
	Repair      repairCmd           `cmd:"" help:"Repair rows that events dated in the future wrote (--future-times)."`
	Erase       eraseCmd            `cmd:"" help:"Erase a member (GDPR art. 17): database rows, log member IDs, stream messages, dead letters."`
	Reconcile   reconcileCmd        `cmd:"" help:"Read the portal (Dataverse Web API) and publish what the app lacks: a loop, --once or --dry-run."`
	Healthcheck command.Healthcheck `cmd:"" help:"Exit 0 when the local service is ready (for container healthchecks)."`
}

type runCmd struct {
	dbFlags
	dlqFlags
	HTTPAddr        string          `name:"http-addr" env:"SYNCER_HTTP_ADDR" default:"127.0.0.1:8081" help:"Address of /healthz, /readyz, /status and /metrics (loopback by default; never a public address)."`
	Consumer        string          `env:"SYNCER_CONSUMER" default:"portalsync-syncer" help:"Durable consumer name shared by all replicas."`
	Workers         int             `env:"SYNCER_CONCURRENCY" default:"4" help:"Transactions at once per process (one member's events stay on one)."`
	BatchSize       int             `env:"SYNCER_BATCH_SIZE" default:"1024" help:"Most events applied in one transaction (1: one event per transaction)."`
	AckWait         time.Duration   `env:"SYNCER_ACK_WAIT" default:"30s" help:"Redelivery after this long without an ack or in-progress signal (held events not settled within half of it get one)."`
	MaxDeliver      int             `env:"SYNCER_MAX_DELIVER" default:"20" help:"Deliveries an event's own retryable failures may spend before it is logged as failed; outages spend none."`
	BackOff         []time.Duration `env:"SYNCER_BACKOFF" default:"1s,5s,15s,30s,1m" help:"Retry delays after transient failures."`
	MaxAckPending   int             `env:"SYNCER_MAX_ACK_PENDING" default:"10000" help:"Unacknowledged events in flight across replicas."`
	ShutdownTimeout time.Duration   `env:"SYNCER_SHUTDOWN_TIMEOUT" default:"10s" help:"Time for in-flight events on SIGTERM."`
	ApplyTimeout    time.Duration   `env:"SYNCER_APPLY_TIMEOUT" default:"2m" help:"Bound of one transaction (and of writing a failed sync-log row); longer work is kept alive with in-progress acks."`
	PullExpiry      time.Duration   `env:"SYNCER_PULL_EXPIRY" default:"10s" help:"Pull request lifetime; a lost consumer leader or a removed consumer is noticed within about this long."`
	ProbeMax        time.Duration   `env:"SYNCER_PROBE_MAX" default:"5s" help:"Longest wait between probes of an unavailable database or NATS (from 100ms, doubling)."`
	Migrate         bool            `env:"SYNCER_MIGRATE" help:"Apply migrations before consuming."`
	Pprof           bool            `env:"SYNCER_PPROF" help:"Serve /debug/pprof/ on the health address (profiling only)."`
	LogRetention    time.Duration   `env:"SYNCER_LOG_RETENTION" default:"2160h" help:"Delete sync-log rows older than this (90 days); 0 keeps them."`
}

func (r *runCmd) Run(ctx context.Context, g *command.Globals) error {
	log, err := r.logger(g)
	if err != nil {
		return err
	}
	defer func() { _ = log.Sync() }()
	return service.Run(ctx, r.config(), log.Named("syncer"))
}

// config is the service configuration the flags describe.
func (r *runCmd) config() service.Config {
	return service.Config{
		DatabaseURL:      r.DatabaseURL,
		NATSURL:          r.NATSURL,
		HTTPAddr:         r.HTTPAddr,
		Migrate:          r.Migrate,
		DeadLetterStream: r.DeadLetterStream,
		LogRetention:     command.Off(r.LogRetention),
		Pprof:            r.Pprof,
		Stream:           r.Config(),
		Consumer: consumer.Config{
			Durable:         r.Consumer,
			AckWait:         r.AckWait,
			MaxDeliver:      r.MaxDeliver,
			BackOff:         r.BackOff,
			Workers:         r.Workers,
			BatchSize:       r.BatchSize,
			MaxAckPending:   r.MaxAckPending,
			ShutdownTimeout: r.ShutdownTimeout,
			PullExpiry:      r.PullExpiry,
			ApplyTimeout:    r.ApplyTimeout,
			ProbeMax:        r.ProbeMax,
		},
	}
}

type migrateCmd struct {
	dbFlags
}

func (m *migrateCmd) Run(ctx context.Context, g *command.Globals) error {
	s, err := m.start(ctx, g)
	if err != nil {
		return err
	}
	defer s.close()
	return service.Migrate(ctx, s.pool, s.log.Named("migrate"))
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	var c cli
	return command.Run(ctx, &c, "syncer", "portalsync syncer: membership events from JetStream into the Likeperson database.", args, stdout, stderr, kong.Vars{"readyz": "http://127.0.0.1:8081/readyz"})
}
