// Package server is the ingress HTTP service: it verifies signed portal
// webhooks, validates the events and stores them in JetStream before it
// answers.
package server

import (
	"cmp"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"time"

	"github.com/likeperson/portalsync/ingress/dataverse"
	"github.com/likeperson/portalsync/pkg/signature"
	"github.com/likeperson/portalsync/pkg/stream"
)

// Defaults for Config.
const (
	DefaultAddr              = ":8080"
	DefaultNATSURL           = "nats://127.0.0.1:4222"
	DefaultNATSConnections   = 1
	DefaultMaxBodyBytes      = 256 << 10
	DefaultPublishTimeout    = 5 * time.Second
	DefaultRetryAfter        = 5 * time.Second
	DefaultShutdownTimeout   = 10 * time.Second
	DefaultReadHeaderTimeout = 5 * time.Second
	DefaultReadTimeout       = 30 * time.Second
	DefaultMaxHeaderBytes    = 16 << 10
	DefaultRateLimit         = 1000
	DefaultRateLimitSources  = 100_000
	DefaultOpsAddr           = "127.0.0.1:9080"
	DefaultDrainGrace        = 5 * time.Second
	DefaultReadinessInterval = 5 * time.Second
	DefaultBatchMin          = 16
	DefaultBatchMax          = 100
	DefaultBatchWait         = time.Millisecond
	DefaultBatchPublishers   = 1
	// MaxBatchMax is nats-server's largest atomic batch (its default
	// jetstream.limits.max_batch_size).
	MaxBatchMax = 1000
)

// WebhookPath is where the portal posts events.
const WebhookPath = "/webhooks/portal"

// Config configures the ingress. Zero fields take the defaults named in
// their comments; Secrets is required.
type Config struct {
	// Addr is the webhook listen address: the webhook routes only. Default
	// ":8080". Ignored when Listener is set.
	Addr string
	// Listener, when set, is served instead of listening on Addr (tests
	// pass one bound to port 0).
	Listener net.Listener
	// OpsAddr is the operations listen address: /healthz, /readyz and
	// /metrics, plain HTTP, never rate limited. Default "127.0.0.1:9080",
	// loopback: set a private address (or "0.0.0.0:9080" in a container)
	// for probes and Prometheus from elsewhere, never a public one.
	// Ignored when OpsListener is set.
	OpsAddr string
	// OpsListener, when set, is served instead of listening on OpsAddr.
	OpsListener net.Listener
	// ReadinessInterval is how often the stream is checked with one
	// JetStream request; /readyz answers from the last check and the
	// connections' state, and makes no request of its own. Default 5 s.
	ReadinessInterval time.Duration
	// NATSURL is the NATS server. Default "nats://127.0.0.1:4222".
	NATSURL string
	// NATSConnections is how many connections publishes are spread over.
	// Default 1: on the 2-core reference machine more connections did not
	// raise throughput (docs/BENCHMARKS.md); hosts with more cores may
	// gain.
	NATSConnections int
	// Secrets verify webhook signatures; several may be valid at once
	// during a rotation. Required.
	Secrets []signature.Secret
	// Tolerance is how far a webhook-timestamp may be from now, either way.
	// Default 5 minutes.
	Tolerance time.Duration
	// MaxBodyBytes is the largest accepted body. Default 256 KiB.
	MaxBodyBytes int64
	// PublishTimeout bounds the wait for JetStream's acknowledgement.
	// Default 5 s.
	PublishTimeout time.Duration
	// RetryAfter is what a 503 asks the portal to wait. Default 5 s.
	RetryAfter time.Duration
	// DrainGrace is how long, after SIGTERM, the webhook listener keeps
	// serving while /readyz answers 503, so that a load balancer notices
	// and stops sending before the listener closes; answers meanwhile
	// carry "Connection: close", so clients leave their kept-alive
	// connections between requests instead of having them closed under a
	// request. Default 5 s: load balancers commonly probe every 1-2 s and
	// take a server out after two or three failures. Negative: none.
	// DrainGrace plus ShutdownTimeout must fit in the orchestrator's stop
	// timeout (Kubernetes 30 s, Docker 10 s unless stop_grace_period).
	DrainGrace time.Duration
	// ShutdownTimeout bounds how long in-flight requests may finish after
	// the grace, when the webhook listener has closed. Default 10 s.
	ShutdownTimeout time.Duration
	// ReadHeaderTimeout and ReadTimeout bound slow clients. Defaults 5 s
	// and 30 s.
	ReadHeaderTimeout time.Duration
	ReadTimeout       time.Duration
	// MaxHeaderBytes bounds request headers. Default 16 KiB.
	MaxHeaderBytes int
	// RateLimit is the requests per second allowed from one source address
	// on the webhook paths (portal and Dataverse). Default 1000; negative
	// turns the limit off. RateBurst is the bucket size (default twice the
	// rate). An IPv6 source counts by its /64.
	RateLimit float64
	RateBurst int
	// RateLimitSources is how many sources the rate limit tracks, the
	// least recently seen forgotten first (about 500 bytes each with the runtime's overhead). Default
	// 100,000.
	RateLimitSources int
	// AllowedSources, when not empty, lists the networks webhooks may come
	// from; others get 403.
	AllowedSources []netip.Prefix
	// TrustedProxies lists the networks of reverse proxies whose
	// X-Forwarded-For header names the source; without it the source is the
	// connection's peer address.
	TrustedProxies []netip.Prefix
	// TLSCertFile and TLSKeyFile, when set, serve HTTPS (for deployments
	// without a TLS-terminating proxy).
	TLSCertFile string
	TLSKeyFile  string
	// BatchMax is the most events published together in one atomic batch
	// (group commit: with sync_interval always the server flushes to disk
	// once per batch instead of once per event). Default 100; at most
	// 1000 (the server's limit); 1 turns grouping off, every event is
	// published alone. Groups are published as batches only while a batch
	// is answered sooner than a single publish (both measured).
	BatchMax int
	// BatchMin is the fewest events published as one atomic batch; fewer
	// are published one by one (nats-server pays a fixed price per atomic
	// batch, about 10-20 single publishes' worth on the reference
	// machine: docs/BENCHMARKS.md). Default 16 (or BatchMax if smaller).
	BatchMin int
	// BatchWait is how long the first event of a group waits for others
	// to join it (only while at least BatchMin requests are publishing).
	// Default 1 ms; a negative value does not wait (a batch then holds
	// what arrived while every publisher was busy).
	BatchWait time.Duration
	// BatchPublishers is how many batches may be awaiting their
	// acknowledgement at once. Default 1: the server handles one batch at
	// a time per stream, so more in flight make smaller batches, not
	// faster ones (the server allows 50 in flight per stream; a refusal
	// falls back to single publishes).
	BatchPublishers int
	// Stream is the JetStream stream the events are stored in.
	Stream stream.Config
	// Dataverse, when set, serves POST /webhooks/dataverse: Dynamics 365
	// (Dataverse) webhooks, authenticated by key and translated to events.
	// Default nil (the route answers 404).
	Dataverse *dataverse.Config
	// Now returns the current time. Default time.Now.
	Now func() time.Time
}

