package e2e

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/likeperson/portalsync/testkit/schematest"
)

// persona is one kind of caller in the access matrix.
type persona struct {
	member string // portal member ID; "" for anon and the syncer
	user   string // auth user id
}

// accessFixture builds organizations A and B and the matrix's personas by
// sending portal events through the real ingress and syncer.
func accessFixture(t *testing.T, sys *system) map[string]persona {
	t.Helper()
	people := map[string]struct{ member, org, typ, role string }{
		"member":             {"p-member", "org-a", "membership-updated", ""},
		"peer mentor":        {"p-mentor", "org-a", "membership-created", "peer_mentor"},
		"coordinator of A":   {"p-coord", "org-a", "membership-created", "coordinator"},
		"org admin of A":     {"p-admin-a", "org-a", "membership-created", "org_admin"},
		"org admin of B":     {"p-admin-b", "org-b", "membership-created", "org_admin"},
		"deactivated member": {"p-deact", "org-a", "membership-created", "peer_mentor"},
	}
	out := map[string]persona{"anon": {}, "syncer": {}}
	var last string
	for name, p := range people {
		user := sys.addAuthUser(t, p.member+"@example.invalid")
		out[name] = persona{member: p.member, user: user}
		e := sys.event(p.typ, p.member, p.org, p.role, base)
		sys.send(t, e)
		last = e.ID
	}
	for _, e := range []evt{
		sys.event("membership-created", "p-mentor-b", "org-b", "peer_mentor", base),
		sys.event("membership-deactivated", "p-deact", "org-a", "", base.Add(time.Hour)),
		sys.event("membership-created", "p-gone-b", "org-b", "peer_mentor", base),
		sys.event("membership-deactivated", "p-gone-b", "org-b", "", base.Add(time.Hour)),
	} {
		sys.send(t, e)
		last = e.ID
	}
	require.Equal(t, "success", sys.waitLogged(t, last))
	// Everything applied: the log of each event exists.
	require.Eventually(t, func() bool { return sys.countLog(t, "processed") == len(people)+4 }, 20*time.Second, 10*time.Millisecond)
	return out
}

// matrix reads the access matrix from docs/ACCESS.md.
func matrix(t *testing.T) (tables []string, rows map[string][]string) {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "docs", "ACCESS.md"))
	require.NoError(t, err)
	doc := string(b)
	start := strings.Index(doc, "<!-- access-matrix:start -->")
	end := strings.Index(doc, "<!-- access-matrix:end -->")
	require.True(t, start >= 0 && end > start, "matrix markers in ACCESS.md")
	rows = map[string][]string{}
	for _, line := range strings.Split(strings.TrimSpace(doc[start+len("<!-- access-matrix:start -->"):end]), "\n") {
		cells := strings.Split(strings.Trim(strings.TrimSpace(line), "|"), "|")
		for i := range cells {
			cells[i] = strings.TrimSpace(cells[i])
		}
		if cells[0] == "who" {
			tables = cells[1 : len(cells)-1]
			continue
		}
		if strings.HasPrefix(cells[0], "---") {
			continue
		}
		rows[cells[0]] = cells[1:]
	}
	require.Equal(t, []string{"organizations", "profiles", "organization_memberships", "role_assignments", "portal_sync_log",
		"sync_log()", "sync_health", "organization_members"}, tables)
	return tables, rows
}

// rowKeys are how the rows of each table are named in comparisons.
var rowKeys = map[string]string{
	"organizations":            `SELECT o.portal_org_id FROM organizations o`,
	"profiles":                 `SELECT p.portal_member_id FROM profiles p`,
	"organization_memberships": `SELECT p.portal_member_id || '@' || o.portal_org_id FROM organization_memberships m JOIN profiles p ON p.id = m.profile_id JOIN organizations o ON o.id = m.organization_id`,
	"role_assignments":         `SELECT p.portal_member_id || '@' || o.portal_org_id FROM role_assignments m JOIN profiles p ON p.id = m.profile_id JOIN organizations o ON o.id = m.organization_id`,
	"portal_sync_log":          `SELECT m.event_id FROM portal_sync_log m`,
	// The app's contract (migration 00028), read as the app reads it.
	"sync_log()":           `SELECT event_id FROM public.sync_log(page_size => 200)`,
	"sync_health":          `SELECT portal_org_id FROM public.sync_health`,
	"organization_members": `SELECT portal_member_id || '@' || portal_org_id FROM public.organization_members`,
}

