package server

import (
	"net/http"
	"strconv"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/likeperson/portalsync/ingress/dataverse"
	"github.com/likeperson/portalsync/pkg/signature"
)

// Reasons of portalsync_ingress_rejected_total that alerts read, exported
// at 0 from the start (NewMetrics).
const (
	reasonDataverseKey     = "dataverse_key"
	reasonStreamFull       = "stream_full"
	reasonStoreUnavailable = "store_unavailable"
)

// Metrics are the ingress's Prometheus metrics. Labels carry statuses and
// reasons only, never identifiers or personal data.
type Metrics struct {
	registry       *prometheus.Registry
	requests       *prometheus.CounterVec
	rejected       *prometheus.CounterVec
	requestSeconds prometheus.Histogram
	publishSeconds prometheus.Histogram
	duplicates     prometheus.Counter
	// batchSize observes the events of each group published together (1:
	// alone); batchFallbacks counts groups the server refused, whose
	// events were then published one by one, by reason.
	batchSize      prometheus.Histogram
	batchFallbacks *prometheus.CounterVec
	// dataverseUntranslated counts Dataverse changes answered 422, by
	// reason: each is left to reconciliation.
	dataverseUntranslated *prometheus.CounterVec
	// dataverseRefusalsNoOrg counts refused changes whose organization the
	// context does not name: their sync-log row reaches no org admin.
	dataverseRefusalsNoOrg prometheus.Counter
	// dataverseRefusalsUnpublished counts refused changes whose record
	// could not be stored: no sync-log row at all.
	dataverseRefusalsUnpublished prometheus.Counter
}

// NewMetrics creates the ingress metrics in a registry of their own, with
// the Go and process collectors.
func NewMetrics() *Metrics {
	reg := prometheus.NewRegistry()
	m := &Metrics{
		registry: reg,
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "portalsync_ingress_requests_total",
			Help: "Webhook requests answered, by HTTP status.",
		}, []string{"status"}),
		rejected: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "portalsync_ingress_rejected_total",
			Help: "Webhook requests refused, by reason (signature verification failures, rate limit, allowlist, stream full, store unavailable, ...).",
		}, []string{"reason"}),
		requestSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "portalsync_ingress_request_seconds",
			Help:    "Time to answer a webhook request, in seconds.",
			Buckets: prometheus.ExponentialBuckets(0.0001, 2, 16),
		}),
		publishSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "portalsync_ingress_publish_seconds",
			Help:    "Time from publishing an event to JetStream's acknowledgement, in seconds.",
			Buckets: prometheus.ExponentialBuckets(0.0001, 2, 16),
		}),
		duplicates: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "portalsync_ingress_duplicates_total",
			Help: "Webhooks JetStream had stored already (same webhook-id within the duplicate window).",
		}),
		batchSize: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "portalsync_ingress_publish_batch_size",
			Help:    "Events published together in one atomic batch (1: published alone).",
			Buckets: prometheus.ExponentialBuckets(1, 2, 11),
		}),
		batchFallbacks: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "portalsync_ingress_publish_batch_fallbacks_total",
			Help: "Atomic batches not stored as a whole, whose events were then published one by one, by reason.",
		}, []string{"reason"}),
		dataverseUntranslated: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "portalsync_ingress_dataverse_untranslated_total",
			Help: "Dataverse webhooks that could not become events (answered 422, logged for reconciliation), by reason.",
		}, []string{"reason"}),
		dataverseRefusalsNoOrg: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "portalsync_ingress_dataverse_refusals_without_organization_total",
			Help: "Refused Dataverse changes whose organization is unknown: their sync-log row reaches no org admin.",
		}),
		dataverseRefusalsUnpublished: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "portalsync_ingress_dataverse_refusals_unpublished_total",
			Help: "Refused Dataverse changes whose record for the sync log could not be stored.",
		}),
	}
	reg.MustRegister(m.requests, m.rejected, m.requestSeconds, m.publishSeconds, m.duplicates, m.batchSize, m.batchFallbacks, m.dataverseUntranslated,
		m.dataverseRefusalsNoOrg, m.dataverseRefusalsUnpublished,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	// At 0 from the start: the first refusal is an increase the
	// PortalsyncDataverseRefused alert sees, not a new series.
	for _, r := range dataverse.UntranslatableReasons {
		m.dataverseUntranslated.WithLabelValues(r)
	}
	// Likewise the series the PortalsyncSignatureFailures,
	// PortalsyncStreamFull and PortalsyncIngressUnavailable alerts read.
	for _, r := range []signature.Reason{signature.ReasonMissingHeader, signature.ReasonMalformedID, signature.ReasonMalformedTimestamp,
		signature.ReasonTimestampTooOld, signature.ReasonTimestampTooNew, signature.ReasonMalformedSignature, signature.ReasonNoMatch} {
		m.rejected.WithLabelValues(string(r))
	}
	for _, r := range []string{reasonDataverseKey, reasonStreamFull, reasonStoreUnavailable} {
		m.rejected.WithLabelValues(r)
	}
	m.requests.WithLabelValues("503")
	return m
}

// Handler serves the metrics in the Prometheus text format.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.registry, promhttp.HandlerOpts{Registry: m.registry})
}

func (m *Metrics) observeRequest(status int, seconds float64, reason string) {
	m.requests.WithLabelValues(strconv.Itoa(status)).Inc()
	m.requestSeconds.Observe(seconds)
	if reason != "" {
		m.rejected.WithLabelValues(reason).Inc()
	}
}
