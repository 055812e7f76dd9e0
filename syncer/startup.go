package main

import (
	"context"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap"

	"github.com/likeperson/portalsync/pkg/command"
	"github.com/likeperson/portalsync/pkg/logging"
	"github.com/likeperson/portalsync/pkg/stream"
	"github.com/likeperson/portalsync/syncer/deadletter"
	"github.com/likeperson/portalsync/syncer/service"
)

// The flags below are shared by the subcommands, and so is their start-up:
// a subcommand embeds the groups it needs and opens a session from them,
// instead of building its logger, pool and NATS connection by hand.

// dbFlags are shared by every subcommand that reaches the database.
type dbFlags struct {
	DatabaseURL string `name:"database-url" env:"DATABASE_URL" required:"" help:"PostgreSQL URL: a login role that is a member of portalsync_syncer (on plain PostgreSQL also the owner)."`
	LogLevel    string `env:"LOG_LEVEL" default:"info" help:"debug, info, warn or error."`
}

// natsFlags are shared by every subcommand that reaches the event stream.
type natsFlags struct {
	NATSURL string `name:"nats-url" env:"NATS_URL" default:"nats://127.0.0.1:4222" help:"NATS server URL."`
	stream.Flags
}

// dlqFlags are natsFlags with the dead-letter stream, for the subcommands
// that read or purge dead letters.
type dlqFlags struct {
	natsFlags
	DeadLetterStream string `name:"dead-letter-stream" env:"SYNCER_DEAD_LETTER_STREAM" default:"PORTAL_DEADLETTER" help:"Stream holding events that could not be applied."`
}

// session is what a subcommand opened at its start: a logger and a
// database pool, and NATS once connect has run. close releases them in
// the reverse order.
type session struct {
	log     *zap.Logger
	pool    *pgxpool.Pool
	js      jetstream.JetStream
	closers []func()
}

// start opens the logger (on stderr, at --log-level) and the database
// pool (checked with a ping, so that a command fails at once instead of
// waiting). On error nothing is left open.
func (f *dbFlags) start(ctx context.Context, g *command.Globals) (*session, error) {
	log, err := f.logger(g)
	if err != nil {
		return nil, err
	}
	s := &session{log: log, closers: []func(){func() { _ = log.Sync() }}}
	if s.pool, err = f.open(ctx); err != nil {
		s.close()
		return nil, err
	}
	s.closers = append(s.closers, s.pool.Close)
	return s, nil
}

// logger returns the JSON logger on stderr at --log-level; the caller
// syncs it.
func (f *dbFlags) logger(g *command.Globals) (*zap.Logger, error) {
	return logging.New(f.LogLevel, g.Stderr)
}

// open connects a pool to --database-url and checks the connection.
func (f *dbFlags) open(ctx context.Context) (*pgxpool.Pool, error) {
	return service.OpenPool(ctx, f.DatabaseURL)
}

// connect adds the NATS connection, named name, to s; close closes it
// first.
func (f *natsFlags) connect(ctx context.Context, s *session, name string) error {
	nc, js, err := f.dial(ctx, name, s.log)
	if err != nil {
		return err
	}
	s.js = js
	s.closers = append(s.closers, nc.Close)
	return nil
}

// dial connects to --nats-url as name; the caller closes the connection.
func (f *natsFlags) dial(ctx context.Context, name string, log *zap.Logger) (*nats.Conn, jetstream.JetStream, error) {
	return stream.Open(ctx, f.NATSURL, name, log)
}

// queue returns the dead-letter queue over js; it creates no stream.
func (f *dlqFlags) queue(js jetstream.JetStream) *deadletter.Queue {
	return deadletter.New(js, deadletter.Config{Name: f.DeadLetterStream, EventStream: f.Config().Name})
}

// openQueue connects without a logger and returns the dead-letter queue,
// for the dlq subcommands, which need nothing else.
func (f *dlqFlags) openQueue(ctx context.Context) (*deadletter.Queue, func(), error) {
	nc, js, err := f.dial(ctx, "portalsync-syncer-cli", zap.NewNop())
	if err != nil {
		return nil, nil, err
	}
	return f.queue(js), nc.Close, nil
}

func (s *session) close() {
	for i := len(s.closers) - 1; i >= 0; i-- {
		s.closers[i]()
	}
}
