package schema_test

import (
	"context"
	"errors"
	"strconv"
	"testing"

	"github.com/pressly/goose/v3"
	"github.com/stretchr/testify/require"

	"github.com/likeperson/portalsync/schema"
	"github.com/likeperson/portalsync/testkit/schematest"
)

// The newest migrations roll back and apply again: a release that must be
// withdrawn can be, back to 00020 (before the lean sync, issue 14), one
// migration at a time. Each step back leaves the schema that the
// migrations before it build (functions, their settings and grants,
// indexes, constraints, triggers, collations, storage options), comments
// in function bodies aside.
func TestNewestMigrationsRollBack(t *testing.T) {
	t.Parallel()
	ctx := context.Background()

	// The reference: the auth bootstrap, then 00001-00020, then one
	// migration at a time, its catalog recorded after each.
	ref, refP := stepwise(t)
	_, err := refP.UpTo(ctx, 20)
	require.NoError(t, err)
	versions := []int64{20}
	want := map[int64]map[string]string{20: schematest.Catalog(t, ref)}
	for {
		r, err := refP.UpByOne(ctx)
		if errors.Is(err, goose.ErrNoNextVersion) {
			break
		}
		require.NoError(t, err)
		v := r.Source.Version
		versions = append(versions, v)
		want[v] = schematest.Catalog(t, ref)
	}

	db := emptyDB(t)
	res, err := schema.Migrate(ctx, db)
	require.NoError(t, err)
	require.Equal(t, versions[len(versions)-1], res.Version)
	p := provider(t, db)
	for i := len(versions) - 2; i >= 0; i-- {
		r, err := p.Down(ctx)
		require.NoError(t, err)
		v, err := p.GetDBVersion(ctx)
		require.NoError(t, err)
		require.Equal(t, versions[i], v)
		schematest.RequireSameCatalog(t, want[v], schematest.Catalog(t, db), "the migrations up to "+strconv.FormatInt(v, 10), "the rollback of "+r.Source.Path)
	}

	_, err = p.Up(ctx)
	require.NoError(t, err)
	v, err := p.GetDBVersion(ctx)
	require.NoError(t, err)
	require.Equal(t, res.Version, v)
}
