// Package wait retries a start-up step until it succeeds, so that a
// service starts while its dependencies are down and goes on by itself when
// they come up.
package wait

import (
	"context"
	"errors"
	"time"

	"go.uber.org/zap"
)

// Defaults of Until's probe interval: it starts at First and doubles up to
// Max.
const (
	First = 100 * time.Millisecond
	Max   = 5 * time.Second
)

// permanentError marks an error no waiting fixes.
type permanentError struct{ err error }

func (p permanentError) Error() string { return p.err.Error() }
func (p permanentError) Unwrap() error { return p.err }

// Permanent wraps err so that Until returns it at once instead of waiting:
// a misconfiguration, not an outage.
func Permanent(err error) error {
	if err == nil {
		return nil
	}
	return permanentError{err}
}

// Until calls fn until it returns nil, waiting First, then twice as long
// each time up to Max, between calls. The first failure is logged at WARN
// ("waiting for what"), later ones at DEBUG, and success after a wait at
// INFO. It returns ctx's error when ctx ends first, and an error fn marks
// Permanent at once.
func Until(ctx context.Context, what string, log *zap.Logger, fn func(context.Context) error) error {
	delay := First
	start := time.Now()
	for n := 0; ; n++ {
		err := fn(ctx)
		if err == nil {
			if n > 0 {
				log.Info(what+" is available", zap.Duration("waited", time.Since(start).Round(time.Millisecond)))
			}
			return nil
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		var perm permanentError
		if errors.As(err, &perm) {
			return perm.err
		}
		if n == 0 {
			log.Warn("waiting for "+what, zap.Error(err))
		} else {
			log.Debug("still waiting for "+what, zap.Error(err))
		}
		t := time.NewTimer(delay)
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-t.C:
		}
		delay = min(2*delay, Max)
	}
}
