package e2e

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/likeperson/portalsync/pkg/pgcluster"
	"github.com/likeperson/portalsync/testkit/natstest"
)

// freshChild, in a child test process, marks TestTestsWithoutPostgreSQLServer's
// children.
const freshChild = "PORTALSYNC_E2E_FRESH_CHILD"

// noServer is a machine without a PostgreSQL server: a folder the OS user
// postgres can reach (the private cluster runs as postgres for root), a
// local port where nothing listens, and Docker that does not answer.
type noServer struct {
	dir       string
	localPort string
}

func setupNoServer(t *testing.T) *noServer {
	t.Helper()
	if _, err := pgcluster.FindBinDir(os.Getenv); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal(err)
		}
		t.Skip(err)
	}
	dir, err := os.MkdirTemp("", "portalsync-fresh-")
	require.NoError(t, err)
	require.NoError(t, os.Chmod(dir, 0o755))
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	_, port, _ := strings.Cut(freeAddr(t), ":")
	return &noServer{dir: dir, localPort: port}
}

// env is the environment of a process on that machine.
func (n *noServer) env(extra ...string) []string {
	env := slices.DeleteFunc(withoutProjectEnv(), func(kv string) bool {
		k, _, _ := strings.Cut(kv, "=")
		return k == "TEST_DATABASE_URL" || k == "PGTEST_DIR"
	})
	return append(append(env,
		"PGPORT="+n.localPort,
		// testcontainers and devpg: no Docker daemon answers here.
		"DOCKER_HOST=unix:///nonexistent/docker.sock",
		"DEVPG_DOCKER=false",
	), extra...)
}

// Where no PostgreSQL server answers and Docker does not either, the
// tests' harness (pgtest) starts a private cluster with PostgreSQL's server
// binaries, which two test processes started together share: each migrates
// nothing twice, clones the template and applies an event end to end.
func TestTestsWithoutPostgreSQLServer(t *testing.T) {
	if os.Getenv(freshChild) != "" {
		s := start(t)
		e := s.event("membership-created", "fresh-member", "fresh-org", "peer_mentor", base)
		s.send(t, e)
		require.Equal(t, "success", s.waitLogged(t, e.ID))
		var status string
		require.NoError(t, s.pool.QueryRow(context.Background(), `SELECT status FROM profiles WHERE portal_member_id = 'fresh-member'`).Scan(&status))
		require.Equal(t, "active", status)
		fmt.Printf("fresh child: database %s\n", s.dbURL)
		return
	}
	t.Parallel()
	n := setupNoServer(t)
	cluster := filepath.Join(n.dir, "pgtest")
	t.Cleanup(func() { require.NoError(t, (&pgcluster.Cluster{Dir: cluster}).Stop()) })

	begin := time.Now()
	type result struct {
		out string
		err error
	}
	results := make(chan result, 2)
	for range 2 {
		cmd := exec.Command(os.Args[0], "-test.run=^TestTestsWithoutPostgreSQLServer$", "-test.v", "-test.count=1")
		cmd.Env = n.env(freshChild+"=1", "PGTEST_DIR="+cluster)
		go func() {
			out, err := cmd.CombinedOutput()
			results <- result{string(out), err}
		}()
	}
	note := regexp.MustCompile(`pgtest: a private cluster under ` + regexp.QuoteMeta(cluster) + ` on port (\d+) \(([^)]*)\)`)
	ports := map[string]bool{}
	for range 2 {
		r := <-results
		require.NoError(t, r.err, r.out)
		m := note.FindStringSubmatch(r.out)
		require.NotNil(t, m, "the child says which server it used:\n%s", r.out)
		ports[m[1]] = true
		require.Contains(t, r.out, "fresh child: database postgres://postgres@127.0.0.1:"+m[1]+"/pgtest_")
		t.Logf("a test process: private cluster %s", m[2])
	}
	require.Len(t, ports, 1, "both processes used one cluster")
	t.Logf("two test processes, from start to end, the cluster's first start included: %v", time.Since(begin).Round(time.Millisecond))
}

