package consumer

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/likeperson/portalsync/pkg/event"
)

// Metrics are the consumer's Prometheus metrics. Labels carry event types
// and statuses only, never identifiers or personal data.
type Metrics struct {
	events       *prometheus.CounterVec
	applySeconds prometheus.Histogram
	batchSize    prometheus.Histogram
	redelivered  prometheus.Counter
	deadLetters  prometheus.Counter
	endToEnd     prometheus.Histogram
	// Pending and AckPending are set by whoever polls the consumer info.
	Pending    prometheus.Gauge
	AckPending prometheus.Gauge
}

// NewMetrics registers the consumer's metrics with reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		events: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "portalsync_syncer_events_total",
			Help: "Events handled, by event type and outcome (success, skipped, failed, duplicate, retry).",
		}, []string{"type", "status"}),
		applySeconds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "portalsync_syncer_apply_seconds",
			Help:    "Time to apply one batch (one transaction), in seconds.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 14),
		}),
		batchSize: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "portalsync_syncer_batch_size",
			Help:    "Events per applied batch.",
			Buckets: prometheus.ExponentialBuckets(1, 2, 11),
		}),
		redelivered: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "portalsync_syncer_redeliveries_total",
			Help: "Deliveries of events that had been delivered before.",
		}),
		deadLetters: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "portalsync_syncer_dead_letters_total",
			Help: "Events copied to the dead-letter stream.",
		}),
		endToEnd: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "portalsync_syncer_end_to_end_seconds",
			Help:    "From the ingress receiving an event to its transaction committing, in seconds.",
			Buckets: prometheus.ExponentialBuckets(0.001, 2, 16),
		}),
		Pending: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "portalsync_syncer_consumer_pending",
			Help: "Events in the stream not yet delivered to the consumer (lag).",
		}),
		AckPending: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "portalsync_syncer_consumer_ack_pending",
			Help: "Events delivered and not yet acknowledged.",
		}),
	}
	reg.MustRegister(m.events, m.applySeconds, m.batchSize, m.redelivered, m.deadLetters, m.endToEnd, m.Pending, m.AckPending)
	return m
}

// typeLabel bounds the label's values: unknown types share one.
func typeLabel(t event.Type) string {
	if t.Known() {
		return string(t)
	}
	return "unknown"
}
