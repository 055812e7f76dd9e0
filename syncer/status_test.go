package main

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/likeperson/portalsync/pkg/natstest"
	"github.com/likeperson/portalsync/schema/schematest"
	"github.com/likeperson/portalsync/syncer/consumer"
	"github.com/likeperson/portalsync/syncer/service"
)

// `syncer status` counts an event that failed and later succeeded as
// failed no more, and shows what the running syncer reports: paused, since
// when, how many events held.
func TestStatusFailedThenSucceededAndPaused(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := schematest.NewDB(t)
	ns := natstest.Run(t)
	_, err := db.Pool.Exec(ctx, `
		INSERT INTO portal_sync_log (event_id, event_type, status, detail, stream_seq, attempt)
		VALUES ('e-fixed', 'membership-created', 'failed', 'x', 1, 1),
		       ('e-fixed', 'membership-created', 'success', '', 2, 1),
		       ('e-still', 'membership-created', 'failed', 'x', 3, 1)`)
	require.NoError(t, err)

	since := time.Date(2026, 11, 27, 1, 0, 0, 0, time.UTC)
	syncer := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		require.Equal(t, "/status", r.URL.Path)
		_ = json.NewEncoder(w).Encode(service.Status{Consumer: consumer.State{
			Paused: consumer.ReasonDatabase, PausedSince: since, Held: 37,
		}})
	}))
	defer syncer.Close()

	args := []string{"status", "--database-url", db.URL, "--nats-url", ns.URL(), "--stream-name", "EVENTS", "--syncer-url", syncer.URL}
	var out, errOut bytes.Buffer
	require.NoError(t, run(ctx, args, &out, &errOut), errOut.String())
	require.Contains(t, out.String(), "paused: database unavailable since 2026-11-27T01:00:00Z")
	require.Contains(t, out.String(), "37 events held")
	require.Regexp(t, `failed \(24 h\) +1\n`, out.String())
	// The stream does not exist: status says so and still prints the rest.
	require.Contains(t, out.String(), "unreachable")

	out.Reset()
	require.NoError(t, run(ctx, append(args, "--json"), &out, &errOut))
	var st status
	require.NoError(t, json.Unmarshal(out.Bytes(), &st))
	require.Equal(t, 1, st.FailedLast24h)
	require.True(t, st.Syncer.Reachable)
	require.Equal(t, 37, st.Syncer.Status.Consumer.Held)
}
