package schema_test

import (
	"context"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/likeperson/portalsync/testkit/schematest"
)

// The account-linking rule (portalsync.email_accounts, migration 00027):
// an e-mail finds its confirmed, non-SSO accounts, each saying whether a
// member is linked to it already; unconfirmed and SSO accounts are not
// found.
func TestLinkingRule(t *testing.T) {
	t.Parallel()
	db := schematest.NewDB(t)
	ctx := context.Background()
	_, err := db.Pool.Exec(ctx, `
		INSERT INTO auth.users (id, email, email_confirmed_at, is_sso_user) VALUES
		  ('00000000-0000-0000-0000-000000000001', 'free@example.invalid', now(), false),
		  ('00000000-0000-0000-0000-000000000002', 'taken@example.invalid', now(), false),
		  ('00000000-0000-0000-0000-000000000003', 'unconfirmed@example.invalid', NULL, false),
		  ('00000000-0000-0000-0000-000000000004', 'free@example.invalid', now(), true);
		INSERT INTO profiles (portal_member_id, email) VALUES ('m-taken', 'other@example.invalid');
		INSERT INTO portalsync.account_links (portal_member_id, auth_user_id) VALUES ('m-taken', '00000000-0000-0000-0000-000000000002');`)
	require.NoError(t, err)
	for email, want := range map[string][]string{
		"free@example.invalid":        {"00000000-0000-0000-0000-000000000001 false"},
		"taken@example.invalid":       {"00000000-0000-0000-0000-000000000002 true"},
		"unconfirmed@example.invalid": nil,
		"nobody@example.invalid":      nil,
	} {
		var got []string
		require.NoError(t, db.Pool.QueryRow(ctx, `SELECT array_agg(auth_user_id || ' ' || linked) FROM portalsync.email_accounts($1)`, email).Scan(&got))
		require.Equal(t, want, got, email)
	}
}

// The rule is inlined into its callers' statements: the planner sees the
// lookup by e-mail with is_sso_user = false, so it probes Supabase's
// partial unique index on auth.users (no function scan, no sequential
// scan), and "not linked" as an anti-join on account_links' unique key.
func TestLinkingRuleIsInlined(t *testing.T) {
	t.Parallel()
	db := schematest.NewDB(t)
	ctx := context.Background()
	tx, err := db.Pool.Begin(ctx)
	require.NoError(t, err)
	defer tx.Rollback(ctx) //nolint:errcheck
	// As the callers run (00021): sequential scans off.
	_, err = tx.Exec(ctx, `SET LOCAL enable_seqscan = off`)
	require.NoError(t, err)
	rows, err := tx.Query(ctx, `EXPLAIN (COSTS OFF)
		SELECT a.auth_user_id FROM portalsync.email_accounts('x@example.invalid') a WHERE NOT a.linked`)
	require.NoError(t, err)
	var plan string
	for rows.Next() {
		var l string
		require.NoError(t, rows.Scan(&l))
		plan += l + "\n"
	}
	require.NoError(t, rows.Err())
	require.NotContains(t, plan, "Function Scan", plan)
	require.NotContains(t, plan, "Seq Scan", plan)
	require.Contains(t, plan, "users_email_partial_key", plan)
	require.Contains(t, plan, "Anti Join", plan)
}
