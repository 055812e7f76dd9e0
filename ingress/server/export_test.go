package server

import (
	"time"

	"go.uber.org/zap"
)

// SetBatchAckFirst makes atomic batches wait for the first message's
// acknowledgement (jetstreamext's default) or not, for the benchmark that
// compares the two; it returns the function that restores the setting.
func SetBatchAckFirst(on bool) (restore func()) {
	old := batchAckFirst
	batchAckFirst = on
	return func() { batchAckFirst = old }
}

// BatchAckTimeout is how long a pool opened with cfg waits for an atomic
// batch's acknowledgement.
func BatchAckTimeout(cfg Config) (time.Duration, error) {
	p, err := openPool(cfg.WithDefaults(), 1, zap.NewNop())
	if err != nil {
		return 0, err
	}
	defer p.close()
	return p.flow.AckTimeout, nil
}
