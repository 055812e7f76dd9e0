package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/likeperson/portalsync/pkg/command"
	"github.com/likeperson/portalsync/pkg/pgcluster"
)

// childEnv marks the test binary run by `devpg test` in TestTest….
const childEnv = "DEVPG_TEST_CHILD"

type testBundle struct {
	dir    string // a folder the OS user postgres can reach
	pgbin  string
	noPort int    // a port where nothing listens
	docker string // a docker command whose daemon does not answer
}

func setup(t *testing.T) *testBundle {
	t.Helper()
	pgbin, err := pgcluster.FindBinDir(os.Getenv)
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal(err)
		}
		t.Skip(err)
	}
	dir, err := os.MkdirTemp("", "devpg-")
	require.NoError(t, err)
	require.NoError(t, os.Chmod(dir, 0o755))
	t.Cleanup(func() { require.NoError(t, os.RemoveAll(dir)) })
	return &testBundle{dir: dir, pgbin: pgbin, noPort: unusedPort(t), docker: fakeDocker(t, dir, 1)}
}

// cluster is a private cluster of its own in the bundle's folder, stopped
// when t ends.
func (b *testBundle) cluster(t *testing.T, name string, port int) *pgcluster.Cluster {
	t.Helper()
	c := &pgcluster.Cluster{Dir: filepath.Join(b.dir, name), Port: port, BinDir: b.pgbin, Fast: true}
	_, _, err := c.Start(context.Background())
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, c.Stop()) })
	return c
}

func unusedPort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	port := ln.Addr().(*net.TCPAddr).Port
	require.NoError(t, ln.Close())
	return port
}

// fakeDocker writes a docker command that logs its arguments to
// docker.log beside it and answers `info` with infoExit (0: the daemon
// answers) and everything else with 0.
func fakeDocker(t *testing.T, dir string, infoExit int) string {
	t.Helper()
	path := filepath.Join(dir, fmt.Sprintf("docker-%d", infoExit))
	script := fmt.Sprintf("#!/bin/sh\necho \"$*\" >> %q\n[ \"$1\" != info ] || { echo 'Cannot connect to the Docker daemon' >&2; exit %d; }\n",
		filepath.Join(dir, "docker.log"), infoExit)
	require.NoError(t, os.WriteFile(path, []byte(script), 0o755))
	return path
}

func devpg(t *testing.T, args ...string) (stdout, stderr string, err error) {
	t.Helper()
	var out, errOut bytes.Buffer
	err = run(context.Background(), args, &out, &errOut)
	return out.String(), errOut.String(), err
}

// Nothing answers on the local port and Docker does not answer: `up`
// makes and starts a private cluster in its folder, on its port, with the
// database, and prints the database's URL; a second `up` finds it
// running; `down` stops it.
func TestUpStartsAPrivateClusterWhenNothingAnswers(t *testing.T) {
	t.Parallel()
	b := setup(t)
	dir, port := filepath.Join(b.dir, "pg"), unusedPort(t)
	args := []string{"up", dir, "--local-port", fmt.Sprint(b.noPort), "--docker", b.docker, "--port", fmt.Sprint(port), "--pgbin", b.pgbin}

	begin := time.Now()
	out, errOut, err := devpg(t, args...)
	require.NoError(t, err, errOut)
	t.Logf("first up (initdb, start, create database): %v", time.Since(begin).Round(time.Millisecond))
	require.Equal(t, pgcluster.URL(port, "portalsync")+"\n", out)
	require.Contains(t, errOut, "PostgreSQL: a private cluster under "+dir+" on 127.0.0.1:"+fmt.Sprint(port))
	require.Contains(t, errOut, "created database portalsync")
	require.NoError(t, pgcluster.Answers(context.Background(), strings.TrimSpace(out)))
	require.FileExists(t, filepath.Join(dir, "data", "PG_VERSION"))

	again, errOut, err := devpg(t, args...)
	require.NoError(t, err, errOut)
	require.Equal(t, out, again)
	require.NotContains(t, errOut, "created database")

	_, errOut, err = devpg(t, "down", dir)
	require.NoError(t, err, errOut)
	require.Equal(t, "stopped the private cluster under "+dir+"\n", errOut)
	require.Error(t, pgcluster.Answers(context.Background(), strings.TrimSpace(out)))
}

