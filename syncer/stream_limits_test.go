package main

import (
	"bytes"
	"context"
	"testing"

	"github.com/stretchr/testify/require"
)

// `syncer run` refuses a stream too small for its largest event at start
// (issue 19), with the floor in the message.
func TestRunRefusesTooSmallStream(t *testing.T) {
	t.Parallel()
	var out, errOut bytes.Buffer
	err := run(context.Background(), []string{"run", "--database-url=postgres://nobody@127.0.0.1:1/none",
		"--http-addr=127.0.0.1:0", "--stream-max-bytes=1024"}, &out, &errOut)
	require.ErrorContains(t, err, "stream max bytes 1024 is too small")
	require.ErrorContains(t, err, "at least 4198400 bytes")
}
