// Package pgtest gives each test its own PostgreSQL database, cloned from a
// template that is migrated once per schema version.
//
// The server is, in order: TEST_DATABASE_URL; the local server at
// 127.0.0.1:$PGPORT (default 5432, user postgres); a PostgreSQL container
// started with testcontainers-go where Docker answers; a private cluster
// made with PostgreSQL's server binaries (package pgcluster) under
// PGTEST_DIR, default .data/pgtest in the folder holding go.work, which
// every test process of a run shares and which stays running after a
// plain `go test` (`make test` starts it first and stops it at the end).
// Where none is available the test is skipped, except under CI=true, where
// it fails.
package pgtest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"hash/fnv"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/testcontainers/testcontainers-go"
	tcpostgres "github.com/testcontainers/testcontainers-go/modules/postgres"

	"github.com/likeperson/portalsync/pkg/pgcluster"
)

// DefaultURL is the local development server (PGPORT changes its port).
const DefaultURL = "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable"

// Template describes how to build the template database.
type Template struct {
	// Name distinguishes templates of different projects or schemas.
	Name string
	// Fingerprint changes whenever Setup would build something else.
	Fingerprint string
	// Setup migrates the fresh template database at url.
	Setup func(ctx context.Context, url string) error
}

// DB is one test's database.
type DB struct {
	// URL connects to the test database as the server's superuser.
	URL string
	// Name is the database name.
	Name string
	// Pool is connected to the database and closed at cleanup.
	Pool *pgxpool.Pool
}

var (
	serverOnce sync.Once
	serverURL  string
	serverErr  error
	// serverNote says which server was found, logged by the first test
	// that asks.
	serverNote   string
	serverLogged sync.Once

	templatesMu sync.Mutex
	templates   = map[string]error{}
)

// New creates a database for t from tpl and drops it when t ends.
func New(t testing.TB, tpl Template) *DB {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	admin := adminURL(t)
	tplName := templateName(tpl)
	if err := ensureTemplate(ctx, admin, tplName, tpl); err != nil {
		t.Fatalf("pgtest: template %s: %v", tplName, err)
	}

	name := fmt.Sprintf("pgtest_%d_%s", time.Now().Unix(), randomHex(4))
	conn, err := pgx.Connect(ctx, admin)
	if err != nil {
		t.Fatalf("pgtest: connect: %v", err)
	}
	defer conn.Close(ctx)
	for attempt := 0; ; attempt++ {
		_, err = conn.Exec(ctx, fmt.Sprintf("CREATE DATABASE %s TEMPLATE %s", pgx.Identifier{name}.Sanitize(), pgx.Identifier{tplName}.Sanitize()))
		if err == nil || attempt > 50 {
			break
		}
		// 55006: the template is briefly in use by another clone.
		if isCode(err, "55006") {
			time.Sleep(100 * time.Millisecond)
			continue
		}
		// 3D000: a test run of another schema version on the same server
		// (another checkout) built its template and dropped this one as
		// older: build it again.
		if !isCode(err, "3D000") || attempt > 3 {
			break
		}
		forgetTemplate(tplName)
		if err := ensureTemplate(ctx, admin, tplName, tpl); err != nil {
			t.Fatalf("pgtest: template %s: %v", tplName, err)
		}
	}
	if err != nil {
		t.Fatalf("pgtest: create database: %v", err)
	}
	db := &DB{URL: withDatabase(t, admin, name), Name: name}
	db.Pool, err = pgxpool.New(ctx, db.URL)
	if err != nil {
		t.Fatalf("pgtest: pool: %v", err)
	}
	t.Cleanup(func() {
		db.Pool.Close()
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		c, err := pgx.Connect(ctx, admin)
		if err != nil {
			t.Errorf("pgtest: drop %s: %v", name, err)
			return
		}
		defer c.Close(ctx)
		if _, err := c.Exec(ctx, fmt.Sprintf("DROP DATABASE IF EXISTS %s WITH (FORCE)", pgx.Identifier{name}.Sanitize())); err != nil {
			t.Errorf("pgtest: drop %s: %v", name, err)
		}
	})
	return db
}

