package server

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap"

	"github.com/likeperson/portalsync/pkg/stream"
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

// openPool connects n times (n >= 1) and ensures the stream once.
func openPool(ctx context.Context, cfg Config, n int, log *zap.Logger) (*pool, error) {
	p := &pool{}
	for i := range max(n, 1) {
		var nc *nats.Conn
		var js jetstream.JetStream
		var err error
		name := fmt.Sprintf("portalsync-ingress-%d", i)
		if i == 0 {
			nc, js, err = stream.OpenAndEnsure(ctx, cfg.NATSURL, name, cfg.Stream, log)
		} else {
			nc, js, err = stream.Open(ctx, cfg.NATSURL, name, log)
		}
		if err != nil {
			p.close()
			return nil, err
		}
		p.conns, p.js = append(p.conns, nc), append(p.js, js)
	}
	return p, nil
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
		if !nc.IsConnected() {
			return errors.New("not connected to NATS")
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
