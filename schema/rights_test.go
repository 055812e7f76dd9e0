package schema

import (
	"errors"
	"testing"

	"github.com/stretchr/testify/require"
)

// The statements an administrator is told to run are exact SQL: the role
// quoted as an identifier, and nothing appended to a statement that does
// not name it (CREATE ROLE portalsync_syncer).
func TestMissingRightsNamesExactStatements(t *testing.T) {
	t.Parallel()
	none := make([]bool, len(authGrants))
	err := missingRights(`mig"rator`, none)
	var e *AuthRightsError
	require.True(t, errors.As(err, &e))
	q := `"mig""rator"`
	require.Equal(t, []string{
		"GRANT SELECT ON auth.users TO " + q + ";",
		"GRANT UPDATE ON auth.users TO " + q + ";",
		"GRANT TRIGGER ON auth.users TO " + q + ";",
		"GRANT REFERENCES ON auth.users TO " + q + ";",
		"GRANT SELECT ON auth.sessions TO " + q + ";",
		"GRANT DELETE ON auth.sessions TO " + q + ";",
	}, e.Statements)
	require.Equal(t, []string{
		"GRANT USAGE ON SCHEMA auth TO " + q + ";",
		"ALTER ROLE " + q + " BYPASSRLS;",
		"CREATE ROLE portalsync_syncer NOLOGIN;",
	}, e.Superuser)

	all := make([]bool, len(authGrants))
	for i := range all {
		all[i] = true
	}
	require.NoError(t, missingRights("postgres", all))
}
