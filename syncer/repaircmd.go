package main

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/likeperson/portalsync/pkg/command"
	"github.com/likeperson/portalsync/syncer/replay"
	"github.com/likeperson/portalsync/syncer/store"
)

type repairCmd struct {
	dbFlags
	natsFlags // for the replay of the repaired members

	FutureTimes bool          `name:"future-times" help:"Reset portal times more than --max-ahead in the future, then replay the members concerned."`
	MaxAhead    time.Duration `name:"max-ahead" default:"5m" help:"How far ahead of this clock a portal time may be."`
	NoReplay    bool          `name:"no-replay" help:"Only reset the times; the next real event of each member wins."`
	DryRun      bool          `name:"dry-run" help:"Report what would be reset; write nothing."`
}

func (c *repairCmd) Run(ctx context.Context, g *command.Globals) error {
	if !c.FutureTimes {
		return errors.New("say what to repair: --future-times")
	}
	s, err := c.start(ctx, g)
	if err != nil {
		return err
	}
	defer s.close()
	rep, err := store.New(s.pool).RepairFutureTimes(ctx, c.MaxAhead, c.DryRun)
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
	if err := c.connect(ctx, s, "portalsync-repair"); err != nil {
		return err
	}
	r := replay.New(s.js, s.pool, s.log.Named("replay"))
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
