// Package browser runs a real headless Chromium (Debian's chromium) for
// tests through chromedp, saves screenshots, and checks pages with
// axe-core, which the project installs (npm ci --prefix testkit/browser:
// .ci/run and make browser-deps do it) and the tests inject into the page;
// nothing of it is ever served.
//
// Where Chromium or axe-core is missing, tests are skipped with the reason,
// except under CI=true, where they fail.
package browser

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

// unavailable skips t (fails it under CI=true) for a missing piece.
func unavailable(t testing.TB, format string, args ...any) {
	t.Helper()
	if os.Getenv("CI") == "true" {
		t.Fatalf("browser: "+format, args...)
	}
	t.Skipf("browser: "+format, args...)
}

// Path finds the Chromium binary: CHROMIUM_PATH, or chromium,
// chromium-browser, google-chrome on PATH.
func Path() (string, error) {
	if p := os.Getenv("CHROMIUM_PATH"); p != "" {
		return p, nil
	}
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome"} {
		if p, err := exec.LookPath(name); err == nil {
			return p, nil
		}
	}
	return "", fmt.Errorf("no chromium on PATH (apt-get install -y chromium, or set CHROMIUM_PATH)")
}

// Browser is one headless Chromium process.
type Browser struct {
	root context.Context
}

// Start starts Chromium for t; it is stopped when t ends.
func Start(t testing.TB) *Browser {
	t.Helper()
	path, err := Path()
	if err != nil {
		unavailable(t, "%v", err)
	}
	// chromedp's defaults (headless, Puppeteer's flags: no background
	// networking, throttling, extensions, sync, default apps; /tmp for
	// shared memory) plus what a test run wants on top.
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(path),
		chromedp.NoSandbox, // root in CI containers
		chromedp.DisableGPU,
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("mute-audio", true),
		chromedp.Flag("no-pings", true),
		chromedp.WindowSize(1280, 900),
		chromedp.UserDataDir(t.TempDir()),
	)
	alloc, cancel := chromedp.NewExecAllocator(context.Background(), opts...)
	t.Cleanup(cancel)
	root, cancelRoot := chromedp.NewContext(alloc, quiet()...)
	t.Cleanup(cancelRoot)
	if err := chromedp.Do(root); err != nil {
		unavailable(t, "start chromium: %v", err)
	}
	return &Browser{root: root}
}

func quiet() []chromedp.ContextOption {
	return []chromedp.ContextOption{chromedp.WithLogf(func(string, ...any) {}), chromedp.WithErrorf(func(string, ...any) {})}
}

// Session opens a new browser context (its own cookies, as a separate
// person's browser) and returns a tab's context, closed when t ends.
func (b *Browser) Session(t testing.TB) context.Context {
	t.Helper()
	ctx, cancel := chromedp.NewContext(b.root, chromedp.WithNewBrowserContext())
	t.Cleanup(cancel)
	if err := chromedp.Do(ctx); err != nil {
		t.Fatalf("browser: new session: %v", err)
	}
	return ctx
}

// Do runs steps with a deadline and fails t on error.
func Do(t testing.TB, ctx context.Context, steps ...chromedp.Action[chromedp.Void]) {
	t.Helper()
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if err := chromedp.Do(ctx, steps...); err != nil {
		t.Fatalf("browser: %v", err)
	}
}

// Get runs one action with a deadline and returns its value; it fails t
// on error.
func Get[T any](t testing.TB, ctx context.Context, a chromedp.Action[T]) T {
	t.Helper()
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	v, err := chromedp.Run(ctx, a)
	if err != nil {
		t.Fatalf("browser: %v", err)
	}
	return v
}

// ArtifactsDir is where screenshots go: PORTALSYNC_ARTIFACTS, or
// .data/screenshots under the repository root; one folder per test.
func ArtifactsDir(t testing.TB) string {
	t.Helper()
	dir := os.Getenv("PORTALSYNC_ARTIFACTS")
	if dir == "" {
		_, file, _, _ := runtime.Caller(0)
		dir = filepath.Join(filepath.Dir(file), "..", "..", ".data", "screenshots")
	}
	dir = filepath.Join(dir, strings.ReplaceAll(t.Name(), "/", "_"))
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatalf("browser: %v", err)
	}
	return dir
}

// Screenshot saves the whole page as <ArtifactsDir>/<name>.png (PNG).
func Screenshot(t testing.TB, ctx context.Context, name string) string {
	t.Helper()
	png := Get(t, ctx, chromedp.FullScreenshot(100))
	path := filepath.Join(ArtifactsDir(t), name+".png")
	if err := os.WriteFile(path, png, 0o644); err != nil {
		t.Fatalf("browser: %v", err)
	}
	t.Logf("screenshot %s", path)
	return path
}

// axeSource is axe-core's browser build, installed by npm into this
// package's folder.
func axeSource(t testing.TB) string {
	t.Helper()
	_, file, _, _ := runtime.Caller(0)
	b, err := os.ReadFile(filepath.Join(filepath.Dir(file), "node_modules", "axe-core", "axe.min.js"))
	if err != nil {
		unavailable(t, "axe-core not installed (npm ci --prefix testkit/browser): %v", err)
	}
	return string(b)
}

// Violation is one axe-core rule a page breaks.
type Violation struct {
	ID     string `json:"id"`
	Impact string `json:"impact"`
	Help   string `json:"help"`
	Nodes  []struct {
		Target []any `json:"target"`
	} `json:"nodes"`
}

// Axe runs axe-core (WCAG 2.x A and AA rules and best practices) on the
// current page and returns its violations. It is injected through the
// DevTools protocol, which the page's Content-Security-Policy does not
// govern.
func Axe(t testing.TB, ctx context.Context) []Violation {
	t.Helper()
	src := axeSource(t)
	Do(t, ctx, chromedp.Evaluate[chromedp.Void](src))
	raw := Get(t, ctx, chromedp.Evaluate[string](
		`axe.run(document, {resultTypes: ['violations']}).then(r => JSON.stringify(r.violations))`, chromedp.EvalAwaitPromise))
	var v []Violation
	if err := json.Unmarshal([]byte(raw), &v); err != nil {
		t.Fatalf("browser: axe result: %v", err)
	}
	return v
}

// RequireAccessible fails t when axe-core reports a serious or critical
// violation on the current page.
func RequireAccessible(t testing.TB, ctx context.Context, page string) {
	t.Helper()
	for _, v := range Axe(t, ctx) {
		if v.Impact == "serious" || v.Impact == "critical" {
			t.Errorf("axe on %s: %s (%s): %s at %v", page, v.ID, v.Impact, v.Help, v.Nodes)
		} else {
			t.Logf("axe on %s (%s, tolerated): %s", page, v.Impact, v.ID)
		}
	}
}
