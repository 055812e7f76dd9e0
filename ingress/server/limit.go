package server

import (
	"net/netip"
	"sync"
	"time"

	"github.com/hashicorp/golang-lru/v2/simplelru"
	"golang.org/x/time/rate"
)

// sourceLimiter is a token bucket per source, kept in a least-recently-used
// table of at most maxSources entries. Every request costs one map lookup
// and one list move, whatever the number of sources: there is no sweep. A
// flood of new sources evicts the buckets used least recently, so a sender
// that keeps sending keeps its bucket; an evicted source starts again with
// a full bucket, which only ever makes the limit looser, never a stranger's
// problem.
type sourceLimiter struct {
	perSecond rate.Limit
	burst     int

	mu      sync.Mutex
	buckets *simplelru.LRU[netip.Addr, *rate.Limiter]
}

func newSourceLimiter(perSecond float64, burst, maxSources int) *sourceLimiter {
	buckets, err := simplelru.NewLRU[netip.Addr, *rate.Limiter](max(maxSources, 1), nil)
	if err != nil {
		panic(err) // the size is positive
	}
	return &sourceLimiter{perSecond: rate.Limit(perSecond), burst: max(burst, 1), buckets: buckets}
}

// sourceKey is the bucket a source address counts against: an IPv4
// address (IPv4-mapped IPv6 unmapped) on its own, an IPv6 address by its
// /64, the smallest network a site is given, so that one host cannot get a
// fresh bucket per address.
func sourceKey(addr netip.Addr) netip.Addr {
	addr = addr.Unmap().WithZone("")
	if addr.Is6() {
		p, _ := addr.Prefix(64)
		return p.Addr()
	}
	return addr
}

// allow takes one token for addr's source; when none is left it says how
// long to wait.
func (l *sourceLimiter) allow(addr netip.Addr, now time.Time) (bool, time.Duration) {
	key := sourceKey(addr)
	l.mu.Lock()
	lim, ok := l.buckets.Get(key)
	if !ok {
		lim = rate.NewLimiter(l.perSecond, l.burst)
		l.buckets.Add(key, lim)
	}
	l.mu.Unlock()
	r := lim.ReserveN(now, 1)
	if !r.OK() {
		return false, time.Second
	}
	if d := r.DelayFrom(now); d > 0 {
		r.CancelAt(now)
		return false, d
	}
	return true, 0
}

// len is the number of sources tracked.
func (l *sourceLimiter) len() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buckets.Len()
}
