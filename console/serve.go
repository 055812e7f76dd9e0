package main

import (
	"context"
	"encoding/base64"
	"fmt"
	"time"

	"github.com/likeperson/portalsync/console/ui"
	"github.com/likeperson/portalsync/pkg/command"
	"github.com/likeperson/portalsync/pkg/logging"
)

type serveCmd struct {
	Addr            string        `env:"CONSOLE_ADDR" default:":8090" help:"Public HTTP listen address (put TLS in front of it)."`
	HealthAddr      string        `name:"health-addr" env:"CONSOLE_HEALTH_ADDR" default:"127.0.0.1:8091" help:"Address of /healthz and /readyz, off the public listener."`
	DatabaseURL     string        `name:"database-url" env:"CONSOLE_DATABASE_URL" required:"" help:"PostgreSQL URL of a login role in portalsync_console (it can only SET ROLE authenticated)."`
	AuthURL         string        `name:"auth-url" env:"SUPABASE_AUTH_URL" required:"" help:"Supabase Auth (GoTrue) base URL, e.g. https://<project>.supabase.co/auth/v1."`
	AnonKey         string        `name:"anon-key" env:"SUPABASE_ANON_KEY" help:"The project's anon key, sent as apikey (hosted Supabase wants it)."`
	JWTSecret       string        `name:"jwt-secret" env:"SUPABASE_JWT_SECRET" help:"The project's JWT secret (HS256 access tokens). This or --jwks-url is required."`
	JWKSURL         string        `name:"jwks-url" env:"SUPABASE_JWKS_URL" help:"The project's JWKS URL, for access tokens signed with asymmetric keys."`
	CookieSecure    bool          `name:"cookie-secure" env:"CONSOLE_COOKIE_SECURE" default:"true" negatable:"" help:"Mark the session cookie Secure (__Host- prefix); turn off only for plain-HTTP development on a host other than localhost."`
	SessionKey      string        `name:"session-key" env:"CONSOLE_SESSION_KEY" help:"Base64 of 32 random bytes sealing the session cookie; empty: random per process (a restart signs everyone out)."`
	PollInterval    time.Duration `name:"poll-interval" env:"CONSOLE_POLL_INTERVAL" default:"1s" help:"How often an open log page asks for new rows."`
	ShutdownTimeout time.Duration `name:"shutdown-timeout" env:"CONSOLE_SHUTDOWN_TIMEOUT" default:"10s" help:"Time for in-flight requests after SIGTERM."`
	LogLevel        string        `env:"LOG_LEVEL" default:"info" help:"debug, info, warn or error."`
}

func (s *serveCmd) Run(ctx context.Context, g *command.Globals) error {
	log, err := logging.New(s.LogLevel, g.Stderr)
	if err != nil {
		return err
	}
	defer func() { _ = log.Sync() }()
	var key []byte
	if s.SessionKey != "" {
		if key, err = base64.StdEncoding.DecodeString(s.SessionKey); err != nil {
			return fmt.Errorf("CONSOLE_SESSION_KEY: %w", err)
		}
	}
	secure := s.CookieSecure
	return ui.Run(ctx, ui.Config{
		Addr: s.Addr, HealthAddr: s.HealthAddr, DatabaseURL: s.DatabaseURL, AuthURL: s.AuthURL, AnonKey: s.AnonKey,
		JWTSecret: s.JWTSecret, JWKSURL: s.JWKSURL, CookieSecure: &secure, SessionKey: key,
		PollInterval: s.PollInterval, ShutdownTimeout: s.ShutdownTimeout,
	}, log.Named("console"))
}