// `make run` (scripts/run.sh, after `make build`) where no PostgreSQL
// server answers and Docker does not either: it makes and starts a private
// cluster under .data/pg on PORTALSYNC_PG_PORT, creates and migrates the
// database, serves (an event sent is applied), writes the cluster's URL to
// .data/env, and stops the cluster on Ctrl-C.
func TestMakeRunWithoutPostgreSQLServer(t *testing.T) {
	t.Parallel()
	n := setupNoServer(t)
	root, err := filepath.Abs("..")
	require.NoError(t, err)

	// A checkout's layout: this tree's scripts, bin/ built here.
	dir := n.dir
	require.NoError(t, os.Symlink(filepath.Join(root, "scripts"), filepath.Join(dir, "scripts")))
	bin := filepath.Join(dir, "bin")
	require.NoError(t, os.Mkdir(bin, 0o755))
	for _, b := range []string{"ingress", "pkg/cmd/devpg"} {
		build := exec.Command("go", "build", "-o", filepath.Join(bin, filepath.Base(b)), "github.com/likeperson/portalsync/"+b)
		out, err := build.CombinedOutput()
		require.NoError(t, err, "build %s: %s", b, out)
	}
	require.NoError(t, os.Symlink(syncerBin, filepath.Join(bin, "syncer")))

	ns := natstest.Run(t)
	_, pgPort, _ := strings.Cut(freeAddr(t), ":")
	ingressAddr, syncerAddr := freeAddr(t), freeAddr(t)
	out := &lockedBuffer{}
	run := exec.Command("bash", filepath.Join(dir, "scripts", "run.sh"))
	run.Dir, run.Stdout, run.Stderr = dir, out, out
	run.Env = n.env("NATS_URL="+ns.URL(), "INGRESS_ADDR="+ingressAddr, "SYNCER_HTTP_ADDR="+syncerAddr,
		"PORTALSYNC_PG_PORT="+pgPort, "LOG_LEVEL=warn")
	begin := time.Now()
	require.NoError(t, run.Start())
	done := make(chan error, 1)
	go func() { done <- run.Wait() }()
	stopped := false
	t.Cleanup(func() {
		if !stopped {
			_ = run.Process.Signal(syscall.SIGTERM)
			<-done
		}
		if t.Failed() {
			t.Logf("run.sh output:\n%s", out)
		}
	})
	for deadline := time.Now().Add(2 * time.Minute); !strings.Contains(out.String(), "portalsync is running."); {
		select {
		case err := <-done:
			stopped = true
			require.FailNow(t, "run.sh ended before its banner", "%v", err)
		case <-time.After(20 * time.Millisecond):
		}
		require.True(t, time.Now().Before(deadline), "no banner within 2 minutes")
	}
	t.Logf("make run (after the build) up to its banner, the private cluster's first start and the migrations included: %v", time.Since(begin).Round(time.Millisecond))
	require.Contains(t, out.String(), "PostgreSQL: a private cluster under .data/pg on 127.0.0.1:"+pgPort+" ")

	dataEnv, err := os.ReadFile(filepath.Join(dir, ".data", "env"))
	require.NoError(t, err)
	dbURL := pgcluster.URL(mustAtoi(t, pgPort), "portalsync")
	require.Contains(t, string(dataEnv), "DATABASE_URL="+dbURL+"\n")
	pool, err := pgxpool.New(context.Background(), dbURL)
	require.NoError(t, err)
	defer pool.Close()

	secret, err := os.ReadFile(filepath.Join(dir, ".data", "webhook-secret"))
	require.NoError(t, err)
	send := exec.Command(filepath.Join(bin, "ingress"), "send")
	send.Env = append(withoutProjectEnv(), "INGRESS_URL=http://"+ingressAddr+"/webhooks/portal", "PORTAL_WEBHOOK_SECRETS="+strings.TrimSpace(string(secret)))
	sent, err := send.CombinedOutput()
	require.NoError(t, err, "%s", sent)
	m := regexp.MustCompile(`"event_id":"([^"]+)"`).FindStringSubmatch(string(sent))
	require.NotNil(t, m, "%s", sent)
	var status string
	require.Eventually(t, func() bool {
		return pool.QueryRow(context.Background(), `SELECT status FROM portal_sync_log WHERE event_id = $1`, m[1]).Scan(&status) == nil
	}, 20*time.Second, 20*time.Millisecond)
	require.Equal(t, "success", status)
	pool.Close()

	require.NoError(t, run.Process.Signal(syscall.SIGTERM))
	select {
	case err := <-done:
		stopped = true
		require.NoError(t, err, "run.sh exits 0 on SIGTERM")
	case <-time.After(60 * time.Second):
		require.FailNow(t, "run.sh did not stop within 60 s of SIGTERM")
	}
	_, running := (&pgcluster.Cluster{Dir: filepath.Join(dir, ".data", "pg")}).Running()
	require.False(t, running, "the private cluster stopped with make run")
	require.Error(t, pgcluster.Answers(context.Background(), dbURL))
}

func mustAtoi(t *testing.T, s string) int {
	t.Helper()
	var n int
	_, err := fmt.Sscan(s, &n)
	require.NoError(t, err)
	return n
}
