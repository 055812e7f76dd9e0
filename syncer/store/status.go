package store

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
)

// SyncState is what the sync log says about how the sync goes, for
// `syncer status`.
type SyncState struct {
	// LastAppliedSeq and LastAppliedAt are the newest success row's stream
	// sequence and time; both zero when nothing was applied yet.
	LastAppliedSeq int64
	LastAppliedAt  time.Time
	// FailedLast24h counts the events that failed in the last 24 hours
	// and have not been applied (or skipped) since.
	FailedLast24h int
	// Organizations is the last success per organization, newest first,
	// at most 50.
	Organizations []OrgSync
}

// OrgSync is one organization's last success.
type OrgSync struct {
	PortalOrgID string
	LastSuccess time.Time
	// Events24h counts its successful events in the last 24 hours.
	Events24h int
}

// ReadSyncState reads the sync state from the sync log.
func ReadSyncState(ctx context.Context, db DBTX) (SyncState, error) {
	var st SyncState
	var seq *int64
	var at *time.Time
	// The newest success row's sequence and time, from the same row; no
	// row yet leaves both zero.
	if err := db.QueryRow(ctx, lastAppliedSQL).Scan(&seq, &at); err != nil && !errors.Is(err, pgx.ErrNoRows) {
		return st, fmt.Errorf("last applied: %w", interpretError(err))
	}
	if seq != nil {
		st.LastAppliedSeq = *seq
	}
	if at != nil {
		st.LastAppliedAt = *at
	}
	if err := db.QueryRow(ctx, failedLast24hSQL).Scan(&st.FailedLast24h); err != nil {
		return st, fmt.Errorf("failed count: %w", interpretError(err))
	}
	rows, err := db.Query(ctx, orgLastSuccessSQL)
	if err != nil {
		return st, fmt.Errorf("last success per organization: %w", interpretError(err))
	}
	st.Organizations, err = pgx.CollectRows(rows, func(r pgx.CollectableRow) (OrgSync, error) {
		var o OrgSync
		err := r.Scan(&o.PortalOrgID, &o.LastSuccess, &o.Events24h)
		return o, err
	})
	if err != nil {
		return st, fmt.Errorf("last success per organization: %w", interpretError(err))
	}
	return st, nil
}
