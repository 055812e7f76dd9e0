package history_test

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/zap/zaptest"

	"github.com/likeperson/portalsync/pkg/stream"
	"github.com/likeperson/portalsync/syncer/history"
)

// The size the stream refuses at is the server's (whoever set it last:
// the ingress and the syncer both ensure the stream at start, each with
// its own STREAM_MAX_BYTES), so the trim must work from the stream's
// limit, not from the syncer's flag. Found by an outside test of issue 19:
// a syncer started without STREAM_MAX_BYTES and an ingress started after
// it with 4,198,400 left a stream of settled events full for good (12,928
// of 20,000 events answered 503 stream_full, the syncer holding nothing,
// no trim).
func TestTrimBySizeUsesTheStreamsLimit(t *testing.T) {
	t.Parallel()
	limited := stream.Config{MaxAge: time.Hour, MaxMsgSize: 1024, MaxBytes: stream.MinMaxBytes(1024)}
	b := setup(t, limited) // the stream as the ingress set it
	b.publish(t, 30, 200)  // about 7 KiB of the 8 KiB
	b.settle(t, all)

	flags := stream.Config{Name: "EVENTS", MaxAge: time.Hour, MaxMsgSize: 1024} // the syncer's: no STREAM_MAX_BYTES
	tr, err := history.New(b.js, history.Config{Stream: flags, Durable: durable, Now: time.Now}, b.metrics, zaptest.NewLogger(t))
	require.NoError(t, err)
	res, err := tr.Trim(context.Background())
	require.NoError(t, err)
	require.Equal(t, history.ReasonSize, res.Reason, "settled history over three quarters of the stream's limit is trimmed")
	require.LessOrEqual(t, b.state(t).Bytes, uint64(limited.WithDefaults().TrimBytes()))
}

// portalsync_syncer_stream_bytes is what the stream holds after the trim,
// not before it: read before the purge, the gauge showed the full stream
// for a whole interval after every size trim (with the real syncer at
// STREAM_MAX_BYTES 4,198,400: 4,197,837 bytes reported while the stream
// held 3,147,643 after a trim), so the documented "over 90 % for 5
// minutes" alert fires on a stream that is trimmed in time whenever
// a 15 s interval brings in more than 15 % of the limit.
func TestStreamBytesGaugeAfterTrim(t *testing.T) {
	t.Parallel()
	cfg := stream.Config{MaxAge: time.Hour, MaxMsgSize: 1024, MaxBytes: stream.MinMaxBytes(1024)}
	b := setup(t, cfg)
	b.publish(t, 30, 200)
	b.settle(t, all)
	res := b.trim(t, time.Now())
	require.Positive(t, res.Purged)
	st := b.state(t)
	require.Equal(t, float64(st.Bytes), gauge(t, b.reg, "portalsync_syncer_stream_bytes"))
	require.Equal(t, float64(st.Msgs), gauge(t, b.reg, "portalsync_syncer_stream_messages"))
}
