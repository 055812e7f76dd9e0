package main

import (
	"bytes"
	"context"
	"encoding/json"
	"testing"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"
	"go.uber.org/zap/zaptest"

	"github.com/likeperson/portalsync/pkg/event"
	"github.com/likeperson/portalsync/pkg/stream"
	"github.com/likeperson/portalsync/testkit/natstest"
	"github.com/likeperson/portalsync/testkit/pgtest"
	"github.com/likeperson/portalsync/testkit/schematest"
)

// cliBundle is what a subcommand test runs against: a migrated database,
// an embedded NATS with the event stream "EVENTS", and the flags that
// point a subcommand at them.
type cliBundle struct {
	db     *pgtest.DB
	nats   *natstest.Server
	js     jetstream.JetStream
	common []string
}

func setupCLI(t *testing.T) *cliBundle {
	t.Helper()
	ctx := context.Background()
	b := &cliBundle{db: schematest.NewDB(t), nats: natstest.Run(t)}
	nc, err := stream.Connect(ctx, b.nats.URL(), "test", zaptest.NewLogger(t))
	require.NoError(t, err)
	t.Cleanup(nc.Close)
	b.js, err = jetstream.New(nc)
	require.NoError(t, err)
	_, err = stream.Ensure(ctx, b.js, stream.Config{Name: "EVENTS"})
	require.NoError(t, err)
	b.common = []string{"--database-url", b.db.URL, "--nats-url", b.nats.URL(), "--stream-name", "EVENTS", "--log-level", "error"}
	return b
}

// mustRun runs the subcommand args with the bundle's common flags, fails
// the test unless it succeeds, and returns what it printed.
func (b *cliBundle) mustRun(t *testing.T, args ...string) string {
	t.Helper()
	var out, errOut bytes.Buffer
	require.NoError(t, run(context.Background(), append(args, b.common...), &out, &errOut), errOut.String())
	return out.String()
}

// publish stores ev on its member's subject as the ingress would, with
// the member header, and returns the message and its stream sequence.
func (b *cliBundle) publish(t *testing.T, ev event.Event) (*nats.Msg, uint64) {
	t.Helper()
	body, err := json.Marshal(ev)
	require.NoError(t, err)
	msg := nats.NewMsg(event.Subject(ev.Member.ID))
	msg.Data = body
	msg.Header.Set(stream.HeaderMemberID, ev.Member.ID)
	ack, err := b.js.PublishMsg(context.Background(), msg)
	require.NoError(t, err)
	return msg, ack.Sequence
}
