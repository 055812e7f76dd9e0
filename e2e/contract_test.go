package e2e

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/likeperson/portalsync/console/ui"
	"github.com/likeperson/portalsync/testkit/schematest"
)

func schematestDB(t *testing.T) *pgxpool.Pool { return schematest.NewDB(t).Pool }

// logEntry is one row of public.sync_log as the app reads it.
type logEntry struct {
	ID           int64
	EventID      string
	EventType    string
	Status       string
	Source       *string
	Changes      map[string]any
	Org          string
	Member       *string
	Name         *string
	Erased       bool
	ProcessedAt  time.Time
	Organization string
}

func syncLog(t *testing.T, tx pgx.Tx, args string) []logEntry {
	t.Helper()
	rows, err := tx.Query(context.Background(), `SELECT id, event_id, event_type, status, source, changes, portal_org_id,
		portal_member_id, member_name, member_erased, processed_at, organization_name FROM public.sync_log(`+args+`)`)
	require.NoError(t, err)
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (logEntry, error) {
		var e logEntry
		err := r.Scan(&e.ID, &e.EventID, &e.EventType, &e.Status, &e.Source, &e.Changes, &e.Org, &e.Member, &e.Name,
			&e.Erased, &e.ProcessedAt, &e.Organization)
		return e, err
	})
	require.NoError(t, err)
	return out
}

func orgID(t *testing.T, sys *system, portalOrg string) string {
	t.Helper()
	var id string
	require.NoError(t, sys.pool.QueryRow(context.Background(), `SELECT id::text FROM organizations WHERE portal_org_id = $1`, portalOrg).Scan(&id))
	return id
}

