// Command devpg finds or starts the PostgreSQL that `make run` and `make
// test` use, in this order: the local server (127.0.0.1:$PGPORT, default
// 5432, user postgres, trust); Docker, where it answers; a private cluster
// made with PostgreSQL's server binaries (package pgcluster).
//
//	devpg up DIR      prints the URL of a database for `make run`, starting
//	                  a container or a private cluster (data in DIR) if needed
//	devpg down DIR    stops what `devpg up DIR` started
//	devpg test DIR -- CMD…
//	                  runs the tests' command; where neither a server nor
//	                  Docker answers, with a private cluster in DIR started
//	                  for it (TEST_DATABASE_URL) and stopped afterwards
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/likeperson/portalsync/pkg/command"
	"github.com/likeperson/portalsync/pkg/pgcluster"
)

func main() {
	command.Main("devpg", run)
}

type cli struct {
	Up   upCmd   `cmd:"" help:"Print the URL of a database for make run: the local server's, or a container's or a private cluster's started for it."`
	Down downCmd `cmd:"" help:"Stop the container or private cluster that up started."`
	Test testCmd `cmd:"" help:"Run the tests' command, with a private cluster for its duration where neither a server nor Docker answers."`
}

// where are the settings every subcommand shares: what to look for.
type where struct {
	Dir       string `arg:"" help:"Folder of the private cluster (data/, log), where up also notes a container it started (container)."`
	LocalPort int    `name:"local-port" env:"PGPORT" default:"5432" help:"Port of the local server on 127.0.0.1."`
	Docker    string `env:"DEVPG_DOCKER" default:"docker" help:"The docker command; empty: do not use Docker."`
	PGBin     string `name:"pgbin" env:"PGBIN" help:"Folder of initdb and pg_ctl (default: pg_config --bindir, the newest /usr/lib/postgresql/*/bin, PATH)."`
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	var c cli
	return command.Run(ctx, &c, "devpg", "PostgreSQL for make run and make test: the local server, Docker or a private cluster.", args, stdout, stderr)
}

// local returns the local server's admin URL and nil when it answers.
func (w *where) local(ctx context.Context) (string, error) {
	url := pgcluster.URL(w.LocalPort, "postgres")
	ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	return url, pgcluster.Answers(ctx, url)
}

// dockerAnswers returns nil when the Docker daemon answers, else why not.
func (w *where) dockerAnswers(ctx context.Context) error {
	if w.Docker == "" {
		return errors.New("not used (--docker is empty)")
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, w.Docker, "info", "--format", "{{.ServerVersion}}").CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s info: %w: %s", w.Docker, err, firstLine(out))
	}
	return nil
}

type upCmd struct {
	where
	Port     int    `env:"PORTALSYNC_PG_PORT" default:"54329" help:"Port of the container or private cluster on 127.0.0.1."`
	Database string `default:"portalsync" help:"Database to create when missing; its URL is printed."`
	Image    string `default:"postgres:15-alpine" help:"Docker image."`
}

func (u *upCmd) Run(ctx context.Context, g *command.Globals) error {
	admin, err := u.server(ctx, g.Stderr)
	if err != nil {
		return err
	}
	if err := createDatabase(ctx, admin, u.Database, g.Stderr); err != nil {
		return err
	}
	fmt.Fprintln(g.Stdout, strings.Replace(admin, "/postgres?", "/"+u.Database+"?", 1))
	return nil
}

// server finds the local server or starts a container or the private
// cluster, says which on stderr and returns its admin URL.
func (u *upCmd) server(ctx context.Context, stderr io.Writer) (string, error) {
	admin, localErr := u.local(ctx)
	if localErr == nil {
		fmt.Fprintf(stderr, "PostgreSQL: the local server at 127.0.0.1:%d\n", u.LocalPort)
		return admin, nil
	}
	dockerErr := u.dockerAnswers(ctx)
	if dockerErr == nil {
		name, err := u.startContainer(ctx)
		if err != nil {
			return "", err
		}
		fmt.Fprintf(stderr, "PostgreSQL: container %s (%s) on 127.0.0.1:%d, data in volume %s; stopped on exit\n", name, u.Image, u.Port, name)
		return pgcluster.URL(u.Port, "postgres"), nil
	}
	c := &pgcluster.Cluster{Dir: u.Dir, Port: u.Port, BinDir: u.PGBin}
	if _, running := c.Running(); !running && listening(u.Port) {
		return "", fmt.Errorf("port %d (PORTALSYNC_PG_PORT) is already in use: stop what listens there or set PORTALSYNC_PG_PORT to another port", u.Port)
	}
	begin := time.Now()
	port, _, err := c.Start(ctx)
	if err != nil {
		return "", fmt.Errorf("no PostgreSQL: nothing answers on 127.0.0.1:%d (%v); Docker: %v; private cluster: %w", u.LocalPort, localErr, dockerErr, err)
	}
	fmt.Fprintf(stderr, "PostgreSQL: a private cluster under %s on 127.0.0.1:%d (server binaries %s, log %s, ready in %v); stopped on exit\n",
		u.Dir, port, c.BinDir, filepath.Join(u.Dir, "log"), time.Since(begin).Round(time.Millisecond))
	return pgcluster.URL(port, "postgres"), nil
}