// contractBase names, for each view or function of the contract, the
// table whose rows it shows (one per row of the table): what the caller
// reads through it is computed on that table.
var contractBase = map[string]string{
	"sync_log()":           "portal_sync_log",
	"sync_health":          "organizations",
	"organization_members": "organization_memberships",
}

// expected computes, as the superuser, the rows a code grants the caller.
func expected(t *testing.T, sys *system, table, code string, who persona) []string {
	t.Helper()
	// The caller's active profile, and organizations where they hold an
	// active membership with one of the given roles (nil: any).
	const orgs = `SELECT m2.organization_id FROM organization_memberships m2 JOIN profiles p2 ON p2.id = m2.profile_id
		LEFT JOIN role_assignments r2 ON r2.profile_id = m2.profile_id AND r2.organization_id = m2.organization_id
		WHERE p2.auth_user_id = $1::uuid AND p2.status = 'active' AND m2.status = 'active' AND ($2::text[] IS NULL OR r2.role = ANY($2))`
	managed := []string{"coordinator", "org_admin"}
	var where string
	args := []any{who.user, nil}
	switch code {
	case "—":
		return nil
	case "all":
		where = "true"
	case "own", "own + org":
		base := table
		if b, ok := contractBase[table]; ok {
			base = b
		}
		switch base {
		case "organizations":
			where = "o.id IN (" + orgs + ")"
		case "profiles":
			where = "p.auth_user_id = $1::uuid AND p.status = 'active'"
		default:
			where = "p.auth_user_id = $1::uuid AND EXISTS (SELECT 1 FROM profiles me WHERE me.id = p.id AND me.status = 'active')"
		}
		if code == "own + org" {
			args[1] = managed
			switch base {
			case "profiles":
				where = "(" + where + ") OR p.id IN (SELECT mm.profile_id FROM organization_memberships mm WHERE mm.organization_id IN (" + orgs + "))"
			case "organization_memberships", "role_assignments":
				where = "(" + where + ") OR m.organization_id IN (" + orgs + ")"
			}
		}
	case "admin org":
		args[1] = []string{"org_admin"}
		where = "m.organization_id IN (" + orgs + ")"
		if table == "sync_health" {
			where = "o.id IN (" + orgs + ")"
		}
	default:
		t.Fatalf("unknown code %q in ACCESS.md", code)
	}
	if who.user == "" {
		args[0] = "00000000-0000-0000-0000-000000000000"
	}
	switch {
	case !strings.Contains(where, "$1"):
		args = nil
	case !strings.Contains(where, "$2"):
		args = args[:1]
	}
	keysSQL := rowKeys[table]
	if b, ok := contractBase[table]; ok {
		keysSQL = rowKeys[b]
	}
	rows, err := sys.pool.Query(context.Background(), keysSQL+" WHERE "+where, args...)
	require.NoError(t, err, table)
	keys, err := pgx.CollectRows(rows, pgx.RowTo[string])
	require.NoError(t, err)
	if len(keys) == 0 {
		return nil
	}
	sort.Strings(keys)
	return keys
}

// visible returns the rows the caller reads, or nil when refused outright.
func visible(t *testing.T, sys *system, conn querier, table string) []string {
	t.Helper()
	if tx, ok := conn.(pgx.Tx); ok {
		// A savepoint: a refusal must not abort the caller's transaction.
		sp, err := tx.Begin(context.Background())
		require.NoError(t, err)
		defer func() { _ = sp.Rollback(context.Background()) }()
		conn = sp
	}
	rows, err := conn.Query(context.Background(), rowKeys[table])
	require.NoError(t, err)
	keys, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if isDenied(err) {
		return nil
	}
	require.NoError(t, err, table)
	if len(keys) == 0 {
		return nil
	}
	sort.Strings(keys)
	return keys
}

type querier interface {
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
}

func isDenied(err error) bool {
	var pgErr *pgconn.PgError
	return errors.As(err, &pgErr) && pgErr.Code == "42501"
}

