package main

import (
	"context"
	"fmt"
	"time"

	"github.com/likeperson/portalsync/ingress/server"
	"github.com/likeperson/portalsync/pkg/command"
	"github.com/likeperson/portalsync/pkg/logging"
	"github.com/likeperson/portalsync/pkg/signature"
	"github.com/likeperson/portalsync/pkg/stream"
)

type serveCmd struct {
	Addr              string        `env:"INGRESS_ADDR" default:":8080" help:"HTTP listen address."`
	NATSURL           string        `name:"nats-url" env:"NATS_URL" default:"nats://127.0.0.1:4222" help:"NATS server URL."`
	Secrets           string        `env:"PORTAL_WEBHOOK_SECRETS" help:"Comma-separated webhook secrets (whsec_...); all are accepted, for rotation. Required."`
	Tolerance         time.Duration `env:"WEBHOOK_TOLERANCE" default:"5m" help:"Allowed clock difference of webhook-timestamp, either way."`
	MaxBodyBytes      int64         `env:"INGRESS_MAX_BODY_BYTES" default:"262144" help:"Largest accepted body."`
	PublishTimeout    time.Duration `env:"INGRESS_PUBLISH_TIMEOUT" default:"5s" help:"Wait for the JetStream ack before answering 503."`
	RetryAfter        time.Duration `env:"INGRESS_RETRY_AFTER" default:"5s" help:"Retry-After sent with a 503."`
	ShutdownTimeout   time.Duration `env:"INGRESS_SHUTDOWN_TIMEOUT" default:"10s" help:"How long in-flight requests may finish on SIGTERM."`
	ReadHeaderTimeout time.Duration `env:"INGRESS_READ_HEADER_TIMEOUT" default:"5s" help:"Time allowed to read request headers."`
	ReadTimeout       time.Duration `env:"INGRESS_READ_TIMEOUT" default:"30s" help:"Time allowed to read a whole request."`
	LogLevel          string        `env:"LOG_LEVEL" default:"info" help:"debug, info, warn or error."`
	stream.Flags
}

func (s *serveCmd) Run(ctx context.Context, g *command.Globals) error {
	log, err := logging.New(s.LogLevel, g.Stderr)
	if err != nil {
		return err
	}
	defer func() { _ = log.Sync() }()
	secrets, err := signature.ParseSecrets(s.Secrets)
	if err != nil {
		return fmt.Errorf("PORTAL_WEBHOOK_SECRETS: %w", err)
	}
	return server.Run(ctx, server.Config{
		Addr:              s.Addr,
		NATSURL:           s.NATSURL,
		Secrets:           secrets,
		Tolerance:         s.Tolerance,
		MaxBodyBytes:      s.MaxBodyBytes,
		PublishTimeout:    s.PublishTimeout,
		RetryAfter:        s.RetryAfter,
		ShutdownTimeout:   s.ShutdownTimeout,
		ReadHeaderTimeout: s.ReadHeaderTimeout,
		ReadTimeout:       s.ReadTimeout,
		Stream:            s.Config(),
	}, log.Named("ingress"))
}
