package store

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5/pgconn"
)

// Kind says what a caller should do about a store error. Callers switch on
// it (KindOf) and never on driver errors or SQLSTATE codes.
type Kind int

const (
	// KindNone is no error.
	KindNone Kind = iota
	// KindUnavailable: the database cannot be reached or cannot take
	// writes now (connection refused or lost, shutting down, too many
	// connections, read-only, disk full). Not the event's fault: wait for
	// the database and apply the same events again.
	KindUnavailable
	// KindRetry: a conflict with concurrent work (serialization failure,
	// deadlock, the same event logged by another transaction meanwhile) or
	// a timeout (statement or lock timeout, the apply deadline). Retrying
	// soon usually succeeds.
	KindRetry
	// KindEventFault: the event's own data cannot be applied (invalid
	// value, a violated constraint other than the log's above, a raised
	// exception, an SQL error). Only this kind spends the event's
	// deliveries.
	KindEventFault
)

func (k Kind) String() string {
	switch k {
	case KindNone:
		return "none"
	case KindUnavailable:
		return "unavailable"
	case KindRetry:
		return "retry"
	case KindEventFault:
		return "event fault"
	}
	return fmt.Sprintf("kind(%d)", int(k))
}

// Error is a store error with its kind. It wraps the driver error.
type Error struct {
	Kind Kind
	Err  error
}

func (e *Error) Error() string { return e.Err.Error() }

func (e *Error) Unwrap() error { return e.Err }

// KindOf returns the kind of a store error: the kind it was classified as at
// the store boundary, or, for an error that did not pass it, the kind
// interpretError gives it.
func KindOf(err error) Kind {
	if err == nil {
		return KindNone
	}
	var se *Error
	if errors.As(err, &se) {
		return se.Kind
	}
	return classify(err)
}

// IsUnavailable reports whether err means the database is unavailable.
func IsUnavailable(err error) bool { return KindOf(err) == KindUnavailable }

// interpretError classifies err once, at the store boundary; nil stays nil.
func interpretError(err error) error {
	if err == nil {
		return nil
	}
	var se *Error
	if errors.As(err, &se) {
		return err
	}
	return &Error{Kind: classify(err), Err: err}
}

// logDoneIndex is the sync log's one-success-per-event index.
const logDoneIndex = "portal_sync_log_event_done_idx"

// classify maps a driver error to a Kind. An error it does not know is the
// event's fault only when the database answered it (a PgError); anything
// else that is not a timeout is taken as the database being unreachable.
func classify(err error) Kind {
	// A connection the server refused, whatever its SQLSTATE (a database
	// not accepting connections, 55000; a rotated password, 28P01;
	// CONNECT revoked, 42501; a database being restored, 3D000), says
	// nothing about the event: the database is unavailable to this
	// process.
	var connErr *pgconn.ConnectError
	if errors.As(err, &connErr) {
		return KindUnavailable
	}
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		if pgErr.Code == "23505" && pgErr.ConstraintName == logDoneIndex {
			// The same event logged by a concurrent batch (another
			// replica, a redelivery): retrying finds it done.
			return KindRetry
		}
		return classifyCode(pgErr.Code)
	}
	switch {
	case errors.Is(err, context.Canceled):
		// Shutting down: the events are applied again after the restart.
		return KindUnavailable
	case errors.Is(err, context.DeadlineExceeded):
		return KindRetry
	case pgconn.Timeout(err):
		return KindRetry
	}
	// Everything else (a lost or closed connection, a closed pool) means the database did not answer. A caller that finds
	// the database answering after all (Store.Ping) treats it as KindRetry.
	return KindUnavailable
}

// classifyCode maps a SQLSTATE to a Kind.
func classifyCode(code string) Kind {
	switch code {
	case "40001", "40P01": // serialization failure, deadlock
		return KindRetry
	case "57014", "55P03": // statement timeout (or cancel), lock not available
		return KindRetry
	case "42P01": // undefined table: migrations may still be running
		return KindUnavailable
	case "25006": // read-only transaction: a standby, or a failover in progress
		return KindUnavailable
	}
	if len(code) < 2 {
		return KindEventFault
	}
	switch code[:2] {
	case "08": // connection exception
		return KindUnavailable
	case "53": // insufficient resources: disk full, out of memory, too many connections
		return KindUnavailable
	case "57": // operator intervention: admin shutdown, crash shutdown, cannot connect now
		return KindUnavailable
	case "58": // system error (I/O)
		return KindUnavailable
	case "XX": // internal error
		return KindUnavailable
	}
	// 22 data exception, 23 integrity constraint, 42 syntax or access rule,
	// P0 raised by a function, and the rest: the database answered and
	// refused this event.
	return KindEventFault
}
