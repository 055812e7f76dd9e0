package stream_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"
	"go.uber.org/zap/zaptest"

	"github.com/likeperson/portalsync/pkg/stream"
	"github.com/likeperson/portalsync/testkit/natstest"
)

func TestEnsureCreatesReplayableStream(t *testing.T) {
	t.Parallel()
	srv := natstest.Run(t)
	ctx := context.Background()
	js := connectJS(t, srv)

	s, err := stream.Ensure(ctx, js, stream.Config{Name: "EVENTS_T", DuplicateWindow: time.Minute})
	require.NoError(t, err)
	info, err := s.Info(ctx)
	require.NoError(t, err)
	require.Equal(t, jetstream.LimitsPolicy, info.Config.Retention)
	require.Equal(t, jetstream.FileStorage, info.Config.Storage)
	require.Equal(t, []string{"portal.member.>"}, info.Config.Subjects)
	require.Equal(t, time.Minute, info.Config.Duplicates)
	require.True(t, info.Config.AllowDirect, "the ingress reads duplicates back by direct get")
	require.Equal(t, jetstream.DiscardNew, info.Config.Discard, "a full stream refuses new events, never drops stored ones")
	require.Zero(t, info.Config.MaxAge, "the server expires nothing: the syncer trims settled events only")
	require.True(t, info.Config.AllowAtomicPublish, "the ingress publishes atomic batches")

	// Ensure again with another setting updates the stream in place.
	s, err = stream.Ensure(ctx, js, stream.Config{Name: "EVENTS_T", DuplicateWindow: 2 * time.Minute})
	require.NoError(t, err)
	info, err = s.Info(ctx)
	require.NoError(t, err)
	require.Equal(t, 2*time.Minute, info.Config.Duplicates)
}

// countingStreams counts the stream updates Ensure sends.
type countingStreams struct {
	jetstream.StreamManager
	updates int
}

func (c *countingStreams) CreateOrUpdateStream(ctx context.Context, cfg jetstream.StreamConfig) (jetstream.Stream, error) {
	c.updates++
	return c.StreamManager.CreateOrUpdateStream(ctx, cfg)
}

// Every replica ensures the stream at start: a stream that already has
// the settings is not updated (an update that changes nothing still races
// the consumers created at the same moment), one that differs is.
func TestEnsureUpdatesOnlyWhatDiffers(t *testing.T) {
	t.Parallel()
	srv := natstest.Run(t)
	ctx := context.Background()
	js := connectJS(t, srv)
	c := &countingStreams{StreamManager: js}

	cfg := stream.Config{Name: "EVENTS_U", DuplicateWindow: time.Minute}
	_, err := stream.Ensure(ctx, c, cfg)
	require.NoError(t, err)
	require.Equal(t, 1, c.updates, "created")
	for range 3 {
		_, err = stream.Ensure(ctx, c, cfg)
		require.NoError(t, err)
	}
	require.Equal(t, 1, c.updates, "the same settings again: no update")
	cfg.MaxAge = 48 * time.Hour
	_, err = stream.Ensure(ctx, c, cfg)
	require.NoError(t, err)
	require.Equal(t, 1, c.updates, "the history window is the syncer's, not a server setting")
	cfg.MaxBytes = 64 << 20
	s, err := stream.Ensure(ctx, c, cfg)
	require.NoError(t, err)
	require.Equal(t, 2, c.updates, "another setting: updated")
	info, err := s.Info(ctx)
	require.NoError(t, err)
	require.Equal(t, int64(64<<20), info.Config.MaxBytes)
	require.Zero(t, info.Config.MaxAge)
}

