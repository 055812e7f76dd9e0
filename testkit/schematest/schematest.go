// Package schematest gives a test its own database with the portalsync
// schema applied (on plain PostgreSQL, with the auth bootstrap).
package schematest

import (
	"context"
	"database/sql"
	"fmt"
	"testing"

	_ "github.com/jackc/pgx/v5/stdlib" // database/sql driver "pgx"

	"github.com/likeperson/portalsync/schema"
	"github.com/likeperson/portalsync/testkit/pgtest"
)

// NewDB returns a fresh migrated database, dropped when t ends.
func NewDB(t testing.TB) *pgtest.DB {
	t.Helper()
	return pgtest.New(t, pgtest.Template{
		Name:        "portalsync",
		Fingerprint: schema.Fingerprint(),
		Setup: func(ctx context.Context, url string) error {
			db, err := sql.Open("pgx", url)
			if err != nil {
				return err
			}
			defer db.Close()
			if _, err := schema.Migrate(ctx, db); err != nil {
				return fmt.Errorf("migrate template: %w", err)
			}
			return nil
		},
	})
}

// NewEmptyDB returns a fresh database without any schema.
func NewEmptyDB(t testing.TB) *pgtest.DB {
	t.Helper()
	return pgtest.New(t, pgtest.Template{Name: "empty", Fingerprint: "v1"})
}
