package server

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/synadia-io/orbit.go/jetstreamext"
	"go.uber.org/zap"

	"github.com/likeperson/portalsync/pkg/stream"
	"github.com/likeperson/portalsync/pkg/wait"
)

// pool spreads publishes over several NATS connections, so that many
// concurrent requests are not serialized on one connection's socket and
// read loop. Each publish still waits for its own acknowledgement.
//
// While a connection is down its publishes fail at once (the webhook is
// answered 503 without waiting for the publish timeout), and publishes
// waiting for an acknowledgement when it is lost fail then: the
// acknowledgement of a lost connection never arrives.
type pool struct {
	conns []*nats.Conn
	js    []jetstream.JetStream
	live  []*liveness
	next  atomic.Uint64
	// flow is how a batch is sent: its commit waits PublishTimeout.
	flow jetstreamext.BatchFlowControl
	// watchers follow the connections' status; joined by close.
	watchers sync.WaitGroup
}

var (
	_ Publisher   = (*pool)(nil)
	_ batchSender = (*pool)(nil)
)

// Errors of a publish on a connection that is down.
var (
	errNotConnected   = errors.New("not connected to NATS")
	errConnectionLost = errors.New("connection to NATS lost while waiting for the acknowledgement")
)

// The ingress's NATS keep-alive (see openPool).
const (
	natsPingInterval = 5 * time.Second
	natsMaxPingsOut  = 2
)

// openPool dials n connections (n >= 1) without waiting for a server:
// while NATS is down they keep trying in the background, publishes fail
// (the webhook is answered 503) and readiness says why.
func openPool(cfg Config, n int, log *zap.Logger) (*pool, error) {
	p := &pool{flow: jetstreamext.BatchFlowControl{AckFirst: batchAckFirst, AckTimeout: cfg.PublishTimeout}}
	for i := range max(n, 1) {
		// No reconnect buffer: a publish made while disconnected fails at
		// once instead of being sent after the reconnection, long after its
		// sender was answered 503 (the sender's retry is deduplicated
		// either way). Pings every 5 s, two unanswered mean down: a server
		// that hangs or a host that loses power without closing the
		// connection is then known down within about 15 s, not the
		// client's default of minutes, and webhooks are answered 503 at
		// once instead of after the whole publish timeout.
		nc, js, err := stream.Dial(cfg.NATSURL, fmt.Sprintf("portalsync-ingress-%d", i), log, nats.ReconnectBufSize(-1),
			nats.PingInterval(natsPingInterval), nats.MaxPingsOutstanding(natsMaxPingsOut))
		if err != nil {
			p.close()
			return nil, err
		}
		l := newLiveness(nc)
		p.conns, p.js, p.live = append(p.conns, nc), append(p.js, js), append(p.live, l)
		p.watchers.Add(1)
		go func() { defer p.watchers.Done(); l.follow() }()
	}
	return p, nil
}

// ensureStream waits for NATS and creates or updates the stream, until it
// succeeds or ctx ends.
func (p *pool) ensureStream(ctx context.Context, cfg Config, log *zap.Logger) error {
	return wait.Until(ctx, "NATS", log, func(ctx context.Context) error {
		if err := stream.Connected(p.conns[0]); err != nil {
			if errors.Is(err, stream.ErrServerTooOld) {
				return wait.Permanent(err)
			}
			return err
		}
		sctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		_, err := stream.Ensure(sctx, p.js[0], cfg.Stream)
		return err
	})
}

// PublishMsg publishes on the next connection in turn.
func (p *pool) PublishMsg(ctx context.Context, msg *nats.Msg, opts ...jetstream.PublishOpt) (*jetstream.PubAck, error) {
	i := p.pick()
	ctx, done, err := p.live[i].bind(ctx)
	if err != nil {
		return nil, err
	}
	defer done()
	ack, err := p.js[i].PublishMsg(ctx, msg, opts...)
	return ack, lostOr(ctx, err)
}

// batchAckFirst is off: a batch's messages are sent without waiting for
// any but the commit's acknowledgement (the server acknowledges or refuses
// the batch as a whole, and a batch it cannot take is not stored at all);
// AckFirst would add a round trip to every batch. Only the benchmark that
// compares the two turns it on (export_test.go).
var batchAckFirst = false

// PublishMsgBatch publishes msgs as one atomic batch on the next
// connection in turn.
func (p *pool) PublishMsgBatch(ctx context.Context, msgs []*nats.Msg) (*jetstreamext.BatchAck, error) {
	i := p.pick()
	ctx, done, err := p.live[i].bind(ctx)
	if err != nil {
		return nil, err
	}
	defer done()
	// A reconnection may land on an older server of a cluster.
	if err := stream.CheckServerVersion(p.conns[i].ConnectedServerVersion()); err != nil {
		return nil, fmt.Errorf("%w: %w", errAtomicUnsupported, err)
	}
	ack, err := jetstreamext.PublishMsgBatch(ctx, p.js[i], msgs, p.flow)
	return ack, lostOr(ctx, err)
}