// The local server answers: `up` uses it and starts nothing.
func TestUpUsesTheLocalServerWhenItAnswers(t *testing.T) {
	t.Parallel()
	b := setup(t)
	local := b.cluster(t, "local", unusedPort(t))
	localPort, ok := local.Running()
	require.True(t, ok)
	dir := filepath.Join(b.dir, "pg")

	out, errOut, err := devpg(t, "up", dir, "--local-port", fmt.Sprint(localPort), "--docker", b.docker, "--port", fmt.Sprint(unusedPort(t)))
	require.NoError(t, err, errOut)
	require.Equal(t, pgcluster.URL(localPort, "portalsync")+"\n", out)
	require.Contains(t, errOut, fmt.Sprintf("PostgreSQL: the local server at 127.0.0.1:%d", localPort))
	require.NoDirExists(t, filepath.Join(dir, "data"))
	require.NoFileExists(t, filepath.Join(b.dir, "docker.log"), "Docker is not asked")

	_, errOut, err = devpg(t, "down", dir)
	require.NoError(t, err, errOut)
	require.Empty(t, errOut)
	require.NoError(t, pgcluster.Answers(context.Background(), pgcluster.URL(localPort, "postgres")), "down leaves the local server alone")
}

// Docker answers (before the server binaries are tried): `up` runs the
// postgres image on the port with trust authentication and a volume, and
// `down` stops the container. A private cluster on that port stands in for
// the container that the fake docker command does not start.
func TestUpRunsAContainerWhenDockerAnswers(t *testing.T) {
	t.Parallel()
	b := setup(t)
	port := unusedPort(t)
	b.cluster(t, "container", port)
	dir := filepath.Join(b.dir, "pg")

	docker := fakeDocker(t, b.dir, 0)
	out, errOut, err := devpg(t, "up", dir, "--local-port", fmt.Sprint(b.noPort), "--docker", docker, "--port", fmt.Sprint(port))
	require.NoError(t, err, errOut)
	require.Equal(t, pgcluster.URL(port, "portalsync")+"\n", out)
	name := fmt.Sprintf("portalsync-pg-%d", port)
	require.Contains(t, errOut, "PostgreSQL: container "+name+" (postgres:15-alpine)")
	_, errOut, err = devpg(t, "down", dir, "--docker", docker)
	require.NoError(t, err, errOut)
	require.Equal(t, "stopped container "+name+"\n", errOut)

	log, err := os.ReadFile(filepath.Join(b.dir, "docker.log"))
	require.NoError(t, err)
	require.Equal(t, []string{
		"info --format {{.ServerVersion}}",
		"rm -f " + name,
		fmt.Sprintf("run -d --rm --name %s -p 127.0.0.1:%d:5432 -v %s:/var/lib/postgresql/data -e POSTGRES_HOST_AUTH_METHOD=trust postgres:15-alpine", name, port, name),
		"stop " + name,
	}, strings.Split(strings.TrimSpace(string(log)), "\n"))
	require.NoDirExists(t, filepath.Join(dir, "data"), "no private cluster")
}

// With none of the three, `up` says what it tried.
func TestUpSaysWhatIsMissing(t *testing.T) {
	t.Parallel()
	b := setup(t)
	_, _, err := devpg(t, "up", filepath.Join(b.dir, "pg"), "--local-port", fmt.Sprint(b.noPort), "--docker", b.docker,
		"--port", fmt.Sprint(unusedPort(t)), "--pgbin", b.dir)
	require.ErrorContains(t, err, fmt.Sprintf("no PostgreSQL: nothing answers on 127.0.0.1:%d", b.noPort))
	require.ErrorContains(t, err, "Docker: "+b.docker+" info: exit status 1: Cannot connect to the Docker daemon")
	require.ErrorContains(t, err, "private cluster: pgcluster: "+b.dir+" holds no initdb and pg_ctl")
}

