package schematest

import (
	"context"
	"encoding/json"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"
)

// Become makes the rest of tx run the way PostgREST runs an API request:
// as role, with claims (a JWT payload as JSON) in request.jwt.claims; with
// nil claims none are set, as for a request without a token.
func Become(t testing.TB, tx pgx.Tx, role string, claims []byte) {
	t.Helper()
	ctx := context.Background()
	if claims != nil {
		_, err := tx.Exec(ctx, `SELECT set_config('request.jwt.claims', $1, true)`, string(claims))
		require.NoError(t, err)
	}
	_, err := tx.Exec(ctx, "SET LOCAL ROLE "+pgx.Identifier{role}.Sanitize())
	require.NoError(t, err)
}

// UserClaims is the JWT payload of user (an auth.users id) with role.
func UserClaims(t testing.TB, user, role string) []byte {
	t.Helper()
	b, err := json.Marshal(map[string]any{"sub": user, "role": role})
	require.NoError(t, err)
	return b
}

// Beginner opens transactions: a pool or a connection.
type Beginner interface {
	Begin(ctx context.Context) (pgx.Tx, error)
}

// AsAuthenticated runs fn the way Supabase runs an API request of user:
// as the role authenticated with the user's claims, in a transaction on
// db rolled back afterwards.
func AsAuthenticated(t testing.TB, db Beginner, user string, fn func(tx pgx.Tx)) {
	t.Helper()
	ctx := context.Background()
	tx, err := db.Begin(ctx)
	require.NoError(t, err)
	defer func() { require.NoError(t, tx.Rollback(ctx)) }()
	Become(t, tx, "authenticated", UserClaims(t, user, "authenticated"))
	fn(tx)
}
