package main

import (
	"testing"
	"time"

	"github.com/alecthomas/kong"
	"github.com/stretchr/testify/require"

	"github.com/likeperson/portalsync/pkg/dvmap"
	"github.com/likeperson/portalsync/syncer/consumer"
	"github.com/likeperson/portalsync/syncer/reconcile"
	"github.com/likeperson/portalsync/syncer/service"
	"github.com/likeperson/portalsync/testkit/flagtest"
)

// parse parses args as the syncer does, its environment ignored.
func parse(t *testing.T, args ...string) *cli {
	t.Helper()
	var c cli
	flagtest.Parse(t, &c, args, kong.Vars{"readyz": ""})
	return &c
}

// The run command's flags default to service.Config's defaults (and
// consumer.Config's, stream.Config's), so a Config built in code (the
// tests, the e2e harness) runs as the binary does.
func TestRunFlagDefaultsAreConfigDefaults(t *testing.T) {
	t.Parallel()
	const url = "postgres://db"
	want := service.Config{DatabaseURL: url}.WithDefaults()
	got := parse(t, "run", "--database-url", url).Run.config()
	// No flag sets these: service.Run gives them their defaults.
	got.LogPurgeInterval, got.HistoryInterval, got.BacklogInterval = want.LogPurgeInterval, want.HistoryInterval, want.BacklogInterval
	got.CatchingUpAfter, got.HealthProcess, got.HealthTick = want.CatchingUpAfter, want.HealthProcess, want.HealthTick
	got.Consumer.Stream = want.Consumer.Stream
	require.Equal(t, want, got)

	// 0 on the command line keeps the sync log for ever.
	got = parse(t, "run", "--database-url", url, "--log-retention", "0").Run.config()
	require.Equal(t, time.Duration(-1), got.LogRetention)
	require.Equal(t, time.Duration(-1), got.WithDefaults().LogRetention)
}

// The status command asks for the durable consumer the run command
// creates by default.
func TestStatusConsumerIsTheDefaultDurable(t *testing.T) {
	t.Parallel()
	require.Equal(t, consumer.DefaultDurable, parse(t, "status", "--database-url", "x").Status.Consumer)
}

// The status command reads the reconciler's position from the bucket the
// reconciler keeps it in by default.
func TestStatusBucketIsTheReconcilersDefault(t *testing.T) {
	t.Parallel()
	require.Equal(t, reconcile.DefaultBucket, parse(t, "status", "--database-url", "x").Status.ReconcileBucket)
}

// The reconcile command's flags default to reconcile.Config's defaults.
func TestReconcileFlagDefaultsAreConfigDefaults(t *testing.T) {
	t.Parallel()
	c := parse(t, "reconcile", "--database-url", "x", "--dataverse-url", "https://hlf.crm4.dynamics.com",
		"--token-url", "https://login.example/token", "--client-id", "id", "--client-secret", "secret").Reconcile
	m := dvmap.DefaultMapping()
	got := c.config(&m).WithDefaults()
	want := reconcile.Config{URL: c.URL, TokenURL: c.TokenURL, ClientID: c.ClientID, ClientSecret: c.ClientSecret}.WithDefaults()
	got.Now, want.Now = nil, nil // a function is never equal to another
	require.Equal(t, want, got)
}