// The app's contract (migration 00028) through the real ingress and
// syncer: names instead of ids, filters, name search, keyset paging, an
// erased member shown as erased, the organization boundary held when a
// caller names another organization, and inactive members per
// organization.
func TestAppContract(t *testing.T) {
	t.Parallel()
	sys := start(t)
	ctx := context.Background()
	admin := sys.addAuthUser(t, "c-admin@example.invalid")
	adminB := sys.addAuthUser(t, "c-admin-b@example.invalid")
	coord := sys.addAuthUser(t, "c-coord@example.invalid")
	mentor := sys.addAuthUser(t, "c-mentor@example.invalid")
	// Every event is waited for: the syncer applies different members'
	// events in parallel, so the last one sent may be applied first.
	var sent []string
	send := func(typ, member, org, role string, at time.Time, first, lastName string) {
		e := sys.event(typ, member, org, role, at)
		if first != "" {
			e.Member["first_name"], e.Member["last_name"] = first, lastName
		}
		sys.send(t, e)
		sent = append(sent, e.ID)
	}
	send("membership-created", "c-admin", "org-a", "org_admin", base, "", "")
	send("membership-created", "c-admin-b", "org-b", "org_admin", base, "", "")
	send("membership-created", "c-coord", "org-a", "coordinator", base, "", "")
	send("membership-created", "c-mentor", "org-a", "peer_mentor", base, "", "")
	send("membership-created", "c-kari", "org-a", "peer_mentor", base, "Kari", "Nordmann")
	send("membership-created", "c-kari", "org-b", "peer_mentor", base, "Kari", "Nordmann")
	send("membership-deactivated", "c-kari", "org-a", "", base.Add(time.Minute), "", "")
	send("membership-created", "c-ola", "org-a", "peer_mentor", base, "Ola", "Nordlys")
	send("role-updated", "c-ola", "org-a", "coordinator", base.Add(time.Minute), "", "")
	send("membership-created", "c-gone", "org-a", "peer_mentor", base, "Per", "Slettet")
	// Members with a name missing, for the members list's order.
	for _, m := range []struct {
		member      string
		first, last any
	}{{"c-noname", nil, nil}, {"c-nolast", "Per", nil}, {"c-nofirst", nil, "Aasen"}} {
		e := sys.event("membership-created", m.member, "org-a", "peer_mentor", base)
		e.Member["first_name"], e.Member["last_name"] = m.first, m.last
		sys.send(t, e)
		sent = append(sent, e.ID)
	}
	for _, id := range sent {
		require.Equal(t, "success", sys.waitLogged(t, id))
	}
	e := sys.event("member-deleted", "c-gone", "org-a", "", base.Add(2*time.Minute))
	sys.send(t, e)
	require.Equal(t, "success", sys.waitLogged(t, e.ID))
	a, b := orgID(t, sys, "org-a"), orgID(t, sys, "org-b")

	sys.asUser(t, admin, func(tx pgx.Tx) {
		all := syncLog(t, tx, "")
		require.NotEmpty(t, all)
		for i, r := range all {
			require.Equal(t, "org-a", r.Org, "only the admin's organization")
			require.Equal(t, "HLF org-a", r.Organization)
			if i > 0 {
				prev := all[i-1]
				require.True(t, prev.ProcessedAt.After(r.ProcessedAt) || prev.ProcessedAt.Equal(r.ProcessedAt) && prev.ID > r.ID, "newest first")
			}
		}
		var kari, erased int
		for _, r := range all {
			if r.Member != nil && *r.Member == "c-kari" {
				kari++
				require.Equal(t, "Kari Nordmann", *r.Name, "the member's display name")
			}
			if r.Erased {
				erased++
				require.Nil(t, r.Member, "an erased member has no id")
				require.Nil(t, r.Name)
			}
			if r.Member != nil {
				require.NotContains(t, *r.Member, "erased:")
			}
		}
		require.Equal(t, 2, kari)
		require.Positive(t, erased, "the erased member's rows show as erased")

		// Search: each word begins the first or the last name.
		got := syncLog(t, tx, "search => 'nordm'")
		require.Len(t, got, 2)
		for _, r := range got {
			require.Equal(t, "c-kari", *r.Member)
		}
		require.Len(t, syncLog(t, tx, "search => 'NORD'"), 4, "Nordmann and Nordlys, any case")
		require.Len(t, syncLog(t, tx, "search => '  ola nord '"), 2)
		require.Empty(t, syncLog(t, tx, "search => 'kari nordl'"))
		require.Empty(t, syncLog(t, tx, "search => 'ordmann'"), "a prefix, not a substring")
		require.Empty(t, syncLog(t, tx, "search => '%'"), "no pattern characters")

		// Filters.
		for _, r := range syncLog(t, tx, "type_filter => 'role-updated'") {
			require.Equal(t, "role-updated", r.EventType)
		}
		require.Len(t, syncLog(t, tx, "type_filter => 'role-updated'"), 1)
		require.Empty(t, syncLog(t, tx, "status_filter => 'failed'"))
		require.Len(t, syncLog(t, tx, "status_filter => 'success'"), len(all))
		require.Empty(t, syncLog(t, tx, "since => now() + interval '1 minute'"))
		require.Len(t, syncLog(t, tx, "until => now() + interval '1 minute'"), len(all))

		// Keyset paging: pages of two, following the cursor, give every row
		// once, in order.
		var paged []string
		cursor := "page_size => 2"
		for range 20 {
			page := syncLog(t, tx, cursor)
			for _, r := range page {
				paged = append(paged, r.EventID)
			}
			if len(page) < 2 {
				break
			}
			l := page[len(page)-1]
			cursor = fmt.Sprintf("page_size => 2, before_processed_at => '%s', before_id => %d", l.ProcessedAt.Format(time.RFC3339Nano), l.ID)
		}
		var want []string
		for _, r := range all {
			want = append(want, r.EventID)
		}
		require.Equal(t, want, paged)
		one := syncLog(t, tx, fmt.Sprintf("entry_id => %d", all[0].ID))
		require.Len(t, one, 1)
		require.Equal(t, all[0].EventID, one[0].EventID)

		// Naming the other organization gives nothing.
		require.Empty(t, syncLog(t, tx, "org_id => '"+b+"'"))
		require.Len(t, syncLog(t, tx, "org_id => '"+a+"'"), len(all))
		require.Equal(t, []string{"org-a"}, queryStrings(t, tx, `SELECT portal_org_id FROM public.sync_health`))
	})

	sys.asUser(t, adminB, func(tx pgx.Tx) {
		require.Empty(t, syncLog(t, tx, "org_id => '"+a+"'"), "B's admin naming A")
		for _, r := range syncLog(t, tx, "search => 'kari'") {
			require.Equal(t, "org-b", r.Org)
		}
		for _, r := range syncLog(t, tx, "") {
			require.Equal(t, "org-b", r.Org)
		}
		var n int
		require.NoError(t, tx.QueryRow(ctx, `SELECT count(*) FROM public.organization_members WHERE organization_id = $1`, a).Scan(&n))
		require.Zero(t, n, "A's members")
	})

	// The coordinator: the member deactivated in A is inactive in A while
	// active in B (and so in profiles); no log, no health.
	sys.asUser(t, coord, func(tx pgx.Tx) {
		var status string
		var inactive bool
		var role string
		require.NoError(t, tx.QueryRow(ctx, `SELECT membership_status, inactive, role FROM public.organization_members
			WHERE organization_id = $1 AND portal_member_id = 'c-kari'`, a).Scan(&status, &inactive, &role))
		require.Equal(t, "inactive", status)
		require.True(t, inactive)
		require.Equal(t, "peer_mentor", role)
		require.Equal(t, []string{"active"}, queryStrings(t, tx, `SELECT status FROM profiles WHERE portal_member_id = 'c-kari'`),
			"profiles says active: the reason the view exists")
		require.Equal(t, []string{"Kari Nordmann", "Ola Nordlys"}, queryStrings(t, tx,
			`SELECT display_name FROM public.organization_members WHERE last_name LIKE 'Nord%' ORDER BY 1`))
		require.Empty(t, queryStrings(t, tx, `SELECT portal_org_id FROM public.organization_members WHERE portal_org_id = 'org-b'`))
		require.Empty(t, syncLog(t, tx, ""))
		require.Empty(t, queryStrings(t, tx, `SELECT portal_org_id FROM public.sync_health`))

		// The screen's members list, two to a page: by last name, then first
		// name, a missing one first; each member once; "inactive" pages the
		// inactive ones alone.
		require.Equal(t, []string{"c-noname", "c-nolast", "c-nofirst", "c-admin", "c-coord", "c-mentor", "c-ola", "c-kari"},
			membersPaged(t, tx, a, false))
		require.Equal(t, []string{"c-kari"}, membersPaged(t, tx, a, true))
	})
	sys.asUser(t, mentor, func(tx pgx.Tx) {
		require.Empty(t, syncLog(t, tx, ""))
		require.Equal(t, []string{"c-mentor"}, queryStrings(t, tx, `SELECT portal_member_id FROM public.organization_members`))
	})
}