// adminURL finds a server or skips (fails under CI).
func adminURL(t testing.TB) string {
	t.Helper()
	serverOnce.Do(func() {
		serverURL, serverNote, serverErr = findServer(os.Getenv)
		if serverErr == nil {
			sweepStale(serverURL)
		}
	})
	if serverNote != "" {
		serverLogged.Do(func() {
			t.Helper()
			t.Logf("pgtest: %s", serverNote)
		})
	}
	if serverErr != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("pgtest: no PostgreSQL: %v", serverErr)
		}
		t.Skipf("pgtest: no PostgreSQL: %v", serverErr)
	}
	return serverURL
}

// staleAfter is when a test database is taken for a leftover of a killed
// test run (a normal one is dropped when its test ends).
const staleAfter = 2 * time.Hour

// sweepStale drops test databases left behind by killed test processes.
func sweepStale(admin string) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, admin)
	if err != nil {
		return
	}
	defer conn.Close(ctx)
	rows, err := conn.Query(ctx, `SELECT datname FROM pg_database WHERE datname LIKE 'pgtest\_%'`)
	if err != nil {
		return
	}
	names, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return
	}
	for _, name := range names {
		var created int64
		if _, err := fmt.Sscanf(name, "pgtest_%d_", &created); err == nil && time.Since(time.Unix(created, 0)) < staleAfter {
			continue
		}
		_, _ = conn.Exec(ctx, fmt.Sprintf("DROP DATABASE IF EXISTS %s WITH (FORCE)", pgx.Identifier{name}.Sanitize()))
	}
}

// findServer returns the admin URL of the first server that answers and
// a note saying which it is.
func findServer(getenv func(string) string) (url, note string, err error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if u := getenv("TEST_DATABASE_URL"); u != "" {
		return u, "TEST_DATABASE_URL", pgcluster.Answers(ctx, u)
	}
	local := localURL(getenv)
	localErr := pgcluster.Answers(ctx, local)
	if localErr == nil {
		return local, "the local server", nil
	}
	u, containerErr := startContainer()
	if containerErr == nil {
		return u, "a container (testcontainers)", nil
	}
	c := &pgcluster.Cluster{Dir: clusterDir(getenv), Fast: true}
	begin := time.Now()
	port, owned, clusterErr := c.Start(context.Background())
	if clusterErr == nil {
		how := "found running"
		if owned {
			how = fmt.Sprintf("started in %v", time.Since(begin).Round(time.Millisecond))
		}
		return pgcluster.URL(port, "postgres"), fmt.Sprintf("a private cluster under %s on port %d (%s)", c.Dir, port, how), nil
	}
	return "", "", fmt.Errorf("local server: %v; container: %v; private cluster: %w", localErr, containerErr, clusterErr)
}

// localURL is DefaultURL on port PGPORT when that is set.
func localURL(getenv func(string) string) string {
	if p := getenv("PGPORT"); p != "" {
		return strings.Replace(DefaultURL, ":5432/", ":"+p+"/", 1)
	}
	return DefaultURL
}

// clusterDir is where the private cluster lives: PGTEST_DIR, or
// .data/pgtest in the folder holding go.work (where `make test` starts it
// too), or a folder in the system's temporary directory.
func clusterDir(getenv func(string) string) string {
	if d := getenv("PGTEST_DIR"); d != "" {
		return d
	}
	if wd, err := os.Getwd(); err == nil {
		for d := wd; ; d = filepath.Dir(d) {
			if _, err := os.Stat(filepath.Join(d, "go.work")); err == nil {
				return filepath.Join(d, ".data", "pgtest")
			}
			if filepath.Dir(d) == d {
				break
			}
		}
	}
	return filepath.Join(os.TempDir(), fmt.Sprintf("pgtest-%d", os.Getuid()))
}

