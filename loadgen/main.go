// Command loadgen sends signed portal webhooks to an ingress at a fixed
// rate or as fast as allowed and reports throughput and latency
// percentiles (accept, and end to end when DATABASE_URL is set).
package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/likeperson/portalsync/loadgen/load"
	"github.com/likeperson/portalsync/pkg/command"
	"github.com/likeperson/portalsync/pkg/event"
	"github.com/likeperson/portalsync/pkg/signature"
)

func main() {
	command.Main("loadgen", run)
}

type cli struct {
	URL         string        `env:"INGRESS_URL" default:"http://127.0.0.1:8080/webhooks/portal" help:"Webhook endpoint."`
	Secrets     string        `env:"PORTAL_WEBHOOK_SECRETS" required:"" help:"Secret(s) to sign with."`
	DatabaseURL string        `name:"database-url" env:"DATABASE_URL" help:"PostgreSQL to read end-to-end latency from (optional)."`
	Rate        float64       `default:"0" help:"Events per second; 0 sends as fast as the concurrency allows."`
	Duration    time.Duration `default:"10s" help:"How long to send (ignored when --events is set)."`
	Events      int           `default:"0" help:"Send this many events instead of for a duration."`
	Concurrency int           `short:"c" default:"50" help:"Requests in flight."`
	Members     int           `default:"10000" help:"Distinct members."`
	Orgs        int           `default:"20" help:"Distinct organizations."`
	Mix         string        `default:"created=35,updated=30,role=20,deactivated=10,reactivated=5" help:"Event type weights."`
	RunID       string        `name:"run-id" help:"Prefix of event and member ids (default: a new one per run)."`
	E2EWait     time.Duration `name:"e2e-wait" default:"2m" help:"How long to wait for the last events to be applied."`
	JSON        bool          `name:"json" help:"Print the report as JSON."`
	Emit        string        `help:"Write --events signed requests to this file for wrk (scripts/bench/signed.lua) instead of sending."`
}

func (c *cli) Run(ctx context.Context, g *command.Globals) error {
	secrets, err := signature.ParseSecrets(c.Secrets)
	if err != nil {
		return fmt.Errorf("PORTAL_WEBHOOK_SECRETS: %w", err)
	}
	m, err := parseMix(c.Mix)
	if err != nil {
		return err
	}
	cfg := c.config()
	cfg.Secrets, cfg.Mix = secrets, m
	if c.Emit != "" {
		f, err := os.Create(c.Emit)
		if err != nil {
			return fmt.Errorf("emit: %w", err)
		}
		if err := load.Emit(f, cfg, max(c.Events, 1)); err != nil {
			_ = f.Close()
			return err
		}
		return f.Close()
	}
	if c.DatabaseURL != "" {
		if cfg.DB, err = pgxpool.New(ctx, c.DatabaseURL); err != nil {
			return fmt.Errorf("database: %w", err)
		}
		defer cfg.DB.Close()
	}
	rep, err := load.Run(ctx, cfg)
	if err != nil {
		return err
	}
	if c.JSON {
		return json.NewEncoder(g.Stdout).Encode(rep)
	}
	_, err = io.WriteString(g.Stdout, rep.Format())
	return err
}

// config is the run the flags describe, but for the secrets and the mix,
// which must be parsed first.
func (c *cli) config() load.Config {
	return load.Config{URL: c.URL, Rate: c.Rate, Duration: c.Duration, Events: c.Events,
		Concurrency: c.Concurrency, Members: c.Members, Orgs: c.Orgs, RunID: c.RunID, E2EWait: c.E2EWait}
}

var mixNames = map[string]event.Type{
	"created": event.MembershipCreated, "updated": event.MembershipUpdated, "role": event.RoleUpdated,
	"deactivated": event.MembershipDeactivated, "reactivated": event.MembershipReactivated,
}

func parseMix(s string) (map[event.Type]int, error) {
	out := map[event.Type]int{}
	for _, part := range strings.Split(s, ",") {
		name, weight, ok := strings.Cut(strings.TrimSpace(part), "=")
		typ, known := mixNames[name]
		w, err := strconv.Atoi(weight)
		if !ok || !known || err != nil || w < 0 {
			return nil, fmt.Errorf("--mix: %q is not type=weight with type one of created, updated, role, deactivated, reactivated", part)
		}
		out[typ] = w
	}
	return out, nil
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	var c cli
	return command.Run(ctx, &c, "loadgen", "portalsync load generator: signed webhooks, throughput and latency percentiles.", args, stdout, stderr)
}
