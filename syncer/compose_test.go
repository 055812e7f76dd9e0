package main

import (
	"net"
	"net/url"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/likeperson/portalsync/testkit/composetest"
)

// The compose file's migrate and syncer services agree with this binary.
func TestComposeMatchesSyncer(t *testing.T) {
	t.Parallel()
	f, err := composetest.Load(filepath.Join("..", "docker-compose.yml"))
	require.NoError(t, err)
	commands := composetest.Commands(&cli{})

	migrate, ok := f.Services["migrate"]
	require.True(t, ok, "service migrate")
	require.Equal(t, []string{"migrate"}, migrate.Command)
	known := composetest.EnvNames(&cli{}, "migrate")
	for name := range migrate.Environment {
		require.True(t, known[name], "syncer migrate reads no %s", name)
	}
	require.Contains(t, migrate.Environment, "DATABASE_URL")
	require.Equal(t, "service_healthy", migrate.DependsOn["postgres"].Condition)

	svc, ok := f.Services["syncer"]
	require.True(t, ok, "service syncer")
	require.True(t, commands[svc.Command[0]])
	known = composetest.EnvNames(&cli{}, "run")
	for name := range svc.Environment {
		require.True(t, known[name], "syncer run reads no %s", name)
	}
	require.Equal(t, migrate.Environment["DATABASE_URL"], svc.Environment["DATABASE_URL"])
	require.GreaterOrEqual(t, svc.Deploy.Replicas, 2, "two replicas")
	require.Equal(t, "service_completed_successfully", svc.DependsOn["migrate"].Condition)
	require.Equal(t, migrate.Image, svc.Image)

	host, port, err := net.SplitHostPort(svc.Environment["SYNCER_HTTP_ADDR"])
	require.NoError(t, err)
	require.Equal(t, "0.0.0.0", host, "reachable by Prometheus inside the compose network (the default is loopback)")
	require.Equal(t, []string{"CMD", "/usr/local/bin/syncer", "healthcheck"}, svc.Healthcheck.Test[:3])
	u, err := url.Parse(svc.Healthcheck.Test[3])
	require.NoError(t, err)
	require.Equal(t, port, u.Port())

	prom, err := composetest.LoadPrometheus(filepath.Join("..", "deploy", "prometheus", "prometheus.yml"))
	require.NoError(t, err)
	require.True(t, prom.Scrapes("syncer", "syncer:"+port), "Prometheus scrapes every replica's health port: %v", prom.Targets("syncer"))

	pg, ok := f.Services["postgres"]
	require.True(t, ok)
	require.NotNil(t, pg.Healthcheck)
	dburl, err := url.Parse(svc.Environment["DATABASE_URL"])
	require.NoError(t, err)
	require.Equal(t, "postgres", dburl.Hostname())
	require.Equal(t, "/"+pg.Environment["POSTGRES_DB"], dburl.Path)

	b, err := os.ReadFile(filepath.Join("..", svc.Build.Dockerfile))
	require.NoError(t, err)
	require.Contains(t, string(b), "USER nonroot")
	require.Contains(t, string(b), "CGO_ENABLED=0")
	require.Contains(t, string(b), `ENTRYPOINT ["/usr/local/bin/syncer"]`)
}

// The reconciler runs in compose with the profile "dataverse" (it cannot
// start without the portal's credentials), as `syncer reconcile` with
// settings it reads, on the same image and database as the syncer; its
// health address is reachable inside the network, its healthcheck asks it,
// and Prometheus scrapes it (by DNS: no target while the profile is off).
func TestComposeReconciler(t *testing.T) {
	t.Parallel()
	f, err := composetest.Load(filepath.Join("..", "docker-compose.yml"))
	require.NoError(t, err)
	svc, ok := f.Services["reconciler"]
	require.True(t, ok, "service reconciler")
	require.Equal(t, []string{"dataverse"}, svc.Profiles)
	require.Equal(t, []string{"reconcile"}, svc.Command)
	require.True(t, composetest.Commands(&cli{})["reconcile"])
	known := composetest.EnvNames(&cli{}, "reconcile")
	for name := range svc.Environment {
		require.True(t, known[name], "syncer reconcile reads no %s", name)
	}
	for _, name := range []string{"DATAVERSE_URL", "DATAVERSE_TOKEN_URL", "DATAVERSE_CLIENT_ID", "DATAVERSE_CLIENT_SECRET", "DATABASE_URL", "NATS_URL"} {
		require.Contains(t, svc.Environment, name, "required by syncer reconcile")
	}
	syncer := f.Services["syncer"]
	require.Equal(t, syncer.Image, svc.Image)
	require.Equal(t, syncer.Environment["DATABASE_URL"], svc.Environment["DATABASE_URL"])
	require.Equal(t, syncer.Environment["NATS_URL"], svc.Environment["NATS_URL"])
	require.Equal(t, syncer.Environment["STREAM_NAME"], svc.Environment["STREAM_NAME"])
	require.Equal(t, "service_completed_successfully", svc.DependsOn["migrate"].Condition)

	host, port, err := net.SplitHostPort(svc.Environment["RECONCILE_HTTP_ADDR"])
	require.NoError(t, err)
	require.Equal(t, "0.0.0.0", host, "reachable by Prometheus inside the compose network (the default is loopback)")
	require.Empty(t, svc.Ports, "not published")
	require.Equal(t, []string{"CMD", "/usr/local/bin/syncer", "healthcheck"}, svc.Healthcheck.Test[:3])
	u, err := url.Parse(svc.Healthcheck.Test[3])
	require.NoError(t, err)
	require.Equal(t, port, u.Port())
	require.Equal(t, "/healthz", u.Path)

	prom, err := composetest.LoadPrometheus(filepath.Join("..", "deploy", "prometheus", "prometheus.yml"))
	require.NoError(t, err)
	require.True(t, prom.Scrapes("reconciler", "reconciler:"+port), "Prometheus scrapes the reconciler: %v", prom.Targets("reconciler"))
}
