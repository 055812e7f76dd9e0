package store

import (
	"context"
	"fmt"
	"slices"
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
	{"public.profiles", `
		UPDATE public.profiles SET
		  email_portal_at = CASE WHEN email_portal_at > $1 THEN NULL ELSE email_portal_at END,
		  email_event_id = CASE WHEN email_portal_at > $1 THEN NULL ELSE email_event_id END,
		  first_name_portal_at = CASE WHEN first_name_portal_at > $1 THEN NULL ELSE first_name_portal_at END,
		  first_name_event_id = CASE WHEN first_name_portal_at > $1 THEN NULL ELSE first_name_event_id END,
		  last_name_portal_at = CASE WHEN last_name_portal_at > $1 THEN NULL ELSE last_name_portal_at END,
		  last_name_event_id = CASE WHEN last_name_portal_at > $1 THEN NULL ELSE last_name_event_id END,
		  phone_portal_at = CASE WHEN phone_portal_at > $1 THEN NULL ELSE phone_portal_at END,
		  phone_event_id = CASE WHEN phone_portal_at > $1 THEN NULL ELSE phone_event_id END,
		  portal_updated_at = CASE WHEN portal_updated_at > $1 THEN NULL ELSE portal_updated_at END,
		  portal_event_id = CASE WHEN portal_updated_at > $1 THEN NULL ELSE portal_event_id END,
		  deactivated_at = CASE WHEN deactivated_at > $1 THEN NULL ELSE deactivated_at END,
		  updated_at = now()
		WHERE greatest(email_portal_at, first_name_portal_at, last_name_portal_at, phone_portal_at, portal_updated_at, deactivated_at) > $1
		RETURNING portal_member_id`},
	{"public.organization_memberships", `
		UPDATE public.organization_memberships m SET
		  status_portal_at = CASE WHEN status_portal_at > $1 THEN NULL ELSE status_portal_at END,
		  status_event_id = CASE WHEN status_portal_at > $1 THEN NULL ELSE status_event_id END,
		  deactivated_at = CASE WHEN m.deactivated_at > $1 THEN NULL ELSE m.deactivated_at END,
		  portal_updated_at = CASE WHEN m.portal_updated_at > $1 THEN '-infinity' ELSE m.portal_updated_at END,
		  updated_at = now()
		FROM public.profiles p
		WHERE p.id = m.profile_id AND greatest(m.status_portal_at, m.deactivated_at, m.portal_updated_at) > $1
		RETURNING p.portal_member_id`},
	{"public.role_assignments", `
		UPDATE public.role_assignments r SET portal_updated_at = '-infinity', portal_event_id = '', updated_at = now()
		FROM public.profiles p
		WHERE p.id = r.profile_id AND r.portal_updated_at > $1
		RETURNING p.portal_member_id`},
	{"public.organizations", `
		UPDATE public.organizations SET portal_updated_at = NULL, portal_event_id = NULL, updated_at = now()
		WHERE portal_updated_at > $1
		RETURNING ''`},
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
	for m := range members {
		rep.Members = append(rep.Members, m)
	}
	slices.Sort(rep.Members)
	if dryRun {
		return rep, nil
	}
	if err := tx.Commit(ctx); err != nil {
		return rep, fmt.Errorf("repair future times: commit: %w", err)
	}
	return rep, nil
}
