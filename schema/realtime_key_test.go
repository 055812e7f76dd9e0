package schema_test

import (
	"context"
	"database/sql"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/likeperson/portalsync/testkit/schematest"
)

// Supabase Realtime applies no row-level security to a DELETE: every
// subscriber of a table in the publication receives the deleted row's
// replica identity. For the tables 00028 publishes, that identity (the
// primary key, as no table sets another) must name no member and no
// organization: a membership's key was (profile_id, organization_id), so
// an erasure told every signed-in user who had been a member where
// (00031). Found by the attack pass of issue 21.
func TestPublishedTablesDeleteOnlyAnID(t *testing.T) {
	t.Parallel()
	db, err := sql.Open("pgx", schematest.NewDB(t).URL)
	require.NoError(t, err)
	t.Cleanup(func() { db.Close() })
	for table, want := range map[string]string{
		"public.organization_memberships": "id",
		"public.portal_sync_log":          "id",
	} {
		var identity, key string
		require.NoError(t, db.QueryRowContext(context.Background(), `
			SELECT c.relreplident::text, string_agg(a.attname, ',' ORDER BY k.n)
			FROM pg_class c
			JOIN pg_index i ON i.indrelid = c.oid AND i.indisprimary
			CROSS JOIN LATERAL unnest(i.indkey) WITH ORDINALITY AS k(attnum, n)
			JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum = k.attnum
			WHERE c.oid = $1::regclass
			GROUP BY c.relreplident`, table).Scan(&identity, &key))
		require.Equal(t, "d", identity, "%s: replica identity is the primary key", table)
		require.Equal(t, want, key, "%s: what a DELETE event carries to every subscriber", table)
	}
}
