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
// docs/CONFIGURATION.md against loadgen's flags: every environment
// variable it reads has a row naming loadgen, and the row's default is the
// flag's.
func TestConfigTableMatchesFlags(t *testing.T) {
	t.Parallel()
	rows := readmetest.ConfigRows(t, filepath.Join("..", "docs", "CONFIGURATION.md"))
	parser, err := kong.New(&cli{}, kong.Exit(func(int) {}))
	require.NoError(t, err)
	readmetest.CheckFlags(t, parser, rows, "loadgen", func(row readmetest.Row, _ string) bool {
		return strings.Contains(row.UsedBy, "loadgen")
	})
}
