package schema_test

import (
	"context"
	"database/sql"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"

	_ "github.com/jackc/pgx/v5/stdlib"
	"github.com/stretchr/testify/require"

	"github.com/likeperson/portalsync/schema"
	"github.com/likeperson/portalsync/testkit/schematest"
)

func TestMigrateConcurrentReplicas(t *testing.T) {
	t.Parallel()
	pg := schematest.NewEmptyDB(t)
	ctx := context.Background()

	// Three replicas start at once on an empty database.
	var wg sync.WaitGroup
	results := make([]schema.Result, 3)
	errs := make([]error, 3)
	// Every file in migrations/, whoever added it.
	files, err := filepath.Glob(filepath.Join("migrations", "*.sql"))
	require.NoError(t, err)
	migrations := len(files)
	lastVersion, err := strconv.Atoi(strings.SplitN(filepath.Base(files[len(files)-1]), "_", 2)[0])
	require.NoError(t, err)
	for i := range 3 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			db, err := sql.Open("pgx", pg.URL)
			if err != nil {
				errs[i] = err
				return
			}
			defer db.Close()
			results[i], errs[i] = schema.Migrate(ctx, db)
		}()
	}
	wg.Wait()
	applied, bootstrapped := 0, 0
	for i := range 3 {
		require.NoError(t, errs[i])
		applied += len(results[i].Applied)
		if results[i].Bootstrapped {
			bootstrapped++
		}
		require.EqualValues(t, lastVersion, results[i].Version)
	}
	require.Equal(t, migrations, applied, "each migration applied exactly once")
	require.Equal(t, 1, bootstrapped, "the auth bootstrap ran once")

	// Again: nothing to do.
	db, err := sql.Open("pgx", pg.URL)
	require.NoError(t, err)
	defer db.Close()
	res, err := schema.Migrate(ctx, db)
	require.NoError(t, err)
	require.Empty(t, res.Applied)
	require.False(t, res.Bootstrapped)
	n, err := schema.Pending(ctx, db)
	require.NoError(t, err)
	require.Zero(t, n)
}

func TestBootstrapNeverRunsWhereAuthExists(t *testing.T) {
	t.Parallel()
	pg := schematest.NewEmptyDB(t)
	ctx := context.Background()
	// A Supabase-like database: auth.users exists, with a column the
	// bootstrap does not have. The bootstrap must leave it alone.
	_, err := pg.Pool.Exec(ctx, `
		DO $$ BEGIN
		  CREATE ROLE anon NOLOGIN; EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL; END $$;
		DO $$ BEGIN
		  CREATE ROLE authenticated NOLOGIN; EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL; END $$;
		DO $$ BEGIN
		  CREATE ROLE service_role NOLOGIN BYPASSRLS; EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL; END $$;
		CREATE SCHEMA auth;
		CREATE TABLE auth.users (id uuid PRIMARY KEY, email text, email_confirmed_at timestamptz, banned_until timestamptz,
			updated_at timestamptz, is_sso_user boolean NOT NULL DEFAULT false, supabase_only text);
		CREATE TABLE auth.sessions (id uuid PRIMARY KEY, user_id uuid REFERENCES auth.users(id));
		CREATE FUNCTION auth.uid() RETURNS uuid LANGUAGE sql STABLE AS $f$ SELECT NULL::uuid $f$;`)
	require.NoError(t, err)
	db, err := sql.Open("pgx", pg.URL)
	require.NoError(t, err)
	defer db.Close()
	res, err := schema.Migrate(ctx, db)
	require.NoError(t, err)
	require.False(t, res.Bootstrapped)
	var cols int
	require.NoError(t, pg.Pool.QueryRow(ctx, `SELECT count(*) FROM information_schema.columns WHERE table_schema = 'auth' AND table_name = 'users'`).Scan(&cols))
	require.Equal(t, 7, cols, "auth.users untouched")
	var hasRefresh bool
	require.NoError(t, pg.Pool.QueryRow(ctx, `SELECT to_regclass('auth.refresh_tokens') IS NOT NULL`).Scan(&hasRefresh))
	require.False(t, hasRefresh)
}

func TestAuthBootstrapShape(t *testing.T) {
	t.Parallel()
	pg := schematest.NewDB(t)
	ctx := context.Background()
	// A user can be inserted with just id and email; auth.uid() reads the
	// claims as Supabase does.
	_, err := pg.Pool.Exec(ctx, `INSERT INTO auth.users (id, email) VALUES ('00000000-0000-0000-0000-00000000000a', 'x@example.invalid')`)
	require.NoError(t, err)
	tx, err := pg.Pool.Begin(ctx)
	require.NoError(t, err)
	defer tx.Rollback(ctx) //nolint:errcheck
	_, err = tx.Exec(ctx, `SELECT set_config('request.jwt.claims', '{"sub":"00000000-0000-0000-0000-00000000000a","role":"authenticated"}', true)`)
	require.NoError(t, err)
	var uid, role string
	require.NoError(t, tx.QueryRow(ctx, `SELECT auth.uid()::text, auth.role()`).Scan(&uid, &role))
	require.Equal(t, "00000000-0000-0000-0000-00000000000a", uid)
	require.Equal(t, "authenticated", role)

	// RLS is on for every table of the data contract; the version table is
	// out of the API's reach.
	rows, err := pg.Pool.Query(ctx, `SELECT relname, relrowsecurity FROM pg_class WHERE relnamespace = 'public'::regnamespace AND relkind = 'r'`)
	require.NoError(t, err)
	tables := map[string]bool{}
	for rows.Next() {
		var name string
		var rls bool
		require.NoError(t, rows.Scan(&name, &rls))
		tables[name] = rls
	}
	require.NoError(t, rows.Err())
	require.Equal(t, map[string]bool{
		"organizations": true, "profiles": true, "organization_memberships": true,
		"role_assignments": true, "portal_sync_log": true,
	}, tables)
}
