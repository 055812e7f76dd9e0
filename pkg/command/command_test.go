package command

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

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

// A group of required, mutually exclusive flags reads as a choice in the
// usage line, not as flags that are each required.
func TestHelpShowsExclusiveFlagsAsChoice(t *testing.T) {
	t.Parallel()
	var grammar struct {
		Redrive struct {
			URL   string `required:""`
			Event string `placeholder:"ID" xor:"what" required:""`
			All   bool   `xor:"what" required:""`
			Quiet bool
		} `cmd:""`
	}
	var out bytes.Buffer
	require.NoError(t, Run(context.Background(), &grammar, "x", "", []string{"redrive", "--help"}, &out, &out))
	usage, _, _ := strings.Cut(out.String(), "\n")
	require.Equal(t, "Usage: x redrive --url=STRING (--event=ID | --all) [flags]", usage)
	require.Contains(t, out.String(), "--event=ID")

	// The list of commands says the same.
	out.Reset()
	require.NoError(t, Run(context.Background(), &grammar, "x", "", []string{"--help"}, &out, &out))
	require.Contains(t, out.String(), "\n  redrive --url=STRING (--event=ID | --all) [flags]\n")
	require.NotContains(t, out.String(), "--event=ID --all")

	err := Run(context.Background(), &grammar, "x", "", []string{"redrive", "--url", "u", "--event", "e", "--all"}, &out, &out)
	require.ErrorContains(t, err, "--event and --all can't be used together")
}

func TestOff(t *testing.T) {
	t.Parallel()
	require.Equal(t, time.Duration(-1), Off(time.Duration(0)), "0 on the command line: none")
	require.Equal(t, 3*time.Second, Off(3*time.Second))
	require.Equal(t, -1.0, Off(0.0))
	require.Equal(t, 2.5, Off(2.5))
}
