package schema_test

import (
	"database/sql"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/likeperson/portalsync/testkit/schematest"
)

// TestCurrentSchemaMatchesMigrations holds schema/current to the
// migrations: its files, loaded in name order into a fresh database after
// the auth bootstrap (as `syncer migrate` runs on plain PostgreSQL),
// build the catalog that every migration builds — functions with their
// settings and grants, tables, columns (order, types, defaults,
// collations), indexes, constraints, triggers, policies, views, grants,
// row-level security, publications. A migration that changes any of it
// fails here until schema/current says the same (schema/current/README.md).
// e2e's TestSupabaseCurrentSchemaMatchesMigrations does the same on a
// Supabase database.
func TestCurrentSchemaMatchesMigrations(t *testing.T) {
	t.Parallel()
	migrated, err := sql.Open("pgx", schematest.NewDB(t).URL)
	require.NoError(t, err)
	defer migrated.Close()
	current := emptyDB(t)
	runAuthBootstrap(t, current)
	schematest.LoadCurrent(t, current)

	files, err := filepath.Glob(filepath.Join("migrations", "*.sql"))
	require.NoError(t, err)
	newest := filepath.Base(files[len(files)-1])
	schematest.RequireSameCatalog(t, schematest.Catalog(t, migrated), schematest.Catalog(t, current),
		"the migrations (up to "+newest+")", "schema/current")
}
