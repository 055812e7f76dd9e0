package server

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// TestBatchPays: groups are batches until both ways are measured, then
// while a batch and its wait take less than a single publish; the way not
// taken is tried again after explore.
func TestBatchPays(t *testing.T) {
	t.Parallel()
	const wait = time.Millisecond
	now := time.Unix(1000, 0)
	for _, tc := range []struct {
		name          string
		single, batch time.Duration
		singleAgo     time.Duration // since the last single publish
		batchAgo      time.Duration // since the last batch tried
		want          bool
	}{
		{name: "NothingMeasured", want: true},
		{name: "NoBatchYet", single: 10 * time.Millisecond, want: true},
		{name: "BatchFaster", single: 20 * time.Millisecond, batch: 5 * time.Millisecond, want: true},
		{name: "BatchFasterButNotWithItsWait", single: 5500 * time.Microsecond, batch: 5 * time.Millisecond, want: false},
		{name: "BatchSlower", single: time.Millisecond, batch: 5 * time.Millisecond, want: false},
		{name: "BatchSlowerTriedLongAgo", single: time.Millisecond, batch: 5 * time.Millisecond, batchAgo: 2 * explore, want: true},
		{name: "BatchFasterSinglesUnmeasuredLong", single: 20 * time.Millisecond, batch: 5 * time.Millisecond, singleAgo: 2 * explore, want: false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			l := &latencies{singleAvg: tc.single, batchAvg: tc.batch, singleSeen: now.Add(-tc.singleAgo), batchTried: now.Add(-tc.batchAgo)}
			require.Equal(t, tc.want, l.batchPays(wait, now, false))
			require.Equal(t, tc.want, l.batchPays(wait, now, true))
			if tc.singleAgo > explore || tc.batchAgo > explore {
				// Taken once, the exploration waits for its next turn.
				require.Equal(t, !tc.want, l.batchPays(wait, now, true))
			}
		})
	}
}

func TestEWMA(t *testing.T) {
	t.Parallel()
	require.Equal(t, 8*time.Millisecond, ewma(0, 8*time.Millisecond))
	require.Equal(t, 9*time.Millisecond, ewma(8*time.Millisecond, 16*time.Millisecond))
}
