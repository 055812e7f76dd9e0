package main

import (
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/likeperson/portalsync/ingress/server"
	"github.com/likeperson/portalsync/pkg/stream"
	"github.com/likeperson/portalsync/testkit/composetest"
)

// The compose file's ingress agrees with this binary: known environment
// names, a real command, a healthcheck on the operations port (apart from
// the webhook port, on every interface inside the container), time to
// drain on stop, an image built by a static non-root Dockerfile, and a
// NATS cluster it can use.
func TestComposeMatchesIngress(t *testing.T) {
	t.Parallel()
	f, err := composetest.Load(filepath.Join("..", "docker-compose.yml"))
	require.NoError(t, err)
	svc, ok := f.Services["ingress"]
	require.True(t, ok, "service ingress")

	known := composetest.EnvNames(&cli{}, "serve")
	for name := range svc.Environment {
		require.True(t, known[name], "ingress reads no %s", name)
	}
	require.Contains(t, svc.Environment, "PORTAL_WEBHOOK_SECRETS")
	require.True(t, composetest.Commands(&cli{})[svc.Command[0]], "command %q", svc.Command[0])

	_, port, err := net.SplitHostPort(svc.Environment["INGRESS_ADDR"])
	require.NoError(t, err)
	opsHost, opsPort, err := net.SplitHostPort(svc.Environment["INGRESS_OPS_ADDR"])
	require.NoError(t, err)
	require.NotEqual(t, port, opsPort, "operations apart from webhooks")
	require.Equal(t, "0.0.0.0", opsHost, "reachable by Prometheus inside the compose network (the default is loopback)")
	require.NotNil(t, svc.Healthcheck)
	require.Equal(t, []string{"CMD", "/usr/local/bin/ingress", "healthcheck"}, svc.Healthcheck.Test[:3])
	u, err := url.Parse(svc.Healthcheck.Test[3])
	require.NoError(t, err)
	require.Equal(t, opsPort, u.Port())
	require.Equal(t, "/readyz", u.Path)
	require.Contains(t, strings.Join(svc.Ports, " "), ":"+port)
	for _, p := range svc.Ports {
		require.True(t, strings.HasPrefix(p, "127.0.0.1:"), "published on the host's loopback only: %s", p)
	}
	grace, err := time.ParseDuration(svc.StopGracePeriod)
	require.NoError(t, err, "stop_grace_period")
	require.Greater(t, grace, server.DefaultDrainGrace+server.DefaultShutdownTimeout, "time to drain before SIGKILL")

	require.NotNil(t, svc.Build)
	checkDockerfile(t, filepath.Join("..", svc.Build.Dockerfile), "ingress")

	// NATS: a three-node JetStream cluster of a supported version, and an
	// R3 stream on it.
	var natsURLs []string
	for i := 1; i <= 3; i++ {
		name := "nats-" + string(rune('0'+i))
		n, ok := f.Services[name]
		require.True(t, ok, name)
		version := strings.TrimSuffix(strings.SplitN(n.Image, ":", 2)[1], "-alpine")
		require.NoError(t, stream.CheckServerVersion(version), n.Image)
		cmd := strings.Join(n.Command, " ")
		require.Contains(t, cmd, "--jetstream")
		require.Contains(t, cmd, "--cluster_name portalsync")
		for j := 1; j <= 3; j++ {
			other := "nats-" + string(rune('0'+j))
			if j != i {
				require.Contains(t, cmd, "nats://"+other+":6222", "%s routes to %s", name, other)
			}
		}
		require.Contains(t, svc.DependsOn, name)
		natsURLs = append(natsURLs, "nats://"+name+":4222")
	}
	require.Equal(t, strings.Join(natsURLs, ","), svc.Environment["NATS_URL"])
	require.Equal(t, "3", svc.Environment["STREAM_REPLICAS"])
}

