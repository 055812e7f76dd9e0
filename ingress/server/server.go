package server

import (
	"bytes"
	"cmp"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net"
	"net/http"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/labstack/echo/v4"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap"

	"github.com/likeperson/portalsync/pkg/event"
	"github.com/likeperson/portalsync/pkg/signature"
	"github.com/likeperson/portalsync/pkg/stream"
)

// Publisher stores a message in JetStream and returns its acknowledgement,
// and opens the stream to read a stored message back (only when the
// acknowledgement says the webhook-id was stored before);
// jetstream.JetStream satisfies it.
type Publisher interface {
	PublishMsg(ctx context.Context, msg *nats.Msg, opts ...jetstream.PublishOpt) (*jetstream.PubAck, error)
	Stream(ctx context.Context, name string) (jetstream.Stream, error)
}

// ReadinessChecker reports whether the service can accept events now.
type ReadinessChecker func(ctx context.Context) error

// Accepted is the body of a 2xx answer.
type Accepted struct {
	EventID   string `json:"event_id"`
	StreamSeq uint64 `json:"stream_seq"`
	Duplicate bool   `json:"duplicate"`
}

// Handler serves the ingress HTTP API.
type Handler struct {
	cfg      Config
	verifier *signature.Verifier
	pub      Publisher
	ready    ReadinessChecker
	log      *zap.Logger
	echo     *echo.Echo
	limiter  *sourceLimiter
	metrics  *Metrics
	// dataverse is the Dataverse intake; nil when not configured.
	dataverse *dataverseIntake
	// rejectLog writes the access lines of 4xx answers and the cause of
	// each 503 (a portal retrying against a full stream or a NATS outage
	// would otherwise double the log), sampled: see sampledRejections.
	rejectLog *zap.Logger
	// ops serves /healthz, /readyz and /metrics (Ops).
	ops *echo.Echo

	// stored is the event stream's handle, opened on the first duplicate
	// and kept: reading a stored message back is then one request.
	storedMu sync.Mutex
	stored   jetstream.Stream
}

var _ Publisher = (jetstream.JetStream)(nil)

// NewHandler builds the HTTP API over a publisher: the webhook routes
// (ServeHTTP) and the operations routes (Ops). ready is called by /readyz;
// metrics may be nil.
func NewHandler(cfg Config, pub Publisher, ready ReadinessChecker, metrics *Metrics, log *zap.Logger) (*Handler, error) {
	cfg = cfg.WithDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	v, err := signature.NewVerifier(signature.VerifierConfig{Secrets: cfg.Secrets, Tolerance: cfg.Tolerance, Now: cfg.Now})
	if err != nil {
		return nil, err
	}
	if metrics == nil {
		metrics = NewMetrics()
	}
	if log == nil {
		log = zap.NewNop()
	}
	h := &Handler{cfg: cfg, verifier: v, pub: pub, ready: ready, metrics: metrics, log: log, rejectLog: sampledRejections(log)}
	if cfg.Dataverse != nil {
		if h.dataverse, err = newDataverseIntake(*cfg.Dataverse); err != nil {
			return nil, err
		}
	}
	if cfg.RateLimit > 0 {
		h.limiter = newSourceLimiter(cfg.RateLimit, cmp.Or(cfg.RateBurst, int(2*cfg.RateLimit)), cfg.RateLimitSources)
	}
	e := echo.New()
	e.HideBanner = true
	e.HidePort = true
	e.HTTPErrorHandler = errorHandler(log)
	e.IPExtractor = ipExtractor(cfg.TrustedProxies)
	e.Use(h.accessLog)
	e.POST(WebhookPath, h.receive, h.guard)
	if h.dataverse != nil {
		e.POST(DataversePath, h.receiveDataverse, h.dataverseStatuses, h.guard)
	}
	h.echo = e
	h.ops = h.newOps()
	return h, nil
}

