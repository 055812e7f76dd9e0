package e2e

import (
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"regexp"
	"strconv"
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

// TestDocsNameRealTests: every test or benchmark the README or docs/ cite
// as `pkg.TestName` (pkg: the last element of its directory or its
// package's name; a path such as e2e/alerts names the directory) is a
// function of a _test.go file of that package, and a cited subtest
// (`pkg.TestName/Sub`) is named in that package's tests. A test renamed
// or moved without the docs following fails it.
func TestDocsNameRealTests(t *testing.T) {
	t.Parallel()
	// Where each test function is: directory (relative to the repository)
	// and package name, without _test.
	type place struct{ dir, pkg, src string }
	funcs := map[string][]place{}
	fn := regexp.MustCompile(`(?m)^func ((?:Test|Benchmark)[A-Za-z0-9_]+)\(`)
	pkgClause := regexp.MustCompile(`(?m)^package ([a-z0-9_]+)`)
	err := filepath.WalkDir("..", func(file string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && file != ".." && (strings.HasPrefix(d.Name(), ".") || d.Name() == "node_modules") {
			return filepath.SkipDir
		}
		if d.IsDir() || !strings.HasSuffix(file, "_test.go") {
			return nil
		}
		src, err := os.ReadFile(file)
		if err != nil {
			return err
		}
		pkg := pkgClause.FindSubmatch(src)
		require.NotNil(t, pkg, "%s has no package clause", file)
		dir, err := filepath.Rel("..", filepath.Dir(file))
		require.NoError(t, err)
		for _, m := range fn.FindAllSubmatch(src, -1) {
			funcs[string(m[1])] = append(funcs[string(m[1])], place{filepath.ToSlash(dir), strings.TrimSuffix(string(pkg[1]), "_test"), string(src)})
		}
		return nil
	})
	require.NoError(t, err)
	require.NotEmpty(t, funcs)

	docs, err := filepath.Glob(filepath.Join("..", "docs", "*.md"))
	require.NoError(t, err)
	cited := regexp.MustCompile("`([a-z0-9/]+)\\.((?:Test|Benchmark)[A-Za-z0-9_]+)(?:/([A-Za-z0-9_]+))?`")
	n := 0
	for _, f := range append([]string{filepath.Join("..", "README.md")}, docs...) {
		doc, err := os.ReadFile(f)
		require.NoError(t, err)
		for _, m := range cited.FindAllStringSubmatch(string(doc), -1) {
			n++
			qual, name, sub := m[1], m[2], m[3]
			found, where := false, []string{}
			for _, p := range funcs[name] {
				where = append(where, p.dir)
				if p.pkg == qual || path.Base(p.dir) == qual || strings.HasSuffix("/"+p.dir, "/"+qual) {
					found = sub == "" || strings.Contains(p.src, strconv.Quote(sub))
					if found {
						break
					}
				}
			}
			require.True(t, found, "%s cites %s: no such test in package %s (found in %v)", f, m[0], qual, where)
		}
	}
	require.Greater(t, n, 50, "citations read")
}
