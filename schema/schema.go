// Package schema holds the database schema of portalsync as embedded SQL
// migrations, run by goose, and the Supabase compatibility bootstrap for
// plain PostgreSQL.
package schema

import (
	"context"
	"crypto/sha256"
	"database/sql"
	"embed"
	"encoding/hex"
	"fmt"
	"io/fs"
	"sort"
	"strings"

	"github.com/pressly/goose/v3"
	"github.com/pressly/goose/v3/lock"
)

//go:embed migrations/*.sql
var migrationFiles embed.FS

//go:embed bootstrap/auth.sql
var authBootstrap string

//go:embed current/*.sql
var currentFiles embed.FS

// VersionTable is where goose records applied migrations. It lives in the
// private portalsync schema so that Supabase's API never exposes it.
const VersionTable = "portalsync.goose_db_version"

// setupLockID serializes the bootstrap and schema creation of replicas that
// start at once (goose's own lock covers the migrations).
const setupLockID = 0x706f7274616c // "portal"

// Result reports what Migrate did.
type Result struct {
	// Bootstrapped is true when the auth compatibility bootstrap ran.
	Bootstrapped bool
	// Applied lists the migrations applied now, by file name.
	Applied []string
	// Version is the schema version after migrating.
	Version int64
}

// Migrations returns the embedded migration files.
func Migrations() fs.FS {
	sub, err := fs.Sub(migrationFiles, "migrations")
	if err != nil {
		panic(err) // the embedded tree is fixed at build time
	}
	return sub
}

// Current returns schema/current's files: today's schema written as
// readable definitions, to be loaded in name order after the auth
// bootstrap. They document what the migrations add up to (a test holds
// them to it); Migrate never runs them.
func Current() fs.FS {
	sub, err := fs.Sub(currentFiles, "current")
	if err != nil {
		panic(err) // the embedded tree is fixed at build time
	}
	return sub
}

// Fingerprint identifies the schema content (bootstrap and migrations), so
// that test templates built from another version are not reused.
func Fingerprint() string {
	h := sha256.New()
	h.Write([]byte(authBootstrap))
	entries, _ := fs.ReadDir(migrationFiles, "migrations")
	names := make([]string, 0, len(entries))
	for _, e := range entries {
		names = append(names, e.Name())
	}
	sort.Strings(names)
	for _, n := range names {
		b, _ := migrationFiles.ReadFile("migrations/" + n)
		h.Write([]byte(n))
		h.Write(b)
	}
	return hex.EncodeToString(h.Sum(nil))[:16]
}

// Migrate brings the database up to date. Where auth.users does not exist
// (plain PostgreSQL) it first applies the auth bootstrap; on Supabase it
// never touches the auth schema. Several processes may call it at once: an
// advisory lock serializes them, and each applies only what is missing.
func Migrate(ctx context.Context, db *sql.DB) (Result, error) {
	var res Result
	conn, err := db.Conn(ctx)
	if err != nil {
		return res, fmt.Errorf("migrate: connect: %w", err)
	}
	defer conn.Close()
	if _, err := conn.ExecContext(ctx, "SELECT pg_advisory_lock($1)", setupLockID); err != nil {
		return res, fmt.Errorf("migrate: lock: %w", err)
	}
	defer func() {
		_, _ = conn.ExecContext(context.WithoutCancel(ctx), "SELECT pg_advisory_unlock($1)", setupLockID)
	}()

	var hasUsers bool
	if err := conn.QueryRowContext(ctx, hasAuthUsersSQL).Scan(&hasUsers); err != nil {
		return res, fmt.Errorf("migrate: look for auth.users: %w", err)
	}
	if !hasUsers {
		if _, err := conn.ExecContext(ctx, authBootstrap); err != nil {
			return res, fmt.Errorf("migrate: auth bootstrap: %w", err)
		}
		res.Bootstrapped = true
	} else if err := checkAuthRights(ctx, conn); err != nil {
		return res, err
	}
	if _, err := conn.ExecContext(ctx, "CREATE SCHEMA IF NOT EXISTS portalsync"); err != nil {
		return res, fmt.Errorf("migrate: create schema portalsync: %w", err)
	}

	locker, err := lock.NewPostgresSessionLocker()
	if err != nil {
		return res, fmt.Errorf("migrate: locker: %w", err)
	}
	p, err := goose.NewProvider(goose.DialectPostgres, db, Migrations(),
		goose.WithTableName(VersionTable),
		goose.WithSessionLocker(locker),
		goose.WithDisableGlobalRegistry(true),
	)
	if err != nil {
		return res, fmt.Errorf("migrate: provider: %w", err)
	}
	results, err := p.Up(ctx)
	if err != nil {
		return res, fmt.Errorf("migrate: up: %w", err)
	}
	for _, r := range results {
		res.Applied = append(res.Applied, r.Source.Path)
	}
	if res.Version, err = p.GetDBVersion(ctx); err != nil {
		return res, fmt.Errorf("migrate: version: %w", err)
	}
	return res, nil
}

// Pending reports how many migrations are not applied yet.
func Pending(ctx context.Context, db *sql.DB) (int, error) {
	p, err := goose.NewProvider(goose.DialectPostgres, db, Migrations(),
		goose.WithTableName(VersionTable), goose.WithDisableGlobalRegistry(true))
	if err != nil {
		return 0, fmt.Errorf("pending: provider: %w", err)
	}
	status, err := p.Status(ctx)
	if err != nil {
		return 0, fmt.Errorf("pending: status: %w", err)
	}
	n := 0
	for _, s := range status {
		if s.State == goose.StatePending {
			n++
		}
	}
	return n, nil
}

