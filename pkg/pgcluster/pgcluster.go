// Package pgcluster runs a private PostgreSQL cluster from PostgreSQL's
// server binaries (initdb, pg_ctl), for `make run` and the tests on a
// machine where no PostgreSQL server answers.
//
// A cluster lives in one directory: data/ (made by initdb on the first
// start and kept), log (the server's log), owner (the pid of the process
// that started it) and lock. It listens on 127.0.0.1 only, has no Unix
// socket, and lets the superuser postgres in without a password (trust).
// Every start, reuse and stop holds an exclusive lock on the lock file, so
// that concurrent processes (go test runs each package in its own) share
// one cluster: the first starts it, the others find it running.
package pgcluster

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
)

// Cluster is a private cluster in a directory.
type Cluster struct {
	// Dir holds the cluster; it is created when missing. Required.
	Dir string
	// Port is where a start listens; 0 (the default) picks a free port
	// at each start. A running cluster keeps the port it has.
	Port int
	// BinDir holds initdb and pg_ctl. Default: FindBinDir.
	BinDir string
	// Fast turns durability off (fsync, synchronous_commit,
	// full_page_writes), for data that tests throw away. Default false.
	Fast bool
}

// FindBinDir finds PostgreSQL's server binaries: PGBIN, `pg_config
// --bindir` when it holds initdb, the newest /usr/lib/postgresql/*/bin
// (Debian and Ubuntu install the server there, outside PATH), or PATH.
func FindBinDir(getenv func(string) string) (string, error) {
	var tried []string
	if d := getenv("PGBIN"); d != "" {
		if hasServer(d) {
			return d, nil
		}
		return "", fmt.Errorf("PGBIN=%s holds no initdb and pg_ctl", d)
	}
	if out, err := exec.Command("pg_config", "--bindir").Output(); err == nil {
		d := strings.TrimSpace(string(out))
		if hasServer(d) {
			return d, nil
		}
		tried = append(tried, d)
	}
	dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	sort.Slice(dirs, func(i, j int) bool { return versionOf(dirs[i]) < versionOf(dirs[j]) })
	for i := len(dirs) - 1; i >= 0; i-- {
		if hasServer(dirs[i]) {
			return dirs[i], nil
		}
		tried = append(tried, dirs[i])
	}
	if path, err := exec.LookPath("initdb"); err == nil && hasServer(filepath.Dir(path)) {
		return filepath.Dir(path), nil
	}
	return "", fmt.Errorf("no PostgreSQL server binaries (initdb, pg_ctl) in PGBIN, pg_config --bindir, /usr/lib/postgresql/*/bin or PATH (tried %s)", cmp.Or(strings.Join(tried, ", "), "none"))
}

func hasServer(dir string) bool {
	for _, tool := range []string{"initdb", "pg_ctl"} {
		if fi, err := os.Stat(filepath.Join(dir, tool)); err != nil || fi.IsDir() {
			return false
		}
	}
	return true
}

func versionOf(dir string) int {
	n, _ := strconv.Atoi(filepath.Base(filepath.Dir(dir)))
	return n
}

// URL connects to database db on 127.0.0.1:port as the superuser postgres.
func URL(port int, db string) string {
	return fmt.Sprintf("postgres://postgres@127.0.0.1:%d/%s?sslmode=disable", port, db)
}

// Answers returns nil when a PostgreSQL server accepts url within ctx, else
// why it does not.
func Answers(ctx context.Context, url string) error {
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		return err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	return conn.Ping(ctx)
}

func (c *Cluster) data() string      { return filepath.Join(c.Dir, "data") }
func (c *Cluster) logFile() string   { return filepath.Join(c.Dir, "log") }
func (c *Cluster) ownerFile() string { return filepath.Join(c.Dir, "owner") }

// Start starts the cluster, making it first when Dir holds none, or finds
// it running. It returns the port and whether this process now owns the
// cluster: it started it, or took over one whose owner has died (a killed
// test run), so that it should stop it when done.
func (c *Cluster) Start(ctx context.Context) (port int, owned bool, err error) {
	if c.Dir == "" {
		return 0, false, errors.New("pgcluster: no directory")
	}
	if c.BinDir == "" {
		if c.BinDir, err = FindBinDir(os.Getenv); err != nil {
			return 0, false, err
		}
	} else if !hasServer(c.BinDir) {
		return 0, false, fmt.Errorf("pgcluster: %s holds no initdb and pg_ctl", c.BinDir)
	}
	as, err := serverUser()
	if err != nil {
		return 0, false, err
	}
	if err := os.MkdirAll(c.Dir, 0o755); err != nil {
		return 0, false, fmt.Errorf("pgcluster: %w", err)
	}
	if err := as.reach(c.Dir); err != nil {
		return 0, false, err
	}
	unlock, err := lock(filepath.Join(c.Dir, "lock"))
	if err != nil {
		return 0, false, err
	}
	defer unlock()

	if port, ok := c.runningPort(); ok {
		if err := c.waitAnswers(ctx, port); err != nil {
			return 0, false, err
		}
		owner, _ := readPid(c.ownerFile())
		if owner > 0 && owner != os.Getpid() && processAlive(owner) {
			return port, false, nil
		}
		return port, true, c.writeOwner()
	}
	if _, err := os.Stat(filepath.Join(c.data(), "PG_VERSION")); err != nil {
		if err := c.initdb(as); err != nil {
			return 0, false, err
		}
	}
	port = c.Port
	if port == 0 {
		if port, err = FreePort(); err != nil {
			return 0, false, fmt.Errorf("pgcluster: free port: %w", err)
		}
	}
	if err := touch(c.logFile(), as); err != nil {
		return 0, false, err
	}
	opts := fmt.Sprintf("-p %d -c listen_addresses=127.0.0.1 -c unix_socket_directories=''", port)
	if c.Fast {
		// The tests' data is thrown away: durability only costs time.
		opts += " -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
	}
	if out, err := c.pgCtl(as, "start", "-w", "-t", "60", "-l", c.logFile(), "-o", opts); err != nil {
		return 0, false, fmt.Errorf("pgcluster: pg_ctl start on port %d: %w\n%s\nlog %s:\n%s", port, err, out, c.logFile(), tail(c.logFile()))
	}
	if err := c.waitAnswers(ctx, port); err != nil {
		return 0, false, err
	}
	return port, true, c.writeOwner()
}

