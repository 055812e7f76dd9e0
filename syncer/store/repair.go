package store

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
)

// FutureRepair says what RepairFutureTimes reset.
type FutureRepair struct {
	// Rows counts, per table, the rows whose portal stamps were reset.
	Rows map[string]int64
	// Members are the portal member IDs of the rows reset: replaying their
	// events (now that the future ones are refused) rebuilds them.
	Members []string
}

// futureResets are the stamps a row may hold from an event dated in the
// future (applied before the ingress and the store refused such events),
// and what each is reset to: no stamp, so that the next real event for the
// row wins. $1 is the limit: now plus the allowed clock difference.
var futureResets = []struct{ table, sql string }{
	{"public.profiles", resetFutureProfilesSQL},
	{"public.organization_memberships", resetFutureMembershipsSQL},
	{"public.role_assignments", resetFutureRolesSQL},
	{"public.organizations", resetFutureOrganizationsSQL},
}

// RepairFutureTimes resets, in one transaction, every portal stamp dated
// more than maxAhead after now: rows that events from the future wrote
// before such events were refused, and that would otherwise win every
// comparison with later real events. The values stay until a newer real
// event (or a replay of the members' events) overwrites them. With dryRun
// it reports and rolls back.
func (s *Store) RepairFutureTimes(ctx context.Context, maxAhead time.Duration, dryRun bool) (FutureRepair, error) {
	rep := FutureRepair{Rows: map[string]int64{}}
	limit := s.now().Add(maxAhead)
	tx, err := s.db.Begin(ctx)
	if err != nil {
		return rep, fmt.Errorf("repair future times: %w", err)
	}
	defer func() { _ = tx.Rollback(context.WithoutCancel(ctx)) }()
	members := map[string]bool{}
	for _, r := range futureResets {
		rows, err := tx.Query(ctx, r.sql, limit)
		if err != nil {
			return rep, fmt.Errorf("repair future times in %s: %w", r.table, err)
		}
		ids, err := pgx.CollectRows(rows, pgx.RowTo[string])
		if err != nil {
			return rep, fmt.Errorf("repair future times in %s: %w", r.table, err)
		}
		rep.Rows[r.table] = int64(len(ids))
		for _, id := range ids {
			if id != "" {
				members[id] = true
			}
		}
	}
	rep.Members = sortedKeys(members)
	if dryRun {
		return rep, nil
	}
	if err := tx.Commit(ctx); err != nil {
		return rep, fmt.Errorf("repair future times: commit: %w", err)
	}
	return rep, nil
}
