package wait_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/zap/zaptest"

	"github.com/likeperson/portalsync/pkg/wait"
)

func TestUntilRetriesUntilSuccess(t *testing.T) {
	t.Parallel()
	calls := 0
	err := wait.Until(context.Background(), "thing", zaptest.NewLogger(t), func(context.Context) error {
		calls++
		if calls < 3 {
			return errors.New("down")
		}
		return nil
	})
	require.NoError(t, err)
	require.Equal(t, 3, calls)
}

func TestUntilStopsOnPermanentError(t *testing.T) {
	t.Parallel()
	bad := errors.New("server too old")
	calls := 0
	err := wait.Until(context.Background(), "thing", zaptest.NewLogger(t), func(context.Context) error {
		calls++
		return wait.Permanent(bad)
	})
	require.ErrorIs(t, err, bad)
	require.Equal(t, 1, calls)
}

func TestUntilEndsWithContext(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	err := wait.Until(ctx, "thing", zaptest.NewLogger(t), func(context.Context) error { return errors.New("down") })
	require.ErrorIs(t, err, context.DeadlineExceeded)
}
