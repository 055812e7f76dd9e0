package server

import (
	"net/netip"
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// sourceLimiter is a token bucket per source address. Idle buckets are
// dropped, so a flood of addresses cannot grow it without bound.
type sourceLimiter struct {
	perSecond rate.Limit
	burst     int

	mu        sync.Mutex
	clients   map[netip.Addr]*bucket
	lastSweep time.Time
}

type bucket struct {
	lim  *rate.Limiter
	seen time.Time
}

const (
	limiterIdle     = 3 * time.Minute
	limiterSweep    = time.Minute
	limiterMaxAddrs = 100_000
)

func newSourceLimiter(perSecond float64, burst int) *sourceLimiter {
	return &sourceLimiter{
		perSecond: rate.Limit(perSecond),
		burst:     max(burst, 1),
		clients:   map[netip.Addr]*bucket{},
	}
}

// allow takes one token for addr; when none is left it says how long to
// wait.
func (l *sourceLimiter) allow(addr netip.Addr, now time.Time) (bool, time.Duration) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if now.Sub(l.lastSweep) > limiterSweep || len(l.clients) > limiterMaxAddrs {
		for a, b := range l.clients {
			if now.Sub(b.seen) > limiterIdle {
				delete(l.clients, a)
			}
		}
		l.lastSweep = now
	}
	b, ok := l.clients[addr]
	if !ok {
		b = &bucket{lim: rate.NewLimiter(l.perSecond, l.burst)}
		l.clients[addr] = b
	}
	b.seen = now
	r := b.lim.ReserveN(now, 1)
	if !r.OK() {
		return false, time.Second
	}
	if d := r.DelayFrom(now); d > 0 {
		r.CancelAt(now)
		return false, d
	}
	return true, 0
}
