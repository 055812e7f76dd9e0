package main

import (
	"bytes"
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/likeperson/portalsync/testkit/dataversetest"
	"github.com/likeperson/portalsync/testkit/natstest"
	"github.com/likeperson/portalsync/testkit/schematest"
)

// `syncer reconcile --dry-run` prints and stores nothing, `--once` makes a
// pass, and `syncer status` shows the reconciler's position before and
// after.
func TestReconcileCommandAndStatus(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := schematest.NewDB(t)
	ns := natstest.Run(t)
	fake := dataversetest.New(t, "client", "secret")
	fake.AddTable("hlf_memberships", "hlf_membershipid")
	fake.Put("contacts", "contactid", "a1b2c3d4-0000-4000-8000-00000000c001", map[string]any{"firstname": "Kari",
		"_parentcustomerid_value": dataversetest.Ref{Table: "account", ID: "b0000000-0000-4000-8000-00000000a001"}, "modifiedon": "2026-11-25T10:00:00Z"})
	common := []string{"--database-url", db.URL, "--nats-url", ns.URL(), "--stream-name", "EVENTS"}
	reconcileArgs := append([]string{"reconcile", "--dataverse-url", fake.URL(), "--token-url", fake.TokenURL(),
		"--client-id", "client", "--client-secret", "secret"}, common...)
	status := append([]string{"status", "--syncer-url", "http://127.0.0.1:1"}, common...)

	// No syncer answers at --syncer-url: status exits 3 and still shows
	// the reconciler.
	var out, errOut bytes.Buffer
	require.Equal(t, 3, exitCode(t, run(ctx, status, &out, &errOut)), errOut.String())
	require.Regexp(t, `reconciler +never ran`, out.String())

	out.Reset()
	require.NoError(t, run(ctx, append(reconcileArgs, "--dry-run"), &out, &errOut), errOut.String())
	require.Contains(t, out.String(), "member a1b2c3d4-0000-4000-8000-00000000c001: in the portal, not in the app")
	require.Contains(t, out.String(), "1 difference(s)")
	require.NotContains(t, out.String(), "Kari")

	var rows int
	require.NoError(t, db.Pool.QueryRow(ctx, `SELECT count(*) FROM portalsync.sync_health`).Scan(&rows))
	require.Zero(t, rows, "a dry run reports nothing")

	out.Reset()
	before := time.Now()
	require.NoError(t, run(ctx, append(reconcileArgs, "--once"), &out, &errOut), errOut.String())
	require.Contains(t, out.String(), "1 events published")
	// The app's sync_health shows the pass.
	var kind, state string
	var lastSuccess time.Time
	require.NoError(t, db.Pool.QueryRow(ctx, `SELECT kind, state, last_success_at FROM portalsync.sync_health WHERE process = 'reconciler'`).
		Scan(&kind, &state, &lastSuccess))
	require.Equal(t, "reconciler", kind)
	require.Equal(t, "running", state)
	require.WithinDuration(t, time.Now(), lastSuccess, time.Since(before)+time.Second)

	out.Reset()
	require.Equal(t, 3, exitCode(t, run(ctx, status, &out, &errOut)), errOut.String())
	require.Regexp(t, `reconciler +last pass .* member: read .* \(1 rows\), full read .*, delta link kept; membership: read .* \(0 rows\)`, out.String())
}

// `syncer reconcile` as a loop writes its row of sync_health (running,
// since its start, the last success once a pass succeeded) and keeps it
// when it stops, for that last success.
func TestReconcileLoopReportsHealth(t *testing.T) {
	t.Parallel()
	db := schematest.NewDB(t)
	ns := natstest.Run(t)
	fake := dataversetest.New(t, "client", "secret")
	fake.AddTable("contacts", "contactid")
	fake.AddTable("hlf_memberships", "hlf_membershipid")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	started := time.Now()
	done := make(chan error, 1)
	var out, errOut bytes.Buffer
	go func() {
		done <- run(ctx, []string{"reconcile", "--dataverse-url", fake.URL(), "--token-url", fake.TokenURL(),
			"--client-id", "client", "--client-secret", "secret", "--database-url", db.URL, "--nats-url", ns.URL(),
			"--stream-name", "EVENTS", "--http-addr", "127.0.0.1:0", "--interval", "1h"}, &out, &errOut)
	}()
	var since, lastSuccess *time.Time
	require.Eventually(t, func() bool {
		err := db.Pool.QueryRow(context.Background(), `SELECT since, last_success_at FROM portalsync.sync_health
			WHERE process = 'reconciler' AND kind = 'reconciler' AND state = 'running'`).Scan(&since, &lastSuccess)
		return err == nil && lastSuccess != nil
	}, 30*time.Second, 20*time.Millisecond, "the reconciler reports its pass")
	require.WithinDuration(t, started, *since, 5*time.Second)
	require.True(t, lastSuccess.After(started.Add(-time.Second)))
	cancel()
	select {
	case err := <-done:
		require.NoError(t, err)
	case <-time.After(20 * time.Second):
		t.Fatal("the reconciler did not stop")
	}
	var n int
	require.NoError(t, db.Pool.QueryRow(context.Background(), `SELECT count(*) FROM portalsync.sync_health WHERE process = 'reconciler'`).Scan(&n))
	require.Equal(t, 1, n, "kept on stop")
}
