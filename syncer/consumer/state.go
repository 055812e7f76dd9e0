package consumer

import (
	"context"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap"
)

// heldSet is every event fetched and not yet settled, with when the
// server last heard of it (delivery or in-progress signal).
type heldSet struct {
	mu      sync.Mutex
	msgs    map[jetstream.Msg]time.Time
	freed   chan struct{} // signalled when an event is settled
	metrics *Metrics
}

func newHeldSet(m *Metrics) *heldSet {
	return &heldSet{msgs: map[jetstream.Msg]time.Time{}, freed: make(chan struct{}, 1), metrics: m}
}

func (h *heldSet) add(m jetstream.Msg) {
	h.mu.Lock()
	h.msgs[m] = time.Now()
	n := len(h.msgs)
	h.mu.Unlock()
	h.metrics.held.Set(float64(n))
}

func (h *heldSet) remove(m jetstream.Msg) {
	h.mu.Lock()
	delete(h.msgs, m)
	n := len(h.msgs)
	h.mu.Unlock()
	h.metrics.held.Set(float64(n))
	select {
	case h.freed <- struct{}{}:
	default:
	}
}

func (h *heldSet) len() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.msgs)
}

// stale returns the events the server last heard of before cutoff and
// records that it hears of them now.
func (h *heldSet) stale(cutoff time.Time) []jetstream.Msg {
	h.mu.Lock()
	defer h.mu.Unlock()
	var out []jetstream.Msg
	now := time.Now()
	for m, at := range h.msgs {
		if at.Before(cutoff) {
			out = append(out, m)
			h.msgs[m] = now
		}
	}
	return out
}

// waitFree waits until a quarter of limit() (at least one) is free, or
// nothing is held, and returns how many events may be fetched; 0 when ctx
// ended.
func (h *heldSet) waitFree(ctx context.Context, limit func() int) int {
	for {
		capacity := limit()
		need := max(1, capacity/4)
		held := h.len()
		if free := capacity - held; free >= need || (held == 0 && free > 0) {
			return free
		}
		select {
		case <-ctx.Done():
			return 0
		case <-h.freed:
		}
	}
}

// gate is closed while the database is unavailable: workers and the
// fetch loop wait at it.
type gate struct {
	mu     sync.Mutex
	paused bool
	open   chan struct{} // closed while not paused
}

func newGate() *gate {
	g := &gate{open: make(chan struct{})}
	close(g.open)
	return g
}

// close pauses; it reports whether the gate was open.
func (g *gate) close() bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.paused {
		return false
	}
	g.paused, g.open = true, make(chan struct{})
	return true
}

func (g *gate) reopen() {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.paused {
		g.paused = false
		close(g.open)
	}
}

// wait returns true once the gate is open, false when ctx ends or stop is
// closed first.
func (g *gate) wait(ctx context.Context, stop <-chan struct{}) bool {
	g.mu.Lock()
	ch := g.open
	g.mu.Unlock()
	select {
	case <-ch:
		return true
	default:
	}
	select {
	case <-ch:
		return true
	case <-ctx.Done():
		return false
	case <-stop:
		return false
	}
}

// pauseInfo is one reason the consumer waits.
type pauseInfo struct {
	since time.Time
	err   string
}

// pauses tracks why the consumer waits, and whether it pulls.
type pauses struct {
	mu        sync.Mutex
	consuming bool
	since     map[string]pauseInfo
}

// order lists pause reasons by what an operator should look at first.
var order = []string{ReasonDatabase, ReasonNATS, ReasonConsumer}

func (p *pauses) set(reason string, err error) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if _, ok := p.since[reason]; ok {
		return false
	}
	msg := ""
	if err != nil {
		msg = err.Error()
	}
	p.since[reason] = pauseInfo{since: time.Now(), err: msg}
	return true
}

func (p *pauses) clear(reason string) (time.Duration, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	info, ok := p.since[reason]
	if ok {
		delete(p.since, reason)
	}
	return time.Since(info.since), ok
}

func (p *pauses) setConsuming(b bool) {
	p.mu.Lock()
	p.consuming = b
	p.mu.Unlock()
}

func (p *pauses) state() (consuming bool, reason string, since time.Time, errText string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, r := range order {
		if info, ok := p.since[r]; ok {
			return p.consuming, r, info.since, info.err
		}
	}
	return p.consuming, "", time.Time{}, ""
}

// pauseFor records a pause; the first time it is logged and counted.
func (c *Consumer) pauseFor(reason string, err error) {
	if !c.pause.set(reason, err) {
		return
	}
	c.metrics.setPaused(reason, true)
	c.log.Warn("paused: "+reason+"; held events are kept and applied when it is back, without spending their deliveries",
		zap.Int("held", c.held.len()), zap.Error(err))
	if c.hooks.paused != nil {
		c.hooks.paused(reason)
	}
}

// resumeFrom ends a pause, if there is one.
func (c *Consumer) resumeFrom(reason string) {
	d, ok := c.pause.clear(reason)
	if !ok {
		return
	}
	c.metrics.setPaused(reason, false)
	c.log.Info("resumed: "+reason+" no more", zap.Duration("paused_for", d.Round(time.Millisecond)), zap.Int("held", c.held.len()))
	if c.hooks.resumed != nil {
		c.hooks.resumed(reason)
	}
}

// pauseDB closes the database gate and, the first time, starts probing
// the database until it answers.
func (c *Consumer) pauseDB(err error) {
	c.pauseFor(ReasonDatabase, err)
	if !c.db.close() {
		return
	}
	c.bg.Add(1)
	go func() {
		defer c.bg.Done()
		probe := c.newProbe()
		for probe.sleep(c.bgCtx) {
			pctx, cancel := context.WithTimeout(c.bgCtx, 2*time.Second)
			err := c.applier.Ping(pctx)
			cancel()
			if err == nil {
				c.resumeFrom(ReasonDatabase)
				c.db.reopen()
				return
			}
			c.log.Debug("database still unavailable", zap.Error(err))
		}
	}()
}

// probe waits between attempts: 100 ms, doubling up to ProbeMax.
type probe struct {
	next, max time.Duration
}

func (c *Consumer) newProbe() *probe {
	return &probe{next: 100 * time.Millisecond, max: c.cfg.ProbeMax}
}

func (p *probe) reset() { p.next = 100 * time.Millisecond }

// sleep waits the next interval; false when ctx ended first.
func (p *probe) sleep(ctx context.Context) bool {
	t := time.NewTimer(p.next)
	defer t.Stop()
	p.next = min(2*p.next, p.max)
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// rate is an exponentially weighted mean of one busy worker's apply rate,
// in events per second.
type rate struct {
	mu sync.Mutex
	v  float64
}

func (r *rate) observe(events int, took time.Duration) {
	if took <= 0 {
		return
	}
	v := float64(events) / took.Seconds()
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.v == 0 {
		r.v = v
		return
	}
	r.v = 0.8*r.v + 0.2*v
}

func (r *rate) get() float64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.v
}
