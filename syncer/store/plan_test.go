package store_test

import (
	"context"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/likeperson/portalsync/syncer/service"
	"github.com/likeperson/portalsync/testkit/schematest"
)

// TestNoForcedCustomPlans: the syncer's sessions plan statements the
// default way (no session-wide force_custom_plan), and none of the
// project's functions forces custom plans either; the account functions
// read by key with sequential scans off instead (migration 00021), which a
// body replaced by a later migration would silently drop.
func TestNoForcedCustomPlans(t *testing.T) {
	db := schematest.NewDB(t)
	pool, err := service.NewPool(db.URL)
	require.NoError(t, err)
	defer pool.Close()
	ctx := context.Background()
	var mode string
	require.NoError(t, pool.QueryRow(ctx, `SHOW plan_cache_mode`).Scan(&mode))
	require.Equal(t, "auto", mode, "syncer session")
	var forced []string
	require.NoError(t, pool.QueryRow(ctx, `SELECT coalesce(array_agg(p.oid::regprocedure::text), '{}') FROM pg_proc p
		WHERE p.pronamespace IN ('portalsync'::regnamespace, 'public'::regnamespace)
		  AND EXISTS (SELECT 1 FROM unnest(p.proconfig) c WHERE c LIKE 'plan_cache_mode=%')`).Scan(&forced))
	require.Empty(t, forced)
	for _, fn := range []string{"portalsync.link_members(text[], text[], text[])", "portalsync.apply_access(text[])"} {
		var cfg []string
		require.NoError(t, pool.QueryRow(ctx, `SELECT coalesce(proconfig, '{}') FROM pg_proc WHERE oid = $1::regprocedure`, fn).Scan(&cfg))
		require.Contains(t, cfg, "enable_seqscan=off", fn)
	}
}
