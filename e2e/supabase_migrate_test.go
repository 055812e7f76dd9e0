package e2e

import (
	"context"
	"database/sql"
	"errors"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/likeperson/portalsync/schema"
	"github.com/likeperson/portalsync/testkit/schematest"
	"github.com/likeperson/portalsync/testkit/supabasetest"
)

// migrateAs runs `syncer migrate`'s schema.Migrate on db as role.
func migrateAs(t *testing.T, db *supabasetest.Database, role string) (schema.Result, error) {
	t.Helper()
	conn, err := sql.Open("pgx", db.URL(role))
	require.NoError(t, err)
	defer conn.Close()
	return schema.Migrate(context.Background(), conn)
}

func execAs(t *testing.T, db *supabasetest.Database, role string, stmts ...string) {
	t.Helper()
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, db.URL(role))
	require.NoError(t, err)
	defer conn.Close(ctx)
	for _, s := range stmts {
		_, err := conn.Exec(ctx, s)
		require.NoError(t, err, s)
	}
}

func applied(t *testing.T, db *supabasetest.Database) bool {
	t.Helper()
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, db.URL("supabase_admin"))
	require.NoError(t, err)
	defer conn.Close(ctx)
	var any bool
	require.NoError(t, conn.QueryRow(ctx, `SELECT to_regclass('public.profiles') IS NOT NULL OR to_regclass('portalsync.goose_db_version') IS NOT NULL
		OR EXISTS (SELECT 1 FROM pg_trigger WHERE tgname = 'portalsync_link_account')`).Scan(&any))
	return any
}

// On a new Supabase project (GoTrue's auth schema, postgres not a
// superuser) `syncer migrate` as postgres sets everything up: the linking
// trigger on auth.users, the identity functions the syncer's role may call.
func TestSupabaseMigrateAsPostgres(t *testing.T) {
	db := supabasetest.Get(t).NewDatabase(t, supabasetest.AuthOnly)
	res, err := migrateAs(t, db, "postgres")
	require.NoError(t, err)
	require.False(t, res.Bootstrapped, "Supabase's auth schema is used, not the bootstrap")
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, db.URL("supabase_admin"))
	require.NoError(t, err)
	defer conn.Close(ctx)
	var trigger, linkFn, accessFn, authRead bool
	require.NoError(t, conn.QueryRow(ctx, `SELECT
		EXISTS (SELECT 1 FROM pg_trigger WHERE tgname = 'portalsync_link_account' AND tgrelid = 'auth.users'::regclass),
		has_function_privilege('portalsync_syncer', 'portalsync.link_members(text[], text[], text[])', 'EXECUTE'),
		has_function_privilege('portalsync_syncer', 'portalsync.apply_access(text[])', 'EXECUTE'),
		has_table_privilege('portalsync_syncer', 'auth.users', 'SELECT')`).Scan(&trigger, &linkFn, &accessFn, &authRead))
	require.True(t, trigger)
	require.True(t, linkFn)
	require.True(t, accessFn)
	require.False(t, authRead, "the syncer's role gets no right on auth's tables")
}

// Where the migrating role lacks rights on auth's tables, migrate applies
// nothing and names the exact statements; once an administrator ran them,
// it succeeds.
func TestSupabaseMigrateNamesMissingGrants(t *testing.T) {
	c := supabasetest.Get(t)
	db := c.NewDatabase(t, supabasetest.AuthOnly)
	// A dedicated migrating role that owns the project's objects but, unlike
	// postgres here, is no member of supabase_auth_admin and has no
	// BYPASSRLS (roles are cluster-wide: a name of its own).
	role := "migrator_" + strings.ReplaceAll(db.Name, "sbtest_", "")
	execAs(t, db, "supabase_admin",
		"CREATE ROLE "+role+" LOGIN CREATEROLE",
		"GRANT CREATE ON DATABASE "+db.Name+" TO "+role,
		"GRANT USAGE, CREATE ON SCHEMA public TO "+role)
	t.Cleanup(func() {
		execAs(t, db, "supabase_admin", "DROP OWNED BY "+role+" CASCADE")
		execAs(t, db, "supabase_admin", "DROP ROLE "+role)
	})

	_, err := migrateAs(t, db, role)
	var rights *schema.AuthRightsError
	require.True(t, errors.As(err, &rights), "%v", err)
	q := `"` + role + `"`
	require.Equal(t, []string{
		"GRANT SELECT ON auth.users TO " + q + ";",
		"GRANT UPDATE ON auth.users TO " + q + ";",
		"GRANT TRIGGER ON auth.users TO " + q + ";",
		"GRANT REFERENCES ON auth.users TO " + q + ";",
		"GRANT SELECT ON auth.sessions TO " + q + ";",
		"GRANT DELETE ON auth.sessions TO " + q + ";",
	}, rights.Statements)
	require.Equal(t, []string{"GRANT USAGE ON SCHEMA auth TO " + q + ";", "ALTER ROLE " + q + " BYPASSRLS;"}, rights.Superuser)
	for _, s := range append(rights.Statements, rights.Superuser...) {
		require.Contains(t, err.Error(), s)
	}
	require.False(t, applied(t, db), "nothing applied")

	execAs(t, db, "supabase_auth_admin", rights.Statements...)
	execAs(t, db, "supabase_admin", rights.Superuser...)
	_, err = migrateAs(t, db, role)
	require.NoError(t, err)
	require.True(t, applied(t, db))
}

// schema/current loads on a new Supabase project as postgres, as the
// migrations do, and builds the same catalog (Supabase's default
// privileges included): the Supabase side of schema's
// TestCurrentSchemaMatchesMigrations.
func TestSupabaseCurrentSchemaMatchesMigrations(t *testing.T) {
	c := supabasetest.Get(t)
	open := func(db *supabasetest.Database) *sql.DB {
		conn, err := sql.Open("pgx", db.URL("postgres"))
		require.NoError(t, err)
		t.Cleanup(func() { conn.Close() })
		return conn
	}
	migrated := open(c.NewDatabase(t, supabasetest.Project))
	current := open(c.NewDatabase(t, supabasetest.AuthOnly))
	schematest.LoadCurrent(t, current)
	schematest.RequireSameCatalog(t, schematest.Catalog(t, migrated), schematest.Catalog(t, current), "the migrations", "schema/current")
}