// A stream created by an earlier version (discard old, the server
// expiring events at max age, no atomic publish) is updated in place at
// the next start, keeping its events (issue 19).
func TestEnsureUpdatesStreamOfEarlierVersion(t *testing.T) {
	t.Parallel()
	srv := natstest.Run(t)
	ctx := context.Background()
	js := connectJS(t, srv)

	cfg := stream.Config{Name: "EVENTS_OLD", MaxBytes: 8 << 20}
	old := cfg.WithDefaults().JetStreamConfig()
	old.Discard, old.MaxAge, old.AllowAtomicPublish = jetstream.DiscardOld, stream.DefaultMaxAge, false
	_, err := js.CreateStream(ctx, old)
	require.NoError(t, err)
	_, err = js.Publish(ctx, "portal.member.m1", []byte(`{}`))
	require.NoError(t, err)

	s, err := stream.Ensure(ctx, js, cfg)
	require.NoError(t, err)
	info, err := s.Info(ctx)
	require.NoError(t, err)
	require.Equal(t, jetstream.DiscardNew, info.Config.Discard)
	require.Zero(t, info.Config.MaxAge)
	require.True(t, info.Config.AllowAtomicPublish)
	require.Equal(t, int64(8<<20), info.Config.MaxBytes)
	require.Equal(t, uint64(1), info.State.Msgs, "the stored event is kept")
}

// IsFull recognises the server's refusals for want of room, from a real
// server, and nothing else.
func TestIsFull(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	fill := func(t *testing.T, js jetstream.JetStream, body []byte) error {
		for range 10000 {
			if _, err := js.Publish(ctx, "portal.member.m1", body); err != nil {
				return err
			}
		}
		t.Fatal("never full")
		return nil
	}

	t.Run("MaxBytes", func(t *testing.T) {
		t.Parallel()
		js := connectJS(t, natstest.Run(t))
		s, err := stream.Ensure(ctx, js, stream.Config{Name: "FULL_BYTES", MaxMsgSize: 1024, MaxBytes: stream.MinMaxBytes(1024)})
		require.NoError(t, err)
		err = fill(t, js, make([]byte, 512))
		t.Logf("refused: %v", err)
		require.True(t, stream.IsFull(err), "%v", err)
		require.True(t, stream.IsFull(fmt.Errorf("publish: %w", err)), "wrapped")
		info, err := s.Info(ctx)
		require.NoError(t, err)
		require.Equal(t, uint64(1), info.State.FirstSeq, "nothing stored was dropped")
	})
	t.Run("MaxMsgs", func(t *testing.T) {
		t.Parallel()
		js := connectJS(t, natstest.Run(t))
		_, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "FULL_MSGS", Subjects: []string{"portal.member.>"},
			MaxMsgs: 3, Discard: jetstream.DiscardNew})
		require.NoError(t, err)
		err = fill(t, js, []byte(`{}`))
		t.Logf("refused: %v", err)
		require.True(t, stream.IsFull(err), "%v", err)
	})
	t.Run("ServerStorage", func(t *testing.T) {
		t.Parallel()
		js := connectJS(t, natstest.Run(t, func(o *server.Options) { o.JetStreamMaxStore = 256 << 10 }))
		_, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "FULL_SERVER", Subjects: []string{"portal.member.>"}})
		require.NoError(t, err)
		err = fill(t, js, make([]byte, 4096))
		t.Logf("refused: %v", err)
		require.True(t, stream.IsFull(err), "%v", err)
	})
	t.Run("NotFull", func(t *testing.T) {
		t.Parallel()
		js := connectJS(t, natstest.Run(t))
		_, err := stream.Ensure(ctx, js, stream.Config{Name: "NOT_FULL", MaxMsgSize: 1024})
		require.NoError(t, err)
		_, err = js.Publish(ctx, "portal.member.m1", make([]byte, 2048))
		require.Error(t, err)
		require.False(t, stream.IsFull(err), "too large is not full: %v", err)
		_, err = js.Publish(ctx, "nowhere.m1", []byte(`{}`))
		require.Error(t, err)
		require.False(t, stream.IsFull(err), "no stream is not full: %v", err)
		require.False(t, stream.IsFull(nil))
		require.False(t, stream.IsFull(errors.New("maximum bytes exceeded")), "only the server's API error")
	})
}

// connectJS connects to srv as the services do and returns its JetStream
// API; the connection is closed when the test ends.
func connectJS(t *testing.T, srv *natstest.Server) jetstream.JetStream {
	t.Helper()
	nc, err := stream.Connect(context.Background(), srv.URL(), "test", zaptest.NewLogger(t))
	require.NoError(t, err)
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	require.NoError(t, err)
	return js
}