// Prometheus scrapes the ingress on its operations address, loads the
// alerting rules (deploy/prometheus/alerts.yml, mounted next to its
// configuration) and sends them to the compose Alertmanager, whose
// configuration is mounted and whose webhook URL is a compose secret with
// a default file; the dashboard is provisioned into Grafana.
func TestComposeObservability(t *testing.T) {
	t.Parallel()
	f, err := composetest.Load(filepath.Join("..", "docker-compose.yml"))
	require.NoError(t, err)
	for _, name := range []string{"prometheus", "grafana", "alertmanager"} {
		require.Contains(t, f.Services, name)
	}
	_, port, err := net.SplitHostPort(f.Services["ingress"].Environment["INGRESS_OPS_ADDR"])
	require.NoError(t, err)
	prom, err := composetest.LoadPrometheus(filepath.Join("..", "deploy", "prometheus", "prometheus.yml"))
	require.NoError(t, err)
	require.True(t, prom.Scrapes("ingress", "ingress:"+port), "Prometheus scrapes the ingress's operations port: %v", prom.Targets("ingress"))

	// The rules: every rule file is mounted where the configuration (in
	// /etc/prometheus) finds it.
	ps := f.Services["prometheus"]
	require.Equal(t, "./deploy/prometheus/prometheus.yml", ps.Mount("/etc/prometheus/prometheus.yml"))
	require.Contains(t, ps.Command, "--config.file=/etc/prometheus/prometheus.yml")
	require.Equal(t, []string{"alerts.yml"}, prom.RuleFiles)
	for _, rf := range prom.RuleFiles {
		require.Equal(t, "./deploy/prometheus/"+rf, ps.Mount("/etc/prometheus/"+rf), "rule file %s mounted", rf)
		_, err := os.Stat(filepath.Join("..", "deploy", "prometheus", rf))
		require.NoError(t, err)
	}

	// Alertmanager: Prometheus sends to it, it runs its mounted
	// configuration and reads the webhook's URL from the secret.
	am := f.Services["alertmanager"]
	require.Equal(t, []string{"alertmanager:9093"}, prom.AlertmanagerTargets())
	require.Contains(t, ps.DependsOn, "alertmanager")
	require.Contains(t, am.Command, "--config.file=/etc/alertmanager/alertmanager.yml")
	require.Equal(t, "./deploy/alertmanager/alertmanager.yml", am.Mount("/etc/alertmanager/alertmanager.yml"))
	require.Equal(t, []string{"alertmanager_webhook_url"}, am.Secrets)
	amConfig, err := os.ReadFile(filepath.Join("..", "deploy", "alertmanager", "alertmanager.yml"))
	require.NoError(t, err)
	require.Contains(t, string(amConfig), "url_file: /run/secrets/alertmanager_webhook_url")
	secret, ok := f.Secrets["alertmanager_webhook_url"]
	require.True(t, ok, "top-level secret alertmanager_webhook_url")
	require.True(t, strings.HasPrefix(secret.File, "${ALERTMANAGER_WEBHOOK_URL_FILE:-"), "its file is set by ALERTMANAGER_WEBHOOK_URL_FILE: %s", secret.File)
	_, err = os.Stat(filepath.Join("..", composetest.DefaultOf(secret.File)))
	require.NoError(t, err, "the default (placeholder) file exists")
	for _, p := range append(am.Ports, ps.Ports...) {
		require.True(t, strings.HasPrefix(p, "127.0.0.1:"), "published on the host's loopback only: %s", p)
	}

	_, err = os.Stat(filepath.Join("..", "deploy", "grafana", "dashboards", "portalsync.json"))
	require.NoError(t, err)
}

func checkDockerfile(t *testing.T, path, binary string) {
	t.Helper()
	b, err := os.ReadFile(path)
	require.NoError(t, err)
	df := string(b)
	require.Contains(t, df, "AS build", "multi-stage")
	require.Contains(t, df, "CGO_ENABLED=0", "static")
	require.Contains(t, df, "USER nonroot", "non-root")
	require.Contains(t, df, `ENTRYPOINT ["/usr/local/bin/`+binary+`"]`)
	require.Contains(t, df, `"/usr/local/bin/`+binary+`", "healthcheck"`)
}
