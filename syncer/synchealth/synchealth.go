// Package synchealth reports a process's state where the database serves it
// to the app: its row of portalsync.sync_health (public.sync_health for
// org admins). A Reporter reads the process's state every tick, in memory,
// and writes the row when the state changes and at least every heartbeat.
//
// Nothing can be written while the database is unreachable: the row then
// keeps the last state written, with its old reported_at (the view says
// "unknown" once no syncer has reported for two minutes), and the current
// state is written as soon as the database answers again.
package synchealth

import (
	"cmp"
	"context"
	"errors"
	"time"

	"go.uber.org/zap"

	"github.com/likeperson/portalsync/syncer/store"
)

// Defaults for Config.
const (
	DefaultTick         = time.Second
	DefaultHeartbeat    = 30 * time.Second
	DefaultWriteTimeout = 5 * time.Second
)

// Status is what a process is doing, as its source says at one tick.
type Status struct {
	// State is store.HealthRunning, store.HealthCatchingUp or
	// store.HealthPaused; empty: nothing to report yet (nothing is
	// written).
	State string
	// Since is when the state began, where the source knows it (a pause's
	// start); zero: when the reporter first saw it.
	Since time.Time
	// Reason is why the process is paused: a fixed phrase, never an
	// error text.
	Reason string
	// OldestUnappliedAt is when the oldest event not applied yet arrived
	// (catching up).
	OldestUnappliedAt time.Time
	// LastSuccessAt is when the reconciler's last successful pass ended.
	LastSuccessAt time.Time
}

// Writer writes reports; *store.Store is one.
type Writer interface {
	ReportHealth(ctx context.Context, h store.Health) error
	RemoveHealth(ctx context.Context, process string) error
}

var _ Writer = (*store.Store)(nil)

// Config configures a Reporter.
type Config struct {
	// Process names the row ("syncer:<host>:<pid>", "reconciler").
	// Required.
	Process string
	// Kind is store.HealthKindSyncer or store.HealthKindReconciler.
	// Required.
	Kind string
	// Tick is how often the state is read. Default 1 s.
	Tick time.Duration
	// Heartbeat is the longest time between two reports. Default 30 s
	// (public.sync_health ignores rows older than two minutes).
	Heartbeat time.Duration
	// WriteTimeout bounds one write. Default 5 s.
	WriteTimeout time.Duration
	// RemoveOnStop deletes the row when Run ends (a syncer replica that
	// stops reports nothing any more); the reconciler keeps its row, whose
	// last success the view shows.
	RemoveOnStop bool
	// Now returns the current time. Default time.Now.
	Now func() time.Time
}

// Reporter writes a process's row.
type Reporter struct {
	w      Writer
	cfg    Config
	source func() Status
	log    *zap.Logger
	wake   chan struct{}
}

// New returns a reporter of what source says; Run runs it.
func New(w Writer, cfg Config, source func() Status, log *zap.Logger) (*Reporter, error) {
	cfg.Tick = cmp.Or(cfg.Tick, DefaultTick)
	cfg.Heartbeat = cmp.Or(cfg.Heartbeat, DefaultHeartbeat)
	cfg.WriteTimeout = cmp.Or(cfg.WriteTimeout, DefaultWriteTimeout)
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	switch {
	case cfg.Process == "" || cfg.Kind == "":
		return nil, errors.New("synchealth: process and kind required")
	case cfg.Tick < 0 || cfg.Heartbeat < 0 || cfg.WriteTimeout < 0:
		return nil, errors.New("synchealth: durations must not be negative")
	case source == nil:
		return nil, errors.New("synchealth: source required")
	}
	return &Reporter{w: w, cfg: cfg, source: source, log: log, wake: make(chan struct{}, 1)}, nil
}

// Wake makes Run read the state now instead of at the next tick, for a
// change the caller knows of (start-up done).
func (r *Reporter) Wake() {
	select {
	case r.wake <- struct{}{}:
	default:
	}
}

// Start runs Run in a goroutine of its own until ctx ends or the function
// it returns is called. That function waits for Run to end (the row
// removed when RemoveOnStop), so that the caller may close the database
// after it; calling it again does nothing.
func (r *Reporter) Start(ctx context.Context) (stop func()) {
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { defer close(done); r.Run(ctx) }()
	return func() { cancel(); <-done }
}

// Run reports until ctx ends, then removes the row when RemoveOnStop.
func (r *Reporter) Run(ctx context.Context) {
	t := time.NewTicker(r.cfg.Tick)
	defer t.Stop()
	var st tracking
	for {
		r.step(ctx, &st)
		select {
		case <-ctx.Done():
			r.stop(ctx)
			return
		case <-t.C:
		case <-r.wake:
		}
	}
}

// tracking is what Run remembers between ticks.
type tracking struct {
	last       Status
	since      time.Time // when last.State (with its reason) began
	seen       bool      // last holds a status
	due        bool      // a change not written yet
	reportedAt time.Time // the last write that succeeded
	failing    bool      // the last write failed (logged once)
}

// step reads the state and writes it when it changed, when a change is
// not written yet, or when the heartbeat is due.
func (r *Reporter) step(ctx context.Context, st *tracking) {
	s, now := r.source(), r.cfg.Now()
	if s.State == "" {
		return
	}
	if !st.seen || s.State != st.last.State || s.Reason != st.last.Reason {
		st.since = cmp.Or(s.Since, now)
		st.due = true
	}
	if !s.OldestUnappliedAt.Equal(st.last.OldestUnappliedAt) || !s.LastSuccessAt.Equal(st.last.LastSuccessAt) {
		st.due = true
	}
	st.last, st.seen = s, true
	if !st.due && now.Sub(st.reportedAt) < r.cfg.Heartbeat {
		return
	}
	h := store.Health{Process: r.cfg.Process, Kind: r.cfg.Kind, State: s.State, Since: st.since, Reason: s.Reason,
		OldestUnappliedAt: s.OldestUnappliedAt, LastSuccessAt: s.LastSuccessAt}
	err := r.write(ctx, h)
	switch {
	case err == nil:
		st.due, st.reportedAt = false, now
		if st.failing {
			r.log.Info("reporting state again", zap.String("state", h.State))
		}
		st.failing = false
	case ctx.Err() != nil:
	case !st.failing:
		// Once per episode; retried every tick. An unreachable database
		// is expected during an outage.
		lvl := zap.WarnLevel
		if store.IsUnavailable(err) {
			lvl = zap.InfoLevel
		}
		r.log.Log(lvl, "cannot report state; retrying", zap.String("state", h.State), zap.Error(err))
		st.failing = true
	}
}

func (r *Reporter) write(ctx context.Context, h store.Health) error {
	ctx, cancel := context.WithTimeout(ctx, r.cfg.WriteTimeout)
	defer cancel()
	return r.w.ReportHealth(ctx, h)
}

func (r *Reporter) stop(ctx context.Context) {
	if !r.cfg.RemoveOnStop {
		return
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), r.cfg.WriteTimeout)
	defer cancel()
	if err := r.w.RemoveHealth(ctx, r.cfg.Process); err != nil {
		r.log.Info("cannot remove the state row; it is ignored after two minutes and purged after a day", zap.Error(err))
	}
}