// The port of the private cluster is taken by something else: `up` names
// the setting instead of failing in pg_ctl.
func TestUpNamesTheSettingOfATakenPort(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer ln.Close()
	port := ln.Addr().(*net.TCPAddr).Port
	_, _, err = devpg(t, "up", filepath.Join(b.dir, "pg"), "--local-port", fmt.Sprint(b.noPort), "--docker", b.docker, "--port", fmt.Sprint(port))
	require.ErrorContains(t, err, fmt.Sprintf("port %d (PORTALSYNC_PG_PORT) is already in use", port))
}

// Where neither a server nor Docker answers, `test` runs the tests'
// command with a private cluster in TEST_DATABASE_URL, passes its exit
// status on and stops the cluster afterwards.
func TestTestRunsTheCommandWithAPrivateCluster(t *testing.T) {
	if os.Getenv(childEnv) != "" {
		// The tests' command: it reaches the cluster, then fails with 3.
		u := os.Getenv("TEST_DATABASE_URL")
		conn, err := pgx.Connect(context.Background(), u)
		require.NoError(t, err)
		require.NoError(t, conn.Close(context.Background()))
		fmt.Println("child reached", u)
		os.Exit(3)
	}
	t.Parallel()
	b := setup(t)
	dir := filepath.Join(b.dir, "pgtest")

	out, errOut, err := devpg(t, "test", dir, "--local-port", fmt.Sprint(b.noPort), "--docker", b.docker, "--url", "", "--",
		"sh", "-c", childEnv+`=1 exec "$0" -test.run='^TestTestRunsTheCommandWithAPrivateCluster$'`, os.Args[0])
	var code command.ExitCode
	require.True(t, errors.As(err, &code), "%v\n%s", err, errOut)
	require.Equal(t, command.ExitCode(3), code, "the command's exit status")
	require.Regexp(t, `PostgreSQL for the tests: a private cluster under `+dir+` on 127\.0\.0\.1:\d+ \(started in \S+, stopped at the end\)`, errOut)
	_, reached, ok := strings.Cut(out, "child reached ")
	require.True(t, ok, "the command reached the cluster:\n%s\n%s", out, errOut)
	require.Error(t, pgcluster.Answers(context.Background(), strings.TrimSpace(reached)), "stopped afterwards")
}

// With TEST_DATABASE_URL, or where the local server answers, `test` runs
// the command as it is: the tests find their server themselves.
func TestTestLeavesAServerThatAnswersToTheTests(t *testing.T) {
	t.Parallel()
	b := setup(t)
	local := b.cluster(t, "local", unusedPort(t))
	localPort, _ := local.Running()
	dir := filepath.Join(b.dir, "pgtest")
	show := []string{"--", "sh", "-c", `echo "url=$TEST_DATABASE_URL"`}

	out, errOut, err := devpg(t, append([]string{"test", dir, "--local-port", fmt.Sprint(b.noPort), "--docker", b.docker, "--url", "postgres://elsewhere/postgres"}, show...)...)
	require.NoError(t, err, errOut)
	require.Equal(t, "PostgreSQL for the tests: TEST_DATABASE_URL\n", errOut)
	require.Equal(t, "url="+os.Getenv("TEST_DATABASE_URL")+"\n", out, "devpg adds nothing")

	out, errOut, err = devpg(t, append([]string{"test", dir, "--local-port", fmt.Sprint(localPort), "--docker", b.docker, "--url", ""}, show...)...)
	require.NoError(t, err, errOut)
	require.Equal(t, fmt.Sprintf("PostgreSQL for the tests: the local server at 127.0.0.1:%d\n", localPort), errOut)
	require.Equal(t, "url="+os.Getenv("TEST_DATABASE_URL")+"\n", out)
	require.NoDirExists(t, dir)
}
