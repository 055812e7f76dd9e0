// Package deadletter keeps the events the syncer could not apply in a
// dead-letter stream, lists them, and redrives them into the event stream
// once their cause is fixed.
package deadletter

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/likeperson/portalsync/pkg/event"
	"github.com/likeperson/portalsync/pkg/stream"
)

// Headers added to a dead letter, besides the original message's headers.
const (
	HeaderError       = "Portal-Dlq-Error"
	HeaderDeliveries  = "Portal-Dlq-Deliveries"
	HeaderStreamSeq   = "Portal-Dlq-Stream-Seq"
	HeaderSubject     = "Portal-Dlq-Subject"
	HeaderFailedAt    = "Portal-Dlq-Failed-At"
	HeaderOriginalID  = "Portal-Original-Msg-Id"
	HeaderRedriveFrom = "Portal-Redriven-From"
)

// Defaults.
const (
	DefaultName   = "PORTAL_DEADLETTER"
	SubjectPrefix = "portal.deadletter."
	DefaultMaxAge = 365 * 24 * time.Hour
)

// Config names the dead-letter stream and the event stream it feeds back.
type Config struct {
	// Name of the dead-letter stream. Default "PORTAL_DEADLETTER".
	Name string
	// EventStream is the stream redriven events go back to. Default
	// stream.DefaultName.
	EventStream string
	// Replicas of the dead-letter stream. Default 1.
	Replicas int
	// MaxAge bounds how long dead letters are kept. Default 365 days.
	MaxAge time.Duration
}

func (c Config) withDefaults() Config {
	c.Name = cmp.Or(c.Name, DefaultName)
	c.EventStream = cmp.Or(c.EventStream, stream.DefaultName)
	c.Replicas = cmp.Or(c.Replicas, 1)
	c.MaxAge = cmp.Or(c.MaxAge, DefaultMaxAge)
	return c
}

// Queue is the dead-letter stream.
type Queue struct {
	cfg Config
	js  jetstream.JetStream
}

// New returns the queue over an existing (or not yet created) dead-letter
// stream, for commands that only read or redrive: a queue whose stream does
// not exist holds no letters.
func New(js jetstream.JetStream, cfg Config) *Queue {
	return &Queue{cfg: cfg.withDefaults(), js: js}
}

// Open creates or updates the dead-letter stream and returns the queue; the
// syncer calls it at start.
func Open(ctx context.Context, js jetstream.JetStream, cfg Config) (*Queue, error) {
	cfg = cfg.withDefaults()
	_, err := js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{
		Name:        cfg.Name,
		Description: "Membership events the syncer could not apply",
		Subjects:    []string{SubjectPrefix + ">"},
		Retention:   jetstream.LimitsPolicy,
		Storage:     jetstream.FileStorage,
		Replicas:    cfg.Replicas,
		MaxAge:      cfg.MaxAge,
		MaxMsgs:     -1,
		MaxBytes:    -1,
		// No size limit; discard new all the same, as the event stream:
		// were one set, a full dead-letter stream would refuse a letter
		// instead of dropping an older one, and a refused letter leaves
		// its event unsettled in the event stream (the consumer terminates
		// an event only after its letter is stored), to fail again on its
		// next delivery. Letters expire after MaxAge.
		Discard:    jetstream.DiscardNew,
		Duplicates: 10 * time.Minute,
	})
	if err != nil {
		return nil, fmt.Errorf("create or update dead-letter stream %s: %w", cfg.Name, err)
	}
	return &Queue{cfg: cfg, js: js}, nil
}

// Letter is what is known of the failed delivery.
type Letter struct {
	// Subject is the event's subject in the event stream.
	Subject string
	// Header holds the original message headers.
	Header nats.Header
	// Data is the raw event.
	Data []byte
	// StreamSeq is the event's sequence in the event stream.
	StreamSeq uint64
	// Deliveries is how often it was delivered.
	Deliveries int
	// Reason says why it failed.
	Reason string
}

