package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/likeperson/portalsync/testkit/supabasetest"
)

// syncerBin is the syncer binary built for this test run.
var syncerBin string

// TestMain builds the syncer binary that the subprocess tests run
// (syncerProcess), then runs the tests under the Supabase harness.
func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "portalsync-e2e-bin")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	syncerBin = filepath.Join(dir, "syncer")
	build := exec.Command("go", "build", "-o", syncerBin, "github.com/likeperson/portalsync/syncer")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "build syncer:", err)
		os.Exit(1)
	}
	code := supabasetest.Main(m)
	_ = os.RemoveAll(dir)
	os.Exit(code)
}
