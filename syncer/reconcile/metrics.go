package reconcile

import (
	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are the reconciler's Prometheus metrics; labels hold table kinds
// only.
type Metrics struct {
	lastSuccess     prometheus.Gauge
	interval        prometheus.Gauge
	tableRead       *prometheus.GaugeVec
	tableFullRead   *prometheus.GaugeVec
	rowsRead        *prometheus.CounterVec
	published       prometheus.Counter
	corrections     prometheus.Counter
	throttleWaits   prometheus.Counter
	throttleSeconds prometheus.Counter
	fullReads       *prometheus.CounterVec
	failures        prometheus.Counter
}

// NewMetrics creates the metrics and registers them with reg (nil: not
// registered).
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		lastSuccess: prometheus.NewGauge(prometheus.GaugeOpts{Name: "portalsync_reconcile_last_success_timestamp_seconds",
			Help: "Unix time of the last reconciliation pass that completed; read from the stored position at start, 0 before the first pass."}),
		interval: prometheus.NewGauge(prometheus.GaugeOpts{Name: "portalsync_reconcile_interval_seconds",
			Help: "The wait between two passes (RECONCILE_INTERVAL), for the alert on a reconciliation that has not succeeded for two of them."}),
		tableRead: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "portalsync_reconcile_table_read_timestamp_seconds",
			Help: "The reconciler's position: Unix time of the last complete read of a table (member, membership), whose delta link the next pass follows."}, []string{"table"}),
		tableFullRead: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "portalsync_reconcile_table_full_read_timestamp_seconds",
			Help: "Unix time of the last full read of a table (member, membership)."}, []string{"table"}),
		rowsRead: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "portalsync_reconcile_rows_read_total",
			Help: "Rows read from the portal's Web API, by table (member, membership)."}, []string{"table"}),
		published: prometheus.NewCounter(prometheus.CounterOpts{Name: "portalsync_reconcile_events_published_total",
			Help: "Events the reconciler published (JetStream drops a repeated id)."}),
		corrections: prometheus.NewCounter(prometheus.CounterOpts{Name: "portalsync_reconcile_corrections_total",
			Help: "Memberships the app held active that the portal no longer had: deactivations published."}),
		throttleWaits: prometheus.NewCounter(prometheus.CounterOpts{Name: "portalsync_reconcile_throttle_waits_total",
			Help: "429 answers (service protection limits) waited out."}),
		throttleSeconds: prometheus.NewCounter(prometheus.CounterOpts{Name: "portalsync_reconcile_throttle_wait_seconds_total",
			Help: "Seconds spent waiting as Retry-After asked."}),
		fullReads: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "portalsync_reconcile_full_reads_total",
			Help: "Full reads of a table, by table and cause (first, delta_refused, forced, membership_deleted)."}, []string{"table", "cause"}),
		failures: prometheus.NewCounter(prometheus.CounterOpts{Name: "portalsync_reconcile_failures_total",
			Help: "Reconciliation passes that failed."}),
	}
	if reg != nil {
		reg.MustRegister(m.lastSuccess, m.interval, m.tableRead, m.tableFullRead, m.rowsRead, m.published, m.corrections, m.throttleWaits, m.throttleSeconds, m.fullReads, m.failures)
	}
	return m
}

// Interval is the interval gauge (for tests).
func (m *Metrics) Interval() prometheus.Gauge { return m.interval }

// LastSuccess is the last-success gauge (for tests).
func (m *Metrics) LastSuccess() prometheus.Gauge { return m.lastSuccess }

// TableRead is a table's last-read gauge (for tests).
func (m *Metrics) TableRead(table string) prometheus.Gauge { return m.tableRead.WithLabelValues(table) }

// TableFullRead is a table's last-full-read gauge (for tests).
func (m *Metrics) TableFullRead(table string) prometheus.Gauge {
	return m.tableFullRead.WithLabelValues(table)
}

// RowsRead is the rows-read counter of a table (for tests).
func (m *Metrics) RowsRead(table string) prometheus.Counter { return m.rowsRead.WithLabelValues(table) }

// ThrottleWaits is the 429-waits counter (for tests).
func (m *Metrics) ThrottleWaits() prometheus.Counter { return m.throttleWaits }

// FullReads is the full-read counter of a table and cause (for tests).
func (m *Metrics) FullReads(table, cause string) prometheus.Counter {
	return m.fullReads.WithLabelValues(table, cause)
}

// observePosition sets the position gauges from a stored position.
func (m *Metrics) observePosition(pos Position) {
	if !pos.LastSuccess.IsZero() {
		m.lastSuccess.Set(float64(pos.LastSuccess.Unix()))
	}
	for table, st := range pos.Tables {
		m.observeTable(table, st)
	}
}

// observeTable sets a table's position gauges.
func (m *Metrics) observeTable(table string, st TableState) {
	if !st.ReadAt.IsZero() {
		m.tableRead.WithLabelValues(table).Set(float64(st.ReadAt.Unix()))
	}
	if !st.FullReadAt.IsZero() {
		m.tableFullRead.WithLabelValues(table).Set(float64(st.FullReadAt.Unix()))
	}
}
