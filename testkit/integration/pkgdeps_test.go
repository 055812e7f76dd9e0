package integration_test

import (
	"bytes"
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// pkgDir is the pkg module, from this package's directory.
const pkgDir = "../../pkg"

// heavy are the module paths pkg must not need: the fixtures' servers and
// containers, and testkit itself, which requires them.
var heavy = []string{
	"github.com/nats-io/nats-server/",
	"github.com/testcontainers/",
	"github.com/likeperson/portalsync/testkit",
}

// pkg's go.mod requires no server or container library, not even as an
// indirect requirement, and no package of pkg or of its tests imports
// one: checked on pkg's own module (GOWORK=off), where an import that the
// workspace would resolve through another module fails instead.
func TestPkgNeedsNoServerOrContainer(t *testing.T) {
	t.Parallel()
	mod, err := os.ReadFile(pkgDir + "/go.mod")
	require.NoError(t, err)
	for _, line := range strings.Split(string(mod), "\n") {
		for _, h := range heavy {
			require.NotContains(t, line, h, "pkg/go.mod requires %s: a fixture or a test of pkg that needs it belongs in testkit", h)
		}
	}

	cmd := exec.Command("go", "list", "-deps", "-test", "-f", "{{with .Module}}{{.Path}}{{end}}", "./...")
	cmd.Dir = pkgDir
	cmd.Env = append(os.Environ(), "GOWORK=off")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	require.NoError(t, err, "go list in pkg on its own module: %s", stderr.String())
	for _, m := range strings.Fields(string(out)) {
		for _, h := range heavy {
			require.False(t, strings.HasPrefix(m, h), "a package of pkg or of its tests needs %s (module %s): move it to testkit", h, m)
		}
	}
}
