package store

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// What a process reports in portalsync.sync_health (migration 00028), which
// public.sync_health serves to org admins.
const (
	// HealthKindSyncer and HealthKindReconciler are the kinds of process.
	HealthKindSyncer     = "syncer"
	HealthKindReconciler = "reconciler"

	// HealthRunning: applying what arrives (syncer), or reconciling every
	// interval (reconciler).
	HealthRunning = "running"
	// HealthCatchingUp: applying, with a backlog whose oldest event has
	// waited longer than it should.
	HealthCatchingUp = "catching_up"
	// HealthPaused: waiting for a dependency; Health.Reason says which.
	HealthPaused = "paused"
)

// Health is one process's report.
type Health struct {
	// Process names the reporting process: "syncer:<host>:<pid>" for a
	// syncer replica, "reconciler" for the reconciler.
	Process string
	// Kind is HealthKindSyncer or HealthKindReconciler.
	Kind string
	// State is HealthRunning, HealthCatchingUp or HealthPaused.
	State string
	// Since is when the process entered State.
	Since time.Time
	// Reason is why the process is paused: a fixed phrase such as
	// "database unavailable", never an error text (no personal data).
	// Written only with HealthPaused.
	Reason string
	// OldestUnappliedAt is when the oldest event not applied yet arrived.
	// Written only with HealthCatchingUp.
	OldestUnappliedAt time.Time
	// LastSuccessAt is when the reconciler's last successful pass ended;
	// zero keeps the one reported before.
	LastSuccessAt time.Time
}

// Validate reports what is wrong with a report.
func (h Health) Validate() error {
	switch {
	case h.Process == "":
		return errors.New("health: process required")
	case h.Kind != HealthKindSyncer && h.Kind != HealthKindReconciler:
		return fmt.Errorf("health: unknown kind %q", h.Kind)
	case h.State != HealthRunning && h.State != HealthCatchingUp && h.State != HealthPaused:
		return fmt.Errorf("health: unknown state %q", h.State)
	case h.Since.IsZero():
		return errors.New("health: since required")
	case len(h.Reason) > 200:
		return errors.New("health: reason longer than 200 characters")
	}
	return nil
}

// ReportHealth writes a process's report (its row, created or replaced)
// with reported_at = now(). Reason is written only when paused and
// OldestUnappliedAt only when catching up, whatever the report holds.
func (s *Store) ReportHealth(ctx context.Context, h Health) error {
	if err := h.Validate(); err != nil {
		return err
	}
	var reason, oldest any
	if h.State == HealthPaused && h.Reason != "" {
		reason = h.Reason
	}
	if h.State == HealthCatchingUp {
		oldest = nullTime(h.OldestUnappliedAt)
	}
	if _, err := s.db.Exec(ctx, syncHealthUpsertSQL, h.Process, h.Kind, h.State, h.Since, reason, oldest,
		nullTime(h.LastSuccessAt)); err != nil {
		return interpretError(fmt.Errorf("report health of %s: %w", h.Process, err))
	}
	return nil
}

// RemoveHealth deletes a process's row (a clean stop).
func (s *Store) RemoveHealth(ctx context.Context, process string) error {
	if _, err := s.db.Exec(ctx, syncHealthDeleteSQL, process); err != nil {
		return interpretError(fmt.Errorf("remove health of %s: %w", process, err))
	}
	return nil
}

// PurgeHealth deletes the rows not reported for olderThan and returns how
// many there were.
func (s *Store) PurgeHealth(ctx context.Context, olderThan time.Duration) (int64, error) {
	if olderThan <= 0 {
		return 0, errors.New("purge health: age must be positive")
	}
	tag, err := s.db.Exec(ctx, syncHealthPurgeSQL, olderThan.Seconds())
	if err != nil {
		return 0, interpretError(fmt.Errorf("purge health: %w", err))
	}
	return tag.RowsAffected(), nil
}
