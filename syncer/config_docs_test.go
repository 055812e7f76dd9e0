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
// docs/CONFIGURATION.md against the syncer's flags: every environment
// variable a subcommand reads has a row naming the syncer, and the row's
// default is the flag's.
func TestConfigTableMatchesFlags(t *testing.T) {
	t.Parallel()
	rows := readmetest.ConfigRows(t, filepath.Join("..", "docs", "CONFIGURATION.md"))
	parser, err := kong.New(&cli{}, kong.Vars{"readyz": "http://127.0.0.1:8081/readyz"}, kong.Exit(func(int) {}))
	require.NoError(t, err)
	readmetest.CheckFlags(t, parser, rows, "syncer", func(row readmetest.Row, _ string) bool {
		return strings.Contains(row.UsedBy, "syncer") || row.UsedBy == "both"
	})
}
