package pgcluster

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"
)

// childDir, in a child test process, is the cluster directory to start.
const childDir = "PGCLUSTER_TEST_CHILD_DIR"

// setup returns a cluster in a new directory the OS user postgres can
// reach (the cluster runs as postgres when the tests run as root), stopped
// and removed when t ends.
func setup(t *testing.T) *Cluster {
	t.Helper()
	bin, err := FindBinDir(os.Getenv)
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal(err)
		}
		t.Skip(err)
	}
	dir, err := os.MkdirTemp("", "pgcluster-")
	require.NoError(t, err)
	require.NoError(t, os.Chmod(dir, 0o755))
	c := &Cluster{Dir: filepath.Join(dir, "pg"), BinDir: bin, Fast: true}
	t.Cleanup(func() {
		require.NoError(t, c.Stop())
		require.NoError(t, os.RemoveAll(dir))
	})
	return c
}

// Started, the cluster answers on its port as postgres without a password;
// started again it is found running; stopped, it no longer answers; and
// started once more it keeps its data.
func TestStartStop(t *testing.T) {
	t.Parallel()
	c := setup(t)
	ctx := context.Background()

	begin := time.Now()
	port, owned, err := c.Start(ctx)
	require.NoError(t, err)
	t.Logf("first start (initdb and start): %v", time.Since(begin).Round(time.Millisecond))
	require.True(t, owned)
	require.NoError(t, Answers(ctx, URL(port, "postgres")))
	require.NoError(t, execSQL(ctx, URL(port, "postgres"), "CREATE DATABASE kept"))

	again, owned, err := c.Start(ctx)
	require.NoError(t, err)
	require.Equal(t, port, again, "a running cluster keeps its port")
	require.True(t, owned, "this process started it")

	require.NoError(t, c.Stop())
	_, running := c.Running()
	require.False(t, running)
	require.Error(t, Answers(ctx, URL(port, "postgres")))

	begin = time.Now()
	port, _, err = c.Start(ctx)
	require.NoError(t, err)
	t.Logf("start of an existing cluster: %v", time.Since(begin).Round(time.Millisecond))
	require.NoError(t, Answers(ctx, URL(port, "kept")), "the data is kept")
}

// Test processes started at the same time share one cluster: one starts
// it and owns it, the others find it running while it is alive. Once
// they have all ended, the next process takes the orphan over (a killed
// test run's cluster is stopped by the next run).
func TestConcurrentProcessesShareOneCluster(t *testing.T) {
	if dir := os.Getenv(childDir); dir != "" {
		// A child: start or find the cluster, say so, and hold on until
		// the parent closes stdin, so that the owner is alive meanwhile.
		port, owned, err := (&Cluster{Dir: dir, Fast: true}).Start(context.Background())
		require.NoError(t, err)
		fmt.Printf("child: port %d owned %v\n", port, owned)
		_, _ = io.Copy(io.Discard, os.Stdin)
		return
	}
	t.Parallel()
	c := setup(t)

	const n = 4
	type child struct {
		cmd   *exec.Cmd
		stdin io.WriteCloser
		lines chan string
	}
	children := make([]child, n)
	for i := range children {
		cmd := exec.Command(os.Args[0], "-test.run=^TestConcurrentProcessesShareOneCluster$", "-test.count=1")
		cmd.Env = append(os.Environ(), childDir+"="+c.Dir, "PGBIN="+c.BinDir)
		stdin, err := cmd.StdinPipe()
		require.NoError(t, err)
		stdout, err := cmd.StdoutPipe()
		require.NoError(t, err)
		cmd.Stderr = os.Stderr
		require.NoError(t, cmd.Start())
		lines := make(chan string, 1)
		go func() {
			sc := bufio.NewScanner(stdout)
			for sc.Scan() {
				if strings.HasPrefix(sc.Text(), "child: ") {
					lines <- sc.Text()
				}
			}
			close(lines)
		}()
		children[i] = child{cmd, stdin, lines}
	}
	ports, owners := map[string]bool{}, 0
	for _, ch := range children {
		line, ok := <-ch.lines
		require.True(t, ok, "a child ended without starting the cluster")
		var port int
		var owned bool
		_, err := fmt.Sscanf(line, "child: port %d owned %t", &port, &owned)
		require.NoError(t, err)
		ports[fmt.Sprint(port)] = true
		if owned {
			owners++
		}
	}
	for _, ch := range children {
		require.NoError(t, ch.stdin.Close())
		for range ch.lines {
		}
		require.NoError(t, ch.cmd.Wait())
	}
	require.Len(t, ports, 1, "one cluster")
	require.Equal(t, 1, owners, "one process started it")

	port, owned, err := c.Start(context.Background())
	require.NoError(t, err)
	require.True(t, ports[fmt.Sprint(port)], "still the same cluster")
	require.True(t, owned, "the orphan of dead processes is taken over")
}

func execSQL(ctx context.Context, url, sql string) error {
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		return err
	}
	defer conn.Close(ctx)
	_, err = conn.Exec(ctx, sql)
	return err
}
