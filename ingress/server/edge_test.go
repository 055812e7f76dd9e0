package server

import (
	"testing"

	"github.com/stretchr/testify/require"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"
)

// TestHTTPErrorLogLimited: the HTTP server writes a line per bad connection
// (a failed TLS handshake, say); 100 of them write a few.
func TestHTTPErrorLogLimited(t *testing.T) {
	t.Parallel()
	core, logs := observer.New(zapcore.InfoLevel)
	std := limitedStdLog(zap.New(core))
	for i := range 100 {
		std.Printf("http: TLS handshake error from 192.0.2.%d:1234: EOF", i)
	}
	require.Positive(t, logs.Len())
	require.LessOrEqual(t, logs.Len(), 2*rejectLinesPerSecond)
}
