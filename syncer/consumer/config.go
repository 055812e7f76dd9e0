package consumer

import (
	"cmp"
	"fmt"
	"slices"
	"time"

	"github.com/likeperson/portalsync/pkg/stream"
)

// Defaults for Config.
const (
	DefaultDurable         = "portalsync-syncer"
	DefaultAckWait         = 30 * time.Second
	DefaultMaxDeliver      = 20
	DefaultWorkers         = 4
	DefaultBatchSize       = 1024
	DefaultMaxAckPending   = 10000
	DefaultShutdownTimeout = 10 * time.Second
	DefaultPullExpiry      = 10 * time.Second
	DefaultApplyTimeout    = 2 * time.Minute
	DefaultProbeMax        = 5 * time.Second
)

// DefaultBackOff is the redelivery delay after each failed attempt; the
// last value repeats.
var DefaultBackOff = []time.Duration{time.Second, 5 * time.Second, 15 * time.Second, 30 * time.Second, time.Minute}

// Config configures the consumer. Zero fields take the defaults.
type Config struct {
	// Stream is the stream name. Default stream.DefaultName.
	Stream string
	// Durable is the consumer name shared by every replica. Default
	// "portalsync-syncer".
	Durable string
	// AckWait is how long the server waits for an ack (or an in-progress
	// signal) before redelivering. A held event not settled within
	// AckWait/2 gets an in-progress signal, and again until it is settled,
	// so the server hears of it at least every 2/3 of AckWait. Default 30 s.
	AckWait time.Duration
	// MaxDeliver is the delivery budget of an event whose own transaction
	// keeps failing with a retryable error (a timeout, a deadlock that
	// three immediate retries did not resolve): at that delivery it is
	// logged as failed and dead-lettered. The database or NATS being
	// unavailable never spends it: held events wait and are applied after
	// the outage. The server itself never drops an event for its
	// deliveries (its max_deliver is unlimited). Default 20.
	MaxDeliver int
	// BackOff lists redelivery delays after a retryable failure. Default
	// 1s, 5s, 15s, 30s, 1m.
	BackOff []time.Duration
	// Workers is how many transactions run at once; one member's events
	// always go to the same worker, in stream order. Default 4.
	Workers int
	// BatchSize is the most events one transaction applies; a worker takes
	// what is waiting, up to this many, so batches are small when traffic
	// is light. 1 applies every event on its own. The consumer holds at
	// most 2×Workers×BatchSize events, a batch being applied and the next
	// one per worker (capacity, bounded by MaxAckPending): Workers×BatchSize
	// until the apply rate is measured, then what the workers can finish
	// within half of AckWait (fetchLimit), and it fetches up to that limit
	// once a quarter of it is free.
	// Default 1024 (measured: docs/BENCHMARKS.md).
	BatchSize int
	// MaxAckPending bounds unacknowledged events across all replicas.
	// Default 10000.
	MaxAckPending int
	// ShutdownTimeout bounds how long in-flight events may finish after
	// the context ends. Default 10 s.
	ShutdownTimeout time.Duration
	// ApplyTimeout bounds one transaction, and the write of an event's
	// failed sync-log row, so a hung database call is retried instead of
	// holding a worker. It may exceed AckWait: held
	// events are kept alive. At least 100 ms. Default 2 min.
	ApplyTimeout time.Duration
	// PullExpiry bounds one pull request, so a lost consumer leader (a
	// cluster node failing) or a removed consumer is noticed within about
	// this long. Default 10 s.
	PullExpiry time.Duration
	// ProbeMax is the longest wait between two probes of an unavailable
	// database or NATS server; probes start at 100 ms and double. Default
	// 5 s.
	ProbeMax time.Duration
}

// WithDefaults returns c with every zero field set to its default, the
// values the syncer binary's flags default to.
func (c Config) WithDefaults() Config {
	c.Stream = cmp.Or(c.Stream, stream.DefaultName)
	c.Durable = cmp.Or(c.Durable, DefaultDurable)
	c.AckWait = cmp.Or(c.AckWait, DefaultAckWait)
	c.MaxDeliver = cmp.Or(c.MaxDeliver, DefaultMaxDeliver)
	c.Workers = cmp.Or(c.Workers, DefaultWorkers)
	c.BatchSize = cmp.Or(c.BatchSize, DefaultBatchSize)
	c.MaxAckPending = cmp.Or(c.MaxAckPending, DefaultMaxAckPending)
	c.ShutdownTimeout = cmp.Or(c.ShutdownTimeout, DefaultShutdownTimeout)
	c.PullExpiry = cmp.Or(c.PullExpiry, DefaultPullExpiry)
	c.ApplyTimeout = cmp.Or(c.ApplyTimeout, DefaultApplyTimeout)
	c.ProbeMax = cmp.Or(c.ProbeMax, DefaultProbeMax)
	if len(c.BackOff) == 0 {
		c.BackOff = slices.Clone(DefaultBackOff)
	}
	return c
}

// Validate reports a specific problem with the configuration.
func (c Config) Validate() error {
	c = c.WithDefaults()
	switch {
	case c.Workers < 1 || c.Workers > 1024:
		return fmt.Errorf("workers must be 1 to 1024, got %d", c.Workers)
	case c.BatchSize < 1 || c.BatchSize > 10000:
		return fmt.Errorf("batch size must be 1 to 10000, got %d", c.BatchSize)
	case c.MaxDeliver < 2:
		return fmt.Errorf("max deliver must be at least 2, got %d", c.MaxDeliver)
	case c.AckWait < time.Second:
		return fmt.Errorf("ack wait must be at least 1s, got %s", c.AckWait)
	case c.PullExpiry < time.Second:
		return fmt.Errorf("pull expiry must be at least 1s, got %s", c.PullExpiry)
	case c.ApplyTimeout < 100*time.Millisecond:
		// A negative one would pass the zero-means-default rule and time
		// out every transaction: all events would end as dead letters.
		return fmt.Errorf("apply timeout must be at least 100ms, got %s", c.ApplyTimeout)
	case c.ShutdownTimeout < 0:
		return fmt.Errorf("shutdown timeout must not be negative, got %s", c.ShutdownTimeout)
	case c.ProbeMax < 100*time.Millisecond:
		return fmt.Errorf("probe max must be at least 100ms, got %s", c.ProbeMax)
	case c.MaxAckPending < 1:
		return fmt.Errorf("max ack pending must be positive, got %d", c.MaxAckPending)
	}
	for _, d := range c.BackOff {
		if d <= 0 {
			return fmt.Errorf("backoff delays must be positive, got %s", d)
		}
	}
	return nil
}

// capacity is how many events the consumer holds at most: a batch being
// applied and the next one waiting, per worker, within MaxAckPending.
func (c Config) capacity() int {
	return max(1, min(2*c.Workers*c.BatchSize, c.MaxAckPending))
}

// fetchLimit is how many events the consumer may hold given the measured
// apply rate of one busy worker (events per second; 0 when not measured
// yet): what the workers can finish within half of AckWait, so that most
// held events are settled before they need an in-progress signal; at
// least one per worker, at most capacity. Before the first measurement it
// is one batch per worker.
func (c Config) fetchLimit(ratePerWorker float64) int {
	limit := c.capacity()
	if ratePerWorker <= 0 {
		return max(1, min(c.Workers*c.BatchSize, limit))
	}
	within := ratePerWorker * float64(c.Workers) * c.AckWait.Seconds() / 2
	if within < float64(limit) {
		limit = max(int(within), min(c.Workers, limit))
	}
	return limit
}