// as runs fn in a transaction as the persona, rolled back afterwards.
func (s *system) as(t *testing.T, who persona, role string, fn func(tx pgx.Tx)) {
	t.Helper()
	ctx := context.Background()
	tx, err := s.pool.Begin(ctx)
	require.NoError(t, err)
	defer func() { _ = tx.Rollback(ctx) }()
	var claims []byte
	if who.user != "" {
		claims = schematest.UserClaims(t, who.user, role)
	}
	schematest.Become(t, tx, role, claims)
	fn(tx)
}

// writeAttempts are one INSERT, UPDATE and DELETE per table.
func writeAttempts(table string) []string {
	col := "updated_at = now()"
	if table == "portal_sync_log" {
		col = "detail = 'x'"
	}
	return []string{
		"INSERT INTO " + table + " DEFAULT VALUES",
		"UPDATE " + table + " SET " + col,
		"DELETE FROM " + table,
	}
}

// loginRole creates a login role that is a member of group only, and
// returns dbURL rewritten to connect as it.
func loginRole(t *testing.T, sys *system, group string) string {
	t.Helper()
	ctx := context.Background()
	b := make([]byte, 5)
	_, _ = rand.Read(b)
	name := "ps_test_" + hex.EncodeToString(b)
	_, err := sys.pool.Exec(ctx, fmt.Sprintf("CREATE ROLE %s LOGIN IN ROLE %s", name, group))
	require.NoError(t, err)
	t.Cleanup(func() {
		// Connections of the role are closed by the cleanups registered
		// after this one; drop it last.
		_, _ = sys.pool.Exec(context.Background(), fmt.Sprintf(
			"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = '%s'", name))
		_, err := sys.pool.Exec(context.Background(), "DROP ROLE "+name)
		require.NoError(t, err)
	})
	u, err := url.Parse(sys.dbURL)
	require.NoError(t, err)
	u.User = url.User(name)
	return u.String()
}

// TestAccessMatrix checks every cell of docs/ACCESS.md against the database.
func TestAccessMatrix(t *testing.T) {
	t.Parallel()
	sys := start(t)
	ctx := context.Background()
	people := accessFixture(t, sys)
	tables, rows := matrix(t)
	require.Len(t, rows, len(people), "one matrix row per persona")

	syncerURL := loginRole(t, sys, "portalsync_syncer")
	syncerPool, err := pgxpool.New(ctx, syncerURL)
	require.NoError(t, err)
	defer syncerPool.Close()

	for name, cells := range rows {
		who, ok := people[name]
		require.True(t, ok, "persona %q of ACCESS.md has no fixture", name)
		check := func(conn querier) {
			for i, table := range tables {
				want := expected(t, sys, table, cells[i], who)
				got := visible(t, sys, conn, table)
				require.Equal(t, want, got, "%s reading %s (%s)", name, table, cells[i])
			}
		}
		switch name {
		case "syncer":
			check(syncerPool)
			require.Equal(t, "syncer", cells[len(cells)-1])
		case "anon":
			sys.as(t, who, "anon", func(tx pgx.Tx) { check(tx) })
		default:
			sys.as(t, who, "authenticated", func(tx pgx.Tx) { check(tx) })
		}
		if cells[len(cells)-1] == "none" {
			role := "authenticated"
			if name == "anon" {
				role = "anon"
			}
			for _, table := range tables {
				if _, ok := contractBase[table]; ok {
					// Views and functions: authenticated holds SELECT or
					// EXECUTE only (TestAPIRolePrivilegesMatchDocs).
					continue
				}
				for _, stmt := range writeAttempts(table) {
					sys.as(t, who, role, func(tx pgx.Tx) {
						_, err := tx.Exec(ctx, stmt)
						require.True(t, isDenied(err), "%s: %s: %v", name, stmt, err)
					})
				}
			}
		}
	}
	// A few cells spelled out, as a reader would check them.
	sys.as(t, people["coordinator of A"], "authenticated", func(tx pgx.Tx) {
		got := visible(t, sys, tx, "profiles")
		require.Contains(t, got, "p-deact", "a coordinator sees the inactive member")
		require.NotContains(t, got, "p-admin-b")
	})
	sys.as(t, people["org admin of B"], "authenticated", func(tx pgx.Tx) {
		for _, id := range visible(t, sys, tx, "portal_sync_log") {
			var org string
			require.NoError(t, sys.pool.QueryRow(ctx, `SELECT portal_org_id FROM portal_sync_log WHERE event_id = $1`, id).Scan(&org))
			require.Equal(t, "org-b", org)
		}
	})
}
