package e2e

import (
	"context"
	"fmt"
	"net"
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

	"github.com/likeperson/portalsync/testkit/natstest"
	"github.com/likeperson/portalsync/testkit/schematest"
	"github.com/likeperson/portalsync/testkit/servicetest"
)

// tourLine is one command of the README's tour: `make TARGET ARGS="…"`.
type tourLine struct {
	text, target, args string
}

// readTour reads the commands of the README's tour: the shell block after
// "In a second terminal".
func readTour(t *testing.T, path string) []tourLine {
	t.Helper()
	readme, err := os.ReadFile(path)
	require.NoError(t, err)
	_, rest, ok := strings.Cut(string(readme), "In a second terminal")
	require.True(t, ok, "the README has the tour")
	_, rest, ok = strings.Cut(rest, "```sh\n")
	require.True(t, ok, "the tour is a sh block")
	block, _, _ := strings.Cut(rest, "```")
	cmd := regexp.MustCompile(`^make ([a-z-]+)(?: ARGS="([^"]*)")?$`)
	var tour []tourLine
	for _, line := range strings.Split(strings.TrimSpace(block), "\n") {
		text, _, _ := strings.Cut(line, "#")
		text = strings.TrimSpace(text)
		m := cmd.FindStringSubmatch(text)
		require.NotNil(t, m, "a tour line this test cannot follow: %q", line)
		tour = append(tour, tourLine{text: text, target: m[1], args: m[2]})
	}
	return tour
}

// makeRecipe returns what `make TARGET ARGS=args` runs after its
// prerequisites (build): the target's recipe with ARGS expanded as make
// expands it.
func makeRecipe(t *testing.T, makefile, target, args string) string {
	t.Helper()
	b, err := os.ReadFile(makefile)
	require.NoError(t, err)
	_, rest, ok := strings.Cut("\n"+string(b), "\n"+target+":")
	require.True(t, ok, "the Makefile has the target %s", target)
	var lines []string
	for _, line := range strings.Split(rest, "\n")[1:] {
		if !strings.HasPrefix(line, "\t") {
			break
		}
		lines = append(lines, strings.TrimPrefix(strings.TrimSpace(line), "@"))
	}
	require.Len(t, lines, 1, "the recipe of %s is one command", target)
	recipe := strings.ReplaceAll(lines[0], "$(or $(ARGS),list)", cmpOr(args, "list"))
	recipe = strings.ReplaceAll(recipe, "$(ARGS)", args)
	require.NotContains(t, recipe, "$(", "a make expression this test does not expand: %s", lines[0])
	return recipe
}

func cmpOr(s, def string) string {
	if s != "" {
		return s
	}
	return def
}

// freeAddr returns a local address where nothing listens now.
func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := ln.Addr().String()
	require.NoError(t, ln.Close())
	return addr
}

// startBinary runs a service binary until the test ends (SIGTERM, then a
// clean exit within 20 s) and shows its output if the test failed.
func startBinary(t *testing.T, dir string, env []string, name string, args ...string) {
	t.Helper()
	out := &lockedBuffer{}
	cmd := exec.Command(name, args...)
	cmd.Dir, cmd.Env, cmd.Stdout, cmd.Stderr = dir, env, out, out
	require.NoError(t, cmd.Start())
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("%s %s: %v", filepath.Base(name), args[0], err)
			}
		case <-time.After(20 * time.Second):
			_ = cmd.Process.Kill()
			<-done
			t.Errorf("%s %s did not stop within 20 s of SIGTERM", filepath.Base(name), args[0])
		}
		if t.Failed() {
			t.Logf("%s %s output:\n%s", filepath.Base(name), args[0], out)
		}
	})
}

// withoutProjectEnv is the environment less every variable `make run`
// writes to .data/env or the scripts read, so that the tour runs "with
// nothing exported" whatever the test process has.
func withoutProjectEnv() []string {
	drop := []string{"NATS_URL", "DATABASE_URL", "INGRESS_ADDR", "INGRESS_OPS_ADDR", "INGRESS_DRAIN_GRACE", "INGRESS_URL", "SYNCER_HTTP_ADDR", "SYNCER_URL",
		"PORTAL_WEBHOOK_SECRETS", "PORTAL_WEBHOOK_SECRETS_FILE", "STREAM_NAME", "SYNCER_CONSUMER", "SYNCER_DEAD_LETTER_STREAM", "LOG_LEVEL"}
	return slices.DeleteFunc(os.Environ(), func(kv string) bool {
		k, _, _ := strings.Cut(kv, "=")
		return slices.Contains(drop, k)
	})
}

