package e2e

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/likeperson/portalsync/testkit/readmetest"
)

// readmeMaxLines keeps the README a front door: what it is, the diagram,
// the two commands, a short tour, the contract in brief and links; the
// rest lives in docs/.
const readmeMaxLines = 200

func TestReadmeIsAFrontDoor(t *testing.T) {
	t.Parallel()
	readme, err := os.ReadFile("../README.md")
	require.NoError(t, err)
	lines := strings.Count(strings.TrimRight(string(readme), "\n"), "\n") + 1
	require.LessOrEqual(t, lines, readmeMaxLines, "README.md has %d lines: move detail to docs/", lines)
}

// Every relative link of the README, of docs/ and of schema/current's
// README leads to a file that exists, and its #anchor to a heading there.
func TestDocsLinksResolve(t *testing.T) {
	t.Parallel()
	docs, err := filepath.Glob(filepath.Join("..", "docs", "*.md"))
	require.NoError(t, err)
	require.NotEmpty(t, docs)
	files := append([]string{filepath.Join("..", "README.md"), filepath.Join("..", "schema", "current", "README.md")}, docs...)
	for _, f := range files {
		broken, err := readmetest.BrokenLinks(f)
		require.NoError(t, err)
		require.Empty(t, broken, "broken links in %s", f)
	}
}

// TestPortalToAppTableNamesRealTests: every row of docs/DATAVERSE.md's "from the
// portal to the app" table names at least one test, and every test it
// names exists in the repository.
func TestPortalToAppTableNamesRealTests(t *testing.T) {
	t.Parallel()
	doc, err := os.ReadFile("../docs/DATAVERSE.md")
	require.NoError(t, err)
	_, section, ok := strings.Cut(string(doc), "## From the portal to the app\n")
	require.True(t, ok, "docs/DATAVERSE.md has the section")
	section, _, _ = strings.Cut(section, "\n## ")
	name := regexp.MustCompile("`[a-z0-9]+\\.(Test[A-Za-z0-9_]+)`")
	rows := 0
	for _, line := range strings.Split(section, "\n") {
		if !strings.HasPrefix(line, "| ") || strings.HasPrefix(line, "| from the portal") {
			continue
		}
		rows++
		cells := strings.Split(strings.Trim(line, "| "), " | ")
		tests := name.FindAllStringSubmatch(cells[len(cells)-1], -1)
		require.NotEmpty(t, tests, "row without a test: %s", line)
		for _, m := range tests {
			out, err := exec.Command("grep", "-rlE", "--include=*_test.go", "^func "+m[1]+`\(`, "..").CombinedOutput()
			require.NoError(t, err, "test %s named in docs/DATAVERSE.md does not exist: %s", m[1], out)
		}
	}
	require.GreaterOrEqual(t, rows, 15)
}
