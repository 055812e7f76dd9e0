package ui

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// db reads as PostgREST does: each request is one read-only transaction
// that switches to the role authenticated and carries the caller's
// verified claims in request.jwt.claims, so the policies of the app's
// tables decide every row. The login role (a member of
// portalsync_console) holds no right of its own.
type db struct {
	pool *pgxpool.Pool
}

func openDB(ctx context.Context, url string) (*db, error) {
	cfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		return nil, fmt.Errorf("CONSOLE_DATABASE_URL: %w", err)
	}
	// Unnamed statements: each query is planned with its arguments, so
	// the contract's optional filters fold away and pick their indexes.
	cfg.ConnConfig.DefaultQueryExecMode = pgx.QueryExecModeExec
	cfg.MaxConns = 8
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("database: %w", err)
	}
	return &db{pool: pool}, nil
}

// as runs fn in a transaction as the caller of c.
func (d *db) as(ctx context.Context, c *claims, fn func(tx pgx.Tx) error) error {
	return pgx.BeginTxFunc(ctx, d.pool, pgx.TxOptions{AccessMode: pgx.ReadOnly}, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `SELECT set_config('role', 'authenticated', true), set_config('request.jwt.claims', $1, true)`,
			string(c.raw)); err != nil {
			return fmt.Errorf("become authenticated: %w", err)
		}
		return fn(tx)
	})
}

// logFilter is what the log page filters by (all optional).
type logFilter struct {
	Org      string
	Status   string
	Type     string
	Since    *time.Time
	Until    *time.Time
	Search   string
	BeforeAt *time.Time
	BeforeID int64
	EntryID  int64
	PageSize int
}

// logRow is one row of public.sync_log.
type logRow struct {
	ID               int64
	EventID          string
	EventType        string
	Status           string
	Source           *string
	Changes          *changes
	Detail           string
	MemberCreated    bool
	OccurredAt       *time.Time
	ReceivedAt       *time.Time
	ProcessedAt      time.Time
	Attempt          int
	OrganizationID   string
	OrganizationName string
	PortalOrgID      string
	PortalMemberID   *string
	MemberName       *string
	MemberErased     bool
}

// changes is the documented shape of portal_sync_log.changes (00028).
type changes struct {
	Role          *change  `json:"role"`
	Status        *change  `json:"status"`
	ProfileFields []string `json:"profile_fields"`
}

type change struct {
	Old *string `json:"old"`
	New *string `json:"new"`
}

func nullText(s string) any {
	if s == "" {
		return nil
	}
	return s
}

func nullInt(n int64) any {
	if n == 0 {
		return nil
	}
	return n
}

// syncLog reads a page of the log through the contract's function.
func syncLog(ctx context.Context, tx pgx.Tx, f logFilter) ([]logRow, error) {
	rows, err := tx.Query(ctx, `
		SELECT id, event_id, event_type, status, source, changes, detail, member_created, occurred_at, received_at,
		       processed_at, attempt, organization_id::text, organization_name, portal_org_id, portal_member_id,
		       member_name, member_erased
		FROM public.sync_log(org_id => $1::uuid, status_filter => $2, type_filter => $3, since => $4, until => $5,
		                     search => $6, before_processed_at => $7, before_id => $8, entry_id => $9, page_size => $10)`,
		nullText(f.Org), nullText(f.Status), nullText(f.Type), f.Since, f.Until, nullText(f.Search),
		f.BeforeAt, nullInt(f.BeforeID), nullInt(f.EntryID), f.PageSize)
	if err != nil {
		return nil, fmt.Errorf("sync log: %w", err)
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (logRow, error) {
		var l logRow
		var ch []byte
		err := r.Scan(&l.ID, &l.EventID, &l.EventType, &l.Status, &l.Source, &ch, &l.Detail, &l.MemberCreated,
			&l.OccurredAt, &l.ReceivedAt, &l.ProcessedAt, &l.Attempt, &l.OrganizationID, &l.OrganizationName,
			&l.PortalOrgID, &l.PortalMemberID, &l.MemberName, &l.MemberErased)
		if err == nil && len(ch) > 0 {
			l.Changes = &changes{}
			err = json.Unmarshal(ch, l.Changes)
		}
		return l, err
	})
	if err != nil {
		return nil, fmt.Errorf("sync log: %w", err)
	}
	return out, nil
}

