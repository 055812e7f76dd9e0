// Package stream holds what the ingress and the syncer agree on about the
// JetStream stream: its configuration, its message headers, and how to
// connect to a server recent enough to hold it.
package stream

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap"

	"github.com/likeperson/portalsync/pkg/event"
)

// Message headers set by the ingress on every stored event, besides
// Nats-Msg-Id (the webhook-id).
const (
	// HeaderEventType holds the event's type.
	HeaderEventType = "Portal-Event-Type"
	// HeaderMemberID holds the member's portal ID (not personal data: an
	// opaque key).
	HeaderMemberID = "Portal-Member-Id"
	// HeaderReceivedAt holds when the ingress received the webhook, in
	// RFC 3339 with nanoseconds.
	HeaderReceivedAt = "Portal-Received-At"
	// HeaderBodySHA256 holds the hex SHA-256 of the body without its
	// insignificant JSON whitespace, so that a webhook-id sent again with
	// a different body is told apart from a retry (however it is spaced).
	HeaderBodySHA256 = "Portal-Body-Sha256"
	// HeaderSource says where the event came in (one of the Source
	// values); the syncer writes it to the sync log's source column.
	// Events stored before it existed have none: their rows say NULL.
	HeaderSource = "Portal-Event-Source"
	// HeaderRefused marks a refused-change record instead of an event:
	// the ingress authenticated a change and refused it (a Dataverse
	// change it cannot translate, 422). Its value is the reason (e.g.
	// "size-exceeded"); HeaderOrgID names the organization where known,
	// HeaderMemberID the member where known, Nats-Msg-Id the record, and
	// the body is a one-line description without personal values. The
	// syncer writes it to the sync log as a failed RefusedEventType row.
	HeaderRefused = "Portal-Refused"
	// HeaderOrgID holds the organization's portal ID of a refused-change
	// record.
	HeaderOrgID = "Portal-Org-Id"
)

// RefusedEventType is the event type of a refused change's log row.
const RefusedEventType = "change-refused"

// Values of HeaderSource, as public.portal_sync_log's source column
// (migration 00028) takes them.
const (
	// SourcePortalWebhook: the ingress's /webhooks/portal.
	SourcePortalWebhook = "portal-webhook"
	// SourceDataverseWebhook: the ingress's /webhooks/dataverse.
	SourceDataverseWebhook = "dataverse-webhook"
	// SourceReconciliation: published by the reconciler.
	SourceReconciliation = "reconciliation"
	// SourceRedrive: published again by `syncer dlq redrive` (it
	// replaces the source the dead letter carried).
	SourceRedrive = "redrive"
	// SourceReplay: applied again by `syncer replay`.
	SourceReplay = "replay"
	// SourceEraseCommand: an erasure by `syncer erase`.
	SourceEraseCommand = "erase-command"
)

// Defaults for Config.
const (
	DefaultName            = "PORTAL_EVENTS"
	DefaultReplicas        = 1
	DefaultMaxAge          = 365 * 24 * time.Hour
	DefaultDuplicateWindow = time.Hour
	DefaultMaxMsgSize      = 1 << 20
)

// RecordOverhead bounds what the server stores for a message besides its
// headers and body (nats-server's file store: a 22-byte record header,
// the subject and an 8-byte checksum; subjects are short member keys).
const RecordOverhead = 1024

// MinMaxBytes is the smallest MaxBytes, other than 0 (unlimited), of a
// stream whose largest message is maxMsgSize bytes: the syncer trims
// settled history down to three quarters of MaxBytes (Config.TrimBytes),
// and the quarter it keeps free must hold at least one maximum-size
// event, or one such event could find the stream full for good. With the
// default 1 MiB messages it is 4 MiB + 4 KiB.
func MinMaxBytes(maxMsgSize int32) int64 {
	return 4 * (int64(maxMsgSize) + RecordOverhead)
}

// MinServerVersion is the oldest nats-server this project supports. 2.12
// brought atomic batch publishing (stream API level 2), which the ingress
// uses for grouped publishes: an older server ignores allow_atomic, so
// the stream would differ from its configuration at every start and batch
// publishes would fail. 2.12.1 rather than 2.12.0: the first patch
// release of the line, after atomic batches were made to honour
// Nats-Msg-Id deduplication (nats-server #7391), which the ingress's
// idempotency rests on.
const MinServerVersion = "2.12.1"