// ServeHTTP serves the webhook routes.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) { h.echo.ServeHTTP(w, r) }

// Context keys for the access log.
const (
	ctxEventID   = "portalsync.event_id"
	ctxEventType = "portalsync.event_type"
	ctxMemberID  = "portalsync.member_id"
	ctxReason    = "portalsync.reason"
	// ctxCorrelationID is Dataverse's x-ms-correlation-request-id.
	ctxCorrelationID = "portalsync.correlation_id"
)

// accessLog writes one line per webhook request with identifiers only:
// never a body, a header value other than the webhook-id, or personal
// data. Accepted (2xx) and failed (5xx) requests are written at info; 4xx
// answers (bad signatures, refused sources, rate limit, invalid events) go
// to the sampled rejectLog.
func (h *Handler) accessLog(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		start := time.Now()
		err := next(c)
		if err != nil {
			c.Error(err)
		}
		req := c.Request()
		if req.URL.Path != WebhookPath && req.URL.Path != DataversePath {
			return nil
		}
		reason, _ := c.Get(ctxReason).(string)
		h.metrics.observeRequest(c.Response().Status, time.Since(start).Seconds(), reason)
		fields := []zap.Field{
			zap.String("path", req.URL.Path),
			zap.String("method", req.Method),
			zap.Int("status", c.Response().Status),
			zap.Duration("latency", time.Since(start)),
			zap.String("remote", c.RealIP()),
		}
		for _, k := range []string{ctxEventID, ctxEventType, ctxMemberID, ctxReason, ctxCorrelationID} {
			if v, ok := c.Get(k).(string); ok && v != "" {
				fields = append(fields, zap.String(strings.TrimPrefix(k, "portalsync."), v))
			}
		}
		if status := c.Response().Status; status >= 400 && status < 500 {
			h.rejectLog.Info("webhook", fields...)
			return nil
		}
		h.log.Info("webhook", fields...)
		return nil
	}
}

// ipExtractor takes the source from X-Forwarded-For only behind a trusted
// proxy; otherwise from the connection, so a client cannot pick its own
// rate-limit bucket or pass the allowlist.
func ipExtractor(trusted []netip.Prefix) echo.IPExtractor {
	if len(trusted) == 0 {
		return echo.ExtractIPDirect()
	}
	opts := []echo.TrustOption{echo.TrustLoopback(false), echo.TrustLinkLocal(false), echo.TrustPrivateNet(false)}
	for _, p := range trusted {
		_, ipnet, err := net.ParseCIDR(p.String())
		if err == nil {
			opts = append(opts, echo.TrustIPRange(ipnet))
		}
	}
	return echo.ExtractIPFromXFFHeader(opts...)
}

// guard applies the source allowlist and the per-source rate limit before
// any work is done on a webhook.
func (h *Handler) guard(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		if len(h.cfg.AllowedSources) == 0 && h.limiter == nil {
			return next(c)
		}
		addr, err := netip.ParseAddr(c.RealIP())
		if err != nil {
			return newProblem(http.StatusForbidden, "source-not-allowed", "Source not allowed", "the source address cannot be read")
		}
		addr = addr.Unmap()
		if len(h.cfg.AllowedSources) > 0 && !slices.ContainsFunc(h.cfg.AllowedSources, func(p netip.Prefix) bool { return p.Contains(addr) }) {
			c.Set(ctxReason, "source_not_allowed")
			return newProblem(http.StatusForbidden, "source-not-allowed", "Source not allowed", "webhooks are not accepted from this address")
		}
		if h.limiter != nil {
			if ok, wait := h.limiter.allow(addr, time.Now()); !ok {
				c.Set(ctxReason, "rate_limited")
				p := newProblem(http.StatusTooManyRequests, "rate-limited", "Too many requests",
					fmt.Sprintf("more than %g requests per second from this address", h.cfg.RateLimit))
				p.retryAfter = max(wait, time.Second)
				return p
			}
		}
		return next(c)
	}
}