// WithDefaults returns c with every zero field set to its default, the
// values the ingress binary's flags default to.
func (c Config) WithDefaults() Config {
	c.Addr = cmp.Or(c.Addr, DefaultAddr)
	c.NATSURL = cmp.Or(c.NATSURL, DefaultNATSURL)
	c.NATSConnections = cmp.Or(c.NATSConnections, DefaultNATSConnections)
	c.Tolerance = cmp.Or(c.Tolerance, signature.DefaultTolerance)
	c.MaxBodyBytes = cmp.Or(c.MaxBodyBytes, DefaultMaxBodyBytes)
	c.PublishTimeout = cmp.Or(c.PublishTimeout, DefaultPublishTimeout)
	c.RetryAfter = cmp.Or(c.RetryAfter, DefaultRetryAfter)
	c.ShutdownTimeout = cmp.Or(c.ShutdownTimeout, DefaultShutdownTimeout)
	c.ReadHeaderTimeout = cmp.Or(c.ReadHeaderTimeout, DefaultReadHeaderTimeout)
	c.ReadTimeout = cmp.Or(c.ReadTimeout, DefaultReadTimeout)
	c.MaxHeaderBytes = cmp.Or(c.MaxHeaderBytes, DefaultMaxHeaderBytes)
	c.RateLimit = cmp.Or(c.RateLimit, DefaultRateLimit)
	c.RateLimitSources = cmp.Or(c.RateLimitSources, DefaultRateLimitSources)
	c.OpsAddr = cmp.Or(c.OpsAddr, DefaultOpsAddr)
	c.DrainGrace = cmp.Or(c.DrainGrace, DefaultDrainGrace)
	c.ReadinessInterval = cmp.Or(c.ReadinessInterval, DefaultReadinessInterval)
	c.BatchMax = cmp.Or(c.BatchMax, DefaultBatchMax)
	c.BatchMin = cmp.Or(c.BatchMin, min(DefaultBatchMin, c.BatchMax))
	c.BatchWait = cmp.Or(c.BatchWait, DefaultBatchWait)
	c.BatchPublishers = cmp.Or(c.BatchPublishers, DefaultBatchPublishers)
	c.Stream = c.Stream.WithDefaults()
	if c.Now == nil {
		c.Now = time.Now
	}
	return c
}

func (c Config) validate() error {
	if len(c.Secrets) == 0 {
		return errors.New("at least one webhook secret is required (PORTAL_WEBHOOK_SECRETS)")
	}
	if c.MaxBodyBytes < 1 {
		return errors.New("max body bytes must be positive")
	}
	// Headers and the subject travel with the body; keep room for them.
	if limit := int64(c.Stream.MaxMsgSize) - 4096; c.MaxBodyBytes > limit {
		return fmt.Errorf("max body bytes %d exceeds what the stream stores (%d)", c.MaxBodyBytes, limit)
	}
	if c.Tolerance < 0 || c.PublishTimeout < 0 || c.RetryAfter < 0 || c.ShutdownTimeout < 0 || c.ReadinessInterval < 0 {
		return errors.New("durations must not be negative")
	}
	if c.BatchMax < 1 || c.BatchMax > MaxBatchMax {
		return fmt.Errorf("batch max must be 1 to %d, got %d", MaxBatchMax, c.BatchMax)
	}
	if c.BatchMax > 1 && (c.BatchMin < 1 || c.BatchMin > c.BatchMax) {
		return fmt.Errorf("batch min must be 1 to batch max (%d), got %d", c.BatchMax, c.BatchMin)
	}
	if c.BatchPublishers < 1 {
		return fmt.Errorf("batch publishers must be positive, got %d", c.BatchPublishers)
	}
	if c.RateBurst < 0 || c.RateLimitSources < 0 {
		return errors.New("rate burst and sources must not be negative")
	}
	if (c.TLSCertFile == "") != (c.TLSKeyFile == "") {
		return errors.New("TLS needs both a certificate file and a key file")
	}
	if c.Dataverse != nil {
		if err := c.Dataverse.Validate(); err != nil {
			return fmt.Errorf("dataverse: %w", err)
		}
	}
	return c.Stream.Validate()
}
