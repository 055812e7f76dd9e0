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

	"github.com/pressly/goose/v3"
	"github.com/pressly/goose/v3/lock"
)

//go:embed migrations/*.sql
var migrationFiles embed.FS

//go:embed bootstrap/auth.sql
var authBootstrap string

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
	if err := conn.QueryRowContext(ctx, "SELECT to_regclass('auth.users') IS NOT NULL").Scan(&hasUsers); err != nil {
		return res, fmt.Errorf("migrate: look for auth.users: %w", err)
	}
	if !hasUsers {
		if _, err := conn.ExecContext(ctx, authBootstrap); err != nil {
			return res, fmt.Errorf("migrate: auth bootstrap: %w", err)
		}
		res.Bootstrapped = true
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
