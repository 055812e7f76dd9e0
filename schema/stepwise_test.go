package schema_test

import (
	"context"
	"database/sql"
	"os"
	"testing"

	"github.com/pressly/goose/v3"
	"github.com/stretchr/testify/require"

	"github.com/likeperson/portalsync/schema"
	"github.com/likeperson/portalsync/testkit/schematest"
)

// emptyDB opens a fresh database with nothing in it, closed when the test
// ends.
func emptyDB(t *testing.T) *sql.DB {
	t.Helper()
	db, err := sql.Open("pgx", schematest.NewEmptyDB(t).URL)
	require.NoError(t, err)
	t.Cleanup(func() { db.Close() })
	return db
}

// runAuthBootstrap runs bootstrap/auth.sql on db, as schema.Migrate does on
// plain PostgreSQL before the migrations.
func runAuthBootstrap(t *testing.T, db *sql.DB) {
	t.Helper()
	bootstrap, err := os.ReadFile("bootstrap/auth.sql")
	require.NoError(t, err)
	_, err = db.ExecContext(context.Background(), string(bootstrap))
	require.NoError(t, err)
}

// provider runs the migrations on db one step at a time, recording them
// where schema.Migrate does.
func provider(t *testing.T, db *sql.DB) *goose.Provider {
	t.Helper()
	p, err := goose.NewProvider(goose.DialectPostgres, db, schema.Migrations(),
		goose.WithTableName(schema.VersionTable), goose.WithDisableGlobalRegistry(true))
	require.NoError(t, err)
	return p
}

// stepwise returns a fresh database as schema.Migrate leaves it before its
// first migration (the auth bootstrap, the portalsync schema for goose's
// version table), and a provider to migrate it one step at a time.
func stepwise(t *testing.T) (*sql.DB, *goose.Provider) {
	t.Helper()
	db := emptyDB(t)
	runAuthBootstrap(t, db)
	_, err := db.ExecContext(context.Background(), "CREATE SCHEMA IF NOT EXISTS portalsync")
	require.NoError(t, err)
	return db, provider(t, db)
}