// Config describes the event stream. Zero fields take the defaults.
type Config struct {
	// Name of the stream. Default "PORTAL_EVENTS".
	Name string
	// Replicas is 1 for a single server, or 3 or 5 for a cluster (Validate
	// refuses others). Default 1.
	Replicas int
	// MaxAge is the replay history window: how long after its receipt an
	// event the syncer has settled (applied, or logged failed and
	// dead-lettered) is kept. The server never expires events by age (its
	// max age is unlimited); the syncer's history loop purges events that
	// are both older than MaxAge and settled, so an event nobody applied
	// is never deleted for its age. It bounds how far back a resync
	// reaches. Default 365 days.
	MaxAge time.Duration
	// MaxBytes caps the stream's size; 0 means unlimited. A full stream
	// refuses new events (discard new: the ingress answers 503 and the
	// portal retries) and never deletes stored ones; the syncer trims
	// settled history down to TrimBytes to make room. When set, at least
	// MinMaxBytes(MaxMsgSize).
	MaxBytes int64
	// DuplicateWindow is how long a webhook-id is remembered to drop a
	// repeated delivery. The server holds every id of the window in
	// memory. At most MaxAge, so that the stored copy a repeat is compared
	// with is not trimmed for its age within the window. Default 1 hour.
	DuplicateWindow time.Duration
	// MaxMsgSize is the largest message the stream stores. Default 1 MiB.
	MaxMsgSize int32
}

// WithDefaults returns c with zero fields set to their defaults.
func (c Config) WithDefaults() Config {
	c.Name = cmp.Or(c.Name, DefaultName)
	c.Replicas = cmp.Or(c.Replicas, DefaultReplicas)
	c.MaxAge = cmp.Or(c.MaxAge, DefaultMaxAge)
	c.DuplicateWindow = cmp.Or(c.DuplicateWindow, DefaultDuplicateWindow)
	c.MaxMsgSize = cmp.Or(c.MaxMsgSize, DefaultMaxMsgSize)
	return c
}

// Validate reports a specific problem with the configuration.
func (c Config) Validate() error {
	switch {
	case strings.ContainsAny(c.Name, " \t.*>/\\"):
		return fmt.Errorf("stream name %q must not contain white space, '.', '*', '>' or slashes", c.Name)
	case c.Replicas != 1 && c.Replicas != 3 && c.Replicas != 5:
		return fmt.Errorf("stream replicas must be 1, 3 or 5, got %d", c.Replicas)
	case c.MaxAge < 0:
		return errors.New("stream max age must not be negative")
	case c.MaxBytes < 0:
		return errors.New("stream max bytes must not be negative")
	case c.MaxMsgSize < 0:
		return errors.New("stream max message size must not be negative")
	case c.MaxBytes > 0 && c.MaxBytes < MinMaxBytes(c.MaxMsgSize):
		return fmt.Errorf("stream max bytes %d is too small: with %d-byte messages at most, the stream needs at least %d bytes "+
			"(four maximum-size events: the syncer trims settled history to three quarters of the limit, and the quarter left "+
			"must hold one), or 0 for unlimited", c.MaxBytes, c.MaxMsgSize, MinMaxBytes(c.MaxMsgSize))
	case c.DuplicateWindow < 0:
		return errors.New("stream duplicate window must not be negative")
	case c.MaxAge > 0 && c.DuplicateWindow > c.MaxAge:
		return errors.New("stream duplicate window must not exceed max age")
	}
	return nil
}

// TrimBytes is the size above which the syncer trims settled history to
// make room (the oldest settled events first): three quarters of
// MaxBytes; 0 when the stream is unlimited.
func (c Config) TrimBytes() int64 { return c.MaxBytes / 4 * 3 }