// hasAuthUsersSQL reports whether auth.users exists, looked up in the
// catalog so that it needs no USAGE on the schema (which the role may lack).
const hasAuthUsersSQL = `SELECT EXISTS (SELECT 1 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
	WHERE n.nspname = 'auth' AND c.relname = 'users')`

// authRightsSQL answers, one row per entry of authGrants and in its order,
// whether the migrating role (current_user) holds that right. The auth
// tables are found by name in the catalog, for the same reason.
const authRightsSQL = `
WITH t AS (
  SELECT (SELECT oid FROM pg_namespace WHERE nspname = 'auth') AS auth,
         (SELECT c.oid FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
          WHERE n.nspname = 'auth' AND c.relname = 'users') AS users,
         (SELECT c.oid FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
          WHERE n.nspname = 'auth' AND c.relname = 'sessions') AS sessions,
         (SELECT r FROM pg_roles r WHERE r.rolname = current_user) AS me)
SELECT coalesce(x.ok, false) FROM t, unnest(ARRAY[
  has_schema_privilege(t.auth, 'USAGE'),
  has_table_privilege(t.users, 'SELECT'),
  has_table_privilege(t.users, 'UPDATE'),
  has_table_privilege(t.users, 'TRIGGER'),
  has_table_privilege(t.users, 'REFERENCES'),
  has_table_privilege(t.sessions, 'SELECT'),
  has_table_privilege(t.sessions, 'DELETE'),
  -- Supabase Auth turns row-level security on for its tables with no
  -- policies: the linking functions, which run with the migrating role's
  -- rights, see rows only when it bypasses RLS.
  (t.me).rolsuper OR (t.me).rolbypassrls
    OR NOT EXISTS (SELECT 1 FROM pg_class WHERE oid IN (t.users, t.sessions) AND relrowsecurity),
  EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'portalsync_syncer') OR (t.me).rolsuper OR (t.me).rolcreaterole
]) WITH ORDINALITY AS x(ok, i)
ORDER BY x.i`

// authGrant is the statement that grants one right of authRightsSQL, with
// {role} for the migrating role's quoted name (not a format verb: a
// statement without it must come out as it is).
type authGrant struct {
	grant string
	super bool // only a superuser can run it
}

// authGrants are in the order of authRightsSQL's rows.
var authGrants = [...]authGrant{
	// The auth schema belongs to a superuser (supabase_admin) on Supabase.
	{grant: "GRANT USAGE ON SCHEMA auth TO {role};", super: true},
	{grant: "GRANT SELECT ON auth.users TO {role};"},
	{grant: "GRANT UPDATE ON auth.users TO {role};"},
	{grant: "GRANT TRIGGER ON auth.users TO {role};"},
	{grant: "GRANT REFERENCES ON auth.users TO {role};"},
	{grant: "GRANT SELECT ON auth.sessions TO {role};"},
	{grant: "GRANT DELETE ON auth.sessions TO {role};"},
	{grant: "ALTER ROLE {role} BYPASSRLS;", super: true},
	{grant: "CREATE ROLE portalsync_syncer NOLOGIN;", super: true},
}

// AuthRightsError says which rights the migrating role lacks on an existing
// auth schema (Supabase), as the statements an administrator must run.
type AuthRightsError struct {
	Role       string
	Statements []string // as the owner of the auth tables (supabase_auth_admin)
	Superuser  []string // as a superuser
}

func (e *AuthRightsError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "migrate: role %s lacks rights that account linking needs on Supabase's auth schema; nothing was applied. An administrator must run", e.Role)
	if len(e.Statements) > 0 {
		b.WriteString(", as the owner of the auth tables (supabase_auth_admin) or a superuser:\n  ")
		b.WriteString(strings.Join(e.Statements, "\n  "))
	}
	if len(e.Superuser) > 0 {
		if len(e.Statements) > 0 {
			b.WriteString("\nand")
		}
		b.WriteString(", as a superuser:\n  ")
		b.WriteString(strings.Join(e.Superuser, "\n  "))
	}
	b.WriteString("\nthen run syncer migrate again (see docs/ACCESS.md)")
	return b.String()
}

// checkAuthRights fails, before anything is applied, when the migrating
// role cannot create the account-linking trigger and functions on an auth
// schema it does not own.
func checkAuthRights(ctx context.Context, conn *sql.Conn) error {
	var role string
	if err := conn.QueryRowContext(ctx, "SELECT current_user").Scan(&role); err != nil {
		return fmt.Errorf("migrate: current role: %w", err)
	}
	rows, err := conn.QueryContext(ctx, authRightsSQL)
	if err != nil {
		return fmt.Errorf("migrate: check rights on auth: %w", err)
	}
	defer rows.Close()
	var held []bool
	for rows.Next() {
		var ok bool
		if err := rows.Scan(&ok); err != nil {
			return fmt.Errorf("migrate: check rights on auth: %w", err)
		}
		held = append(held, ok)
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("migrate: check rights on auth: %w", err)
	}
	if len(held) != len(authGrants) {
		return fmt.Errorf("migrate: check rights on auth: %d answers for %d rights", len(held), len(authGrants))
	}
	return missingRights(role, held)
}

// missingRights is the error naming the grants for the rights not held
// (held[i] answers authGrants[i]), or nil when all are held.
func missingRights(role string, held []bool) error {
	e := &AuthRightsError{Role: role}
	quoted := `"` + strings.ReplaceAll(role, `"`, `""`) + `"`
	for i, g := range authGrants {
		if held[i] {
			continue
		}
		stmt := strings.ReplaceAll(g.grant, "{role}", quoted)
		if g.super {
			e.Superuser = append(e.Superuser, stmt)
		} else {
			e.Statements = append(e.Statements, stmt)
		}
	}
	if len(e.Statements) > 0 || len(e.Superuser) > 0 {
		return e
	}
	return nil
}
