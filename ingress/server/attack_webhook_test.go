package server_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"net/http"
	"sync"
	"testing"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"github.com/likeperson/portalsync/pkg/event"
	"github.com/likeperson/portalsync/pkg/portalclient"
	"github.com/likeperson/portalsync/pkg/stream"
)

// TestWebhookIDSameBodyOtherWhitespace: a sender's retry that serializes
// the same JSON with other insignificant whitespace is the same event:
// 200 duplicate, not a 409 that tells the sender it reused an id.
func TestWebhookIDSameBodyOtherWhitespace(t *testing.T) {
	t.Parallel()
	b := setup(t, nil)
	ctx := context.Background()
	compact := mustJSON(t, sampleEvent("evt_ws", "member-ws"))
	var indented bytes.Buffer
	require.NoError(t, json.Indent(&indented, compact, "", "\t"))
	indented.WriteString("\r\n")

	first, err := b.client.Send(ctx, "evt_ws", indented.Bytes())
	require.NoError(t, err)
	require.Equal(t, http.StatusAccepted, first.Status, string(first.Body))
	again, err := b.client.Send(ctx, "evt_ws", compact)
	require.NoError(t, err)
	a := answered(t, again, http.StatusOK)
	require.True(t, a.Duplicate)
	require.EqualValues(t, 1, b.streamMsgs(t))

	// A different value is still a conflict, however it is spaced.
	other := sampleEvent("evt_ws", "member-ws")
	other["role"] = "org_admin"
	resp, err := b.client.Send(ctx, "evt_ws", mustJSON(t, other))
	require.NoError(t, err)
	require.Equal(t, http.StatusConflict, resp.Status, string(resp.Body))
}

// TestWebhookIDConflictRace: two different bodies with one webhook-id sent
// at once: JetStream stores one, the other is told 409 (never both 2xx,
// never a silent drop), however the two requests interleave.
func TestWebhookIDConflictRace(t *testing.T) {
	t.Parallel()
	b := setup(t, nil)
	ctx := context.Background()
	for round := range 10 {
		id := "evt_race_" + string(rune('a'+round))
		one := sampleEvent(id, "member-race")
		two := sampleEvent(id, "member-race")
		two["role"] = "coordinator"
		var wg sync.WaitGroup
		start := make(chan struct{})
		resps := make([]*portalclient.Response, 2)
		errs := make([]error, 2)
		for i, ev := range []map[string]any{one, two} {
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-start
				resps[i], errs[i] = b.client.SendEvent(ctx, ev)
			}()
		}
		close(start)
		wg.Wait()
		require.NoError(t, errs[0])
		require.NoError(t, errs[1])
		statuses := []int{resps[0].Status, resps[1].Status}
		require.ElementsMatch(t, []int{http.StatusAccepted, http.StatusConflict}, statuses, "round %d: %s / %s", round, resps[0].Body, resps[1].Body)
		for _, r := range resps {
			if r.Status == http.StatusConflict {
				p := decodeProblem(t, r)
				require.Equal(t, "urn:portalsync:problem:webhook-id-conflict", p.Type)
				require.Contains(t, p.Detail, id)
			}
		}
	}
	require.EqualValues(t, 10, b.streamMsgs(t))
}

// TestWebhookIDSameBodyStoredWithRawDigest: a message an older ingress
// stored carries the SHA-256 of the body as it was sent, not compacted;
// the same body sent again is still a 200 duplicate, another one a 409.
func TestWebhookIDSameBodyStoredWithRawDigest(t *testing.T) {
	t.Parallel()
	b := setup(t, nil)
	ctx := context.Background()
	var indented bytes.Buffer
	require.NoError(t, json.Indent(&indented, mustJSON(t, sampleEvent("evt_old", "member-old")), "", "  "))
	body := indented.Bytes()
	sum := sha256.Sum256(body)
	msg := nats.NewMsg(event.Subject("member-old"))
	msg.Data = body
	msg.Header.Set(jetstream.MsgIDHeader, "evt_old")
	msg.Header.Set(stream.HeaderBodySHA256, hex.EncodeToString(sum[:]))
	stored, err := b.js.PublishMsg(ctx, msg)
	require.NoError(t, err)

	again, err := b.client.Send(ctx, "evt_old", body)
	require.NoError(t, err)
	a := answered(t, again, http.StatusOK)
	require.True(t, a.Duplicate)
	require.Equal(t, stored.Sequence, a.StreamSeq)

	other := sampleEvent("evt_old", "member-old")
	other["role"] = "org_admin"
	resp, err := b.client.Send(ctx, "evt_old", mustJSON(t, other))
	require.NoError(t, err)
	require.Equal(t, http.StatusConflict, resp.Status, string(resp.Body))
	require.EqualValues(t, 1, b.streamMsgs(t))
}
