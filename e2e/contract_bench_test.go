package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/likeperson/portalsync/console/ui"
	"github.com/likeperson/portalsync/testkit/schematest"
	"github.com/likeperson/portalsync/testkit/supabasetest"
)

// uuid0 is the smallest profile id: the keyset of a first page.
const uuid0 = "00000000-0000-0000-0000-000000000000"

// contractQuery is one query a screen makes, with the arguments of the
// benchmark's org admin: the log, health and "members" queries as
// docs/APP.md makes them through PostgREST (the console's log and health
// queries are the same), and "members (screen)" as the console pages its
// members list (ui.MembersPage).
type contractQuery struct {
	name string
	sql  string
	args func(b benchIDs) []any
}

// benchIDs are values the queries need from the generated data.
type benchIDs struct {
	org          string
	cursorAt     time.Time
	cursorID     int64
	entryID      int64
	weekAgo      time.Time
	membersAfter string
	// smallOrg is an organization of about 1,000 members where the org
	// admin is also coordinator.
	smallOrg string
}

var contractQueries = []contractQuery{
	{"log: newest page", `SELECT * FROM public.sync_log(org_id => $1, page_size => 50)`,
		func(b benchIDs) []any { return []any{b.org} }},
	{"log: page 20 (keyset cursor)", `SELECT * FROM public.sync_log(org_id => $1, before_processed_at => $2, before_id => $3, page_size => 50)`,
		func(b benchIDs) []any { return []any{b.org, b.cursorAt, b.cursorID} }},
	{"log: all my organizations", `SELECT * FROM public.sync_log(page_size => 50)`,
		func(benchIDs) []any { return nil }},
	{"log: status failed", `SELECT * FROM public.sync_log(org_id => $1, status_filter => 'failed', page_size => 50)`,
		func(b benchIDs) []any { return []any{b.org} }},
	{"log: type role-updated", `SELECT * FROM public.sync_log(org_id => $1, type_filter => 'role-updated', page_size => 50)`,
		func(b benchIDs) []any { return []any{b.org} }},
	{"log: type member-deleted (rare)", `SELECT * FROM public.sync_log(org_id => $1, type_filter => 'member-deleted', page_size => 50)`,
		func(b benchIDs) []any { return []any{b.org} }},
	{"log: period (a week, 30 days ago)", `SELECT * FROM public.sync_log(org_id => $1, since => $2::timestamptz - interval '7 days', until => $2, page_size => 50)`,
		func(b benchIDs) []any { return []any{b.org, b.weekAgo} }},
	{"log: search a surname", `SELECT * FROM public.sync_log(org_id => $1, search => 'nordmann', page_size => 50)`,
		func(b benchIDs) []any { return []any{b.org} }},
	{"log: search first and last name", `SELECT * FROM public.sync_log(org_id => $1, search => 'kari nord', page_size => 50)`,
		func(b benchIDs) []any { return []any{b.org} }},
	{"log: one entry (detail)", `SELECT * FROM public.sync_log(entry_id => $1)`,
		func(b benchIDs) []any { return []any{b.entryID} }},
	{"health", `SELECT * FROM public.sync_health WHERE organization_id = $1`,
		func(b benchIDs) []any { return []any{b.org} }},
	{"members: first page by name", `SELECT * FROM public.organization_members WHERE organization_id = $1 ORDER BY last_name, first_name, profile_id LIMIT 50`,
		func(b benchIDs) []any { return []any{b.org} }},
	{"members: a later page by name", `SELECT * FROM public.organization_members WHERE organization_id = $1 AND (last_name, first_name, profile_id) > ($2, '', '00000000-0000-0000-0000-000000000000') ORDER BY last_name, first_name, profile_id LIMIT 50`,
		func(b benchIDs) []any { return []any{b.org, b.membersAfter} }},
	{"members: first page by name (1,000-member organization)", `SELECT * FROM public.organization_members WHERE organization_id = $1 ORDER BY last_name, first_name, profile_id LIMIT 50`,
		func(b benchIDs) []any { return []any{b.smallOrg} }},
	{"members: inactive", `SELECT * FROM public.organization_members WHERE organization_id = $1 AND inactive ORDER BY last_name, first_name, profile_id LIMIT 50`,
		func(b benchIDs) []any { return []any{b.org} }},
	{"members: inactive, newest change first (all of them)", `SELECT display_name, role, status_changed_at FROM public.organization_members WHERE organization_id = $1 AND inactive ORDER BY status_changed_at DESC`,
		func(b benchIDs) []any { return []any{b.org} }},
	{"members (screen): first page", ui.MembersPage,
		func(b benchIDs) []any { return []any{b.org, false, "", "", uuid0, 50} }},
	{"members (screen): a later page", ui.MembersPage,
		func(b benchIDs) []any { return []any{b.org, false, b.membersAfter, "", uuid0, 50} }},
	{"members (screen): inactive", ui.MembersPage,
		func(b benchIDs) []any { return []any{b.org, true, "", "", uuid0, 50} }},
}

