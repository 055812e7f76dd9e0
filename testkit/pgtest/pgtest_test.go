package pgtest

import (
	"context"
	"fmt"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"
)

// A template dropped behind this process's back (a test run of another
// schema version on the same server drops templates it takes for older) is
// built again instead of failing every later test.
func TestNewRebuildsATemplateDroppedMeanwhile(t *testing.T) {
	ctx := context.Background()
	builds := 0
	tpl := Template{Name: "pgtest_selftest_" + randomHex(4), Fingerprint: "v1", Setup: func(ctx context.Context, url string) error {
		builds++
		conn, err := pgx.Connect(ctx, url)
		if err != nil {
			return err
		}
		defer conn.Close(ctx)
		_, err = conn.Exec(ctx, "CREATE TABLE marker (id int)")
		return err
	}}
	first := New(t, tpl)
	admin := adminURL(t)
	drop := func() {
		conn, err := pgx.Connect(ctx, admin)
		require.NoError(t, err)
		defer conn.Close(ctx)
		_, err = conn.Exec(ctx, fmt.Sprintf("DROP DATABASE IF EXISTS %s WITH (FORCE)", pgx.Identifier{templateName(tpl)}.Sanitize()))
		require.NoError(t, err)
	}
	t.Cleanup(drop)
	require.NotEmpty(t, first.Name)

	drop()
	second := New(t, tpl)
	var n int
	require.NoError(t, second.Pool.QueryRow(ctx, "SELECT count(*) FROM marker").Scan(&n))
	require.Equal(t, 2, builds)
}
