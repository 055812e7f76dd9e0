package stream_test

import (
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"
	"go.uber.org/zap/zaptest"

	"github.com/likeperson/portalsync/pkg/natstest"
	"github.com/likeperson/portalsync/pkg/stream"
)

func TestCheckServerVersion(t *testing.T) {
	t.Parallel()
	for _, ok := range []string{"2.10.0", "2.10.22", "2.15.2", "v2.11.0-beta.1", "3.0.0"} {
		require.NoError(t, stream.CheckServerVersion(ok), ok)
	}
	for _, bad := range []string{"2.9.10", "2.9.99", "1.4.1", "", "garbage", "2.10"} {
		require.Error(t, stream.CheckServerVersion(bad), bad)
	}
}

func TestConfigValidate(t *testing.T) {
	t.Parallel()
	require.NoError(t, stream.Config{}.WithDefaults().Validate())
	require.Error(t, stream.Config{Name: "a.b"}.WithDefaults().Validate())
	require.Error(t, stream.Config{Replicas: 2}.WithDefaults().Validate())
	require.Error(t, stream.Config{MaxAge: time.Minute, DuplicateWindow: time.Hour}.WithDefaults().Validate())
}

func TestEnsureCreatesReplayableStream(t *testing.T) {
	t.Parallel()
	srv := natstest.Run(t)
	ctx := context.Background()
	nc, err := stream.Connect(ctx, srv.URL(), "test", zaptest.NewLogger(t))
	require.NoError(t, err)
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	require.NoError(t, err)

	s, err := stream.Ensure(ctx, js, stream.Config{Name: "EVENTS_T", DuplicateWindow: time.Minute})
	require.NoError(t, err)
	info, err := s.Info(ctx)
	require.NoError(t, err)
	require.Equal(t, jetstream.LimitsPolicy, info.Config.Retention)
	require.Equal(t, jetstream.FileStorage, info.Config.Storage)
	require.Equal(t, []string{"portal.member.>"}, info.Config.Subjects)
	require.Equal(t, time.Minute, info.Config.Duplicates)
	require.True(t, info.Config.AllowDirect, "the ingress reads duplicates back by direct get")

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
	nc, err := stream.Connect(ctx, srv.URL(), "test", zaptest.NewLogger(t))
	require.NoError(t, err)
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	require.NoError(t, err)
	c := &countingStreams{StreamManager: js}

	cfg := stream.Config{Name: "EVENTS_U", DuplicateWindow: time.Minute}
	_, err = stream.Ensure(ctx, c, cfg)
	require.NoError(t, err)
	require.Equal(t, 1, c.updates, "created")
	for range 3 {
		_, err = stream.Ensure(ctx, c, cfg)
		require.NoError(t, err)
	}
	require.Equal(t, 1, c.updates, "the same settings again: no update")
	cfg.MaxAge = 48 * time.Hour
	s, err := stream.Ensure(ctx, c, cfg)
	require.NoError(t, err)
	require.Equal(t, 2, c.updates, "another setting: updated")
	info, err := s.Info(ctx)
	require.NoError(t, err)
	require.Equal(t, 48*time.Hour, info.Config.MaxAge)
}
