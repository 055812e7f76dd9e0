package e2e

import (
	"context"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"

	"github.com/likeperson/portalsync/syncer/reconcile"
)

func scrape(t *testing.T, url string) string {
	t.Helper()
	resp, err := http.Get(url + "/metrics")
	require.NoError(t, err)
	defer resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode)
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return string(b)
}

// metricValue returns the value of the first sample whose line starts with
// prefix (name and labels).
func metricValue(t *testing.T, text, prefix string) string {
	t.Helper()
	for _, line := range strings.Split(text, "\n") {
		if strings.HasPrefix(line, prefix) {
			f := strings.Fields(line)
			return f[len(f)-1]
		}
	}
	t.Fatalf("no sample %s in:\n%s", prefix, text)
	return ""
}

// Both binaries' /metrics carry what operators watch, and nothing personal.
func TestMetricsScraped(t *testing.T) {
	t.Parallel()
	sys := start(t)
	ctx := context.Background()
	var ids []string
	for i, typ := range []string{"membership-created", "role-updated", "membership-deactivated", "membership-merged"} {
		role := ""
		if typ != "membership-deactivated" && typ != "membership-merged" {
			role = "coordinator"
		}
		e := sys.event(typ, "met-m", "met-org", role, base.Add(time.Duration(i)*time.Minute))
		sys.send(t, e)
		ids = append(ids, e.ID)
	}
	// A duplicate, a bad signature, a bad event.
	dup := sys.event("membership-updated", "met-m", "met-org", "", base)
	resp, err := sys.client.SendEvent(ctx, dup)
	require.NoError(t, err)
	_, err = resp.Accepted()
	require.NoError(t, err)
	resp, err = sys.client.SendEvent(ctx, dup) // the same body again
	require.NoError(t, err)
	require.Equal(t, http.StatusOK, resp.Status)
	resp, err = sys.client.Send(ctx, "evt_x", []byte(`{}`))
	require.NoError(t, err)
	require.Equal(t, http.StatusBadRequest, resp.Status)
	req, err := http.NewRequest(http.MethodPost, sys.client.URL, strings.NewReader(`{}`))
	require.NoError(t, err)
	req.Header.Set("Content-Type", "application/json")
	resp, err = sys.client.Do(req)
	require.NoError(t, err)
	require.Equal(t, http.StatusUnauthorized, resp.Status)
	for _, id := range ids {
		sys.waitLogged(t, id)
	}

	in := scrape(t, sys.ingressOps)
	require.Equal(t, "5", metricValue(t, in, `portalsync_ingress_requests_total{status="202"}`))
	require.Equal(t, "1", metricValue(t, in, `portalsync_ingress_requests_total{status="200"}`))
	require.Equal(t, "1", metricValue(t, in, `portalsync_ingress_requests_total{status="400"}`))
	require.Equal(t, "1", metricValue(t, in, `portalsync_ingress_rejected_total{reason="missing_header"}`))
	require.Equal(t, "1", metricValue(t, in, `portalsync_ingress_duplicates_total`))
	require.Equal(t, "6", metricValue(t, in, `portalsync_ingress_publish_seconds_count`))
	require.Contains(t, in, "process_resident_memory_bytes")

	var sy string
	require.Eventually(t, func() bool {
		sy = scrape(t, sys.syncerURL)
		return strings.Contains(sy, `portalsync_syncer_events_total{status="skipped",type="unknown"} 1`) &&
			strings.Contains(sy, `portalsync_syncer_consumer_pending 0`)
	}, 10*time.Second, 100*time.Millisecond, "syncer metrics")
	require.Equal(t, "1", metricValue(t, sy, `portalsync_syncer_events_total{status="success",type="membership-created"}`))
	require.Equal(t, "1", metricValue(t, sy, `portalsync_syncer_events_total{status="success",type="membership-deactivated"}`))
	for _, name := range []string{"portalsync_syncer_apply_seconds_count", "portalsync_syncer_batch_size_count",
		"portalsync_syncer_end_to_end_seconds_count", "portalsync_syncer_redeliveries_total",
		"portalsync_syncer_dead_letters_total", "portalsync_syncer_consumer_ack_pending"} {
		metricValue(t, sy, name)
	}
	// The backlog's age: 0 once everything is applied (exported from the
	// watcher's first reading on).
	require.Eventually(t, func() bool {
		sy = scrape(t, sys.syncerURL)
		return strings.Contains(sy, "\nportalsync_syncer_oldest_unapplied_seconds 0\n")
	}, 20*time.Second, 100*time.Millisecond, "the oldest unapplied event's age")

	// Every portalsync metric the Grafana dashboard and the alerting rules
	// query is exported: by the ingress, the syncer or the reconciler.
	rec := reconcilerMetricNames()
	for _, file := range []string{
		filepath.Join("..", "deploy", "grafana", "dashboards", "portalsync.json"),
		filepath.Join("..", "deploy", "prometheus", "alerts.yml"),
	} {
		b, err := os.ReadFile(file)
		require.NoError(t, err)
		names := regexp.MustCompile(`portalsync_[a-z_]+`).FindAllString(string(b), -1)
		require.NotEmpty(t, names)
		for _, name := range names {
			base := strings.TrimSuffix(strings.TrimSuffix(strings.TrimSuffix(name, "_bucket"), "_sum"), "_count")
			require.True(t, strings.Contains(in, base) || strings.Contains(sy, base) || strings.Contains(rec, `"`+base+`"`),
				"%s: metric %s is exported by no binary", filepath.Base(file), name)
		}
	}

	// Metrics hold no personal data either.
	for _, text := range []string{in, sy} {
		for _, e := range []string{"@example.invalid", "Fornavn", "Etternavn", "+47"} {
			require.NotContains(t, text, e)
		}
		require.NotContains(t, text, "met-m", "no member ids as labels")
	}
}

// reconcilerMetricNames returns the descriptions of the reconciler's
// metrics (each names its metric in quotes).
func reconcilerMetricNames() string {
	d := &describer{}
	reconcile.NewMetrics(d)
	return strings.Join(d.descs, "\n")
}

// describer is a registerer that keeps what it is given to describe.
type describer struct{ descs []string }

func (d *describer) Register(c prometheus.Collector) error {
	ch := make(chan *prometheus.Desc)
	go func() { c.Describe(ch); close(ch) }()
	for desc := range ch {
		d.descs = append(d.descs, desc.String())
	}
	return nil
}

func (d *describer) MustRegister(cs ...prometheus.Collector) {
	for _, c := range cs {
		_ = d.Register(c)
	}
}

func (d *describer) Unregister(prometheus.Collector) bool { return false }
