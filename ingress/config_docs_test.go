package main

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/alecthomas/kong"
	"github.com/stretchr/testify/require"
)

// TestConfigTableMatchesFlags checks the README's configuration table
// against the ingress's flags: every environment variable a subcommand
// reads has a row naming the ingress (or send), and the row's default is
// the flag's.
func TestConfigTableMatchesFlags(t *testing.T) {
	t.Parallel()
	readme, err := os.ReadFile(filepath.Join("..", "README.md"))
	require.NoError(t, err)
	rows := configRows(t, string(readme))

	parser, err := kong.New(&cli{}, kong.Vars{"readyz": "http://127.0.0.1:8080/readyz"}, kong.Exit(func(int) {}))
	require.NoError(t, err)
	seen := map[string]bool{}
	for _, node := range parser.Model.Children {
		walkFlags(node, func(f *kong.Flag) {
			for _, env := range f.Envs {
				if seen[env] {
					continue
				}
				seen[env] = true
				row, ok := rows[env]
				if !ok {
					t.Errorf("README configuration table has no row for %s (ingress %s --%s)", env, node.Name, f.Name)
					continue
				}
				if !strings.Contains(row.usedBy, "ingress") && row.usedBy != "both" && !strings.Contains(row.usedBy, node.Name) {
					t.Errorf("README row %s: used by %q, but ingress %s reads it", env, row.usedBy, node.Name)
				}
				if f.Default != "" && !strings.Contains(row.defaults, "`"+f.Default+"`") {
					t.Errorf("README row %s: default %q does not name the flag's default %q", env, row.defaults, f.Default)
				}
			}
		})
	}
}

type configRow struct{ usedBy, defaults string }

// configRows reads the rows of the table under "## Configuration", keyed by
// each variable a row names in its first cell.
func configRows(t *testing.T, readme string) map[string]configRow {
	t.Helper()
	_, section, ok := strings.Cut(readme, "\n## Configuration\n")
	require.True(t, ok, "README has a Configuration section")
	section, _, _ = strings.Cut(section, "\n## ")
	name := regexp.MustCompile("`([A-Z_]+)`")
	rows := map[string]configRow{}
	for _, line := range strings.Split(section, "\n") {
		cells := strings.Split(line, "|")
		if len(cells) < 5 || !strings.HasPrefix(line, "| `") {
			continue
		}
		for _, m := range name.FindAllStringSubmatch(cells[1], -1) {
			rows[m[1]] = configRow{usedBy: strings.TrimSpace(cells[2]), defaults: cells[3]}
		}
	}
	require.NotEmpty(t, rows, "README configuration table rows")
	return rows
}

func walkFlags(node *kong.Node, fn func(*kong.Flag)) {
	for _, f := range node.Flags {
		fn(f)
	}
	for _, child := range node.Children {
		walkFlags(child, fn)
	}
}
