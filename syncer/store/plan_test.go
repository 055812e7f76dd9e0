package store_test

import (
	"context"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/likeperson/portalsync/schema/schematest"
	"github.com/likeperson/portalsync/syncer/service"
)

// TestNoForcedCustomPlans: the syncer's sessions plan statements the
// default way (no session-wide force_custom_plan), and none of the
// project's functions forces custom plans either: their statements read
// by key (docs/BENCHMARKS.md).
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
}