func (h *Handler) healthz(c echo.Context) error {
	return c.JSON(http.StatusOK, map[string]string{"status": "ok"})
}

func (h *Handler) readyz(c echo.Context) error {
	ctx, cancel := context.WithTimeout(c.Request().Context(), 2*time.Second)
	defer cancel()
	if h.ready != nil {
		if err := h.ready(ctx); err != nil {
			p := newProblem(http.StatusServiceUnavailable, "not-ready", "Not ready", err.Error())
			p.retryAfter = h.cfg.RetryAfter
			return p
		}
	}
	return c.JSON(http.StatusOK, map[string]string{"status": "ready"})
}

// receive handles one webhook: content type, size, signature, event,
// publish; it answers 2xx only after JetStream has acknowledged the event.
func (h *Handler) receive(c echo.Context) error {
	req := c.Request()
	if id := req.Header.Get(signature.HeaderID); len(id) <= event.MaxIDLength {
		c.Set(ctxEventID, id)
	}
	body, err := h.readBody(c)
	if err != nil {
		return err
	}

	if err := h.verifier.VerifyHeaders(req.Header, body); err != nil {
		reason := signature.ReasonOf(err)
		c.Set(ctxReason, string(reason))
		p := newProblem(http.StatusUnauthorized, "invalid-signature", "Invalid webhook signature", err.Error())
		p.Reason = string(reason)
		return p
	}
	webhookID := req.Header.Get(signature.HeaderID)

	ev, err := event.Decode(body)
	if err != nil {
		if errors.Is(err, event.ErrNotUTF8) {
			return newProblem(http.StatusBadRequest, "not-utf8", "Body is not UTF-8", "the body must be JSON encoded as UTF-8")
		}
		var verr event.ValidationError
		if errors.As(err, &verr) {
			p := newProblem(http.StatusBadRequest, "invalid-event", "Invalid event", verr.Error())
			p.Errors = verr
			return p
		}
		return newProblem(http.StatusBadRequest, "not-json", "Body is not JSON", err.Error())
	}
	c.Set(ctxEventType, string(ev.Type))
	c.Set(ctxMemberID, ev.Member.ID)
	if ev.ID != webhookID {
		p := newProblem(http.StatusBadRequest, "id-mismatch", "Event id differs from webhook-id",
			"the event's id must equal the webhook-id header")
		p.Errors = []event.FieldError{{Field: "id", Reason: "must equal the webhook-id header"}}
		return p
	}

	if err := ev.CheckClock(h.cfg.Now(), h.cfg.Tolerance); err != nil {
		var verr event.ValidationError
		errors.As(err, &verr)
		c.Set(ctxReason, "occurred_at_in_future")
		p := newProblem(http.StatusBadRequest, "invalid-event", "Invalid event", verr.Error())
		p.Errors = verr
		return p
	}

	ack, err := h.publish(c, ev, body, stream.SourcePortalWebhook)
	if err != nil {
		return err
	}
	status := http.StatusAccepted
	if ack.Duplicate {
		status = http.StatusOK
	}
	return c.JSON(status, Accepted{EventID: ev.ID, StreamSeq: ack.Sequence, Duplicate: ack.Duplicate})
}

// newMsg returns the message of a record for the stream: on key's
// subject, with its id (Nats-Msg-Id), type, source and time of receipt,
// and expecting the configured stream.
func (h *Handler) newMsg(key, id, eventType, source string, data []byte) *nats.Msg {
	msg := nats.NewMsg(event.Subject(key))
	msg.Data = data
	msg.Header.Set(jetstream.MsgIDHeader, id)
	msg.Header.Set(stream.HeaderEventType, eventType)
	msg.Header.Set(stream.HeaderSource, source)
	msg.Header.Set(stream.HeaderReceivedAt, h.cfg.Now().UTC().Format(time.RFC3339Nano))
	// As jetstream.WithExpectStream does; a header holds in a batch too.
	msg.Header.Set(jetstream.ExpectedStreamHeader, h.cfg.Stream.Name)
	return msg
}