// Stop stops the cluster if it runs (fast shutdown: sessions are ended)
// and keeps its data for the next start.
func (c *Cluster) Stop() error {
	if _, err := os.Stat(c.Dir); err != nil {
		return nil
	}
	if c.BinDir == "" {
		var err error
		if c.BinDir, err = FindBinDir(os.Getenv); err != nil {
			return err
		}
	}
	as, err := serverUser()
	if err != nil {
		return err
	}
	unlock, err := lock(filepath.Join(c.Dir, "lock"))
	if err != nil {
		return err
	}
	defer unlock()
	if _, ok := c.runningPort(); ok {
		if out, err := c.pgCtl(as, "stop", "-w", "-t", "60", "-m", "fast"); err != nil {
			return fmt.Errorf("pgcluster: pg_ctl stop: %w\n%s", err, out)
		}
	}
	if err := os.Remove(c.ownerFile()); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("pgcluster: %w", err)
	}
	return nil
}

// Running returns the port of the running cluster.
func (c *Cluster) Running() (port int, ok bool) {
	if c.BinDir == "" {
		var err error
		if c.BinDir, err = FindBinDir(os.Getenv); err != nil {
			return 0, false
		}
	}
	return c.runningPort()
}

// runningPort asks pg_ctl whether the cluster runs and reads its port from
// postmaster.pid (its fourth line).
func (c *Cluster) runningPort() (int, bool) {
	if _, err := os.Stat(c.data()); err != nil {
		return 0, false
	}
	as, err := serverUser()
	if err != nil {
		return 0, false
	}
	if _, err := c.pgCtl(as, "status"); err != nil {
		return 0, false
	}
	b, err := os.ReadFile(filepath.Join(c.data(), "postmaster.pid"))
	if err != nil {
		return 0, false
	}
	lines := strings.Split(string(b), "\n")
	if len(lines) < 4 {
		return 0, false
	}
	port, err := strconv.Atoi(strings.TrimSpace(lines[3]))
	return port, err == nil && port > 0
}

// initdb makes the cluster in data/, first removing what a failed initdb
// left. Its locale is C.UTF-8 where the system has it (as the machine's
// server and the postgres image: byte order, Unicode case mapping), else C.
func (c *Cluster) initdb(as *user) error {
	if err := os.RemoveAll(c.data()); err != nil {
		return fmt.Errorf("pgcluster: %w", err)
	}
	var out []byte
	var err error
	for _, locale := range []string{"C.UTF-8", "C"} {
		if err = os.Mkdir(c.data(), 0o700); err != nil {
			return fmt.Errorf("pgcluster: %w", err)
		}
		if err = as.own(c.data()); err != nil {
			return err
		}
		out, err = as.run(filepath.Join(c.BinDir, "initdb"), "-D", c.data(), "-U", "postgres", "--auth=trust", "-E", "UTF8", "--locale="+locale)
		if err == nil {
			return nil
		}
		_ = os.RemoveAll(c.data())
	}
	return fmt.Errorf("pgcluster: initdb in %s: %w\n%s", c.data(), err, out)
}

func (c *Cluster) pgCtl(as *user, args ...string) ([]byte, error) {
	return as.run(filepath.Join(c.BinDir, "pg_ctl"), append([]string{"-D", c.data()}, args...)...)
}

// WaitAnswers tries Answers until it succeeds or ctx ends, and then
// returns its last error.
func WaitAnswers(ctx context.Context, url string) error {
	for {
		err := Answers(ctx, url)
		if err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return err
		case <-time.After(50 * time.Millisecond):
		}
	}
}

func (c *Cluster) waitAnswers(ctx context.Context, port int) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if err := WaitAnswers(ctx, URL(port, "postgres")); err != nil {
		return fmt.Errorf("pgcluster: the cluster in %s does not answer on port %d: %w", c.Dir, port, err)
	}
	return nil
}

func (c *Cluster) writeOwner() error {
	if err := os.WriteFile(c.ownerFile(), []byte(strconv.Itoa(os.Getpid())+"\n"), 0o644); err != nil {
		return fmt.Errorf("pgcluster: %w", err)
	}
	return nil
}

func readPid(path string) (int, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, err
	}
	return strconv.Atoi(strings.TrimSpace(string(b)))
}

// touch creates path for the server's user, who writes it.
func touch(path string, as *user) error {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return fmt.Errorf("pgcluster: %w", err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("pgcluster: %w", err)
	}
	return as.own(path)
}

// tail is the end of the server's log, for an error message.
func tail(path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return err.Error()
	}
	lines := bytes.Split(bytes.TrimSpace(b), []byte("\n"))
	return string(bytes.Join(lines[max(0, len(lines)-15):], []byte("\n")))
}

// FreePort returns a loopback TCP port that nothing listens on at the
// moment, for a server about to start (a cluster whose Port is 0 gets one).
func FreePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}