func (p *pool) pick() int { return int(p.next.Add(1) % uint64(len(p.js))) }

// lostOr returns errConnectionLost when ctx ended because the connection
// was lost, else err.
func lostOr(ctx context.Context, err error) error {
	if err != nil && errors.Is(context.Cause(ctx), errConnectionLost) {
		return fmt.Errorf("%w (%w)", errConnectionLost, err)
	}
	return err
}

// errAtomicUnsupported: the server is older than stream.MinServerVersion,
// the first to store atomic batches whose messages carry Nats-Msg-Id.
var errAtomicUnsupported = errors.New("atomic batch publish with message ids not supported")

// liveness follows one connection's status so that publishes waiting on
// it end as soon as it is lost.
type liveness struct {
	nc     *nats.Conn
	status chan nats.Status
	// cur is the connected period a publish binds to; its context is
	// cancelled when the connection is lost, and a fresh one made once it
	// is back.
	cur atomic.Pointer[period]
}

type period struct {
	ctx    context.Context
	cancel context.CancelFunc
}

func newPeriod() *period {
	ctx, cancel := context.WithCancel(context.Background())
	return &period{ctx: ctx, cancel: cancel}
}

func newLiveness(nc *nats.Conn) *liveness {
	l := &liveness{nc: nc, status: nc.StatusChanged(nats.CONNECTED, nats.RECONNECTING, nats.DISCONNECTED, nats.CLOSED)}
	l.cur.Store(newPeriod())
	return l
}

// follow runs until stop: a lost connection ends its period.
func (l *liveness) follow() {
	for st := range l.status {
		if st == nats.CONNECTED {
			l.current()
		} else {
			l.cur.Load().cancel()
		}
	}
}

// stop ends follow.
func (l *liveness) stop() { l.nc.RemoveStatusListener(l.status) }

// current returns the connection's period, a fresh one when the last
// ended and the connection is back (whichever of follow and a publish
// sees that first).
func (l *liveness) current() *period {
	p := l.cur.Load()
	if p.ctx.Err() != nil && l.nc.IsConnected() {
		if fresh := newPeriod(); l.cur.CompareAndSwap(p, fresh) {
			return fresh
		}
		return l.cur.Load()
	}
	return p
}

// bind returns ctx ending also when the connection is lost, and the
// function that releases it; or errNotConnected at once while it is down.
func (l *liveness) bind(ctx context.Context) (context.Context, func(), error) {
	if !l.nc.IsConnected() {
		return nil, nil, fmt.Errorf("%w (%s)", errNotConnected, l.nc.Status())
	}
	ctx, cancel := context.WithCancelCause(ctx)
	stop := context.AfterFunc(l.current().ctx, func() { cancel(errConnectionLost) })
	return ctx, func() { stop(); cancel(nil) }, nil
}

// Stream opens a stream on the first connection.
func (p *pool) Stream(ctx context.Context, name string) (jetstream.Stream, error) {
	return p.js[0].Stream(ctx, name)
}

// connected reports whether every connection is up, without a request.
func (p *pool) connected() error {
	for _, nc := range p.conns {
		if err := stream.Connected(nc); err != nil {
			return err
		}
	}
	return nil
}

// ready reports whether every connection is up and the stream reachable
// and still keeping what it accepts (see stream.Unsafe).
func (p *pool) ready(ctx context.Context, cfg stream.Config, ensured *atomic.Bool, log *zap.Logger) error {
	if err := p.connected(); err != nil {
		return err
	}
	s, err := p.js[0].Stream(ctx, cfg.Name)
	if err != nil {
		return fmt.Errorf("stream %s unreachable: %w", cfg.Name, err)
	}
	// Settings that let the server delete an event not yet applied,
	// changed under the running ingress (an older binary's start during a
	// rolling deploy or a rollback, an operator's edit): nothing is
	// published until they are set back, which is done at once.
	if why := stream.Unsafe(s.CachedInfo().Config); why != "" {
		ensured.Store(false)
		log.Error("stream settings changed: events could be lost; setting them back", zap.String("stream", cfg.Name), zap.String("why", why))
		if _, err := stream.Ensure(ctx, p.js[0], cfg); err != nil {
			return fmt.Errorf("stream %s: %s, and it cannot be set back: %w", cfg.Name, why, err)
		}
		ensured.Store(true)
	}
	return nil
}

// drain drains every connection (in-flight publishes finish).
func (p *pool) drain(log *zap.Logger) {
	for _, nc := range p.conns {
		if err := nc.Drain(); err != nil {
			log.Warn("drain nats", zap.Error(err))
		}
	}
}

// close closes every connection and stops following them.
func (p *pool) close() {
	for _, nc := range p.conns {
		nc.Close()
	}
	for _, l := range p.live {
		l.stop()
	}
	p.watchers.Wait()
}