// JetStreamConfig returns the server-side stream configuration: file storage
// and limits retention, so that events stay replayable after they are
// consumed; direct get allowed.
//
// Accepted means kept: a full stream discards new events (the publish
// fails, the ingress answers 503 and the portal retries) instead of old
// ones, and the server expires nothing by age (max age 0). MaxAge is
// enforced by the syncer instead, on settled events only (Config.MaxAge).
func (c Config) JetStreamConfig() jetstream.StreamConfig {
	c = c.WithDefaults()
	maxBytes := c.MaxBytes
	if maxBytes == 0 {
		maxBytes = -1
	}
	return jetstream.StreamConfig{
		Name:        c.Name,
		Description: "Membership events from the Min Side portal, keyed by member",
		Subjects:    []string{event.SubjectWildcard},
		Retention:   jetstream.LimitsPolicy,
		Storage:     jetstream.FileStorage,
		Replicas:    c.Replicas,
		MaxAge:      0,
		MaxBytes:    maxBytes,
		MaxMsgs:     -1,
		// No limit per subject either: it would delete a member's older
		// events, settled or not.
		MaxMsgsPerSubject: -1,
		MaxMsgSize:        c.MaxMsgSize,
		Discard:           jetstream.DiscardNew,
		Duplicates:        c.DuplicateWindow,
		// Direct get: the ingress reads a stored message back (a webhook-id
		// sent again, to compare bodies) without queueing on the JetStream
		// API, which publishes also need.
		AllowDirect: true,
		// Atomic batches: the ingress stores a group of events all or
		// none (nats-server 2.12 and newer).
		AllowAtomicPublish: true,
	}
}

// Ensure creates the stream or updates it to the configuration.
func Ensure(ctx context.Context, js jetstream.StreamManager, c Config) (jetstream.Stream, error) {
	c = c.WithDefaults()
	if err := c.Validate(); err != nil {
		return nil, err
	}
	// A cluster that is still electing its leaders does not answer at
	// first: retry until ctx ends.
	var lastErr error
	for attempt := 0; ; attempt++ {
		attemptCtx, cancel := context.WithTimeout(ctx, 5*time.Second)
		s, err := ensureOnce(attemptCtx, js, c.JetStreamConfig())
		cancel()
		if err == nil {
			return s, nil
		}
		lastErr = err
		if !retryable(err) {
			break
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("create or update stream %s: %w (last error: %v)", c.Name, ctx.Err(), lastErr)
		case <-time.After(min(time.Duration(attempt+1)*200*time.Millisecond, 2*time.Second)):
		}
	}
	return nil, fmt.Errorf("create or update stream %s: %w", c.Name, lastErr)
}

// ensureOnce updates the stream only when it is missing or its settings
// differ: every replica and ingress calls Ensure at start, and an update
// that changes nothing still rewrites the stream's configuration on the
// server, racing the consumers being created at the same moment.
func ensureOnce(ctx context.Context, js jetstream.StreamManager, want jetstream.StreamConfig) (jetstream.Stream, error) {
	s, err := js.Stream(ctx, want.Name)
	switch {
	case err == nil && sameSettings(s.CachedInfo().Config, want):
		return s, nil
	case err != nil && !errors.Is(err, jetstream.ErrStreamNotFound):
		return nil, err
	}
	return js.CreateOrUpdateStream(ctx, want)
}

// sameSettings reports whether the server's stream configuration have
// already holds every setting JetStreamConfig makes (want).
func sameSettings(have, want jetstream.StreamConfig) bool {
	return have.Description == want.Description && slices.Equal(have.Subjects, want.Subjects) &&
		have.Retention == want.Retention && have.Storage == want.Storage &&
		max(have.Replicas, 1) == max(want.Replicas, 1) && have.MaxAge == want.MaxAge &&
		have.MaxBytes == want.MaxBytes && have.MaxMsgs == want.MaxMsgs && have.MaxMsgsPerSubject == want.MaxMsgsPerSubject &&
		have.MaxMsgSize == want.MaxMsgSize &&
		have.Discard == want.Discard && have.Duplicates == want.Duplicates && have.AllowDirect == want.AllowDirect &&
		have.AllowAtomicPublish == want.AllowAtomicPublish
}