// membersPaged reads organization org's members as the screen does
// (ui.MembersPage), two to a page, each page after the last row of the one
// before, and returns their portal member ids.
func membersPaged(t *testing.T, tx pgx.Tx, org string, inactiveOnly bool) []string {
	t.Helper()
	var out []string
	last, first, id := "", "", uuid0
	for page := 0; page <= 10; page++ {
		rows, err := tx.Query(context.Background(), ui.MembersPage, org, inactiveOnly, last, first, id, 2)
		require.NoError(t, err)
		n := 0
		for rows.Next() {
			var member string
			var lastName, firstName, display, role *string
			var status string
			var inactive bool
			var changed time.Time
			require.NoError(t, rows.Scan(&id, &member, &display, &lastName, &firstName, &role, &status, &inactive, &changed))
			last, first = "", ""
			if lastName != nil {
				last = *lastName
			}
			if firstName != nil {
				first = *firstName
			}
			out = append(out, member)
			n++
		}
		require.NoError(t, rows.Err())
		if n < 2 {
			return out
		}
	}
	t.Fatalf("members of %s: more than 10 pages of two: %v", org, out)
	return nil
}

// The log's new columns: an INSERT that does not name them still works
// (the account-link trigger's rows, rows from before 00028), what the writer puts
// there comes out of sync_log, and the constraint refuses any shape that
// could carry a personal value.
func TestSyncLogSourceAndChanges(t *testing.T) {
	t.Parallel()
	sys := start(t, withoutSyncer())
	ctx := context.Background()
	admin := sys.addAuthUser(t, "s-admin@example.invalid")
	_, err := sys.pool.Exec(ctx, `
		INSERT INTO organizations (portal_org_id, name) VALUES ('org-s', 'HLF Sør');
		INSERT INTO profiles (portal_member_id, auth_user_id, first_name, last_name) VALUES ('s-admin', '`+admin+`', 'Siri', 'Sjef');
		INSERT INTO organization_memberships (profile_id, organization_id, status, portal_updated_at)
		  SELECT p.id, o.id, 'active', now() FROM profiles p, organizations o;
		INSERT INTO role_assignments (profile_id, organization_id, role, portal_updated_at, portal_event_id)
		  SELECT p.id, o.id, 'org_admin', now(), 'e0' FROM profiles p, organizations o;
		INSERT INTO portal_sync_log (event_id, event_type, portal_member_id, portal_org_id, organization_id, status)
		  SELECT 'e-old', 'role-updated', 's-admin', 'org-s', id, 'success' FROM organizations;
		INSERT INTO portal_sync_log (event_id, event_type, portal_member_id, portal_org_id, organization_id, status, source, changes)
		  SELECT 'e-new', 'role-updated', 's-admin', 'org-s', id, 'success', 'dataverse-webhook',
		         '{"role": {"old": "coordinator", "new": "org_admin"}, "profile_fields": ["phone"]}' FROM organizations`)
	require.NoError(t, err)
	sys.asUser(t, admin, func(tx pgx.Tx) {
		got := syncLog(t, tx, "")
		require.Len(t, got, 2)
		require.Equal(t, "e-new", got[0].EventID)
		require.Equal(t, "dataverse-webhook", *got[0].Source)
		require.Equal(t, map[string]any{"role": map[string]any{"old": "coordinator", "new": "org_admin"}, "profile_fields": []any{"phone"}}, got[0].Changes)
		require.Nil(t, got[1].Source, "not recorded")
		require.Nil(t, got[1].Changes)
		require.Equal(t, "Siri Sjef", *got[1].Name)
	})
	for _, bad := range []string{
		`{"profile_fields": {"first_name": "Kari"}}`,
		`{"profile_fields": ["Kari"]}`,
		`{"first_name": {"old": "Kari", "new": "Karin"}}`,
		`{"role": {"old": "coordinator", "new": "Kari"}}`,
		`{"role": {"old": "coordinator", "new": "org_admin", "by": "Kari"}}`,
		`{"status": {"old": "active", "new": "kari@example.invalid"}}`,
		`["phone"]`,
	} {
		_, err := sys.pool.Exec(ctx, `INSERT INTO portal_sync_log (event_id, event_type, status, changes) VALUES ('x', 'y', 'failed', $1)`, bad)
		var pgErr *pgconn.PgError
		require.ErrorAs(t, err, &pgErr, bad)
		require.Equal(t, "23514", pgErr.Code, "%s: %v", bad, err)
	}
	_, err = sys.pool.Exec(ctx, `INSERT INTO portal_sync_log (event_id, event_type, status, source) VALUES ('x', 'y', 'failed', 'carrier pigeon')`)
	require.Error(t, err)
	_, err = sys.pool.Exec(ctx, `INSERT INTO portal_sync_log (event_id, event_type, status, changes) VALUES ('x', 'y', 'failed',
		'{"role": {"old": null, "new": "peer_mentor"}, "status": {"old": "inactive", "new": "active"}, "profile_fields": []}')`)
	require.NoError(t, err)
}

