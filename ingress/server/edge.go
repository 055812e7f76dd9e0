package server

import (
	"io"
	stdlog "log"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"golang.org/x/time/rate"
)

// rejectLinesPerSecond is how many 4xx access lines are written per
// second at info; the rest are dropped (every refusal is still counted in
// portalsync_ingress_rejected_total or _requests_total).
const rejectLinesPerSecond = 5

// sampledRejections returns the logger of 4xx access lines: a flood of bad
// signatures, refused sources or rate-limited requests must not become a
// flood of log. At info it writes the first rejectLinesPerSecond lines of
// each second and drops the rest; at debug it writes every line.
func sampledRejections(log *zap.Logger) *zap.Logger {
	if log.Core().Enabled(zapcore.DebugLevel) {
		return log
	}
	return log.WithOptions(zap.WrapCore(func(c zapcore.Core) zapcore.Core {
		return zapcore.NewSamplerWithOptions(c, time.Second, rejectLinesPerSecond, 0)
	}))
}

// limitedStdLog is the HTTP server's error log (TLS handshake failures,
// malformed requests): a line per bad connection, so it is limited to
// rejectLinesPerSecond lines per second, the rest dropped.
func limitedStdLog(log *zap.Logger) *stdlog.Logger {
	std := zap.NewStdLog(log)
	std.SetOutput(&limitedWriter{lim: rate.NewLimiter(rejectLinesPerSecond, rejectLinesPerSecond), w: std.Writer()})
	return std
}

// limitedWriter drops writes beyond its rate.
type limitedWriter struct {
	lim *rate.Limiter
	w   io.Writer
}

func (l *limitedWriter) Write(p []byte) (int, error) {
	if !l.lim.Allow() {
		return len(p), nil
	}
	return l.w.Write(p)
}
