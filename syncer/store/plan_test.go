package store_test

import (
	"context"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/likeperson/portalsync/schema/schematest"
	"github.com/likeperson/portalsync/syncer/service"
)

// TestPlanCacheModeOnlyForTheLink: the syncer's sessions plan statements
// the default way (no session-wide force_custom_plan), and only the
// account link's function forces custom plans.
func TestPlanCacheModeOnlyForTheLink(t *testing.T) {
	db := schematest.NewDB(t)
	pool, err := service.NewPool(db.URL)
	require.NoError(t, err)
	defer pool.Close()
	ctx := context.Background()
	var mode string
	require.NoError(t, pool.QueryRow(ctx, `SHOW plan_cache_mode`).Scan(&mode))
	require.Equal(t, "auto", mode, "syncer session")
	var cfg []string
	require.NoError(t, pool.QueryRow(ctx, `SELECT coalesce(proconfig, '{}') FROM pg_proc
		WHERE oid = 'portalsync.link_members(text[], text[], text[])'::regprocedure`).Scan(&cfg))
	require.Contains(t, cfg, "plan_cache_mode=force_custom_plan")
}
