package stream_test

import (
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"github.com/likeperson/portalsync/pkg/stream"
)

// The tests here need no server. Those of Ensure, IsFull and LeaderGet
// against a real JetStream server are in testkit/integration/stream, so
// that this module does not require nats-server.

func TestCheckServerVersion(t *testing.T) {
	t.Parallel()
	for _, ok := range []string{"2.12.1", "2.12.11", "2.15.2", "v2.13.0-beta.1", "3.0.0"} {
		require.NoError(t, stream.CheckServerVersion(ok), ok)
	}
	// 2.10 and 2.11 have no atomic batch publish; 2.12.0's atomic batches
	// predate the project's floor.
	for _, bad := range []string{"2.9.10", "2.10.22", "2.11.9", "2.12.0", "1.4.1", "", "garbage", "2.12"} {
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

// A stream too small to hold its largest event besides its trimmed
// history is refused at start with a message that says why and what to
// set, not accepted to refuse every event later (issue 19).
func TestConfigValidateMaxBytes(t *testing.T) {
	t.Parallel()
	floor := stream.MinMaxBytes(stream.DefaultMaxMsgSize)
	require.Equal(t, int64(4<<20+4<<10), floor, "4 MiB + 4 KiB for 1 MiB messages")

	err := stream.Config{MaxBytes: 1024}.WithDefaults().Validate()
	require.EqualError(t, err, "stream max bytes 1024 is too small: with 1048576-byte messages at most, the stream needs at least 4198400 bytes "+
		"(four maximum-size events: the syncer trims settled history to three quarters of the limit, and the quarter left must hold one), or 0 for unlimited")
	require.Error(t, stream.Config{MaxBytes: 1 << 20}.WithDefaults().Validate(), "1 MiB cannot hold a 1 MiB event besides history")
	require.Error(t, stream.Config{MaxBytes: floor - 1}.WithDefaults().Validate())
	require.NoError(t, stream.Config{MaxBytes: floor}.WithDefaults().Validate())
	require.NoError(t, stream.Config{MaxBytes: 0}.WithDefaults().Validate(), "0 is unlimited")

	// The floor follows the largest message.
	require.NoError(t, stream.Config{MaxMsgSize: 16 << 10, MaxBytes: stream.MinMaxBytes(16 << 10)}.WithDefaults().Validate())
	require.Error(t, stream.Config{MaxMsgSize: -1}.WithDefaults().Validate())

	// Three quarters of the limit is where the syncer trims settled
	// history; the quarter above holds a maximum-size event.
	c := stream.Config{MaxBytes: floor}.WithDefaults()
	require.GreaterOrEqual(t, c.MaxBytes-c.TrimBytes(), int64(c.MaxMsgSize)+stream.RecordOverhead)
	require.Zero(t, stream.Config{}.WithDefaults().TrimBytes(), "unlimited: nothing to trim for size")
}

func TestUnsafe(t *testing.T) {
	t.Parallel()
	safe := stream.Config{Name: "S"}.JetStreamConfig()
	require.Empty(t, stream.Unsafe(safe), "the configuration the project makes keeps every accepted event")
	for name, change := range map[string]func(*jetstream.StreamConfig){
		"discard old": func(c *jetstream.StreamConfig) { c.Discard = jetstream.DiscardOld },
		"max age":     func(c *jetstream.StreamConfig) { c.MaxAge = time.Minute },
		"per subject": func(c *jetstream.StreamConfig) { c.MaxMsgsPerSubject = 2 },
		"memory":      func(c *jetstream.StreamConfig) { c.Storage = jetstream.MemoryStorage },
		"work queue":  func(c *jetstream.StreamConfig) { c.Retention = jetstream.WorkQueuePolicy },
		"interest":    func(c *jetstream.StreamConfig) { c.Retention = jetstream.InterestPolicy },
	} {
		c := safe
		change(&c)
		require.NotEmpty(t, stream.Unsafe(c), name)
	}
}