// publish stores a validated event (body is its JSON, ev.ID its
// webhook-id) and waits for JetStream's acknowledgement. A duplicate is
// compared with the stored body. source is where it came in
// (stream.HeaderSource). The error is a *Problem: 503 when the event may
// not have been stored, 409 for an id reused with another body.
func (h *Handler) publish(c echo.Context, ev *event.Event, body []byte, source string) (*jetstream.PubAck, error) {
	req := c.Request()
	bodyHash := bodyDigest(body)
	msg := h.newMsg(ev.Member.ID, ev.ID, string(ev.Type), source, body)
	msg.Header.Set(stream.HeaderBodySHA256, bodyHash)
	msg.Header.Set(stream.HeaderMemberID, ev.Member.ID)

	ctx, cancel := context.WithTimeout(req.Context(), h.cfg.PublishTimeout)
	defer cancel()
	published := time.Now()
	ack, err := h.pub.PublishMsg(ctx, msg)
	h.metrics.publishSeconds.Observe(time.Since(published).Seconds())
	if err != nil {
		return nil, h.notStored(c, ev, err)
	}
	if ack.Duplicate {
		// A budget of its own: the publish may have used most of its.
		cmpCtx, cancelCmp := context.WithTimeout(req.Context(), h.cfg.PublishTimeout)
		p := h.sameBody(cmpCtx, ev.ID, ack, bodyHash, body)
		cancelCmp()
		if p != nil {
			c.Set(ctxReason, p.Reason)
			return nil, p
		}
		h.metrics.duplicates.Inc()
	}
	return ack, nil
}

// notStored is the 503 of a publish that failed (err): the stream full,
// which stored nothing and says so (its reason in the body), or the store
// unavailable, which may have stored the event. Either way the portal
// retries, and a repeat with the same webhook-id is stored once.
func (h *Handler) notStored(c echo.Context, ev *event.Event, err error) *Problem {
	reason, line := reasonStoreUnavailable, "publish failed"
	p := newProblem(http.StatusServiceUnavailable, "store-unavailable", "Event store unavailable",
		"the event may not have been stored; retry it later (a repeat with the same webhook-id is stored once)")
	if stream.IsFull(err) {
		reason, line = reasonStreamFull, "stream full: event refused"
		p = newProblem(http.StatusServiceUnavailable, "stream-full", "Event stream full",
			"the event stream has reached its size limit and refuses new events until events are removed or the limit raised; nothing was stored, retry later")
		p.Reason = reason
	}
	c.Set(ctxReason, reason)
	h.rejectLog.Warn(line, zap.String("event_id", ev.ID), zap.String("member_id", ev.Member.ID), zap.Error(err))
	p.retryAfter = h.cfg.RetryAfter
	p.cause = err
	return p
}

// bodyDigest is the hex SHA-256 of a body with its insignificant JSON
// whitespace removed, stored with the message so that a repeated
// webhook-id can be compared without the stored body: a retry that spaces
// the same JSON differently is the same event. A body that is not JSON
// (never stored: it fails decoding first) is hashed as it is.
func bodyDigest(body []byte) string {
	var compact bytes.Buffer
	compact.Grow(len(body))
	if err := json.Compact(&compact, body); err != nil {
		return rawDigest(body)
	}
	return rawDigest(compact.Bytes())
}

// rawDigest is the hex SHA-256 of the bytes as they are: what messages
// stored before bodyDigest compacted carry in their digest header.
func rawDigest(body []byte) string {
	sum := sha256.Sum256(body)
	return hex.EncodeToString(sum[:])
}

