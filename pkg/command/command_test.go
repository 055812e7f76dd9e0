package command

import (
	"context"
	"errors"
	"io"
	"os"
	"os/exec"
	"strconv"
	"testing"

	"github.com/stretchr/testify/require"
)

// Main exits with an ExitCode's value and prints nothing more; any other
// error exits 1 with the binary's name and the error.
func TestMainExitCode(t *testing.T) {
	if code := os.Getenv("COMMAND_TEST_MAIN"); code != "" {
		Main("x", func(context.Context, []string, io.Writer, io.Writer) error {
			if code == "boom" {
				return errors.New("boom")
			}
			n, _ := strconv.Atoi(code)
			return ExitCode(n)
		})
		os.Exit(0)
	}
	t.Parallel()
	for code, want := range map[string]struct {
		exit int
		out  string
	}{"2": {2, ""}, "3": {3, ""}, "boom": {1, "x: boom\n"}} {
		cmd := exec.Command(os.Args[0], "-test.run=^TestMainExitCode$")
		cmd.Env = append(os.Environ(), "COMMAND_TEST_MAIN="+code)
		out, err := cmd.CombinedOutput()
		var ee *exec.ExitError
		require.ErrorAs(t, err, &ee, code)
		require.Equal(t, want.exit, ee.ExitCode(), code)
		require.Equal(t, want.out, string(out), code)
	}
}
