package stream

import (
	"errors"
	"slices"
	"strings"

	"github.com/nats-io/nats.go/jetstream"
)

// JetStream API error codes of a publish refused for want of room
// (nats-server server/jetstream_errors_generated.go).
const (
	// errCodeStoreFailed is JSStreamStoreFailedF (503): its description
	// is the store's error, among them the stream's own limits under
	// discard new.
	errCodeStoreFailed jetstream.ErrorCode = 10077
	// errCodeAccountResources is JSAccountResourcesExceededErr (400): the
	// account's JetStream storage limit.
	errCodeAccountResources jetstream.ErrorCode = 10002
	// errCodeInsufficientResources is JSInsufficientResourcesErr (503):
	// the server's JetStream storage (max_file_store) is used up.
	errCodeInsufficientResources jetstream.ErrorCode = 10023
	// errCodeStorageResources is JSStorageResourcesExceededErr (500):
	// the account's or server's storage is exceeded.
	errCodeStorageResources jetstream.ErrorCode = 10047
)

// The store errors (nats-server server/store.go ErrMaxBytes, ErrMaxMsgs,
// ErrMaxMsgsPerSubject) that JSStreamStoreFailedF carries when a stream
// with discard new is full.
var fullDescriptions = []string{
	"maximum bytes exceeded",
	"maximum messages exceeded",
	"maximum messages per subject exceeded",
}

// IsFull reports whether err is JetStream refusing a publish because there
// is no room: the stream is at its MaxBytes (STREAM_MAX_BYTES; it
// discards new events, never stored ones), or the account's or server's
// JetStream storage is used up. Nothing was stored; the event may be
// published again once the syncer has settled and trimmed history or the
// operator has made room. Other store failures (an I/O error, a message
// over MaxMsgSize) are not "full".
func IsFull(err error) bool {
	var apiErr *jetstream.APIError
	if !errors.As(err, &apiErr) {
		return false
	}
	switch apiErr.ErrorCode {
	case errCodeStoreFailed:
		// The same code covers any failed store; only the limits mean full.
		return slices.ContainsFunc(fullDescriptions, func(d string) bool { return strings.Contains(apiErr.Description, d) })
	case errCodeAccountResources, errCodeInsufficientResources, errCodeStorageResources:
		return true
	}
	return false
}