// benchData fills the database: 100 organizations (one, the org admin's,
// with 10,000 members), 100,000 members (10 % in two organizations, 5 % of
// memberships inactive), 1,000,000 log rows over 90 days spread over the
// organizations by size.
const benchData = `
INSERT INTO organizations (portal_org_id, name)
SELECT 'bench-org-' || g, 'HLF lokallag ' || g FROM generate_series(1, 100) g;

INSERT INTO profiles (portal_member_id, email, first_name, last_name, status)
SELECT 'bench-m-' || g, 'bench-m-' || g || '@example.invalid',
       (ARRAY['Kari','Ola','Per','Anne','Nils','Ingrid','Jon','Liv','Knut','Marit','Lars','Sigrid','Erik','Hilde','Tor','Randi'])[1 + g % 16] || (g % 7),
       (ARRAY['Nordmann','Hansen','Johansen','Olsen','Larsen','Andersen','Pedersen','Nilsen','Kristiansen','Jensen',
              'Karlsen','Johnsen','Pettersen','Eriksen','Berg','Haugen','Hagen','Johannessen','Andreassen','Jacobsen'])[1 + (g / 16) % 20]
         || CASE WHEN g % 3 = 0 THEN '' ELSE to_char(g % 97, 'FM00') END,
       'active'
FROM generate_series(1, 100000) g;

-- The first 10,000 members in org 1, the rest spread over 2..100; every
-- tenth member also in a second organization.
INSERT INTO organization_memberships (profile_id, organization_id, status, deactivated_at, portal_updated_at, status_portal_at)
SELECT p.id, o.id, CASE WHEN n % 20 = 0 THEN 'inactive' ELSE 'active' END,
       CASE WHEN n % 20 = 0 THEN now() - (n % 90) * interval '1 day' END, now(), now() - (n % 300) * interval '1 day'
FROM (SELECT id, substr(portal_member_id, 9)::int AS n FROM profiles WHERE portal_member_id LIKE 'bench-m-%') p
JOIN organizations o ON o.portal_org_id = 'bench-org-' || CASE WHEN p.n <= 10000 THEN 1 ELSE 2 + p.n % 99 END;
INSERT INTO organization_memberships (profile_id, organization_id, status, portal_updated_at, status_portal_at)
SELECT p.id, o.id, 'active', now(), now()
FROM (SELECT id, substr(portal_member_id, 9)::int AS n FROM profiles WHERE portal_member_id LIKE 'bench-m-%') p
JOIN organizations o ON o.portal_org_id = 'bench-org-' || (2 + (p.n + 50) % 99)
WHERE p.n % 10 = 0
ON CONFLICT DO NOTHING;
INSERT INTO role_assignments (profile_id, organization_id, role, portal_updated_at, portal_event_id)
SELECT m.profile_id, m.organization_id,
       CASE WHEN random() < 0.01 THEN 'org_admin' WHEN random() < 0.05 THEN 'coordinator' ELSE 'peer_mentor' END, now(), 'bench'
FROM organization_memberships m;

-- 1,000,000 rows: row g belongs to member (g % 100000) + 1 in that
-- member's first organization, so the big organization gets a tenth.
INSERT INTO portal_sync_log (event_id, event_type, portal_member_id, portal_org_id, organization_id, status, detail,
                             member_created, occurred_at, received_at, processed_at, stream_seq, source, changes)
SELECT 'evt_bench_' || g,
       (ARRAY['membership-updated','membership-updated','membership-updated','membership-created','role-updated',
              'membership-deactivated','membership-reactivated','membership-updated'])[1 + g % 8],
       'bench-m-' || (g % 100000 + 1), o.portal_org_id, o.id,
       CASE WHEN g % 200 = 0 THEN 'failed' WHEN g % 67 = 0 THEN 'skipped' ELSE 'success' END,
       'applied', false,
       now() - (1000000 - g) * interval '7776 milliseconds', now() - (1000000 - g) * interval '7776 milliseconds',
       now() - (1000000 - g) * interval '7776 milliseconds', g, 'portal-webhook',
       CASE WHEN g % 8 = 4 THEN '{"role": {"old": "peer_mentor", "new": "coordinator"}}'::jsonb END
FROM generate_series(1, 1000000) g
JOIN organizations o ON o.portal_org_id = 'bench-org-' || CASE WHEN g % 100000 + 1 <= 10000 THEN 1 ELSE 2 + (g % 100000 + 1) % 99 END;
-- Erasures are rare: one in 5,000 rows.
UPDATE portal_sync_log SET event_type = 'member-deleted' WHERE stream_seq % 5000 = 3;
`

