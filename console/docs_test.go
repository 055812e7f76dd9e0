package main

import (
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/alecthomas/kong"
	"github.com/stretchr/testify/require"

	"github.com/likeperson/portalsync/testkit/composetest"
	"github.com/likeperson/portalsync/testkit/readmetest"
)

// TestConfigTableMatchesFlags checks the configuration table of
// docs/CONFIGURATION.md against the console's flags
// (readmetest.CheckConfigTable).
func TestConfigTableMatchesFlags(t *testing.T) {
	t.Parallel()
	readmetest.CheckConfigTable(t, &cli{}, "console", kong.Vars{"readyz": "http://127.0.0.1:8091/readyz"})
}

// The compose file's console agrees with this binary: known environment
// names, a real command, a healthcheck on the health address, an image
// built by a static non-root Dockerfile.
func TestComposeMatchesConsole(t *testing.T) {
	t.Parallel()
	f, err := composetest.Load(filepath.Join("..", "docker-compose.yml"))
	require.NoError(t, err)
	svc, ok := f.Services["console"]
	require.True(t, ok, "service console")
	known := composetest.EnvNames(&cli{}, "serve")
	for name := range svc.Environment {
		require.True(t, known[name], "console reads no %s", name)
	}
	require.True(t, composetest.Commands(&cli{})[svc.Command[0]], "command %q", svc.Command[0])
	_, port, err := net.SplitHostPort(svc.Environment["CONSOLE_HEALTH_ADDR"])
	require.NoError(t, err)
	require.Equal(t, []string{"CMD", "/usr/local/bin/console", "healthcheck"}, svc.Healthcheck.Test[:3])
	u, err := url.Parse(svc.Healthcheck.Test[3])
	require.NoError(t, err)
	require.Equal(t, port, u.Port())
	_, public, err := net.SplitHostPort(svc.Environment["CONSOLE_ADDR"])
	require.NoError(t, err)
	require.Contains(t, strings.Join(svc.Ports, " "), ":"+public)

	b, err := os.ReadFile(filepath.Join("..", svc.Build.Dockerfile))
	require.NoError(t, err)
	df := string(b)
	for _, want := range []string{"AS build", "CGO_ENABLED=0", "USER nonroot", `ENTRYPOINT ["/usr/local/bin/console"]`, `"/usr/local/bin/console", "healthcheck"`} {
		require.Contains(t, df, want)
	}
}