// Add stores a dead letter. Adding the same event-stream sequence twice
// stores it once.
func (q *Queue) Add(ctx context.Context, l Letter) error {
	key := strings.TrimPrefix(l.Subject, event.SubjectPrefix)
	if key == l.Subject || key == "" {
		key = "unknown"
	}
	msg := nats.NewMsg(SubjectPrefix + key)
	msg.Data = l.Data
	for k, v := range l.Header {
		// The server's own headers (a direct get's Nats-Sequence,
		// Nats-Stream, …; a redrive's Nats-Expected-Stream) describe the
		// old message and would steer or confuse this publish.
		if strings.HasPrefix(k, "Nats-") {
			continue
		}
		msg.Header[k] = append([]string(nil), v...)
	}
	// A redriven event carries its original id already (its message id is
	// a redrive id): keep that, so it is listed and redriven by it again.
	if l.Header.Get(HeaderOriginalID) == "" {
		if id := l.Header.Get(jetstream.MsgIDHeader); id != "" {
			msg.Header.Set(HeaderOriginalID, id)
		}
	}
	msg.Header.Set(jetstream.MsgIDHeader, fmt.Sprintf("dlq-%s-%d", q.cfg.EventStream, l.StreamSeq))
	msg.Header.Set(HeaderError, truncate(l.Reason, 1000))
	msg.Header.Set(HeaderDeliveries, strconv.Itoa(l.Deliveries))
	msg.Header.Set(HeaderStreamSeq, strconv.FormatUint(l.StreamSeq, 10))
	msg.Header.Set(HeaderSubject, l.Subject)
	msg.Header.Set(HeaderFailedAt, time.Now().UTC().Format(time.RFC3339Nano))
	if _, err := q.js.PublishMsg(ctx, msg, jetstream.WithExpectStream(q.cfg.Name)); err != nil {
		return fmt.Errorf("add dead letter for stream seq %d: %w", l.StreamSeq, err)
	}
	return nil
}

// Entry is one dead letter as listed.
type Entry struct {
	// Seq is the dead letter's sequence in the dead-letter stream.
	Seq        uint64
	EventID    string
	EventType  string
	MemberID   string
	Error      string
	Deliveries int
	// StreamSeq is the original sequence in the event stream.
	StreamSeq uint64
	FailedAt  time.Time

	subject string
	header  nats.Header
	data    []byte
}

// List returns every dead letter, oldest first.
func (q *Queue) List(ctx context.Context) ([]Entry, error) {
	s, err := q.js.Stream(ctx, q.cfg.Name)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("dead-letter stream %s: %w", q.cfg.Name, err)
	}
	info := s.CachedInfo() // fetched by js.Stream just now
	if info.State.Msgs == 0 {
		return nil, nil
	}
	cons, err := s.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{})
	if err != nil {
		return nil, fmt.Errorf("read dead letters: %w", err)
	}
	var out []Entry
	for {
		msg, err := cons.Next(jetstream.FetchMaxWait(5 * time.Second))
		if err != nil {
			return nil, fmt.Errorf("read dead letters: %w", err)
		}
		md, err := msg.Metadata()
		if err != nil {
			return nil, fmt.Errorf("dead letter metadata: %w", err)
		}
		out = append(out, entryOf(md.Sequence.Stream, msg.Subject(), msg.Headers(), msg.Data()))
		if md.NumPending == 0 || md.Sequence.Stream >= info.State.LastSeq {
			return out, nil
		}
	}
}

func entryOf(seq uint64, subject string, h nats.Header, data []byte) Entry {
	e := Entry{
		Seq:       seq,
		EventID:   h.Get(HeaderOriginalID),
		EventType: h.Get(stream.HeaderEventType),
		MemberID:  h.Get(stream.HeaderMemberID),
		Error:     h.Get(HeaderError),
		subject:   h.Get(HeaderSubject),
		header:    h,
		data:      data,
	}
	e.Deliveries, _ = strconv.Atoi(h.Get(HeaderDeliveries))
	e.StreamSeq, _ = strconv.ParseUint(h.Get(HeaderStreamSeq), 10, 64)
	e.FailedAt, _ = time.Parse(time.RFC3339Nano, h.Get(HeaderFailedAt))
	if e.subject == "" {
		e.subject = event.SubjectPrefix + strings.TrimPrefix(subject, SubjectPrefix)
	}
	return e
}

