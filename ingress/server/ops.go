package server

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"sync/atomic"
	"time"

	"github.com/labstack/echo/v4"
)

// newOps builds the operations routes: /healthz, /readyz and /metrics.
// They are served on their own listener (Config.OpsAddr), never on the
// webhook's, so that the webhook's public address answers webhooks only.
func (h *Handler) newOps() *echo.Echo {
	e := echo.New()
	e.HideBanner = true
	e.HidePort = true
	e.HTTPErrorHandler = errorHandler(h.log)
	e.GET("/healthz", h.healthz)
	e.GET("/readyz", h.readyz)
	e.GET("/metrics", echo.WrapHandler(h.metrics.Handler()))
	return e
}

// Ops returns the operations routes' handler.
func (h *Handler) Ops() http.Handler { return h.ops }

// readiness answers /readyz from what the process already knows: whether
// it is shutting down, its NATS connections' state (local), whether the
// stream was ensured, and the last periodic check of the stream. A probe
// makes no JetStream request, so probing cannot load JetStream or slow
// the webhooks.
type readiness struct {
	stream string
	// connected reports the NATS connections' state without a request.
	connected func() error
	// stopping is closed when Run's context ends: not ready from that
	// instant, while webhooks are still served.
	stopping <-chan struct{}
	ensured  atomic.Bool
	// lastCheck is the error of the last periodic stream check; nil until
	// the first and while the stream answers.
	lastCheck atomic.Pointer[error]
}

var errShuttingDown = errors.New("shutting down")

// ready is the ReadinessChecker /readyz calls.
func (r *readiness) ready(context.Context) error {
	select {
	case <-r.stopping:
		return errShuttingDown
	default:
	}
	err := r.connected()
	switch {
	case !r.ensured.Load() && err != nil:
		return fmt.Errorf("waiting for NATS: %w", err)
	case !r.ensured.Load():
		return fmt.Errorf("waiting for stream %s", r.stream)
	case err != nil:
		return err
	}
	if p := r.lastCheck.Load(); p != nil && *p != nil {
		return *p
	}
	return nil
}

// refresh runs check every interval until ctx ends and keeps its outcome
// for ready: one JetStream request per interval, however often /readyz is
// asked.
func (r *readiness) refresh(ctx context.Context, interval time.Duration, check func(context.Context) error) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		cctx, cancel := context.WithTimeout(ctx, min(interval, 2*time.Second))
		err := check(cctx)
		cancel()
		if ctx.Err() != nil {
			return
		}
		r.lastCheck.Store(&err)
	}
}