// public.sync_health: what the syncer and the reconciler report, as an org
// admin reads it; a report older than two minutes no longer counts.
func TestSyncHealth(t *testing.T) {
	t.Parallel()
	sys := start(t)
	ctx := context.Background()
	admin := sys.addAuthUser(t, "h-admin@example.invalid")
	e := sys.event("membership-created", "h-admin", "org-h", "org_admin", base)
	sys.send(t, e)
	require.Equal(t, "success", sys.waitLogged(t, e.ID))
	health := func() (state string, since, oldest, reconciled *time.Time, reason *string, last *time.Time, failed int) {
		sys.asUser(t, admin, func(tx pgx.Tx) {
			require.NoError(t, tx.QueryRow(ctx, `SELECT state, state_since, oldest_unapplied_at, reconciled_at, paused_reason,
				last_applied_at, failed_last_24h FROM public.sync_health`).Scan(&state, &since, &oldest, &reconciled, &reason, &last, &failed))
		})
		return
	}
	var state string
	require.Eventually(t, func() bool { state, _, _, _, _, _, _ = health(); return state == "running" },
		10*time.Second, 10*time.Millisecond, "the harness's syncer reports its state")
	_, _, _, reconciled, _, last, failed := health()
	require.Nil(t, reconciled)
	require.NotNil(t, last)
	require.Zero(t, failed)
	// No report in the last two minutes: unknown. (In one transaction,
	// so that the syncer's next report waits for it.)
	tx, err := sys.pool.Begin(ctx)
	require.NoError(t, err)
	_, err = tx.Exec(ctx, `UPDATE portalsync.sync_health SET reported_at = now() - interval '3 minutes' WHERE kind = 'syncer'`)
	require.NoError(t, err)
	schematest.Become(t, tx, "authenticated", schematest.UserClaims(t, admin, "authenticated"))
	require.NoError(t, tx.QueryRow(ctx, `SELECT state FROM public.sync_health`).Scan(&state))
	require.Equal(t, "unknown", state, "no syncer reported in the last two minutes")
	require.NoError(t, tx.Rollback(ctx))

	// As the syncer's role writes it (the rows of processes that do not
	// run here).
	syncer, err := pgx.Connect(ctx, loginRole(t, sys, "portalsync_syncer"))
	require.NoError(t, err)
	defer syncer.Close(ctx)
	_, err = syncer.Exec(ctx, `
		INSERT INTO portalsync.sync_health (process, kind, state, since, oldest_unapplied_at) VALUES
		  ('syncer:a:1', 'syncer', 'running', now() - interval '1 hour', NULL),
		  ('syncer:b:2', 'syncer', 'catching_up', now() - interval '5 minutes', now() - interval '90 seconds'),
		  ('syncer:dead:3', 'syncer', 'paused', now() - interval '1 day', NULL);
		UPDATE portalsync.sync_health SET reported_at = now() - interval '3 minutes' WHERE process = 'syncer:dead:3';
		INSERT INTO portalsync.sync_health (process, kind, state, since, last_success_at) VALUES
		  ('reconciler', 'reconciler', 'running', now() - interval '1 day', now() - interval '10 minutes')`)
	require.NoError(t, err)
	state, since, oldest, reconciled, _, _, _ := health()
	require.Equal(t, "catching_up", state, "the worst state of the processes that report")
	require.WithinDuration(t, time.Now().Add(-5*time.Minute), *since, time.Minute)
	require.WithinDuration(t, time.Now().Add(-90*time.Second), *oldest, time.Minute)
	require.WithinDuration(t, time.Now().Add(-10*time.Minute), *reconciled, time.Minute)

	_, err = syncer.Exec(ctx, `UPDATE portalsync.sync_health SET state = 'paused', since = now(), reason = 'NATS unavailable' WHERE process = 'syncer:a:1'`)
	require.NoError(t, err)
	state, _, _, _, reason, _, _ := health()
	require.Equal(t, "paused", state)
	require.Equal(t, "NATS unavailable", *reason)

	// A failure in the last 24 hours counts until the event succeeds.
	_, err = sys.pool.Exec(ctx, `INSERT INTO portal_sync_log (event_id, event_type, portal_org_id, organization_id, status, detail)
		SELECT 'evt-f', 'membership-updated', 'org-h', id, 'failed', 'x' FROM organizations`)
	require.NoError(t, err)
	_, _, _, _, _, _, failed = health()
	require.Equal(t, 1, failed)

	// Nobody else reads the syncer's state.
	mentor := sys.addAuthUser(t, "h-mentor@example.invalid")
	e = sys.event("membership-created", "h-mentor", "org-h", "peer_mentor", base)
	sys.send(t, e)
	require.Equal(t, "success", sys.waitLogged(t, e.ID))
	sys.asUser(t, mentor, func(tx pgx.Tx) {
		require.Empty(t, queryStrings(t, tx, `SELECT process FROM portalsync.sync_health`))
		require.Empty(t, queryStrings(t, tx, `SELECT state FROM public.sync_health`))
	})
}

