package main

import (
	"bytes"
	"context"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/likeperson/portalsync/pkg/natstest"
	"github.com/likeperson/portalsync/schema/schematest"
	"github.com/likeperson/portalsync/testkit/dataversetest"
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

	out.Reset()
	require.NoError(t, run(ctx, append(reconcileArgs, "--once"), &out, &errOut), errOut.String())
	require.Contains(t, out.String(), "1 events published")

	out.Reset()
	require.Equal(t, 3, exitCode(t, run(ctx, status, &out, &errOut)), errOut.String())
	require.Regexp(t, `reconciler +last pass .* member: read .* \(1 rows\), full read .*, delta link kept; membership: read .* \(0 rows\)`, out.String())
}
