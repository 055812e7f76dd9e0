package consumer

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/likeperson/portalsync/pkg/event"
	"github.com/likeperson/portalsync/syncer/store"
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
	held         prometheus.Gauge
	paused       *prometheus.GaugeVec
	pausedSince  *prometheus.GaugeVec
	recreated    prometheus.Counter
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
		held: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "portalsync_syncer_held_events",
			Help: "Events fetched and not yet settled; kept alive with in-progress signals, also while paused.",
		}),
		paused: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "portalsync_syncer_paused",
			Help: "1 while the consumer waits for a dependency, by reason (database unavailable, NATS unavailable, durable consumer missing).",
		}, []string{"reason"}),
		pausedSince: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "portalsync_syncer_paused_since_seconds",
			Help: "Unix time the current pause began, by reason; 0 when not paused.",
		}, []string{"reason"}),
		recreated: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "portalsync_syncer_consumer_recreated_total",
			Help: "Times the durable consumer was found removed and created again.",
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
	reg.MustRegister(m.events, m.applySeconds, m.batchSize, m.redelivered, m.deadLetters, m.endToEnd,
		m.held, m.paused, m.pausedSince, m.recreated, m.Pending, m.AckPending)
	for _, r := range order {
		m.setPaused(r, false)
	}
	// Failed events are exported at 0 from the start, so that the first
	// one is an increase (the PortalsyncFailedEvents alert), not a new
	// series that increase() cannot see.
	for _, t := range event.AllTypes {
		m.events.WithLabelValues(string(t), store.StatusFailed)
	}
	m.events.WithLabelValues("unknown", store.StatusFailed)
	return m
}

// setPaused records the start or end of a pause.
func (m *Metrics) setPaused(reason string, on bool) {
	if on {
		m.paused.WithLabelValues(reason).Set(1)
		m.pausedSince.WithLabelValues(reason).SetToCurrentTime()
		return
	}
	m.paused.WithLabelValues(reason).Set(0)
	m.pausedSince.WithLabelValues(reason).Set(0)
}

// typeLabel bounds the label's values: unknown types share one.
func typeLabel(t event.Type) string {
	if t.Known() {
		return string(t)
	}
	return "unknown"
}