// The screen's database role: a login role in portalsync_console reads
// nothing by itself and can become authenticated, and nothing else.
func TestConsoleRoleOnlyBecomesAuthenticated(t *testing.T) {
	t.Parallel()
	sys := start(t, withoutSyncer())
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, loginRole(t, sys, "portalsync_console"))
	require.NoError(t, err)
	defer conn.Close(ctx)
	for _, q := range []string{
		`SELECT 1 FROM organizations`, `SELECT 1 FROM profiles`, `SELECT 1 FROM organization_memberships`,
		`SELECT 1 FROM role_assignments`, `SELECT 1 FROM portal_sync_log`, `SELECT 1 FROM public.sync_log()`,
		`SELECT 1 FROM public.organization_members`, `SELECT 1 FROM public.sync_health`, `SELECT 1 FROM portalsync.sync_health`,
		`SELECT 1 FROM portalsync.account_links`, `SELECT 1 FROM auth.users`,
	} {
		_, err := conn.Exec(ctx, q)
		require.True(t, isDenied(err), "%s: %v", q, err)
	}
	for _, role := range []string{"service_role", "portalsync_syncer", "postgres", "anon", "supabase_auth_admin"} {
		_, err := conn.Exec(ctx, "SET ROLE "+role)
		require.True(t, isDenied(err), "SET ROLE %s: %v", role, err)
	}
	tx, err := conn.Begin(ctx)
	require.NoError(t, err)
	defer func() { _ = tx.Rollback(ctx) }()
	_, err = tx.Exec(ctx, `SET LOCAL ROLE authenticated`)
	require.NoError(t, err)
	var n int
	require.NoError(t, tx.QueryRow(ctx, `SELECT count(*) FROM public.sync_log()`).Scan(&n))
	require.Zero(t, n, "without claims, nothing")
}

// On Supabase the log and the memberships are in the supabase_realtime
// publication (Supabase Realtime then sends their changes to subscribers,
// under their row-level security); on plain PostgreSQL, where there is no
// such publication, migrating did nothing.
func TestSupabaseRealtimePublication(t *testing.T) {
	ctx := context.Background()
	tables := queryStrings(t, supabaseAdmin(t), `SELECT schemaname || '.' || tablename FROM pg_publication_tables WHERE pubname = 'supabase_realtime' ORDER BY 1`)
	require.Equal(t, []string{"public.organization_memberships", "public.portal_sync_log"}, tables)

	plain := schematestDB(t)
	var n int
	require.NoError(t, plain.QueryRow(ctx, `SELECT count(*) FROM pg_publication`).Scan(&n))
	require.Zero(t, n)
}
