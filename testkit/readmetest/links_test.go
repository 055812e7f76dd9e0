package readmetest

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestSlug(t *testing.T) {
	t.Parallel()
	for text, want := range map[string]string{
		"Replay (resync)": "replay-resync",
		"Durability: every write on disk before 2xx":    "durability-every-write-on-disk-before-2xx",
		"Soak (`make soak`)":                            "soak-make-soak",
		"What happens when …":                           "what-happens-when-",
		"The app's contract (issue 21)":                 "the-apps-contract-issue-21",
		"Listeners, drain, rate limit":                  "listeners-drain-rate-limit",
		"See [ACCESS.md](ACCESS.md) first":              "see-accessmd-first",
		"Schema_current and Ærø":                        "schema_current-and-ærø",
		"Min Side as it is: Dynamics 365 (Dataverse) ✓": "min-side-as-it-is-dynamics-365-dataverse-",
	} {
		require.Equal(t, want, Slug(text), text)
	}
}

func TestBrokenLinks(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	write := func(name, text string) string {
		t.Helper()
		path := filepath.Join(dir, name)
		require.NoError(t, os.MkdirAll(filepath.Dir(path), 0o755))
		require.NoError(t, os.WriteFile(path, []byte(text), 0o644))
		return path
	}
	write("docs/OTHER.md", "# Other\n\n## Replay (resync)\n\n## Twice\n\n## Twice\n\n```\n# not a heading\n```\n")
	write("docs/pic.png", "png")
	readme := write("README.md", "# Read me\n\n## Here\n\n"+
		"[ok](docs/OTHER.md) ![pic](docs/pic.png) [dir](docs) [anchor](docs/OTHER.md#replay-resync)\n"+
		"[second](docs/OTHER.md#twice-1) [self](#here) [web](https://example.org/x#y)\n"+
		"`[in code](docs/MISSING.md)`\n\n```\n[in a block](docs/MISSING.md)\n```\n"+
		"[gone](docs/GONE.md)\n"+
		"[bad anchor](docs/OTHER.md#replay)\n"+
		"[code heading](docs/OTHER.md#not-a-heading)\n"+
		"[self bad](#there) [png anchor](docs/pic.png#x)\n")
	broken, err := BrokenLinks(readme)
	require.NoError(t, err)
	require.Equal(t, []string{
		readme + ":12: docs/GONE.md: no such file",
		readme + ":13: docs/OTHER.md#replay: no heading has this anchor",
		readme + ":14: docs/OTHER.md#not-a-heading: no heading has this anchor",
		readme + ":15: #there: no heading has this anchor",
		readme + ":15: docs/pic.png#x: an anchor in a file that is not Markdown",
	}, broken)
}
