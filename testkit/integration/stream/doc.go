// Package stream holds the tests of pkg/stream that need a real JetStream
// server (Ensure, IsFull, LeaderGet), run in-process by natstest. They
// live in the testkit module, not beside the code they test, because a
// test in pkg importing natstest would make pkg/go.mod require
// nats-server; pkg/stream keeps the tests that need no server.
package stream