// startContainer runs PostgreSQL 15 under Docker for the rest of the test
// process; testcontainers' reaper removes it afterwards.
func startContainer() (u string, err error) {
	defer func() {
		// testcontainers panics when no Docker host can be found at all.
		if r := recover(); r != nil {
			err = fmt.Errorf("testcontainers: %v", r)
		}
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	c, err := tcpostgres.Run(ctx, "postgres:15-alpine",
		tcpostgres.WithDatabase("postgres"),
		tcpostgres.WithUsername("postgres"),
		tcpostgres.WithPassword("postgres"),
		tcpostgres.BasicWaitStrategies(),
	)
	if err != nil {
		if c != nil {
			_ = testcontainers.TerminateContainer(c)
		}
		return "", err
	}
	return c.ConnectionString(ctx, "sslmode=disable")
}

func templateName(tpl Template) string {
	name := strings.ToLower(tpl.Name)
	if name == "" {
		name = "default"
	}
	return "pgtpl_" + name + "_" + tpl.Fingerprint
}

// ensureTemplate builds the template once per server and fingerprint. An
// advisory lock keeps test processes of other packages from building it at
// the same time; the template is built under a temporary name and renamed,
// so a half-built template is never cloned.
func ensureTemplate(ctx context.Context, admin, tplName string, tpl Template) error {
	templatesMu.Lock()
	defer templatesMu.Unlock()
	if err, ok := templates[tplName]; ok {
		return err
	}
	err := buildTemplate(ctx, admin, tplName, tpl)
	templates[tplName] = err
	return err
}

// forgetTemplate makes the next ensureTemplate look for tplName on the
// server again.
func forgetTemplate(tplName string) {
	templatesMu.Lock()
	defer templatesMu.Unlock()
	delete(templates, tplName)
}

func buildTemplate(ctx context.Context, admin, tplName string, tpl Template) error {
	conn, err := pgx.Connect(ctx, admin)
	if err != nil {
		return err
	}
	defer conn.Close(ctx)
	h := fnv.New64a()
	h.Write([]byte(tplName))
	if _, err := conn.Exec(ctx, "SELECT pg_advisory_lock($1)", int64(h.Sum64()>>1)); err != nil {
		return err
	}
	defer func() {
		_, _ = conn.Exec(context.WithoutCancel(ctx), "SELECT pg_advisory_unlock($1)", int64(h.Sum64()>>1))
	}()

	var exists bool
	if err := conn.QueryRow(ctx, "SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)", tplName).Scan(&exists); err != nil {
		return err
	}
	if exists {
		return nil
	}
	building := tplName + "_building"
	if _, err := conn.Exec(ctx, fmt.Sprintf("DROP DATABASE IF EXISTS %s WITH (FORCE)", pgx.Identifier{building}.Sanitize())); err != nil {
		return err
	}
	if _, err := conn.Exec(ctx, fmt.Sprintf("CREATE DATABASE %s", pgx.Identifier{building}.Sanitize())); err != nil {
		return err
	}
	if tpl.Setup != nil {
		buildURL, err := withDatabaseErr(admin, building)
		if err != nil {
			return err
		}
		if err := tpl.Setup(ctx, buildURL); err != nil {
			return fmt.Errorf("setup: %w", err)
		}
	}
	if _, err := conn.Exec(ctx, fmt.Sprintf("ALTER DATABASE %s RENAME TO %s", pgx.Identifier{building}.Sanitize(), pgx.Identifier{tplName}.Sanitize())); err != nil {
		return err
	}
	// Templates of older schema versions are of no further use.
	rows, err := conn.Query(ctx, "SELECT datname FROM pg_database WHERE datname LIKE $1 AND datname <> $2",
		strings.TrimSuffix(tplName, tpl.Fingerprint)+"%", tplName)
	if err != nil {
		return err
	}
	old, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return err
	}
	for _, name := range old {
		_, _ = conn.Exec(ctx, fmt.Sprintf("DROP DATABASE IF EXISTS %s", pgx.Identifier{name}.Sanitize()))
	}
	return nil
}

func withDatabase(t testing.TB, admin, name string) string {
	t.Helper()
	u, err := withDatabaseErr(admin, name)
	if err != nil {
		t.Fatalf("pgtest: %v", err)
	}
	return u
}

func withDatabaseErr(admin, name string) (string, error) {
	u, err := url.Parse(admin)
	if err != nil {
		return "", fmt.Errorf("parse database url: %w", err)
	}
	u.Path = "/" + name
	return u.String(), nil
}

func isCode(err error, code string) bool {
	var pgErr *pgconn.PgError
	return errors.As(err, &pgErr) && pgErr.Code == code
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
