package server

import (
	"errors"
	"strings"

	"github.com/nats-io/nats.go/jetstream"
)

// JetStream error codes of a store that has no room left (nats-server
// jetstream_errors_generated.go).
const (
	errCodeAccountResourcesExceeded = 10002 // JSAccountResourcesExceededErr
	errCodeInsufficientResources    = 10023 // JSInsufficientResourcesErr: the server's storage limit
	errCodeStorageResourcesExceeded = 10047 // JSStorageResourcesExceededErr
	errCodeStreamStoreFailed        = 10077 // JSStreamStoreFailedF: "maximum bytes exceeded" and the like under DiscardNew
)

// isStreamFull reports whether JetStream refused a message because the
// stream, or the account's or server's storage, has reached its limit: a
// stream with DiscardNew refuses new messages rather than drop old ones.
// It stands in for stream.IsFull (same meaning); swap it on merge.
func isStreamFull(err error) bool {
	var apiErr *jetstream.APIError
	if !errors.As(err, &apiErr) {
		return false
	}
	switch apiErr.ErrorCode {
	case errCodeAccountResourcesExceeded, errCodeInsufficientResources, errCodeStorageResourcesExceeded:
		return true
	case errCodeStreamStoreFailed:
		// The same code covers any failed store; only the limits mean full.
		d := apiErr.Description
		return strings.Contains(d, "maximum bytes exceeded") || strings.Contains(d, "maximum messages exceeded") ||
			strings.Contains(d, "maximum messages per subject exceeded")
	}
	return false
}
