package server_test

import (
	"io"
	"net/http/httptest"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/likeperson/portalsync/ingress/server"
)

// The alerts PortalsyncStreamFull, PortalsyncIngressUnavailable and
// PortalsyncSignatureFailures use increase()/rate() on these series. A
// series that first appears at N>0 is no increase to Prometheus: the
// first burst (a short stream-full episode) is silent. alerts_test.yml
// assumes them at 0 from the start ("0x2 0+3x10"), as the dataverse
// and failed-event series already are.
func TestAlertedIngressSeriesExportedAtZero(t *testing.T) {
	m := server.NewMetrics()
	rec := httptest.NewRecorder()
	m.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	body, _ := io.ReadAll(rec.Body)
	for _, s := range []string{
		`portalsync_ingress_rejected_total{reason="stream_full"} 0`,
		`portalsync_ingress_rejected_total{reason="no_matching_signature"} 0`,
		`portalsync_ingress_requests_total{status="503"} 0`,
	} {
		require.Contains(t, string(body), s)
	}
}
