// Package readmetest checks the documentation against the code: the
// configuration table of docs/CONFIGURATION.md against a binary's kong
// flags, so that the table stays what the code reads (CheckConfigTable);
// the relative links and anchors of a Markdown document (BrokenLinks); its
// fenced code blocks, for tests that run them (FencedBlocks).
package readmetest

import (
	"os"
	"path/filepath"
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

// configHeader opens the configuration table.
const configHeader = "| variable | used by | default | meaning |"

// ConfigRows reads the rows of the configuration table (the one whose
// header is "| variable | used by | default | meaning |") of the Markdown
// file at path, keyed by each variable a row names in its first cell.
func ConfigRows(t testing.TB, path string) map[string]Row {
	t.Helper()
	doc, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("read %s: %v", path, err)
	}
	_, table, ok := strings.Cut(string(doc), "\n"+configHeader+"\n")
	if !ok {
		t.Fatalf("%s has no configuration table (%s)", path, configHeader)
	}
	name := regexp.MustCompile("`([A-Z_]+)`")
	rows := map[string]Row{}
	for _, line := range strings.Split(table, "\n") {
		if !strings.HasPrefix(line, "|") {
			break
		}
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

// CheckConfigTable holds the configuration table of docs/CONFIGURATION.md
// (../docs from the module directory the test runs in) to the flags of
// grammar, a binary's kong CLI struct, built with options (kong.Vars): every
// environment variable a flag reads has a row whose "used by" cell names the
// binary (or says "both", for the ingress and the syncer), and the row's
// default is the flag's.
func CheckConfigTable(t testing.TB, grammar any, binary string, options ...kong.Option) {
	t.Helper()
	rows := ConfigRows(t, filepath.Join("..", "docs", "CONFIGURATION.md"))
	parser, err := kong.New(grammar, append([]kong.Option{kong.Exit(func(int) {})}, options...)...)
	if err != nil {
		t.Fatalf("kong: %v", err)
	}
	CheckFlags(t, parser, rows, binary, func(row Row, _ string) bool {
		return strings.Contains(row.UsedBy, binary) || row.UsedBy == "both" && (binary == "ingress" || binary == "syncer")
	})
}

// CheckFlags reports, for every environment variable a flag of parser
// reads (of the command itself or of any subcommand, which usedBy is given
// by name; the command's own flags by the binary's name): a missing row, a
// row whose "used by" cell usedBy rejects, or a row whose default cell does
// not name the flag's default.
func CheckFlags(t testing.TB, parser *kong.Kong, rows map[string]Row, binary string, usedBy func(row Row, subcommand string) bool) {
	t.Helper()
	seen := map[string]bool{}
	// The command's own flags, named by the binary, then each subcommand's.
	root := *parser.Model.Node
	root.Name, root.Children = binary, nil
	for _, node := range append([]*kong.Node{&root}, parser.Model.Children...) {
		command := binary
		if node != &root {
			command += " " + node.Name
		}
		walkFlags(node, func(f *kong.Flag) {
			for _, env := range f.Envs {
				if seen[env] {
					continue
				}
				seen[env] = true
				row, ok := rows[env]
				if !ok {
					t.Errorf("the configuration table has no row for %s (%s --%s)", env, command, f.Name)
					continue
				}
				if !usedBy(row, node.Name) {
					t.Errorf("configuration row %s: used by %q, but %s reads it", env, row.UsedBy, command)
				}
				if f.Default != "" && !strings.Contains(row.Defaults, "`"+f.Default+"`") {
					t.Errorf("configuration row %s: default %q does not name the flag's default %q", env, row.Defaults, f.Default)
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
