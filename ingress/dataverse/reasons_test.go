package dataverse_test

import (
	"os"
	"regexp"
	"slices"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/likeperson/portalsync/ingress/dataverse"
)

// Every reason the intake can give (translate.go, and pkg/dvmap's row
// translation it shares with the reconciler) is in UntranslatableReasons
// (the ingress exports each one's counter from the start), and nothing
// else.
func TestUntranslatableReasonsComplete(t *testing.T) {
	t.Parallel()
	var found []string
	for _, file := range []string{"translate.go", "../../pkg/dvmap/row.go"} {
		src, err := os.ReadFile(file)
		require.NoError(t, err)
		for _, m := range regexp.MustCompile(`(?:untranslatable\(|rowError\(|(?:Untranslatable|Row)Error\{Reason: )"([a-z-]+)"`).FindAllStringSubmatch(string(src), -1) {
			if !slices.Contains(found, m[1]) {
				found = append(found, m[1])
			}
		}
	}
	slices.Sort(found)
	require.Equal(t, found, slices.Sorted(slices.Values(dataverse.UntranslatableReasons)))
}
