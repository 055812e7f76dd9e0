package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"sync/atomic"
	"text/tabwriter"
	"time"

	"github.com/schollz/progressbar/v3"
	"go.uber.org/zap"
	"golang.org/x/term"

	"github.com/likeperson/portalsync/pkg/command"
	"github.com/likeperson/portalsync/syncer/replay"
)

type replayCmd struct {
	dbFlags
	natsFlags

	// --all is the whole stream, so it excludes every filter; --since and
	// --from-seq are two ways to say where to start.
	All     bool   `xor:"all-since,all-seq,all-member,all-org" help:"Replay the whole stream (not with the options below)."`
	Since   string `xor:"all-since,start" help:"Replay events received since this time (RFC 3339, or a duration such as 24h meaning that long ago); not with --from-seq."`
	FromSeq uint64 `name:"from-seq" xor:"all-seq,start" help:"Replay from this stream sequence on; not with --since."`
	Member  string `xor:"all-member" help:"Replay one member's events (portal member ID)."`
	Org     string `xor:"all-org" help:"Replay one organization's events (portal organization ID)."`
	DryRun  bool   `name:"dry-run" help:"Report per table how many rows would change; write nothing."`

	ApplyTimeout time.Duration `name:"apply-timeout" env:"SYNCER_APPLY_TIMEOUT" default:"2m" help:"Bound of one batch's transaction, as for syncer run; a longer one is retried, then stops the replay with the --from-seq to rerun."`
}

func (c *replayCmd) Run(ctx context.Context, g *command.Globals) error {
	if !c.All && c.Since == "" && c.FromSeq == 0 && c.Member == "" && c.Org == "" {
		return errors.New("say what to replay: --all, --since, --from-seq, --member or --org")
	}
	opts := replay.Options{Stream: c.Config().Name, FromSeq: c.FromSeq, MemberID: c.Member, OrgID: c.Org, DryRun: c.DryRun,
		ApplyTimeout: c.ApplyTimeout}
	if c.Since != "" {
		t, err := parseSince(c.Since, time.Now())
		if err != nil {
			return err
		}
		opts.Since = t
	}
	s, err := c.start(ctx, g)
	if err != nil {
		return err
	}
	defer s.close()
	if err := c.connect(ctx, s, "portalsync-replay"); err != nil {
		return err
	}
	rep, err := replay.New(s.js, s.pool, s.log.Named("replay")).Run(ctx, opts, newProgress(g.Stderr, s.log))
	if err != nil {
		return err
	}
	return printReport(g.Stdout, rep, c.DryRun)
}

func parseSince(s string, now time.Time) (time.Time, error) {
	if d, err := time.ParseDuration(s); err == nil {
		return now.Add(-d), nil
	}
	t, err := time.Parse(time.RFC3339, s)
	if err != nil {
		return time.Time{}, fmt.Errorf("--since %q: want RFC 3339 (2026-11-25T10:00:00Z) or a duration (24h)", s)
	}
	return t, nil
}

func printReport(w io.Writer, rep replay.Report, dryRun bool) error {
	verb := "applied"
	if dryRun {
		verb = "would apply"
	}
	fmt.Fprintf(w, "read %d events up to stream seq %d in %s: %s %d, skipped %d (unknown type or superseded), filtered out %d, invalid %d\n",
		rep.Read, rep.LastSeq, rep.Took.Round(time.Millisecond), verb, rep.Applied, rep.Skipped, rep.FilteredOut, rep.Invalid)
	if rep.Took > 0 && rep.Read > 0 {
		fmt.Fprintf(w, "rate: %.0f events/s\n", float64(rep.Read)/rep.Took.Seconds())
	}
	if !dryRun {
		return nil
	}
	if rep.TotalChanges() == 0 {
		_, err := fmt.Fprintln(w, "dry run: no row would change")
		return err
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "TABLE\tINSERTED\tUPDATED\tDELETED")
	for _, c := range rep.Changes {
		fmt.Fprintf(tw, "%s\t%d\t%d\t%d\n", c.Table, c.Inserted, c.Updated, c.Deleted)
	}
	fmt.Fprintln(tw, "dry run: nothing was written")
	return tw.Flush()
}

// newProgress shows a progress bar on a terminal and log lines otherwise.
func newProgress(w io.Writer, log *zap.Logger) replay.Progress {
	if f, ok := w.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
		return &barProgress{w: w}
	}
	return &logProgress{log: log, every: 5 * time.Second}
}

type barProgress struct {
	w   io.Writer
	bar *progressbar.ProgressBar
}

func (p *barProgress) Start(total int64) {
	p.bar = progressbar.NewOptions64(total,
		progressbar.OptionSetWriter(p.w),
		progressbar.OptionSetDescription("replay"),
		progressbar.OptionShowCount(),
		progressbar.OptionShowIts(),
		progressbar.OptionSetItsString("events"),
		progressbar.OptionSetPredictTime(true),
		progressbar.OptionThrottle(100*time.Millisecond),
		progressbar.OptionOnCompletion(func() { fmt.Fprintln(p.w) }),
	)
}

func (p *barProgress) Add(n int) { _ = p.bar.Add(n) }

func (p *barProgress) Finish() { _ = p.bar.Finish() }

type logProgress struct {
	log     *zap.Logger
	every   time.Duration
	total   int64
	done    atomic.Int64
	started time.Time
	last    time.Time
}

func (p *logProgress) Start(total int64) {
	p.total, p.started, p.last = total, time.Now(), time.Now()
	p.log.Info("replay started", zap.Int64("total", total))
}

func (p *logProgress) Add(n int) {
	done := p.done.Add(int64(n))
	if time.Since(p.last) < p.every {
		return
	}
	p.last = time.Now()
	rate := float64(done) / time.Since(p.started).Seconds()
	eta := time.Duration(0)
	if rate > 0 {
		eta = time.Duration(float64(p.total-done)/rate) * time.Second
	}
	p.log.Info("replay progress", zap.Int64("done", done), zap.Int64("total", p.total),
		zap.Float64("events_per_s", rate), zap.Duration("eta", eta))
}

func (p *logProgress) Finish() {
	p.log.Info("replay finished", zap.Int64("done", p.done.Load()), zap.Duration("took", time.Since(p.started)))
}
