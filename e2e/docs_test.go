package e2e

import (
	"os"
	"os/exec"
	"regexp"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

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