// containerFile, in Dir, names the container that up started.
const containerFile = "container"

// startContainer runs the image with trust authentication on Port, its
// data in a named volume that outlives the container (--rm), and waits
// until it answers.
func (u *upCmd) startContainer(ctx context.Context) (string, error) {
	name := fmt.Sprintf("portalsync-pg-%d", u.Port)
	if err := os.MkdirAll(u.Dir, 0o755); err != nil {
		return "", err
	}
	// A container of this name left by a killed run: its data is in the
	// volume.
	_ = exec.CommandContext(ctx, u.Docker, "rm", "-f", name).Run()
	if out, err := exec.CommandContext(ctx, u.Docker, dockerRunArgs(name, u.Port, u.Image)...).CombinedOutput(); err != nil {
		return "", fmt.Errorf("%s run: %w\n%s", u.Docker, err, out)
	}
	if err := os.WriteFile(filepath.Join(u.Dir, containerFile), []byte(name+"\n"), 0o644); err != nil {
		return "", err
	}
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	if err := pgcluster.WaitAnswers(ctx, pgcluster.URL(u.Port, "postgres")); err != nil {
		return "", fmt.Errorf("container %s does not answer on 127.0.0.1:%d: %w", name, u.Port, err)
	}
	return name, nil
}

func dockerRunArgs(name string, port int, image string) []string {
	return []string{"run", "-d", "--rm", "--name", name,
		"-p", fmt.Sprintf("127.0.0.1:%d:5432", port),
		"-v", name + ":/var/lib/postgresql/data",
		"-e", "POSTGRES_HOST_AUTH_METHOD=trust",
		image}
}

