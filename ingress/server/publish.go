package server

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap"

	"github.com/likeperson/portalsync/pkg/stream"
	"github.com/likeperson/portalsync/pkg/wait"
)

// pool spreads publishes over several NATS connections, so that many
// concurrent requests are not serialized on one connection's socket and
// read loop. Each publish still waits for its own acknowledgement.
type pool struct {
	conns []*nats.Conn
	js    []jetstream.JetStream
	next  atomic.Uint64
}

var _ Publisher = (*pool)(nil)

// openPool dials n connections (n >= 1) without waiting for a server:
// while NATS is down they keep trying in the background, publishes fail
// (the webhook is answered 503) and readiness says why.
func openPool(cfg Config, n int, log *zap.Logger) (*pool, error) {
	p := &pool{}
	for i := range max(n, 1) {
		nc, js, err := stream.Dial(cfg.NATSURL, fmt.Sprintf("portalsync-ingress-%d", i), log)
		if err != nil {
			p.close()
			return nil, err
		}
		p.conns, p.js = append(p.conns, nc), append(p.js, js)
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
	i := p.next.Add(1) % uint64(len(p.js))
	return p.js[i].PublishMsg(ctx, msg, opts...)
}

// Stream opens a stream on the first connection.
func (p *pool) Stream(ctx context.Context, name string) (jetstream.Stream, error) {
	return p.js[0].Stream(ctx, name)
}

// ready reports whether every connection is up and the stream reachable.
func (p *pool) ready(ctx context.Context, streamName string) error {
	for _, nc := range p.conns {
		if err := stream.Connected(nc); err != nil {
			return err
		}
	}
	if _, err := p.js[0].Stream(ctx, streamName); err != nil {
		return fmt.Errorf("stream %s unreachable: %w", streamName, err)
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

func (p *pool) close() {
	for _, nc := range p.conns {
		nc.Close()
	}
}