// sameBody checks, when JetStream answered that the webhook-id was stored
// before, that the stored message has the same body: a sender that reuses
// an id for a different event would otherwise lose it silently. It reads
// the stored message by the sequence the acknowledgement names, so it
// costs nothing on the normal path. It returns nil when the bodies match
// (or the stored message is gone, e.g. erased), else a 409 or a 503.
// hash is body's bodyDigest; a message stored before bodyDigest compacted
// carries the raw digest, computed here only, off the normal path.
func (h *Handler) sameBody(ctx context.Context, id string, ack *jetstream.PubAck, hash string, body []byte) *Problem {
	stored, err := h.storedDigest(ctx, ack)
	switch {
	case errors.Is(err, jetstream.ErrMsgNotFound):
		return nil
	case err != nil:
		h.log.Warn("read stored duplicate", zap.String("event_id", id), zap.Uint64("stream_seq", ack.Sequence), zap.Error(err))
		p := newProblem(http.StatusServiceUnavailable, "store-unavailable", "Event store unavailable",
			"the stored event with this webhook-id could not be compared; retry later")
		p.Reason = reasonStoreUnavailable
		p.retryAfter = h.cfg.RetryAfter
		return p
	case stored == hash || stored == rawDigest(body):
		return nil
	}
	p := newProblem(http.StatusConflict, "webhook-id-conflict", "webhook-id reused with a different body",
		fmt.Sprintf("webhook-id %s was stored before (stream sequence %d) with a different body; an event id must not be reused", id, ack.Sequence))
	p.Reason = "webhook_id_conflict"
	return p
}

func (h *Handler) storedDigest(ctx context.Context, ack *jetstream.PubAck) (string, error) {
	s, err := h.storedStream(ctx, cmp.Or(ack.Stream, h.cfg.Stream.Name))
	if err != nil {
		return "", err
	}
	m, err := s.GetMsg(ctx, ack.Sequence)
	if err != nil {
		return "", fmt.Errorf("get stream seq %d: %w", ack.Sequence, err)
	}
	if d := m.Header.Get(stream.HeaderBodySHA256); d != "" {
		return d, nil
	}
	// Stored before the digest header existed.
	return bodyDigest(m.Data), nil
}

func (h *Handler) storedStream(ctx context.Context, name string) (jetstream.Stream, error) {
	h.storedMu.Lock()
	defer h.storedMu.Unlock()
	if h.stored != nil && h.stored.CachedInfo().Config.Name == name {
		return h.stored, nil
	}
	s, err := h.pub.Stream(ctx, name)
	if err != nil {
		return nil, fmt.Errorf("stream %s: %w", name, err)
	}
	h.stored = s
	return s, nil
}

func checkContentType(ct string) error {
	if ct == "" {
		return newProblem(http.StatusUnsupportedMediaType, "unsupported-media-type", "Unsupported media type", "Content-Type must be application/json")
	}
	mt, _, err := mime.ParseMediaType(ct)
	if err != nil || (mt != "application/json" && !strings.HasSuffix(mt, "+json")) {
		return newProblem(http.StatusUnsupportedMediaType, "unsupported-media-type", "Unsupported media type", "Content-Type must be application/json")
	}
	return nil
}

// readBody reads a webhook's JSON body, at most MaxBodyBytes. A body that
// breaks off (the connection failed mid-body) is answered 503 with
// Retry-After: nothing of it was kept, and the sender retries.
func (h *Handler) readBody(c echo.Context) ([]byte, error) {
	req := c.Request()
	if err := checkContentType(req.Header.Get(echo.HeaderContentType)); err != nil {
		return nil, err
	}
	if req.ContentLength > h.cfg.MaxBodyBytes {
		return nil, tooLarge(h.cfg.MaxBodyBytes)
	}
	body, err := io.ReadAll(http.MaxBytesReader(c.Response(), req.Body, h.cfg.MaxBodyBytes))
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return nil, tooLarge(h.cfg.MaxBodyBytes)
		}
		p := newProblem(http.StatusServiceUnavailable, "unreadable-body", "Unreadable body", "the request body could not be read; retry")
		p.retryAfter = h.cfg.RetryAfter
		return nil, p
	}
	return body, nil
}