// createDatabase creates db on the server at admin when it is missing.
func createDatabase(ctx context.Context, admin, db string, stderr io.Writer) error {
	conn, err := pgx.Connect(ctx, admin)
	if err != nil {
		return fmt.Errorf("connect %s: %w", admin, err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	var exists bool
	if err := conn.QueryRow(ctx, "SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)", db).Scan(&exists); err != nil {
		return fmt.Errorf("look for database %s: %w", db, err)
	}
	if exists {
		return nil
	}
	if _, err := conn.Exec(ctx, "CREATE DATABASE "+pgx.Identifier{db}.Sanitize()); err != nil {
		return fmt.Errorf("create database %s: %w", db, err)
	}
	fmt.Fprintf(stderr, "created database %s\n", db)
	return nil
}

type downCmd struct {
	Dir    string `arg:"" help:"The folder given to up."`
	Docker string `env:"DEVPG_DOCKER" default:"docker" help:"The docker command."`
}

// Run stops the container that up started, if any, else the private
// cluster, if it runs. After a local server it does nothing.
func (d *downCmd) Run(ctx context.Context, g *command.Globals) error {
	b, err := os.ReadFile(filepath.Join(d.Dir, containerFile))
	if err == nil {
		name := strings.TrimSpace(string(b))
		if out, err := exec.CommandContext(ctx, d.Docker, "stop", name).CombinedOutput(); err != nil {
			return fmt.Errorf("%s stop %s: %w: %s", d.Docker, name, err, firstLine(out))
		}
		fmt.Fprintf(g.Stderr, "stopped container %s\n", name)
		return os.Remove(filepath.Join(d.Dir, containerFile))
	}
	if _, err := os.Stat(filepath.Join(d.Dir, "data")); err != nil {
		return nil
	}
	c := &pgcluster.Cluster{Dir: d.Dir}
	if _, running := c.Running(); !running {
		return c.Stop() // forgets a dead owner
	}
	if err := c.Stop(); err != nil {
		return err
	}
	fmt.Fprintf(g.Stderr, "stopped the private cluster under %s\n", d.Dir)
	return nil
}

type testCmd struct {
	where
	URL string   `name:"url" env:"TEST_DATABASE_URL" help:"A server the tests use as it is (TEST_DATABASE_URL)."`
	Cmd []string `arg:"" passthrough:"" help:"The tests' command and its arguments, after --."`
}

// Run runs the command. Where TEST_DATABASE_URL is set, or the local
// server or Docker answers, the tests find their server themselves
// (testkit/pgtest; testcontainers for Docker). Otherwise it starts the
// private cluster in Dir for the run (or finds it running), passes it in
// TEST_DATABASE_URL and stops it afterwards if it started it; without
// server binaries the command runs as it is, and the tests that need
// PostgreSQL skip (fail under CI=true).
func (tc *testCmd) Run(ctx context.Context, g *command.Globals) error {
	cmd := tc.Cmd
	if len(cmd) > 0 && cmd[0] == "--" {
		cmd = cmd[1:]
	}
	if len(cmd) == 0 {
		return errors.New("no command after --")
	}
	env := os.Environ()
	stop, url := tc.server(ctx, g.Stderr)
	if url != "" {
		env = append(env, "TEST_DATABASE_URL="+url)
	}
	runErr := runChild(ctx, cmd, env, g)
	if stop != nil {
		if err := stop(); err != nil {
			fmt.Fprintf(g.Stderr, "devpg: stop the private cluster: %v\n", err)
		}
	}
	return runErr
}

// server says on stderr which server the tests will find and, where
// that is the private cluster, starts it and returns its URL and, if this
// process started it, how to stop it.
func (tc *testCmd) server(ctx context.Context, stderr io.Writer) (stop func() error, url string) {
	if tc.URL != "" {
		fmt.Fprintln(stderr, "PostgreSQL for the tests: TEST_DATABASE_URL")
		return nil, ""
	}
	_, localErr := tc.local(ctx)
	if localErr == nil {
		fmt.Fprintf(stderr, "PostgreSQL for the tests: the local server at 127.0.0.1:%d\n", tc.LocalPort)
		return nil, ""
	}
	dockerErr := tc.dockerAnswers(ctx)
	if dockerErr == nil {
		fmt.Fprintln(stderr, "PostgreSQL for the tests: a container (testcontainers), as Docker answers")
		return nil, ""
	}
	c := &pgcluster.Cluster{Dir: tc.Dir, Fast: true, BinDir: tc.PGBin}
	begin := time.Now()
	port, owned, err := c.Start(ctx)
	if err != nil {
		fmt.Fprintf(stderr, "PostgreSQL for the tests: none (local server: %v; Docker: %v; private cluster: %v): the tests that need it skip, or fail under CI=true\n", localErr, dockerErr, err)
		return nil, ""
	}
	how := "found running"
	if owned {
		how = fmt.Sprintf("started in %v, stopped at the end", time.Since(begin).Round(time.Millisecond))
		stop = c.Stop
	}
	fmt.Fprintf(stderr, "PostgreSQL for the tests: a private cluster under %s on 127.0.0.1:%d (%s)\n", tc.Dir, port, how)
	return stop, pgcluster.URL(port, "postgres")
}

// runChild runs cmd to its end; its exit status becomes devpg's. A signal
// to devpg alone (SIGTERM from a CI timeout) is passed on as an interrupt.
func runChild(ctx context.Context, cmd []string, env []string, g *command.Globals) error {
	c := exec.Command(cmd[0], cmd[1:]...)
	c.Env, c.Stdin, c.Stdout, c.Stderr = env, os.Stdin, g.Stdout, g.Stderr
	if err := c.Start(); err != nil {
		return err
	}
	done := make(chan struct{})
	go func() {
		select {
		case <-ctx.Done():
			_ = c.Process.Signal(os.Interrupt)
		case <-done:
		}
	}()
	err := c.Wait()
	close(done)
	var exit *exec.ExitError
	if errors.As(err, &exit) {
		return command.ExitCode(max(exit.ExitCode(), 1))
	}
	return err
}

// listening reports whether something accepts connections on 127.0.0.1:port.
func listening(port int) bool {
	conn, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", port), time.Second)
	if err != nil {
		return false
	}
	_ = conn.Close()
	return true
}

func firstLine(b []byte) string {
	line, _, _ := strings.Cut(strings.TrimSpace(string(b)), "\n")
	return line
}