// TestContractBenchmark measures every query of the app's contract that a
// screen makes, with 1,000,000 log rows and 100,000 members, as PostgREST
// runs it (authenticator, SET LOCAL ROLE authenticated, the claims of an
// access token issued by Supabase Auth, one transaction per request), and
// requires each to be served by indexes (no sequential scan of a big table
// in its plan) and estimated below jit_above_cost. Minutes: run with make bench-contract, which writes
// .data/bench/contract.md for docs/BENCHMARKS.md.
func TestContractBenchmark(t *testing.T) {
	if os.Getenv("PORTALSYNC_BENCH_CONTRACT") == "" {
		t.Skip("set PORTALSYNC_BENCH_CONTRACT=1 (make bench-contract)")
	}
	ctx := context.Background()
	db := supabasetest.Get(t).NewDatabase(t, supabasetest.Project)
	admin, err := pgx.Connect(ctx, db.URL("supabase_admin"))
	require.NoError(t, err)
	defer admin.Close(ctx)
	began := time.Now()
	_, err = admin.Exec(ctx, benchData)
	require.NoError(t, err)
	_, err = admin.Exec(ctx, `VACUUM (ANALYZE) organizations, profiles, organization_memberships, role_assignments, portal_sync_log`)
	require.NoError(t, err)
	t.Logf("data generated in %s", time.Since(began).Round(time.Second))

	// The org admin: a member of the big organization with a real account.
	auth := db.StartAuth(t)
	_, err = admin.Exec(ctx, `
		UPDATE profiles SET email = 'bench-admin@example.invalid' WHERE portal_member_id = 'bench-m-30';
		UPDATE role_assignments r SET role = CASE WHEN o.portal_org_id = 'bench-org-1' THEN 'org_admin' ELSE 'coordinator' END
		FROM profiles p, organizations o WHERE p.id = r.profile_id AND o.id = r.organization_id AND p.portal_member_id = 'bench-m-30'`)
	require.NoError(t, err)
	up, err := auth.SignUp(ctx, "bench-admin@example.invalid", password)
	require.NoError(t, err)
	require.True(t, up.OK(), up.Body)
	in, err := auth.SignIn(ctx, "bench-admin@example.invalid", password)
	require.NoError(t, err)
	require.True(t, in.OK(), in.Body)
	claims, err := supabasetest.Claims(in.Session.AccessToken)
	require.NoError(t, err)
	require.Len(t, claims["org_roles"], 2, "org admin of the big organization, coordinator of a second")
	raw, err := json.Marshal(claims)
	require.NoError(t, err)

	var ids benchIDs
	require.NoError(t, admin.QueryRow(ctx, `SELECT id::text FROM organizations WHERE portal_org_id = 'bench-org-1'`).Scan(&ids.org))
	require.NoError(t, admin.QueryRow(ctx, `SELECT processed_at, id FROM portal_sync_log WHERE organization_id = $1
		ORDER BY processed_at DESC, id DESC OFFSET 999 LIMIT 1`, ids.org).Scan(&ids.cursorAt, &ids.cursorID))
	require.NoError(t, admin.QueryRow(ctx, `SELECT id FROM portal_sync_log WHERE organization_id = $1 ORDER BY id DESC OFFSET 5000 LIMIT 1`, ids.org).Scan(&ids.entryID))
	ids.weekAgo = time.Now().Add(-30 * 24 * time.Hour)
	ids.membersAfter = "Jensen"
	require.NoError(t, admin.QueryRow(ctx, `SELECT m.organization_id::text FROM organization_memberships m JOIN profiles p ON p.id = m.profile_id
		JOIN organizations o ON o.id = m.organization_id WHERE p.portal_member_id = 'bench-m-30' AND o.portal_org_id <> 'bench-org-1'`).Scan(&ids.smallOrg))
	var nLog, nMembers int
	require.NoError(t, admin.QueryRow(ctx, `SELECT (SELECT count(*) FROM portal_sync_log), (SELECT count(*) FROM profiles)`).Scan(&nLog, &nMembers))

	cfg, err := pgx.ParseConfig(db.URL("authenticator"))
	require.NoError(t, err)
	// Unnamed statements, as the console sends them: each request is
	// planned with its arguments. (pgx's default, a prepared statement per
	// query, lets PostgreSQL switch to a generic plan after five runs,
	// planned for an average organization rather than this one.)
	cfg.DefaultQueryExecMode = pgx.QueryExecModeExec
	conn, err := pgx.ConnectConfig(ctx, cfg)
	require.NoError(t, err)
	defer conn.Close(ctx)
	// request runs one query as PostgREST runs a request; with explain set
	// (say "EXPLAIN (COSTS OFF)") it returns the plan instead.
	request := func(q contractQuery, explain string) (rows int, plan string, took time.Duration) {
		start := time.Now()
		tx, err := conn.Begin(ctx)
		require.NoError(t, err)
		defer func() { _ = tx.Rollback(ctx) }()
		schematest.Become(t, tx, "authenticated", raw)
		sql := q.sql
		if explain != "" {
			sql = explain + " " + sql
		}
		r, err := tx.Query(ctx, sql, q.args(ids)...)
		require.NoError(t, err, q.name)
		var lines []string
		for r.Next() {
			rows++
			if explain != "" {
				var l string
				require.NoError(t, r.Scan(&l))
				lines = append(lines, l)
			}
		}
		require.NoError(t, r.Err(), q.name)
		require.NoError(t, tx.Commit(ctx))
		return rows, strings.Join(lines, "\n"), time.Since(start)
	}

	var jitAbove float64
	require.NoError(t, admin.QueryRow(ctx, `SELECT setting::float8 FROM pg_settings WHERE name = 'jit_above_cost'`).Scan(&jitAbove))

	const runs = 200
	var report strings.Builder
	fmt.Fprintf(&report, "| query | rows | p50 | p95 | max | p95 < 50 ms |\n|---|---|---|---|---|---|\n")
	for _, q := range contractQueries {
		_, plan, _ := request(q, "EXPLAIN (COSTS OFF)")
		for _, big := range []string{"portal_sync_log", "profiles", "organization_memberships", "role_assignments"} {
			require.NotContains(t, plan, "Seq Scan on "+big, "%s:\n%s", q.name, plan)
		}
		// The planner's estimate stays below jit_above_cost, so that no
		// request compiles its plan (which would take longer than running
		// it): a policy estimated far above its cost fails here.
		_, costs, _ := request(q, "EXPLAIN (FORMAT JSON)")
		var estimate []struct {
			Plan struct {
				TotalCost float64 `json:"Total Cost"`
			}
		}
		require.NoError(t, json.Unmarshal([]byte(costs), &estimate))
		require.Less(t, estimate[0].Plan.TotalCost, jitAbove, "%s: estimated cost reaches jit_above_cost:\n%s", q.name, plan)
		var times []time.Duration
		rows := 0
		for i := 0; i < runs+10; i++ {
			n, _, took := request(q, "")
			if i >= 10 { // warm-up left out
				times = append(times, took)
				rows = n
			}
		}
		slices.Sort(times)
		p := func(f float64) string {
			return fmt.Sprintf("%.1f ms", float64(times[int(f*float64(len(times)-1))].Microseconds())/1000)
		}
		ok := "yes"
		if times[int(0.95*float64(len(times)-1))] >= 50*time.Millisecond {
			ok = "**no**"
		}
		fmt.Fprintf(&report, "| %s | %d | %s | %s | %s | %s |\n", q.name, rows, p(0.5), p(0.95), p(1), ok)
		t.Logf("%s: %d rows, p50 %s p95 %s\n%s", q.name, rows, p(0.5), p(0.95), plan)
	}
	var version string
	require.NoError(t, admin.QueryRow(ctx, `SHOW server_version`).Scan(&version))
	load, _ := os.ReadFile("/proc/loadavg")
	fmt.Fprintf(&report, "\nLoad average at the end (1, 5, 15 min): %s", strings.Join(strings.Fields(string(load))[:3], ", "))
	fmt.Fprintf(&report, "\n%d log rows, %d members; PostgreSQL %s (Supabase-shaped cluster of testkit/supabasetest), %d runs per query after 10 warm-up runs, each its own transaction as PostgREST runs a request (authenticator, SET LOCAL ROLE authenticated, claims of a GoTrue access token); %d cores (%s), %s.\n",
		nLog, nMembers, version, runs, runtime.NumCPU(), runtime.GOARCH, time.Now().UTC().Format("2006-01-02 15:04 MST"))
	t.Log("\n" + report.String())
	if out := os.Getenv("BENCH_REPORT"); out != "" {
		require.NoError(t, os.WriteFile(out, []byte(report.String()), 0o644))
	}
}
