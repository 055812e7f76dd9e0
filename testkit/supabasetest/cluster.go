// Package supabasetest runs the real thing for tests: a private PostgreSQL
// cluster laid out as a Supabase database (supabase/postgres's init
// scripts) with Supabase Auth (GoTrue, built from source) on it.
//
// The sources are ../shared/supabase beside the repository root, or
// SUPABASE_SRC. Once per test process: a cluster on a free port in a
// temporary directory, GoTrue built once per source tree and cached in the
// user cache directory, and two template databases — GoTrue's migrations
// only ("auth"), and those plus the project's migrations applied as
// `postgres`, the way a hosted project is migrated ("project"). Per test: a
// database cloned from a template and, on request, its own GoTrue process
// with the project's access-token hook enabled; both go at cleanup. Call
// Main from TestMain so that the cluster stops when the tests end.
//
// Where the sources, PostgreSQL's server binaries or the go tool are
// missing, tests are skipped, except under CI=true, where they fail.
package supabasetest

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	_ "github.com/jackc/pgx/v5/stdlib" // database/sql driver for schema.Migrate

	"github.com/likeperson/portalsync/pkg/pgcluster"
	"github.com/likeperson/portalsync/schema"
)

// Roles and passwords of the cluster (init-cluster.sh sets the first two).
const (
	authAdminPassword     = "root" // supabase_auth_admin
	authenticatorPassword = "root" // authenticator, as PostgREST logs in
	// SyncerRole is the login role, member of portalsync_syncer, that the
	// syncer uses in these tests (made as docs/CONTRACT.md says, by postgres).
	SyncerRole     = "portalsync_app"
	syncerPassword = "portalsync-app"
)

// Cluster is the running Supabase-shaped cluster of this test process.
type Cluster struct {
	src    string // the supabase folder
	dir    string // temporary directory: pgdata, sockets, logs
	port   int
	pgbin  string
	gotrue string // the GoTrue binary
	asPG   []string
}

var (
	once    sync.Once
	cluster *Cluster
	setup   error
	skip    bool // setup failed because something is missing, not broken
)

// Main runs the tests and stops the cluster if one was started. Use it in
// TestMain: os.Exit(supabasetest.Main(m)).
func Main(m *testing.M) int {
	code := m.Run()
	Stop()
	return code
}

// Stop stops the cluster of this process, if any, and removes its files.
func Stop() {
	if cluster == nil {
		return
	}
	c := cluster
	cluster = nil
	c.stopIn(c.dir)
}

// stopIn stops the cluster in dir and removes dir.
func (c *Cluster) stopIn(dir string) {
	data := filepath.Join(dir, "db", "pgdata")
	if _, err := os.Stat(data); err == nil {
		args := append(append([]string(nil), c.asPG...), filepath.Join(c.pgbin, "pg_ctl"), "-D", data, "-m", "immediate", "-w", "stop")
		_ = exec.Command(args[0], args[1:]...).Run()
	}
	_ = os.RemoveAll(dir)
}

// ownerFile, in a cluster's directory, holds the pid of its test process.
const ownerFile = "owner.pid"

// sweepStale stops the clusters of test processes that died without
// stopping theirs (killed), and removes their directories.
func (c *Cluster) sweepStale() {
	dirs, _ := filepath.Glob(filepath.Join(os.TempDir(), "supabasetest-*"))
	for _, d := range dirs {
		b, err := os.ReadFile(filepath.Join(d, ownerFile))
		if err != nil {
			continue
		}
		pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
		if err != nil || pid <= 0 || processAlive(pid) {
			continue
		}
		c.stopIn(d)
	}
}

// Get returns the cluster, starting it on first use; it skips t (fails
// under CI=true) where the sources or tools are missing.
func Get(t testing.TB) *Cluster {
	t.Helper()
	once.Do(func() { cluster, skip, setup = start() })
	if setup != nil {
		if skip && os.Getenv("CI") != "true" {
			t.Skipf("supabasetest: %v", setup)
		}
		t.Fatalf("supabasetest: %v", setup)
	}
	return cluster
}

// missing marks an error as "the harness cannot run here".
type missing struct{ error }

func start() (*Cluster, bool, error) {
	c, err := prepare()
	if err != nil {
		var m missing
		return nil, errors.As(err, &m), err
	}
	if err := c.boot(); err != nil {
		cluster = c
		Stop()
		return nil, false, err
	}
	return c, false, nil
}

// Source finds the supabase folder: SUPABASE_SRC, or ../shared/supabase
// beside the repository root (the directory holding go.work).
func Source() (string, error) {
	if d := os.Getenv("SUPABASE_SRC"); d != "" {
		return filepath.Abs(d)
	}
	wd, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for d := wd; ; d = filepath.Dir(d) {
		if _, err := os.Stat(filepath.Join(d, "go.work")); err == nil {
			return filepath.Join(filepath.Dir(d), "shared", "supabase"), nil
		}
		if filepath.Dir(d) == d {
			return "", fmt.Errorf("no go.work above %s", wd)
		}
	}
}

func prepare() (*Cluster, error) {
	src, err := Source()
	if err != nil {
		return nil, missing{err}
	}
	for _, f := range []string{"init-cluster.sh", "auth/go.mod", "auth/migrations"} {
		if _, err := os.Stat(filepath.Join(src, f)); err != nil {
			return nil, missing{fmt.Errorf("supabase sources: %w (set SUPABASE_SRC)", err)}
		}
	}
	c := &Cluster{src: src}
	if c.pgbin, err = pgcluster.FindBinDir(os.Getenv); err != nil {
		return nil, missing{err}
	}
	for _, tool := range []string{"psql", "go", "bash"} {
		if _, err := exec.LookPath(tool); err != nil {
			return nil, missing{err}
		}
	}
	if os.Geteuid() == 0 {
		if _, err := exec.LookPath("runuser"); err != nil {
			return nil, missing{err}
		}
		c.asPG = []string{"runuser", "-u", "postgres", "--"}
	}
	return c, nil
}