func tooLarge(limit int64) *Problem {
	return newProblem(http.StatusRequestEntityTooLarge, "body-too-large", "Body too large",
		fmt.Sprintf("the body exceeds %d bytes", limit))
}

// Run connects to NATS, ensures the stream and serves until ctx is done.
// On shutdown it first turns /readyz to 503 and keeps serving webhooks for
// DrainGrace with "Connection: close", then stops accepting, lets
// in-flight requests finish within ShutdownTimeout, drains the NATS
// connection and closes the operations listener last.
func Run(ctx context.Context, cfg Config, log *zap.Logger) error {
	cfg = cfg.WithDefaults()
	if err := cfg.validate(); err != nil {
		return fmt.Errorf("ingress config: %w", err)
	}
	pub, err := openPool(cfg, cfg.NATSConnections, log)
	if err != nil {
		return err
	}
	defer pub.close()
	rd := &readiness{stream: cfg.Stream.Name, stopping: ctx.Done(), connected: pub.connected}
	metrics := NewMetrics()
	var grouped *batcher // nil: every event published alone
	if cfg.BatchMax > 1 {
		grouped = newBatcher(pub, cfg, metrics, log.Named("batch"))
		defer grouped.close()
	}
	ensureErr, stopEnsure := ensureInBackground(ctx, pub, cfg, rd, log)
	defer stopEnsure()
	var handlerPub Publisher = pub
	if grouped != nil {
		handlerPub = grouped
	}
	// Nothing is published before the stream has its settings: a stream
	// of the same name the ingress could not update (memory storage, say)
	// would take events it does not keep.
	handlerPub = ensuredOnly{Publisher: handlerPub, ensured: &rd.ensured, stream: cfg.Stream.Name}
	h, err := NewHandler(cfg, handlerPub, rd.ready, metrics, log.Named("http"))
	if err != nil {
		return err
	}

	tcpLn, opsLn, err := listen(cfg)
	if err != nil {
		return err
	}
	ln := &closeOnceListener{Listener: tcpLn}
	conns := newConnStates()
	srv, ops := newServers(ctx, cfg, h, conns, log)
	// Both servers are joined before Run returns, after the operations
	// listener's shutdown below.
	var serving sync.WaitGroup
	defer serving.Wait()
	serveErr := make(chan error, 2)
	serving.Go(func() {
		if cfg.TLSCertFile != "" {
			serveErr <- srv.ServeTLS(ln, cfg.TLSCertFile, cfg.TLSKeyFile)
			return
		}
		serveErr <- srv.Serve(ln)
	})
	serving.Go(func() { serveErr <- ops.Serve(opsLn) })
	// The operations listener closes last: /readyz answers until the end.
	defer shutdownOps(ctx, ops)
	log.Info("ingress listening", zap.String("addr", ln.Addr().String()), zap.String("ops_addr", opsLn.Addr().String()),
		zap.String("path", WebhookPath), zap.String("stream", cfg.Stream.Name), zap.Bool("tls", cfg.TLSCertFile != ""),
		zap.Float64("rate_limit", max(cfg.RateLimit, 0)), zap.Bool("dataverse", cfg.Dataverse != nil))

	select {
	case err := <-serveErr:
		_ = srv.Close()
		return fmt.Errorf("serve: %w", err)
	case err := <-ensureErr:
		shutdownCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), cfg.ShutdownTimeout)
		defer cancel()
		_ = srv.Shutdown(shutdownCtx)
		return err
	case <-ctx.Done():
	}
	return drainWebhooks(ctx, cfg, srv, ln, conns, serveErr, func() {
		grouped.close() // its last batches publish before the connections drain
		pub.drain(log)
	}, log)
}

