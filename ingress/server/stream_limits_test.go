package server_test

import (
	"context"
	"testing"

	"github.com/stretchr/testify/require"
	"go.uber.org/zap/zaptest"

	"github.com/likeperson/portalsync/ingress/server"
	"github.com/likeperson/portalsync/pkg/signature"
	"github.com/likeperson/portalsync/pkg/stream"
)

// A stream too small for its largest event is a configuration error the
// ingress reports at start (issue 19), before it dials NATS, with the
// floor in the message.
func TestRunRefusesTooSmallStream(t *testing.T) {
	t.Parallel()
	secret, err := signature.NewSecret([]byte("portalsync-limit-test-secret-32b"))
	require.NoError(t, err)
	err = server.Run(context.Background(), server.Config{Secrets: []signature.Secret{secret}, NATSURL: "nats://127.0.0.1:1",
		Stream: stream.Config{MaxBytes: 1024}}, zaptest.NewLogger(t))
	require.ErrorContains(t, err, "stream max bytes 1024 is too small")
	require.ErrorContains(t, err, "at least 4198400 bytes")
}
