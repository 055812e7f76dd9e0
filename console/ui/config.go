// Package ui is the integration screen: a small server-rendered web app in
// which an org admin watches the portal's changes arrive (the sync log, by
// name, live) and a coordinator sees who is inactive. It signs people in
// through Supabase Auth and reads every row as PostgREST would: as the
// role authenticated with the caller's verified claims, so the app's
// row-level security is the only gate (docs/APP.md, docs/ACCESS.md).
package ui

import (
	"cmp"
	"crypto/rand"
	"errors"
	"fmt"
	"net"
	"net/url"
	"time"
)

// Config configures the screen. The zero value of each field with a
// default is replaced by it (see each field).
type Config struct {
	// Addr is the public listen address. Default ":8090".
	Addr string
	// Listener, when set, is used instead of Addr (tests: ":0").
	Listener net.Listener
	// HealthAddr serves /healthz and /readyz, off the public listener.
	// Default "127.0.0.1:8091".
	HealthAddr string
	// HealthListener, when set, is used instead of HealthAddr.
	HealthListener net.Listener
	// DatabaseURL connects as a login role of portalsync_console, which can
	// do nothing but SET ROLE authenticated. Required.
	DatabaseURL string
	// AuthURL is Supabase Auth's (GoTrue's) base URL, e.g.
	// https://<project>.supabase.co/auth/v1. Required.
	AuthURL string
	// AnonKey is sent as the apikey header (hosted Supabase's gateway
	// wants it). Default none.
	AnonKey string
	// JWTSecret verifies HS256 access tokens (the project's JWT secret).
	// JWTSecret or JWKSURL is required.
	JWTSecret string
	// JWKSURL verifies access tokens signed with asymmetric keys (the
	// project's /auth/v1/.well-known/jwks.json). Default none.
	JWKSURL string
	// Audience the access token must carry. Default "authenticated".
	Audience string
	// CookieSecure marks the session cookie Secure (and names it with the
	// __Host- prefix). Default true; false only for plain-HTTP development
	// on another host than localhost.
	CookieSecure *bool
	// SessionKey seals the session cookie (AES-256-GCM); 32 bytes. Default:
	// random per process, so a restart signs everyone out.
	SessionKey []byte
	// PollInterval is how often an open page asks for new rows. Default 1s.
	PollInterval time.Duration
	// PageSize is the rows per page of the log and the members. Default 50.
	PageSize int
	// ShutdownTimeout bounds in-flight requests after SIGTERM. Default 10s.
	ShutdownTimeout time.Duration
	// AuthTimeout bounds each call to Supabase Auth. Default 10s.
	AuthTimeout time.Duration
}

func (c *Config) withDefaults() (Config, error) {
	out := *c
	out.Addr = cmp.Or(out.Addr, ":8090")
	out.HealthAddr = cmp.Or(out.HealthAddr, "127.0.0.1:8091")
	out.Audience = cmp.Or(out.Audience, "authenticated")
	out.PollInterval = cmp.Or(out.PollInterval, time.Second)
	out.PageSize = cmp.Or(out.PageSize, 50)
	out.ShutdownTimeout = cmp.Or(out.ShutdownTimeout, 10*time.Second)
	out.AuthTimeout = cmp.Or(out.AuthTimeout, 10*time.Second)
	if out.CookieSecure == nil {
		t := true
		out.CookieSecure = &t
	}
	if len(out.SessionKey) == 0 {
		out.SessionKey = make([]byte, 32)
		_, _ = rand.Read(out.SessionKey)
	}
	return out, out.Validate()
}

// Validate reports the first setting that cannot work.
func (c *Config) Validate() error {
	switch {
	case c.DatabaseURL == "":
		return errors.New("CONSOLE_DATABASE_URL is required")
	case c.AuthURL == "":
		return errors.New("SUPABASE_AUTH_URL is required")
	case c.JWTSecret == "" && c.JWKSURL == "":
		return errors.New("SUPABASE_JWT_SECRET or SUPABASE_JWKS_URL is required")
	case c.JWTSecret != "" && len(c.JWTSecret) < 32:
		return errors.New("SUPABASE_JWT_SECRET must be at least 32 characters")
	case len(c.SessionKey) != 0 && len(c.SessionKey) != 32:
		return fmt.Errorf("CONSOLE_SESSION_KEY must be 32 bytes, got %d", len(c.SessionKey))
	case c.PageSize < 1 || c.PageSize > 200:
		return fmt.Errorf("page size %d: want 1 to 200", c.PageSize)
	case c.PollInterval < 100*time.Millisecond:
		return fmt.Errorf("CONSOLE_POLL_INTERVAL %s: at least 100ms", c.PollInterval)
	}
	if u, err := url.Parse(c.AuthURL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return fmt.Errorf("SUPABASE_AUTH_URL %q is not an http(s) URL", c.AuthURL)
	}
	return nil
}
