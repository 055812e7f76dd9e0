package schema_test

import (
	"context"
	"database/sql"
	"os"
	"strings"
	"testing"

	"github.com/pressly/goose/v3"
	"github.com/stretchr/testify/require"

	"github.com/likeperson/portalsync/schema"
	"github.com/likeperson/portalsync/schema/schematest"
)

// The newest migrations roll back and apply again: a release that must be
// withdrawn can be, back to 00020 (before the lean sync, issue 14). Rolled
// back, the schema is the one 00001-00020 build (functions, their settings
// and grants, indexes, constraints, triggers, collations, storage options),
// comments in function bodies aside.
func TestNewestMigrationsRollBack(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	open := func() *sql.DB {
		db, err := sql.Open("pgx", schematest.NewEmptyDB(t).URL)
		require.NoError(t, err)
		t.Cleanup(func() { db.Close() })
		return db
	}
	provider := func(db *sql.DB) *goose.Provider {
		p, err := goose.NewProvider(goose.DialectPostgres, db, schema.Migrations(),
			goose.WithTableName(schema.VersionTable), goose.WithDisableGlobalRegistry(true))
		require.NoError(t, err)
		return p
	}

	// The reference: the auth bootstrap, then 00001-00020 only.
	ref := open()
	bootstrap, err := os.ReadFile("bootstrap/auth.sql")
	require.NoError(t, err)
	_, err = ref.ExecContext(ctx, string(bootstrap)+";CREATE SCHEMA IF NOT EXISTS portalsync")
	require.NoError(t, err)
	_, err = provider(ref).UpTo(ctx, 20)
	require.NoError(t, err)

	db := open()
	res, err := schema.Migrate(ctx, db)
	require.NoError(t, err)
	p := provider(db)
	_, err = p.DownTo(ctx, 20)
	require.NoError(t, err)
	v, err := p.GetDBVersion(ctx)
	require.NoError(t, err)
	require.EqualValues(t, 20, v)
	require.Equal(t, catalog(t, ref), catalog(t, db))

	_, err = p.Up(ctx)
	require.NoError(t, err)
	v, err = p.GetDBVersion(ctx)
	require.NoError(t, err)
	require.Equal(t, res.Version, v)
}

// catalog describes the project's schema objects, one string each, sorted;
// comment lines and blank lines of function bodies left out.
func catalog(t *testing.T, db *sql.DB) []string {
	t.Helper()
	rows, err := db.Query(`
		WITH ns AS (SELECT unnest(ARRAY['public'::regnamespace, 'portalsync'::regnamespace]) AS oid)
		SELECT 'function ' || p.oid::regprocedure::text || ' ' || coalesce(p.proacl::text, '') || E'\n' || pg_get_functiondef(p.oid)
		FROM pg_proc p WHERE p.pronamespace IN (SELECT oid FROM ns) AND p.prokind = 'f'
		UNION ALL
		SELECT 'index ' || pg_get_indexdef(i.indexrelid)
		FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
		WHERE c.relnamespace IN (SELECT oid FROM ns) AND c.relname NOT LIKE 'goose_db_version%'
		UNION ALL
		SELECT 'constraint ' || conrelid::regclass::text || ' ' || conname || ' ' || pg_get_constraintdef(oid)
		FROM pg_constraint WHERE connamespace IN (SELECT oid FROM ns) AND conrelid <> 'portalsync.goose_db_version'::regclass
		UNION ALL
		SELECT 'trigger ' || pg_get_triggerdef(oid) FROM pg_trigger WHERE NOT tgisinternal
		UNION ALL
		SELECT 'column ' || a.attrelid::regclass::text || '.' || a.attname || ' ' || format_type(a.atttypid, a.atttypmod)
		       || coalesce(' COLLATE ' || co.collname, '')
		FROM pg_attribute a JOIN pg_class r ON r.oid = a.attrelid
		LEFT JOIN pg_collation co ON co.oid = a.attcollation
		WHERE r.relnamespace IN (SELECT oid FROM ns) AND r.relkind = 'r' AND a.attnum > 0 AND NOT a.attisdropped
		UNION ALL
		SELECT 'table ' || oid::regclass::text || ' ' || coalesce(reloptions::text, '')
		FROM pg_class WHERE relnamespace IN (SELECT oid FROM ns) AND relkind = 'r'
		ORDER BY 1`)
	require.NoError(t, err)
	defer rows.Close()
	var out []string
	for rows.Next() {
		var s string
		require.NoError(t, rows.Scan(&s))
		var keep []string
		for l := range strings.SplitSeq(s, "\n") {
			if tl := strings.TrimSpace(l); tl != "" && !strings.HasPrefix(tl, "--") {
				keep = append(keep, l)
			}
		}
		out = append(out, strings.Join(keep, "\n"))
	}
	require.NoError(t, rows.Err())
	return out
}
