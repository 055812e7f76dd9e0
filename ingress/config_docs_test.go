package main

import (
	"path/filepath"
	"strings"
	"testing"

	"github.com/alecthomas/kong"
	"github.com/stretchr/testify/require"

	"github.com/likeperson/portalsync/testkit/readmetest"
)

// TestConfigTableMatchesFlags checks the configuration table of
// docs/CONFIGURATION.md against the ingress's flags: every environment
// variable a subcommand reads has a row naming the ingress (or send), and
// the row's default is the flag's.
func TestConfigTableMatchesFlags(t *testing.T) {
	t.Parallel()
	rows := readmetest.ConfigRows(t, filepath.Join("..", "docs", "CONFIGURATION.md"))
	parser, err := kong.New(&cli{}, kong.Vars{"readyz": "http://127.0.0.1:9080/readyz"}, kong.Exit(func(int) {}))
	require.NoError(t, err)
	readmetest.CheckFlags(t, parser, rows, "ingress", func(row readmetest.Row, subcommand string) bool {
		return strings.Contains(row.UsedBy, "ingress") || row.UsedBy == "both" || strings.Contains(row.UsedBy, subcommand)
	})
}