// logPage reads, in one transaction as the caller, the health of f.Org
// and a page of its log.
func (d *db) logPage(ctx context.Context, c *claims, f logFilter) (health *healthRow, rows []logRow, err error) {
	err = d.as(ctx, c, func(tx pgx.Tx) error {
		if health, err = syncHealth(ctx, tx, f.Org); err != nil {
			return err
		}
		rows, err = syncLog(ctx, tx, f)
		return err
	})
	return health, rows, err
}

// healthRow is one row of public.sync_health.
type healthRow struct {
	OrganizationID   string
	OrganizationName string
	State            string
	StateSince       *time.Time
	PausedReason     *string
	OldestUnapplied  *time.Time
	ReconciledAt     *time.Time
	LastAppliedAt    *time.Time
	FailedLast24h    int
}

func syncHealth(ctx context.Context, tx pgx.Tx, org string) (*healthRow, error) {
	var h healthRow
	err := tx.QueryRow(ctx, `
		SELECT organization_id::text, organization_name, state, state_since, paused_reason, oldest_unapplied_at,
		       reconciled_at, last_applied_at, failed_last_24h
		FROM public.sync_health WHERE organization_id = $1::uuid`, org).Scan(&h.OrganizationID, &h.OrganizationName,
		&h.State, &h.StateSince, &h.PausedReason, &h.OldestUnapplied, &h.ReconciledAt, &h.LastAppliedAt, &h.FailedLast24h)
	if err == pgx.ErrNoRows {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("sync health: %w", err)
	}
	return &h, nil
}

// memberRow is one row of public.organization_members.
type memberRow struct {
	ProfileID        string
	PortalMemberID   string
	DisplayName      *string
	LastName         *string
	FirstName        *string
	Role             *string
	MembershipStatus string
	Inactive         bool
	StatusChangedAt  time.Time
}

// memberFilter pages the members of one organization by name.
type memberFilter struct {
	Org          string
	InactiveOnly bool
	AfterLast    string
	AfterFirst   string
	AfterID      string
	PageSize     int
}

// MembersPage is the members page's statement: the members of
// organization $1 (only the inactive ones when $2) in name order, a
// missing name sorted as the empty string, after the keyset $3 (last
// name), $4 (first name), $5 (profile id), at most $6. CASE rather than
// coalesce, and the view's profile_id rather than the text of the select
// list: the order and the keyset condition are then those of
// profiles_sort_name_idx, which row-level security lets serve them
// (migration 00029), so a page reads about as many members as it shows
// however large the organization is. e2e's benchmark and TestAppContract
// run it.
const MembersPage = `
	SELECT profile_id::text, portal_member_id, display_name, last_name, first_name, role, membership_status,
	       inactive, status_changed_at
	FROM public.organization_members m
	WHERE organization_id = $1::uuid AND (NOT $2::boolean OR inactive)
	  AND (CASE WHEN last_name IS NULL THEN '' ELSE last_name END,
	       CASE WHEN first_name IS NULL THEN '' ELSE first_name END, m.profile_id) > ($3, $4, $5::uuid)
	ORDER BY CASE WHEN last_name IS NULL THEN '' ELSE last_name END,
	         CASE WHEN first_name IS NULL THEN '' ELSE first_name END, m.profile_id
	LIMIT $6`

func members(ctx context.Context, tx pgx.Tx, f memberFilter) ([]memberRow, error) {
	afterID := f.AfterID
	if afterID == "" {
		afterID = "00000000-0000-0000-0000-000000000000"
	}
	rows, err := tx.Query(ctx, MembersPage, f.Org, f.InactiveOnly, f.AfterLast, f.AfterFirst, afterID, f.PageSize)
	if err != nil {
		return nil, fmt.Errorf("members: %w", err)
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (memberRow, error) {
		var m memberRow
		err := r.Scan(&m.ProfileID, &m.PortalMemberID, &m.DisplayName, &m.LastName, &m.FirstName, &m.Role,
			&m.MembershipStatus, &m.Inactive, &m.StatusChangedAt)
		return m, err
	})
	if err != nil {
		return nil, fmt.Errorf("members: %w", err)
	}
	return out, nil
}
