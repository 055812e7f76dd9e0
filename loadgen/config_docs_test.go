package main

import (
	"testing"

	"github.com/likeperson/portalsync/testkit/readmetest"
)

// TestConfigTableMatchesFlags checks the configuration table of
// docs/CONFIGURATION.md against loadgen's flags
// (readmetest.CheckConfigTable).
func TestConfigTableMatchesFlags(t *testing.T) {
	t.Parallel()
	readmetest.CheckConfigTable(t, &cli{}, "loadgen")
}
