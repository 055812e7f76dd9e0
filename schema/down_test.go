package schema_test

import (
	"context"
	"database/sql"
	"testing"

	"github.com/pressly/goose/v3"
	"github.com/stretchr/testify/require"

	"github.com/likeperson/portalsync/schema"
	"github.com/likeperson/portalsync/schema/schematest"
)

// The newest migrations roll back and apply again: a release that must be
// withdrawn can be, back to 00020 (before the lean sync, issue 14).
func TestNewestMigrationsRollBack(t *testing.T) {
	t.Parallel()
	pg := schematest.NewEmptyDB(t)
	ctx := context.Background()
	db, err := sql.Open("pgx", pg.URL)
	require.NoError(t, err)
	defer db.Close()
	res, err := schema.Migrate(ctx, db)
	require.NoError(t, err)

	p, err := goose.NewProvider(goose.DialectPostgres, db, schema.Migrations(),
		goose.WithTableName(schema.VersionTable), goose.WithDisableGlobalRegistry(true))
	require.NoError(t, err)
	_, err = p.DownTo(ctx, 20)
	require.NoError(t, err)
	v, err := p.GetDBVersion(ctx)
	require.NoError(t, err)
	require.EqualValues(t, 20, v)
	var fk bool
	require.NoError(t, db.QueryRowContext(ctx, `SELECT EXISTS (SELECT 1 FROM pg_constraint
		WHERE conname = 'portal_sync_log_organization_id_fkey')`).Scan(&fk))
	require.True(t, fk, "the log's foreign key is back")

	_, err = p.Up(ctx)
	require.NoError(t, err)
	v, err = p.GetDBVersion(ctx)
	require.NoError(t, err)
	require.Equal(t, res.Version, v)
}
