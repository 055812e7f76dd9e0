package main

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/likeperson/portalsync/pkg/command"
	"github.com/likeperson/portalsync/pkg/logging"
	"github.com/likeperson/portalsync/pkg/stream"
	"github.com/likeperson/portalsync/syncer/replay"
	"github.com/likeperson/portalsync/syncer/service"
	"github.com/likeperson/portalsync/syncer/store"
)

type repairCmd struct {
	dbFlags
	NATSURL string `name:"nats-url" env:"NATS_URL" default:"nats://127.0.0.1:4222" help:"NATS server URL (for the replay of the repaired members)."`
	stream.Flags

	FutureTimes bool          `name:"future-times" help:"Reset portal times more than --max-ahead in the future, then replay the members concerned."`
	MaxAhead    time.Duration `name:"max-ahead" default:"5m" help:"How far ahead of this clock a portal time may be."`
	NoReplay    bool          `name:"no-replay" help:"Only reset the times; the next real event of each member wins."`
	DryRun      bool          `name:"dry-run" help:"Report what would be reset; write nothing."`
}

func (c *repairCmd) Run(ctx context.Context, g *command.Globals) error {
	if !c.FutureTimes {
		return errors.New("say what to repair: --future-times")
	}
	log, err := logging.New(c.LogLevel, g.Stderr)
	if err != nil {
		return err
	}
	defer func() { _ = log.Sync() }()
	pool, err := service.OpenPool(ctx, c.DatabaseURL)
	if err != nil {
		return err
	}
	defer pool.Close()
	rep, err := store.New(pool).RepairFutureTimes(ctx, c.MaxAhead, c.DryRun)
	if err != nil {
		return err
	}
	verb := "reset"
	if c.DryRun {
		verb = "would reset"
	}
	tables := make([]string, 0, len(rep.Rows))
	for t := range rep.Rows {
		tables = append(tables, t)
	}
	slices.Sort(tables)
	for _, t := range tables {
		fmt.Fprintf(g.Stdout, "%s: %s future portal times in %d rows\n", t, verb, rep.Rows[t])
	}
	fmt.Fprintf(g.Stdout, "members concerned: %d\n", len(rep.Members))
	if c.DryRun || c.NoReplay || len(rep.Members) == 0 {
		return nil
	}
	nc, js, err := stream.Open(ctx, c.NATSURL, "portalsync-repair", log)
	if err != nil {
		return err
	}
	defer nc.Close()
	r := replay.New(js, pool, log.Named("replay"))
	for _, m := range rep.Members {
		res, err := r.Run(ctx, replay.Options{Stream: c.Config().Name, MemberID: m}, nopProgress{})
		if err != nil {
			return fmt.Errorf("replay member %s: %w", m, err)
		}
		fmt.Fprintf(g.Stdout, "replayed member %s: read %d, applied %d, skipped %d, refused or invalid %d\n", m, res.Read, res.Applied, res.Skipped, res.Invalid)
	}
	return nil
}

type nopProgress struct{}

func (nopProgress) Start(int64) {}
func (nopProgress) Add(int)     {}
func (nopProgress) Finish()     {}
