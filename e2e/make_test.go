package e2e

import (
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// `make help` into a pipe is plain text: no colour codes.
func TestMakeHelpPlainInAPipe(t *testing.T) {
	t.Parallel()
	out, err := exec.Command("make", "-s", "-C", "..", "help").Output()
	require.NoError(t, err)
	require.Contains(t, string(out), "  send ")
	require.NotContains(t, string(out), "\x1b", "colour codes in a pipe")
}

// The targets that run a command after building print nothing of their
// own: every recipe line of build, send, status, dlq and replay is silent
// (@), and go build prints only errors.
func TestMakeCommandTargetsAreQuiet(t *testing.T) {
	t.Parallel()
	b, err := os.ReadFile("../Makefile")
	require.NoError(t, err)
	for _, target := range []string{"build", "send", "status", "dlq", "replay"} {
		_, rest, ok := strings.Cut("\n"+string(b), "\n"+target+":")
		require.True(t, ok, "the Makefile has %s", target)
		lines := 0
		for _, line := range strings.Split(rest, "\n")[1:] {
			if !strings.HasPrefix(line, "\t") {
				break
			}
			lines++
			require.True(t, strings.HasPrefix(line, "\t@"), "%s: a recipe line make echoes: %q", target, line)
		}
		require.NotZero(t, lines, target)
	}
}
