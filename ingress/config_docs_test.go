package main

import (
	"testing"

	"github.com/alecthomas/kong"

	"github.com/likeperson/portalsync/testkit/readmetest"
)

// TestConfigTableMatchesFlags checks the configuration table of
// docs/CONFIGURATION.md against the ingress's flags
// (readmetest.CheckConfigTable).
func TestConfigTableMatchesFlags(t *testing.T) {
	t.Parallel()
	readmetest.CheckConfigTable(t, &cli{}, "ingress", kong.Vars{"readyz": "http://127.0.0.1:9080/readyz"})
}
