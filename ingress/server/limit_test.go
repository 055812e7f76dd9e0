package server

import (
	"net/netip"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestSourceLimiter(t *testing.T) {
	t.Parallel()
	l := newSourceLimiter(2, 3)
	now := time.Unix(1_800_000_000, 0)
	a, b := netip.MustParseAddr("203.0.113.1"), netip.MustParseAddr("203.0.113.2")
	for range 3 {
		ok, _ := l.allow(a, now)
		require.True(t, ok)
	}
	ok, wait := l.allow(a, now)
	require.False(t, ok)
	require.InDelta(t, 500*time.Millisecond, wait, float64(time.Millisecond))
	ok, _ = l.allow(b, now) // another source has its own bucket
	require.True(t, ok)
	ok, _ = l.allow(a, now.Add(500*time.Millisecond)) // refilled
	require.True(t, ok)

	// Idle sources are forgotten.
	l.allow(netip.MustParseAddr("203.0.113.3"), now)
	l.allow(a, now.Add(5*time.Minute))
	require.Len(t, l.clients, 1)
}