// retryable reports whether a stream API error may pass by itself.
func retryable(err error) bool {
	var apiErr *jetstream.APIError
	if errors.As(err, &apiErr) {
		// 503: JetStream not ready yet (no meta leader, no quorum).
		return apiErr.Code == 503
	}
	return errors.Is(err, context.DeadlineExceeded) || errors.Is(err, nats.ErrNoResponders) ||
		errors.Is(err, jetstream.ErrJetStreamNotEnabled) || errors.Is(err, nats.ErrTimeout)
}

// CheckServerVersion returns an error when version is older than
// MinServerVersion or cannot be read.
func CheckServerVersion(version string) error {
	have, ok := parseVersion(version)
	if !ok {
		return fmt.Errorf("nats-server version %q cannot be read; portalsync needs %s or newer", version, MinServerVersion)
	}
	want, _ := parseVersion(MinServerVersion)
	for i := range want {
		if have[i] != want[i] {
			if have[i] < want[i] {
				return fmt.Errorf("nats-server %s is too old: portalsync needs %s or newer (run `make run` without NATS_URL to use a bundled current server)", version, MinServerVersion)
			}
			return nil
		}
	}
	return nil
}

func parseVersion(v string) ([3]int, bool) {
	var out [3]int
	v = strings.TrimPrefix(strings.TrimSpace(v), "v")
	if i := strings.IndexAny(v, "-+"); i >= 0 {
		v = v[:i]
	}
	parts := strings.Split(v, ".")
	if len(parts) != 3 {
		return out, false
	}
	for i, p := range parts {
		n, err := strconv.Atoi(p)
		if err != nil || n < 0 {
			return out, false
		}
		out[i] = n
	}
	return out, true
}

// Connect connects to NATS at url, reconnecting for ever once connected,
// and checks the server version. Connection events are logged. It fails
// when no server answers; Dial does not.
func Connect(ctx context.Context, url, name string, log *zap.Logger) (*nats.Conn, error) {
	opts := connectOptions(name, log.Named("nats"))
	if deadline, ok := ctx.Deadline(); ok {
		opts = append(opts, nats.Timeout(time.Until(deadline)))
	}
	nc, err := nats.Connect(url, opts...)
	if err != nil {
		return nil, fmt.Errorf("connect to nats: %w", err)
	}
	if err := CheckServerVersion(nc.ConnectedServerVersion()); err != nil {
		nc.Close()
		return nil, err
	}
	log.Named("nats").Info("connected", zap.String("server", nc.ConnectedUrlRedacted()), zap.String("version", nc.ConnectedServerVersion()))
	return nc, nil
}

// Dial returns a connection to NATS at url without waiting for a server:
// while none answers, the connection keeps trying in the background (and
// reconnects for ever once connected). Services dial this way so that they
// start while NATS is down; Connected says when it can be used. Options in
// extra are applied after the shared ones (the ingress passes
// nats.ReconnectBufSize(-1)).
func Dial(url, name string, log *zap.Logger, extra ...nats.Option) (*nats.Conn, jetstream.JetStream, error) {
	log = log.Named("nats")
	// A server that answers is connected to the ordinary way; only when
	// none does is the connection left retrying in the background (such a
	// connection was measured slower under load: 200 concurrent publishes
	// timed out that a plain connection stored).
	nc, err := nats.Connect(url, append(connectOptions(name, log), extra...)...)
	if err == nil {
		log.Info("connected", zap.String("server", nc.ConnectedUrlRedacted()), zap.String("version", nc.ConnectedServerVersion()))
	} else {
		log.Warn("no NATS server answers yet; retrying in the background", zap.Error(err))
		nc, err = nats.Connect(url, append(append(connectOptions(name, log), extra...),
			nats.RetryOnFailedConnect(true),
			nats.ConnectHandler(func(nc *nats.Conn) {
				log.Info("connected", zap.String("server", nc.ConnectedUrlRedacted()), zap.String("version", nc.ConnectedServerVersion()))
			}))...)
	}
	if err != nil {
		return nil, nil, fmt.Errorf("connect to nats: %w", err)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		nc.Close()
		return nil, nil, fmt.Errorf("jetstream: %w", err)
	}
	return nc, js, nil
}

// ErrServerTooOld is returned (wrapped) by Connected when the server is
// older than MinServerVersion: a deployment to fix, not an outage to wait
// out.
var ErrServerTooOld = errors.New("nats-server too old")

