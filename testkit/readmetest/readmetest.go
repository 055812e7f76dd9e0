// Package readmetest checks the README's configuration table against a
// binary's kong flags, so that the table stays what the code reads.
package readmetest

import (
	"os"
	"regexp"
	"strings"
	"testing"

	"github.com/alecthomas/kong"
)

// Row is one variable's row of the configuration table.
type Row struct {
	// UsedBy is the "used by" cell, e.g. "ingress" or "syncer reconcile".
	UsedBy string
	// Defaults is the default cell as written (defaults in backquotes).
	Defaults string
}

// ConfigRows reads the rows of the table under "## Configuration" of the
// README at path, keyed by each variable a row names in its first cell.
func ConfigRows(t testing.TB, path string) map[string]Row {
	t.Helper()
	readme, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("read README: %v", err)
	}
	_, section, ok := strings.Cut(string(readme), "\n## Configuration\n")
	if !ok {
		t.Fatalf("%s has no Configuration section", path)
	}
	section, _, _ = strings.Cut(section, "\n## ")
	name := regexp.MustCompile("`([A-Z_]+)`")
	rows := map[string]Row{}
	for _, line := range strings.Split(section, "\n") {
		cells := strings.Split(line, "|")
		if len(cells) < 5 || !strings.HasPrefix(line, "| `") {
			continue
		}
		for _, m := range name.FindAllStringSubmatch(cells[1], -1) {
			rows[m[1]] = Row{UsedBy: strings.TrimSpace(cells[2]), Defaults: cells[3]}
		}
	}
	if len(rows) == 0 {
		t.Fatalf("%s: no configuration table rows", path)
	}
	return rows
}

// CheckFlags reports, for every environment variable a flag of any
// subcommand of parser reads: a missing row, a row whose "used by" cell
// usedBy rejects, or a row whose default cell does not name the flag's
// default.
func CheckFlags(t testing.TB, parser *kong.Kong, rows map[string]Row, binary string, usedBy func(row Row, subcommand string) bool) {
	t.Helper()
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
					t.Errorf("README configuration table has no row for %s (%s %s --%s)", env, binary, node.Name, f.Name)
					continue
				}
				if !usedBy(row, node.Name) {
					t.Errorf("README row %s: used by %q, but %s %s reads it", env, row.UsedBy, binary, node.Name)
				}
				if f.Default != "" && !strings.Contains(row.Defaults, "`"+f.Default+"`") {
					t.Errorf("README row %s: default %q does not name the flag's default %q", env, row.Defaults, f.Default)
				}
			}
		})
	}
}

func walkFlags(node *kong.Node, fn func(*kong.Flag)) {
	for _, f := range node.Flags {
		fn(f)
	}
	for _, child := range node.Children {
		walkFlags(child, fn)
	}
}