func (c *Cluster) boot() error {
	bin, err := gotrueBinary(c.src)
	if err != nil {
		return err
	}
	c.gotrue = bin
	c.sweepStale()
	if c.dir, err = os.MkdirTemp("", "supabasetest-"); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(c.dir, ownerFile), []byte(strconv.Itoa(os.Getpid())), 0o644); err != nil {
		return err
	}
	// init-cluster.sh runs the server as the OS user postgres when root.
	if err := os.Chmod(c.dir, 0o755); err != nil {
		return err
	}
	if c.port, err = pgcluster.FreePort(); err != nil {
		return err
	}
	init := exec.Command("bash", filepath.Join(c.src, "init-cluster.sh"), filepath.Join(c.dir, "db"), strconv.Itoa(c.port))
	init.Env = append(os.Environ(), "PGBIN="+c.pgbin)
	if out, err := init.CombinedOutput(); err != nil {
		return fmt.Errorf("init-cluster.sh: %w\n%s", err, out)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	if err := c.exec(ctx, "postgres", "CREATE DATABASE tpl_auth TEMPLATE postgres", "ALTER DATABASE tpl_auth OWNER TO postgres"); err != nil {
		return err
	}
	if err := c.migrateAuth(ctx, "tpl_auth"); err != nil {
		return err
	}
	if err := c.exec(ctx, "postgres", "CREATE DATABASE tpl_project TEMPLATE tpl_auth"); err != nil {
		return err
	}
	db, err := sql.Open("pgx", c.URL("postgres", "", "tpl_project"))
	if err != nil {
		return err
	}
	defer db.Close()
	if _, err := schema.Migrate(ctx, db); err != nil {
		return fmt.Errorf("project migrations as postgres: %w", err)
	}
	// The syncer's login role, made the way docs/CONTRACT.md tells an
	// administrator to, by postgres.
	conn, err := pgx.Connect(ctx, c.URL("postgres", "", "tpl_project"))
	if err != nil {
		return err
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, fmt.Sprintf("CREATE ROLE %s LOGIN PASSWORD '%s' IN ROLE portalsync_syncer", SyncerRole, syncerPassword)); err != nil {
		return fmt.Errorf("create the syncer's login role as postgres: %w", err)
	}
	return nil
}

// migrateAuth applies GoTrue's own migrations to database db.
func (c *Cluster) migrateAuth(ctx context.Context, db string) error {
	cmd := exec.CommandContext(ctx, c.gotrue, "migrate")
	cmd.Env = append(os.Environ(), c.gotrueEnv(db, 0)...)
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("gotrue migrate: %w\n%s", err, out)
	}
	return nil
}

// URL connects to database db as role (with password, when it has one).
func (c *Cluster) URL(role, password, db string) string {
	auth := role
	if password != "" {
		auth += ":" + password
	}
	return fmt.Sprintf("postgres://%s@127.0.0.1:%d/%s?sslmode=disable", auth, c.port, db)
}

// exec runs statements one by one as role in database postgres.
func (c *Cluster) exec(ctx context.Context, role string, stmts ...string) error {
	conn, err := pgx.Connect(ctx, c.URL(role, "", "postgres"))
	if err != nil {
		return err
	}
	defer conn.Close(ctx)
	for _, s := range stmts {
		if _, err := conn.Exec(ctx, s); err != nil {
			return fmt.Errorf("%s: %w", s, err)
		}
	}
	return nil
}

// Template names the template a database is cloned from.
type Template string

const (
	// AuthOnly holds Supabase's schemas and GoTrue's migrations only: a
	// new Supabase project, before `syncer migrate`.
	AuthOnly Template = "tpl_auth"
	// Project also holds the project's migrations, applied as postgres.
	Project Template = "tpl_project"
)

// Database is one test's database on the cluster.
type Database struct {
	c    *Cluster
	Name string
}

// NewDatabase clones tpl into a database that is dropped when t ends.
func (c *Cluster) NewDatabase(t testing.TB, tpl Template) *Database {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	name := "sbtest_" + randomHex(6)
	var err error
	for attempt := 0; attempt < 100; attempt++ {
		// 55006: another clone is being made from the template right now.
		err = c.exec(ctx, "supabase_admin", fmt.Sprintf("CREATE DATABASE %s TEMPLATE %s OWNER postgres", name, tpl))
		if err == nil || !strings.Contains(err.Error(), "55006") {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if err != nil {
		t.Fatalf("supabasetest: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if err := c.exec(ctx, "supabase_admin", "DROP DATABASE IF EXISTS "+name+" WITH (FORCE)"); err != nil {
			t.Errorf("supabasetest: %v", err)
		}
	})
	return &Database{c: c, Name: name}
}

// URL connects to the database as role.
func (d *Database) URL(role string) string {
	switch role {
	case "supabase_auth_admin":
		return d.c.URL(role, authAdminPassword, d.Name)
	case "authenticator":
		return d.c.URL(role, authenticatorPassword, d.Name)
	case SyncerRole:
		return d.c.URL(role, syncerPassword, d.Name)
	}
	// Other roles log in without a password (trust authentication).
	return d.c.URL(role, "", d.Name)
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
