package schema_test

import (
	"context"
	"database/sql"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/likeperson/portalsync/schema/schematest"
)

// TestCurrentSchemaMatchesMigrations holds schema/current to the
// migrations: its files, loaded in name order into a fresh database after
// the auth bootstrap (as `syncer migrate` runs on plain PostgreSQL),
// build the catalog that every migration builds — functions with their
// settings and grants, tables, columns (order, types, defaults,
// collations), indexes, constraints, triggers, policies, views, grants,
// row-level security, publications. A migration that changes any of it
// fails here until schema/current says the same (schema/current/README.md).
func TestCurrentSchemaMatchesMigrations(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	migrated, err := sql.Open("pgx", schematest.NewDB(t).URL)
	require.NoError(t, err)
	defer migrated.Close()
	current, err := sql.Open("pgx", schematest.NewEmptyDB(t).URL)
	require.NoError(t, err)
	defer current.Close()

	bootstrap, err := os.ReadFile("bootstrap/auth.sql")
	require.NoError(t, err)
	_, err = current.ExecContext(ctx, string(bootstrap))
	require.NoError(t, err)
	files, err := filepath.Glob(filepath.Join("current", "*.sql"))
	require.NoError(t, err)
	require.NotEmpty(t, files)
	for _, f := range files { // Glob sorts: 1_tables.sql, 2_functions.sql, …
		b, err := os.ReadFile(f)
		require.NoError(t, err)
		_, err = current.ExecContext(ctx, string(b))
		require.NoError(t, err, "load %s", f)
	}

	requireSameCatalog(t, catalog(t, migrated), catalog(t, current),
		"the migrations (up to "+filepath.Base(lastMigration(t))+")", "schema/current")
}

// lastMigration is the newest migration file's name.
func lastMigration(t *testing.T) string {
	t.Helper()
	files, err := filepath.Glob(filepath.Join("migrations", "*.sql"))
	require.NoError(t, err)
	return files[len(files)-1]
}
