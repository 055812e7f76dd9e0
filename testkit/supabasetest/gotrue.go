package supabasetest

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io/fs"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/likeperson/portalsync/pkg/pgcluster"
)

// JWTSecret signs every token of the test GoTrue processes.
const JWTSecret = "supabasetest-jwt-secret-at-least-32-characters"

// gotrueBinary returns GoTrue built from src/auth, building it when the
// cache has no binary for this source tree and Go version. Test processes
// of several packages may ask at once: a file lock lets one build, and the
// binary is written under a temporary name and renamed, so a half-written
// one is never run.
func gotrueBinary(src string) (string, error) {
	key, err := treeHash(filepath.Join(src, "auth"))
	if err != nil {
		return "", fmt.Errorf("hash GoTrue sources: %w", err)
	}
	cache, err := os.UserCacheDir()
	if err != nil {
		cache = os.TempDir()
	}
	dir := filepath.Join(cache, "portalsync-testkit")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	bin := filepath.Join(dir, "gotrue-"+key)
	if _, err := os.Stat(bin); err == nil {
		return bin, nil
	}
	lock, err := os.OpenFile(filepath.Join(dir, "gotrue.lock"), os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return "", err
	}
	defer lock.Close()
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX); err != nil {
		return "", fmt.Errorf("lock GoTrue cache: %w", err)
	}
	defer syscall.Flock(int(lock.Fd()), syscall.LOCK_UN) //nolint:errcheck
	if _, err := os.Stat(bin); err == nil {
		return bin, nil // built by another process meanwhile
	}
	tmp := fmt.Sprintf("%s.tmp%d", bin, os.Getpid())
	build := exec.Command("go", "build", "-C", filepath.Join(src, "auth"), "-o", tmp, ".")
	build.Env = append(os.Environ(), "GOWORK=off")
	if out, err := build.CombinedOutput(); err != nil {
		_ = os.Remove(tmp)
		return "", fmt.Errorf("build GoTrue: %w\n%s", err, out)
	}
	if err := os.Rename(tmp, bin); err != nil {
		return "", err
	}
	return bin, nil
}

// treeHash hashes every file's path and content under dir, and the Go
// version that builds it.
func treeHash(dir string) (string, error) {
	h := sha256.New()
	h.Write([]byte(runtime.Version()))
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, path)
		fmt.Fprintf(h, "%s\x00%d\x00", rel, len(b))
		h.Write(b)
		return nil
	})
	return hex.EncodeToString(h.Sum(nil))[:20], err
}

// gotrueEnv configures GoTrue for database db, listening on port.
func (c *Cluster) gotrueEnv(db string, port int) []string {
	api := "http://127.0.0.1:" + strconv.Itoa(port)
	return []string{
		"GOTRUE_DB_DRIVER=postgres", "GOTRUE_DB_NAMESPACE=auth",
		"DATABASE_URL=" + c.URL("supabase_auth_admin", authAdminPassword, db),
		"GOTRUE_DB_MIGRATIONS_PATH=" + filepath.Join(c.src, "auth", "migrations"),
		"GOTRUE_JWT_SECRET=" + JWTSecret, "GOTRUE_JWT_EXP=3600", "GOTRUE_JWT_AUD=authenticated",
		"GOTRUE_JWT_DEFAULT_GROUP_NAME=authenticated", "GOTRUE_JWT_ADMIN_ROLES=service_role",
		"GOTRUE_API_HOST=127.0.0.1", "PORT=" + strconv.Itoa(port), "API_EXTERNAL_URL=" + api,
		"GOTRUE_SITE_URL=http://127.0.0.1:3000", "GOTRUE_EXTERNAL_EMAIL_ENABLED=true",
		"GOTRUE_MAILER_AUTOCONFIRM=true", "GOTRUE_LOG_LEVEL=warn",
		// Many sign-ins from one address in a test run.
		"GOTRUE_RATE_LIMIT_TOKEN_REFRESH=100000", "GOTRUE_RATE_LIMIT_VERIFY=100000",
		"GOTRUE_RATE_LIMIT_EMAIL_SENT=100000", "GOTRUE_RATE_LIMIT_OTP=100000",
	}
}

// Auth is one test's Supabase Auth server.
type Auth struct {
	// URL is GoTrue's base URL.
	URL string
}

// StartAuth runs GoTrue on d with the project's custom access token hook
// enabled, until t ends.
func (d *Database) StartAuth(t testing.TB) *Auth {
	t.Helper()
	port, err := pgcluster.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	ctx, cancel := context.WithCancel(context.Background())
	cmd := exec.CommandContext(ctx, d.c.gotrue)
	cmd.Env = append(os.Environ(), d.c.gotrueEnv(d.Name, port)...)
	cmd.Env = append(cmd.Env,
		"GOTRUE_HOOK_CUSTOM_ACCESS_TOKEN_ENABLED=true",
		"GOTRUE_HOOK_CUSTOM_ACCESS_TOKEN_URI=pg-functions://postgres/public/custom_access_token_hook")
	cmd.Stdout, cmd.Stderr = &syncBuffer{b: &out}, &syncBuffer{b: &out}
	cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGTERM) }
	cmd.WaitDelay = 10 * time.Second
	dieWithParent(cmd)
	if err := cmd.Start(); err != nil {
		cancel()
		t.Fatalf("supabasetest: start GoTrue: %v", err)
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		cancel()
		<-exited
		if t.Failed() {
			t.Logf("GoTrue output:\n%s", out.String())
		}
	})
	a := &Auth{URL: "http://127.0.0.1:" + strconv.Itoa(port)}
	deadline := time.Now().Add(60 * time.Second)
	for {
		select {
		case <-exited:
			t.Fatalf("supabasetest: GoTrue exited:\n%s", out.String())
		default:
		}
		resp, err := http.Get(a.URL + "/health")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return a
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("supabasetest: GoTrue not healthy within 60 s:\n%s", out.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
}