// Connected returns nil when nc is connected to a server recent enough.
func Connected(nc *nats.Conn) error {
	if !nc.IsConnected() {
		return fmt.Errorf("not connected to NATS (%s)", nc.Status())
	}
	if err := CheckServerVersion(nc.ConnectedServerVersion()); err != nil {
		return fmt.Errorf("%w: %w", ErrServerTooOld, err)
	}
	return nil
}

func connectOptions(name string, log *zap.Logger) []nats.Option {
	return []nats.Option{
		nats.Name(name),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(250 * time.Millisecond),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			if err != nil {
				log.Warn("disconnected", zap.Error(err))
			}
		}),
		nats.ReconnectHandler(func(nc *nats.Conn) {
			log.Info("reconnected", zap.String("server", nc.ConnectedUrlRedacted()))
		}),
		nats.ErrorHandler(func(_ *nats.Conn, sub *nats.Subscription, err error) {
			subject := ""
			if sub != nil {
				subject = sub.Subject
			}
			log.Error("async error", zap.String("subject", subject), zap.Error(err))
		}),
	}
}

// Flags are the stream settings as command-line flags and environment
// variables (read by kong), shared by the ingress and the syncer.
type Flags struct {
	StreamName            string        `name:"stream-name" env:"STREAM_NAME" default:"PORTAL_EVENTS" help:"JetStream stream holding the events."`
	StreamReplicas        int           `name:"stream-replicas" env:"STREAM_REPLICAS" default:"1" help:"Stream replicas: 1, or 3 or 5 on a cluster."`
	StreamMaxAge          time.Duration `name:"stream-max-age" env:"STREAM_MAX_AGE" default:"8760h" help:"Replay history: the syncer purges events older than this once they are settled (bounds replay)."`
	StreamMaxBytes        int64         `name:"stream-max-bytes" env:"STREAM_MAX_BYTES" default:"0" help:"Stream size cap in bytes (at least 4 MiB + 4 KiB); a full stream refuses new events (503); 0 is unlimited."`
	StreamDuplicateWindow time.Duration `name:"stream-duplicate-window" env:"STREAM_DUPLICATE_WINDOW" default:"1h" help:"How long a webhook-id is remembered to drop repeats."`
}

// Config returns the stream configuration the flags describe.
func (f Flags) Config() Config {
	return Config{
		Name:            f.StreamName,
		Replicas:        f.StreamReplicas,
		MaxAge:          f.StreamMaxAge,
		MaxBytes:        f.StreamMaxBytes,
		DuplicateWindow: f.StreamDuplicateWindow,
	}.WithDefaults()
}

// Open connects to NATS as Connect does and returns the connection with its
// JetStream API. The caller closes (or drains) the connection.
func Open(ctx context.Context, url, name string, log *zap.Logger) (*nats.Conn, jetstream.JetStream, error) {
	nc, err := Connect(ctx, url, name, log)
	if err != nil {
		return nil, nil, err
	}
	js, err := jetstream.New(nc)
	if err != nil {
		nc.Close()
		return nil, nil, fmt.Errorf("jetstream: %w", err)
	}
	return nc, js, nil
}

// Unsafe names what in a stream's configuration (as the server holds it)
// lets the server delete an event before the syncer has settled it, or
// lose one a host crash should not: "" when nothing does. The ingress
// checks it periodically, because another binary (an older version's
// start during a rolling deploy or a rollback) or an operator can change
// the stream under a running ingress.
func Unsafe(have jetstream.StreamConfig) string {
	switch {
	case have.Retention != jetstream.LimitsPolicy:
		return "retention is not limits (events would be removed on acknowledgement or without interest)"
	case have.Storage != jetstream.FileStorage:
		return "storage is not file"
	case have.Discard != jetstream.DiscardNew:
		return "discard policy is old (a full stream would drop stored events)"
	case have.MaxAge != 0:
		return fmt.Sprintf("max age %s (the server would expire unapplied events)", have.MaxAge)
	case have.MaxMsgsPerSubject > 0:
		return fmt.Sprintf("max messages per subject %d (the server would drop a member's older events)", have.MaxMsgsPerSubject)
	}
	return ""
}
