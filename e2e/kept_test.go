package e2e

import (
	"context"
	"net/http"
	"strconv"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/likeperson/portalsync/pkg/event"
	"github.com/likeperson/portalsync/pkg/stream"
	"github.com/likeperson/portalsync/syncer/service"
)

// Accepted means kept (issue 19): a full stream refuses new events with a
// 503 instead of deleting stored ones, and everything it answered 2xx is
// applied once the syncer runs. Applied history is then trimmed to make
// room, so the portal's retries of the refused events are stored too.
func TestFullStreamRefusesAndKeepsWhatItAccepted(t *testing.T) {
	t.Parallel()
	const maxMsg = 16 << 10
	cfg := stream.Config{Name: "EVENTS", MaxMsgSize: maxMsg, MaxBytes: stream.MinMaxBytes(maxMsg) + 4096}
	sys := start(t, withoutSyncer(), withStream(cfg, maxMsg-4096), syncAlways())
	ctx := context.Background()

	// The syncer is stopped: send until the stream is full.
	var accepted, refused []event.Event
	for _, e := range workload(41, "full", 200, 2000) {
		sys.remember(e.Member.Email, e.Member.FirstName, e.Member.LastName, e.Member.Phone)
		resp, err := sys.client.SendEvent(ctx, e)
		require.NoError(t, err)
		switch resp.Status {
		case http.StatusAccepted, http.StatusOK:
			// A smaller event may still fit after a larger one was refused.
			accepted = append(accepted, e)
		case http.StatusServiceUnavailable:
			require.NotEmpty(t, resp.Header.Get("Retry-After"), "the portal is told to retry")
			refused = append(refused, e)
		default:
			t.Fatalf("event %s answered %d: %s", e.ID, resp.Status, resp.Body)
		}
		if len(refused) == 10 {
			break
		}
	}
	require.Len(t, refused, 10, "the stream refused events once full (%d accepted)", len(accepted))
	require.NotEmpty(t, accepted)
	t.Logf("%d events accepted before the stream was full", len(accepted))
	js := sys.jetStream(t)
	s, err := js.Stream(ctx, sys.stream.Name)
	require.NoError(t, err)
	info, err := s.Info(ctx)
	require.NoError(t, err)
	require.Equal(t, uint64(len(accepted)), info.State.Msgs, "every accepted event is still stored")
	require.Equal(t, uint64(1), info.State.FirstSeq, "none was dropped to make room")
	require.LessOrEqual(t, info.State.Bytes, uint64(cfg.MaxBytes))
	// A portal retry of a stored event is still answered as a duplicate.
	resp, err := sys.client.SendEvent(ctx, accepted[0])
	require.NoError(t, err)
	require.Equal(t, http.StatusOK, resp.Status, "%s", resp.Body)
	dup, err := resp.Accepted()
	require.NoError(t, err)
	require.True(t, dup.Duplicate)

	// The syncer applies every accepted event: none failed, none
	// dead-lettered.
	health := sys.runSyncer(t, sys.dbURL, func(c *service.Config) { c.HistoryInterval = 100 * time.Millisecond })
	sys.requireNothingLost(t, accepted)
	m := scrape(t, health)
	require.Equal(t, strconv.FormatInt(cfg.MaxBytes, 10), metricValue(t, m, "portalsync_syncer_stream_max_bytes"))

	// Applied history is trimmed below three quarters of the limit, and
	// the portal's retries of the refused events are stored and applied.
	require.Eventually(t, func() bool {
		info, err := s.Info(ctx)
		return err == nil && info.State.Bytes <= uint64(cfg.MaxBytes*3/4)
	}, 20*time.Second, 20*time.Millisecond, "applied history trimmed to make room")
	require.Len(t, sys.sendAll(t, refused, 2), len(refused))
	sys.requireNothingLost(t, append(accepted, refused...))
	m = scrape(t, health)
	require.NotEqual(t, "0", metricValue(t, m, `portalsync_syncer_stream_trimmed_total{reason="size"}`))
}

// Accepted means kept (issue 19): an event older than STREAM_MAX_AGE that
// no syncer applied yet is still in the stream and is applied when the
// syncer comes; once applied, the syncer's history loop trims it.
func TestUnappliedEventOutlivesMaxAge(t *testing.T) {
	t.Parallel()
	const window = 2 * time.Second
	sys := start(t, withoutSyncer(), withStream(stream.Config{Name: "EVENTS", MaxAge: window, DuplicateWindow: time.Second}, 0), syncAlways())
	ctx := context.Background()
	events := workload(42, "age", 10, 50)
	require.Len(t, sys.sendAll(t, events, 2), len(events))
	sent := time.Now()

	js := sys.jetStream(t)
	s, err := js.Stream(ctx, sys.stream.Name)
	require.NoError(t, err)
	require.Eventually(t, func() bool { return time.Since(sent) > 2*window }, 10*time.Second, 10*time.Millisecond)
	info, err := s.Info(ctx)
	require.NoError(t, err)
	require.Equal(t, uint64(len(events)), info.State.Msgs, "nothing unapplied expired")

	health := sys.runSyncer(t, sys.dbURL, func(c *service.Config) { c.HistoryInterval = 100 * time.Millisecond })
	sys.requireNothingLost(t, events)
	require.Eventually(t, func() bool {
		info, err := s.Info(ctx)
		return err == nil && info.State.Msgs == 0
	}, 20*time.Second, 20*time.Millisecond, "applied events past the window are trimmed")
	// The count is added once the purge has answered, after the test may
	// have seen the stream empty.
	require.Eventually(t, func() bool {
		return metricValue(t, scrape(t, health), `portalsync_syncer_stream_trimmed_total{reason="age"}`) == strconv.Itoa(len(events))
	}, 10*time.Second, 20*time.Millisecond, "trimmed_total{reason=\"age\"} counts the %d events", len(events))
}
