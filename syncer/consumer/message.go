package consumer

import (
	"context"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap"

	"github.com/likeperson/portalsync/pkg/event"
	"github.com/likeperson/portalsync/pkg/stream"
	"github.com/likeperson/portalsync/syncer/deadletter"
	"github.com/likeperson/portalsync/syncer/store"
)

// Meta reads what the store records of a message of the event stream: its
// stream sequence and delivery count (JetStream's metadata), where the
// event came from and when the ingress received it (its headers). md is
// the message's JetStream metadata, for what else the caller needs of it.
// The durable consumer and replay both read messages with it.
func Meta(msg jetstream.Msg) (meta store.Meta, md *jetstream.MsgMetadata, err error) {
	md, err = msg.Metadata()
	if err != nil {
		return store.Meta{}, nil, fmt.Errorf("message metadata: %w", err)
	}
	h := msg.Headers()
	meta = store.Meta{StreamSeq: md.Sequence.Stream, Attempt: int(md.NumDelivered), Source: h.Get(stream.HeaderSource)}
	if ts := h.Get(stream.HeaderReceivedAt); ts != "" {
		meta.ReceivedAt, _ = time.Parse(time.RFC3339Nano, ts)
	}
	return meta, md, nil
}

// delivery is one decoded message.
type delivery struct {
	msg  jetstream.Msg
	ev   *event.Event
	meta store.Meta
	// log is built on first use: most deliveries are never logged above
	// debug, and building a logger per message costs more than applying it.
	c      *Consumer
	logger *zap.Logger
}

func (d *delivery) log() *zap.Logger {
	if d.logger == nil {
		d.logger = d.c.log.With(d.fields()...)
	}
	return d.logger
}

// fields identify the event in a log line (never personal data), with
// room for two more.
func (d *delivery) fields() []zap.Field {
	return append(make([]zap.Field, 0, 7), zap.Uint64("stream_seq", d.meta.StreamSeq), zap.Int("attempt", d.meta.Attempt),
		zap.String("event_id", d.ev.ID), zap.String("event_type", string(d.ev.Type)), zap.String("member_id", d.ev.Member.ID))
}

func (d *delivery) failure(reason string) store.Failure {
	return store.Failure{
		EventID: d.ev.ID, EventType: string(d.ev.Type), MemberID: d.ev.Member.ID, OrgID: d.ev.Organization.ID,
		OccurredAt: d.ev.OccurredAt, Reason: reason,
	}
}

// handleMsgs decodes messages and applies the decodable ones as one batch;
// an undecodable message fails alone.
func (c *Consumer) handleMsgs(ctx context.Context, stop <-chan struct{}, msgs []jetstream.Msg) {
	ds := make([]*delivery, 0, len(msgs))
	for _, msg := range msgs {
		meta, _, err := Meta(msg)
		if err != nil {
			c.log.Error("message without metadata", zap.Error(err))
			c.settleMsg(msg, 0, actTerm, 0, "no metadata")
			continue
		}
		if meta.Attempt > 1 {
			c.metrics.redelivered.Inc()
		}
		if f, ok := refusal(msg); ok {
			c.refused(ctx, stop, msg, meta, f)
			continue
		}
		ev, err := event.Decode(msg.Data())
		if err != nil {
			c.fail(ctx, stop, msg, meta, failureFromHeaders(msg, meta.StreamSeq, err),
				c.log.With(zap.Uint64("stream_seq", meta.StreamSeq), zap.Int("attempt", meta.Attempt)))
			continue
		}
		ds = append(ds, &delivery{msg: msg, ev: ev, meta: meta, c: c})
	}
	if len(ds) > 0 {
		c.handle(ctx, stop, ds)
	}
}

// refusal reads a refused-change record (stream.HeaderRefused): a change
// the ingress authenticated and refused, to be logged as failed for the
// organization it names.
func refusal(msg jetstream.Msg) (store.Failure, bool) {
	h := msg.Headers()
	reason := h.Get(stream.HeaderRefused)
	if reason == "" {
		return store.Failure{}, false
	}
	detail := string(msg.Data())
	if detail == "" {
		detail = "the ingress refused the change: " + reason
	}
	return store.Failure{
		EventID:   h.Get(jetstream.MsgIDHeader),
		EventType: stream.RefusedEventType,
		MemberID:  h.Get(stream.HeaderMemberID),
		OrgID:     h.Get(stream.HeaderOrgID),
		Reason:    detail,
	}, true
}

// failureFromHeaders describes an undecodable event, the message of
// stream sequence seq, from what the ingress put in its headers.
func failureFromHeaders(msg jetstream.Msg, seq uint64, err error) store.Failure {
	h := msg.Headers()
	id := h.Get(deadletter.HeaderOriginalID)
	if id == "" {
		id = h.Get(jetstream.MsgIDHeader)
	}
	if id == "" {
		id = fmt.Sprintf("stream-seq-%d", seq)
	}
	return store.Failure{
		EventID:   id,
		EventType: h.Get(stream.HeaderEventType),
		MemberID:  h.Get(stream.HeaderMemberID),
		Reason:    "invalid payload: " + err.Error(),
	}
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n]
}
