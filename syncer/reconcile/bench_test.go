package reconcile_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/likeperson/portalsync/syncer/reconcile"
)

// BenchmarkFullRead100kRows measures a first (full) pass over a fake portal
// of 100,000 rows: 50,000 contacts and 50,000 memberships, pages of 5,000
// (Dataverse's largest), every row published to an embedded JetStream
// (file storage) with a window of 512 unacknowledged publishes, then the
// comparison with an empty app database. The fake Web API, NATS and the
// reconciler share the process and its cores. Run it with
// `make bench-reconcile` (one iteration, -benchtime=1x).
func BenchmarkFullRead100kRows(b *testing.B) {
	const members = 50_000
	for range b.N {
		b.StopTimer()
		bd := setup(b, func(c *reconcile.Config) { c.PageSize = 5000 })
		for i := range members {
			bd.putContact(i, t0, fmt.Sprintf("F%d", i))
			bd.putMembership(i, t0, 100000000, 0)
		}
		b.StartTimer()
		start := time.Now()
		rep, err := bd.rec.Once(context.Background(), reconcile.Options{})
		elapsed := time.Since(start)
		require.NoError(b, err)
		require.Equal(b, 2*members, rep.Rows["member"]+rep.Rows["membership"])
		require.Equal(b, 2*members, rep.Published)
		b.ReportMetric(float64(2*members)/elapsed.Seconds(), "rows/s")
	}
}
