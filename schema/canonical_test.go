package schema_test

import (
	"context"
	"io/fs"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/likeperson/portalsync/schema"
	"github.com/likeperson/portalsync/testkit/schematest"
)

// upSQL is the Up section of one migration file.
func upSQL(t *testing.T, name string) string {
	t.Helper()
	b, err := fs.ReadFile(schema.Migrations(), name)
	require.NoError(t, err)
	up, _, ok := strings.Cut(string(b), "-- +goose Down")
	require.True(t, ok)
	return up
}

// TestCanonicalIDsMigrationMergesCaseDuplicates: the same GUID member and
// organization stored in upper and lower case become one row each, in
// lower case, with the newest data per field, status and role, the account
// link and every log row kept; IDs that are not GUIDs stay apart; running
// it again changes nothing.
func TestCanonicalIDsMigrationMergesCaseDuplicates(t *testing.T) {
	t.Parallel()
	db := schematest.NewDB(t)
	ctx := context.Background()
	const (
		orgUp  = "AAAAAAAA-0000-4000-8000-000000000001"
		orgLow = "aaaaaaaa-0000-4000-8000-000000000001"
		memUp  = "BBBBBBBB-0000-4000-8000-000000000001"
		memLow = "bbbbbbbb-0000-4000-8000-000000000001"
		user   = "00000000-0000-0000-0000-0000000000c1"
	)
	_, err := db.Pool.Exec(ctx, `
		INSERT INTO auth.users (id, email, email_confirmed_at, banned_until) VALUES ('`+user+`', 'new@example.invalid', now(), 'infinity');
		INSERT INTO organizations (id, portal_org_id, name, portal_updated_at, portal_event_id) VALUES
		  ('10000000-0000-0000-0000-000000000001', '`+orgUp+`', 'Old name', '2026-01-01Z', 'o1'),
		  ('10000000-0000-0000-0000-000000000002', '`+orgLow+`', 'New name', '2026-02-01Z', 'o2'),
		  ('10000000-0000-0000-0000-000000000003', 'Org-X', 'X', NULL, NULL),
		  ('10000000-0000-0000-0000-000000000004', 'org-x', 'x', NULL, NULL);
		INSERT INTO profiles (id, portal_member_id, auth_user_id, auth_banned_by_sync, status, deactivated_at,
		  email, email_portal_at, email_event_id, first_name, first_name_portal_at, first_name_event_id,
		  portal_updated_at, portal_event_id) VALUES
		  ('20000000-0000-0000-0000-000000000001', '`+memUp+`', '`+user+`', true, 'inactive', '2026-02-01Z',
		   'new@example.invalid', '2026-02-01Z', 'e2', 'Old', '2026-01-01Z', 'e1', '2026-02-01Z', 'e2'),
		  ('20000000-0000-0000-0000-000000000002', '`+memLow+`', NULL, false, 'active', NULL,
		   'old@example.invalid', '2026-01-01Z', 'e1', 'NewName', '2026-03-01Z', 'e3', '2026-03-01Z', 'e3');
		INSERT INTO organization_memberships (profile_id, organization_id, status, deactivated_at, portal_updated_at, status_portal_at, status_event_id) VALUES
		  ('20000000-0000-0000-0000-000000000001', '10000000-0000-0000-0000-000000000001', 'inactive', '2026-02-01Z', '2026-02-01Z', '2026-02-01Z', 'e2'),
		  ('20000000-0000-0000-0000-000000000002', '10000000-0000-0000-0000-000000000002', 'active', NULL, '2026-03-01Z', '2026-01-01Z', 'e1'),
		  ('20000000-0000-0000-0000-000000000002', '10000000-0000-0000-0000-000000000003', 'active', NULL, '2026-01-01Z', '2026-01-01Z', 'e1');
		INSERT INTO role_assignments (profile_id, organization_id, role, portal_updated_at, portal_event_id) VALUES
		  ('20000000-0000-0000-0000-000000000001', '10000000-0000-0000-0000-000000000001', 'coordinator', '2026-01-01Z', 'e1'),
		  ('20000000-0000-0000-0000-000000000002', '10000000-0000-0000-0000-000000000002', 'org_admin', '2026-03-01Z', 'e3');
		INSERT INTO portal_sync_log (event_id, event_type, portal_member_id, portal_org_id, organization_id, status) VALUES
		  ('e1', 'membership-created', '`+memUp+`', '`+orgUp+`', '10000000-0000-0000-0000-000000000001', 'success'),
		  ('e3', 'membership-updated', '`+memLow+`', '`+orgLow+`', '10000000-0000-0000-0000-000000000002', 'success');`)
	require.NoError(t, err)

	migrate := func() {
		tx, err := db.Pool.Begin(ctx)
		require.NoError(t, err)
		_, err = tx.Exec(ctx, upSQL(t, "00011_canonical_ids.sql"))
		require.NoError(t, err)
		require.NoError(t, tx.Commit(ctx))
	}
	migrate()

	var orgs []string
	rows, err := db.Pool.Query(ctx, `SELECT portal_org_id || '|' || name FROM organizations ORDER BY 1`)
	require.NoError(t, err)
	for rows.Next() {
		var s string
		require.NoError(t, rows.Scan(&s))
		orgs = append(orgs, s)
	}
	require.Equal(t, []string{"Org-X|X", orgLow + "|New name", "org-x|x"}, orgs)

	var n int
	require.NoError(t, db.Pool.QueryRow(ctx, `SELECT count(*) FROM profiles`).Scan(&n))
	require.Equal(t, 1, n)
	var member, email, first, status string
	var linked *string
	var bannedBySync bool
	require.NoError(t, db.Pool.QueryRow(ctx, `SELECT portal_member_id, email, first_name, status, auth_user_id::text, auth_banned_by_sync FROM profiles`).
		Scan(&member, &email, &first, &status, &linked, &bannedBySync))
	require.Equal(t, memLow, member)
	require.Equal(t, "new@example.invalid", email, "the newer e-mail")
	require.Equal(t, "NewName", first, "the newer first name")
	require.NotNil(t, linked)
	require.Equal(t, user, *linked, "the account link is kept")
	require.True(t, bannedBySync)
	require.Equal(t, "active", status, "still active in Org-X")

	var msStatus, role, org string
	require.NoError(t, db.Pool.QueryRow(ctx, `SELECT m.status, r.role, o.portal_org_id FROM organization_memberships m
		JOIN role_assignments r USING (profile_id, organization_id) JOIN organizations o ON o.id = m.organization_id
		WHERE o.portal_org_id = $1`, orgLow).Scan(&msStatus, &role, &org))
	require.Equal(t, "inactive", msStatus, "the newer status (e2)")
	require.Equal(t, "org_admin", role, "the newer role (e3)")

	var logged int
	require.NoError(t, db.Pool.QueryRow(ctx, `SELECT count(*) FROM portal_sync_log WHERE portal_member_id = $1 AND portal_org_id = $2
		AND organization_id = (SELECT id FROM organizations WHERE portal_org_id = $2)`, memLow, orgLow).Scan(&logged))
	require.Equal(t, 2, logged, "every log row kept, under the canonical IDs")

	// Again: nothing changes.
	var before, after string
	snapshot := `SELECT string_agg(x, ';' ORDER BY x) FROM (
		SELECT p.portal_member_id || coalesce(p.email, '') || p.status AS x FROM profiles p
		UNION ALL SELECT m.profile_id::text || m.organization_id::text || m.status FROM organization_memberships m
		UNION ALL SELECT r.profile_id::text || r.role FROM role_assignments r) s`
	require.NoError(t, db.Pool.QueryRow(ctx, snapshot).Scan(&before))
	migrate()
	require.NoError(t, db.Pool.QueryRow(ctx, snapshot).Scan(&after))
	require.Equal(t, before, after)
}
