package dataverse_test

import (
	"os"
	"regexp"
	"slices"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/likeperson/portalsync/ingress/dataverse"
)

// Every reason translate.go can give is in UntranslatableReasons (the
// ingress exports each one's counter from the start), and nothing else.
func TestUntranslatableReasonsComplete(t *testing.T) {
	t.Parallel()
	src, err := os.ReadFile("translate.go")
	require.NoError(t, err)
	var found []string
	for _, m := range regexp.MustCompile(`(?:untranslatable\(|UntranslatableError\{Reason: )"([a-z-]+)"`).FindAllStringSubmatch(string(src), -1) {
		if !slices.Contains(found, m[1]) {
			found = append(found, m[1])
		}
	}
	slices.Sort(found)
	require.Equal(t, found, slices.Sorted(slices.Values(dataverse.UntranslatableReasons)))
}