// memberRows is every member's rows, one line each: member, organization,
// e-mail, profile status, membership status, role.
func memberRows(t *testing.T, pool *pgxpool.Pool) []string {
	t.Helper()
	return queryStrings(t, pool, `
		SELECT concat_ws(' ', p.portal_member_id, o.portal_org_id, coalesce(p.email, '-'), p.status, m.status, coalesce(r.role, '-'))
		FROM profiles p JOIN organization_memberships m ON m.profile_id = p.id
		JOIN organizations o ON o.id = m.organization_id
		LEFT JOIN role_assignments r ON r.profile_id = p.id AND r.organization_id = o.id
		ORDER BY 1`)
}

// TestReadmeTour follows the README's tour word for word on a fresh
// checkout, as `make run` sets it up: the real binaries (ingress built here,
// the syncer by TestMain), `syncer migrate` on an empty database, NATS,
// `ingress serve` and `syncer run`, and ./.data/env and
// ./.data/webhook-secret as `make run` writes them. Each tour line runs
// what its make target runs, with nothing exported, and the member rows
// must then be exactly what the line says. Then the story of
// docs/examples, as the README tells it.
func TestReadmeTour(t *testing.T) {
	t.Parallel()
	tour := readTour(t, "../README.md")
	root, err := filepath.Abs("..")
	require.NoError(t, err)

	// A checkout's layout: this tree's scripts and docs, bin/ built here.
	dir := t.TempDir()
	for _, d := range []string{"scripts", "docs"} {
		require.NoError(t, os.Symlink(filepath.Join(root, d), filepath.Join(dir, d)))
	}
	bin := filepath.Join(dir, "bin")
	require.NoError(t, os.Mkdir(bin, 0o755))
	build := exec.Command("go", "build", "-o", filepath.Join(bin, "ingress"), "github.com/likeperson/portalsync/ingress")
	out, err := build.CombinedOutput()
	require.NoError(t, err, "build ingress: %s", out)
	require.NoError(t, os.Symlink(syncerBin, filepath.Join(bin, "syncer")))

	db := schematest.NewEmptyDB(t)
	ns := natstest.Run(t)
	ingressAddr, opsAddr, syncerAddr := freeAddr(t), freeAddr(t), freeAddr(t)
	env := withoutProjectEnv()

	// What scripts/run.sh does after starting NATS.
	require.NoError(t, os.Mkdir(filepath.Join(dir, ".data"), 0o700))
	secret, err := exec.Command(filepath.Join(bin, "ingress"), "genkey").Output()
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(filepath.Join(dir, ".data", "webhook-secret"), secret, 0o600))
	dataEnv := []string{"NATS_URL=" + ns.URL(), "DATABASE_URL=" + db.URL, "INGRESS_ADDR=" + ingressAddr,
		"INGRESS_OPS_ADDR=" + opsAddr, "SYNCER_HTTP_ADDR=" + syncerAddr, "SYNCER_URL=http://" + syncerAddr}
	requireRunScriptWrites(t, filepath.Join(root, "scripts", "run.sh"), dataEnv)
	require.NoError(t, os.WriteFile(filepath.Join(dir, ".data", "env"), []byte(strings.Join(dataEnv, "\n")+"\n"), 0o600))
	services := append(append(slices.Clip(env), dataEnv...), "PORTAL_WEBHOOK_SECRETS="+strings.TrimSpace(string(secret)), "LOG_LEVEL=warn", "INGRESS_DRAIN_GRACE=0")
	migrate := exec.Command(filepath.Join(bin, "syncer"), "migrate")
	migrate.Dir, migrate.Env = dir, services
	out, err = migrate.CombinedOutput()
	require.NoError(t, err, "syncer migrate: %s", out)
	startBinary(t, dir, services, filepath.Join(bin, "ingress"), "serve")
	startBinary(t, dir, services, filepath.Join(bin, "syncer"), "run")
	servicetest.WaitReady(t, "http://"+opsAddr, nil)
	servicetest.WaitReady(t, "http://"+syncerAddr, nil)

	_, psqlErr := exec.LookPath("psql")
	eventID := regexp.MustCompile(`"event_id":"([^"]+)"`)
	// follow runs one tour line and, for a send, waits until the syncer has
	// logged the event it sent and checks its log status.
	follow := func(line tourLine, logStatus string) string {
		t.Helper()
		cmd := exec.Command("bash", "-eo", "pipefail", "-c", makeRecipe(t, filepath.Join(root, "Makefile"), line.target, line.args))
		cmd.Dir, cmd.Env = dir, env
		out, err := cmd.CombinedOutput()
		require.NoError(t, err, "%s:\n%s", line.text, out)
		if line.target != "send" {
			return string(out)
		}
		m := eventID.FindStringSubmatch(string(out))
		require.NotNil(t, m, "%s printed no event id:\n%s", line.text, out)
		require.Regexp(t, `(?m)^sent [a-z-]+ `+regexp.QuoteMeta(m[1])+`: member `, string(out), "%s says what it sent", line.text)
		if psqlErr == nil {
			require.Contains(t, string(out), "its member now:", "%s shows its effect:\n%s", line.text, out)
		}
		var status string
		require.Eventually(t, func() bool {
			err := db.Pool.QueryRow(context.Background(), `SELECT status FROM portal_sync_log WHERE event_id = $1 ORDER BY id DESC LIMIT 1`, m[1]).Scan(&status)
			return err == nil
		}, 10*time.Second, 20*time.Millisecond, "%s: the syncer logged the event", line.text)
		require.Equal(t, logStatus, status, "%s: log status", line.text)
		return string(out)
	}

	const (
		demo = "demo-member-1 demo-org-1 demo-member-1@example.invalid "
		ola  = "3b2a1f00-0000-4000-8000-0000000000aa 7d9f1c2e-0000-4000-8000-000000000001 "
	)
	// What each line of the tour says it does: the member rows after it,
	// all of them, and what it prints.
	expect := map[string]struct {
		rows   []string
		output string
	}{
		`make send`: {rows: []string{demo + "active active peer_mentor"}},
		`make send ARGS="--type role-updated --role coordinator"`: {rows: []string{demo + "active active coordinator"}},
		`make send ARGS="--type membership-deactivated"`:          {rows: []string{demo + "inactive inactive coordinator"}},
		`make send ARGS="--type membership-reactivated"`:          {rows: []string{demo + "active active coordinator"}},
		`make send ARGS="-f docs/examples/membership-created.json"`: {rows: []string{
			ola + "ola.eksempel@example.invalid active active peer_mentor", demo + "active active coordinator"}},
		`make status`:                        {output: `(?m)^health +healthy \(exit 0\)$`},
		`make dlq`:                           {output: `(?m)^no dead letters$`},
		`make replay ARGS="--all --dry-run"`: {output: `(?m)^dry run: no row would change$`},
	}
	var rows []string
	for _, line := range tour {
		want, ok := expect[line.text]
		require.True(t, ok, "the tour's line %q has no expectation in this test: say here what it does", line.text)
		delete(expect, line.text)
		out := follow(line, "success")
		if want.rows != nil {
			rows = want.rows
		}
		require.Equal(t, rows, memberRows(t, db.Pool), "after %s", line.text)
		if want.output != "" {
			require.Regexp(t, want.output, out, line.text)
		}
	}
	require.Empty(t, expect, "lines this test expects that the tour no longer has")

	// The story of docs/examples, in the order the README gives, after
	// the tour's membership-created.
	story := []struct {
		file, logStatus string
		ola             string // Ola's row after it; empty: erased
	}{
		{"membership-updated", "success", "ola.ny@example.invalid active active peer_mentor"},
		{"role-updated", "success", "ola.ny@example.invalid active active coordinator"},
		{"membership-deactivated", "success", "ola.ny@example.invalid inactive inactive coordinator"},
		{"membership-reactivated", "success", "ola.ny@example.invalid active active coordinator"},
		{"member-deleted", "success", ""},
	}
	for _, s := range story {
		line := tourLine{text: "make send -f " + s.file, target: "send", args: fmt.Sprintf("-f docs/examples/%s.json", s.file)}
		follow(line, s.logStatus)
		want := []string{demo + "active active coordinator"}
		if s.ola != "" {
			want = []string{ola + s.ola, want[0]}
		}
		require.Equal(t, want, memberRows(t, db.Pool), "after docs/examples/%s.json", s.file)
	}
	// Sent again, the first example changes nothing: the erased member is
	// not created again.
	follow(tourLine{text: "make send -f membership-created again", target: "send", args: "-f docs/examples/membership-created.json"}, "success")
	require.Equal(t, []string{demo + "active active coordinator"}, memberRows(t, db.Pool))
}

// requireRunScriptWrites checks that scripts/run.sh writes each variable
// of env to .data/env, so that this test sets up what `make run` does.
func requireRunScriptWrites(t *testing.T, runScript string, env []string) {
	t.Helper()
	b, err := os.ReadFile(runScript)
	require.NoError(t, err)
	_, heredoc, ok := strings.Cut(string(b), "cat > .data/env <<ENV\n")
	require.True(t, ok, "run.sh writes .data/env")
	heredoc, _, _ = strings.Cut(heredoc, "\nENV\n")
	for _, kv := range env {
		k, _, _ := strings.Cut(kv, "=")
		require.Regexp(t, "(?m)^"+k+"=", heredoc, "run.sh writes %s to .data/env", k)
	}
}