// ensureInBackground ensures the stream while the ingress serves (503, not
// ready, while NATS is down: events are accepted once it is up), then
// checks the stream every ReadinessInterval for /readyz. It returns the
// channel a permanent failure (a server too old) arrives on, and the
// function that stops it and waits for it.
func ensureInBackground(ctx context.Context, pub *pool, cfg Config, rd *readiness, log *zap.Logger) (<-chan error, func()) {
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	failed := make(chan error, 1)
	go func() {
		defer close(done)
		err := pub.ensureStream(ctx, cfg, log)
		switch {
		case err == nil:
			rd.ensured.Store(true)
			rd.refresh(ctx, cfg.ReadinessInterval, func(ctx context.Context) error {
				return pub.ready(ctx, cfg.Stream, &rd.ensured, log)
			})
		case ctx.Err() == nil:
			failed <- err
		}
	}()
	return failed, func() { cancel(); <-done }
}

// shutdownOps shuts the operations server down within a second, and
// closes it past that.
func shutdownOps(ctx context.Context, ops *http.Server) {
	opsCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Second)
	defer cancel()
	if ops.Shutdown(opsCtx) != nil {
		_ = ops.Close()
	}
}

// newServers returns the webhook server, which answers with
// "Connection: close" once ctx ends and reports its connections to conns,
// and the operations server.
func newServers(ctx context.Context, cfg Config, h *Handler, conns *connStates, log *zap.Logger) (srv, ops *http.Server) {
	srv = &http.Server{
		Handler:           closeWhileDraining(h, ctx.Done()),
		ReadHeaderTimeout: cfg.ReadHeaderTimeout,
		ReadTimeout:       cfg.ReadTimeout,
		WriteTimeout:      cfg.ReadTimeout + cfg.PublishTimeout,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    cfg.MaxHeaderBytes,
		ErrorLog:          limitedStdLog(log.Named("http")),
		ConnState:         conns.track,
	}
	if cfg.TLSCertFile != "" {
		srv.TLSConfig = &tls.Config{MinVersion: tls.VersionTLS12}
	}
	ops = &http.Server{
		Handler:           h.Ops(),
		ReadHeaderTimeout: cfg.ReadHeaderTimeout,
		ReadTimeout:       cfg.ReadTimeout,
		WriteTimeout:      cfg.ReadTimeout,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    cfg.MaxHeaderBytes,
		ErrorLog:          limitedStdLog(log.Named("ops")),
	}
	return srv, ops
}

// listen opens the webhook and operations listeners, or takes those
// given.
func listen(cfg Config) (ln, opsLn net.Listener, err error) {
	ln = cfg.Listener
	if ln == nil {
		if ln, err = net.Listen("tcp", cfg.Addr); err != nil {
			return nil, nil, fmt.Errorf("listen on %s: %w", cfg.Addr, err)
		}
	}
	opsLn = cfg.OpsListener
	if opsLn == nil {
		if opsLn, err = net.Listen("tcp", cfg.OpsAddr); err != nil {
			if cfg.Listener == nil {
				_ = ln.Close()
			}
			return nil, nil, fmt.Errorf("listen on %s (operations): %w", cfg.OpsAddr, err)
		}
	}
	return ln, opsLn, nil
}

// ensuredOnly refuses publishes until the stream has been ensured (created
// or updated to the configuration): the webhook is answered 503.
type ensuredOnly struct {
	Publisher
	ensured *atomic.Bool
	stream  string
}

func (p ensuredOnly) PublishMsg(ctx context.Context, msg *nats.Msg, opts ...jetstream.PublishOpt) (*jetstream.PubAck, error) {
	if !p.ensured.Load() {
		return nil, fmt.Errorf("stream %s not created or updated to its settings yet", p.stream)
	}
	return p.Publisher.PublishMsg(ctx, msg, opts...)
}