// Filter selects dead letters to redrive.
type Filter struct {
	// EventID selects the letters of one event; empty selects all.
	EventID string
}

// ErrNoneMatched is returned by Redrive when the filter selects nothing.
var ErrNoneMatched = errors.New("no dead letter matches")

// Redrive publishes the selected dead letters back to the event stream,
// under a new message id so that the event stream's duplicate window does
// not drop them, and removes them from the dead-letter stream. It returns
// how many were redriven.
func (q *Queue) Redrive(ctx context.Context, f Filter) (int, error) {
	entries, err := q.List(ctx)
	if err != nil {
		return 0, err
	}
	if len(entries) == 0 {
		return 0, ErrNoneMatched
	}
	s, err := q.js.Stream(ctx, q.cfg.Name)
	if err != nil {
		return 0, fmt.Errorf("dead-letter stream %s: %w", q.cfg.Name, err)
	}
	n := 0
	for _, e := range entries {
		if f.EventID != "" && e.EventID != f.EventID {
			continue
		}
		msg := nats.NewMsg(e.subject)
		msg.Data = e.data
		for k, v := range e.header {
			if strings.HasPrefix(k, "Portal-Dlq-") || strings.HasPrefix(k, "Nats-") {
				continue
			}
			msg.Header[k] = append([]string(nil), v...)
		}
		// A new message id, so that the duplicate window does not drop it;
		// the original id stays in HeaderOriginalID, so that a redriven
		// event that fails again is dead-lettered, listed and redriven under
		// the id it was sent with.
		msg.Header.Set(jetstream.MsgIDHeader, fmt.Sprintf("%s~redrive~%d", truncate(e.EventID, 200), e.Seq))
		if e.EventID != "" {
			msg.Header.Set(HeaderOriginalID, e.EventID)
		}
		msg.Header.Set(HeaderRedriveFrom, strconv.FormatUint(e.Seq, 10))
		// The log says the change came back by redrive, wherever it
		// first came in.
		msg.Header.Set(stream.HeaderSource, stream.SourceRedrive)
		if _, err := q.js.PublishMsg(ctx, msg, jetstream.WithExpectStream(q.cfg.EventStream)); err != nil {
			return n, fmt.Errorf("redrive dead letter %d: %w", e.Seq, err)
		}
		// Deleted only after the event is back in the event stream; a crash
		// in between redrives it twice, which the syncer's idempotency
		// absorbs.
		if err := s.DeleteMsg(ctx, e.Seq); err != nil {
			return n, fmt.Errorf("remove redriven dead letter %d: %w", e.Seq, err)
		}
		n++
	}
	if n == 0 {
		return 0, ErrNoneMatched
	}
	return n, nil
}

// PurgeMember deletes every dead letter of one member (their subject,
// SubjectPrefix + event.MemberKey), for erasure. A dead-letter stream that
// does not exist holds none.
func (q *Queue) PurgeMember(ctx context.Context, memberID string) error {
	s, err := q.js.Stream(ctx, q.cfg.Name)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("dead-letter stream %s: %w", q.cfg.Name, err)
	}
	if err := s.Purge(ctx, jetstream.WithPurgeSubject(SubjectPrefix+event.MemberKey(memberID))); err != nil {
		return fmt.Errorf("purge dead letters of a member: %w", err)
	}
	return nil
}

// Count returns how many dead letters are held.
func (q *Queue) Count(ctx context.Context) (uint64, error) {
	s, err := q.js.Stream(ctx, q.cfg.Name)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("dead-letter stream %s: %w", q.cfg.Name, err)
	}
	return s.CachedInfo().State.Msgs, nil // fetched by js.Stream just now
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n]
}
