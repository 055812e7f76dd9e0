package server_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"
	"go.uber.org/zap/zaptest"

	"github.com/likeperson/portalsync/ingress/server"
	"github.com/likeperson/portalsync/pkg/event"
	"github.com/likeperson/portalsync/pkg/portalclient"
	"github.com/likeperson/portalsync/pkg/signature"
	"github.com/likeperson/portalsync/pkg/stream"
	"github.com/likeperson/portalsync/testkit/natstest"
	"github.com/likeperson/portalsync/testkit/servicetest"
)

type testBundle struct {
	base   string // the webhook listener
	ops    string // the operations listener
	nats   *natstest.Server
	js     jetstream.JetStream
	secret signature.Secret
	client *portalclient.Client
	cfg    server.Config
	done   chan error
	cancel context.CancelFunc
}

func testSecret(t *testing.T) signature.Secret {
	t.Helper()
	s, err := signature.NewSecret([]byte("portalsync-ingress-test-secret!!"))
	require.NoError(t, err)
	return s
}

// setup runs a real ingress (server.Run) against an embedded JetStream.
func setup(t *testing.T, mutate func(*server.Config)) *testBundle {
	t.Helper()
	ns := natstest.Run(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	opsLn, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	b := &testBundle{nats: ns, secret: testSecret(t), done: make(chan error, 1)}
	b.cfg = server.Config{
		Listener:       ln,
		OpsListener:    opsLn,
		DrainGrace:     100 * time.Millisecond,
		NATSURL:        ns.URL(),
		Secrets:        []signature.Secret{b.secret},
		PublishTimeout: time.Second,
		RetryAfter:     3 * time.Second,
		Stream:         stream.Config{Name: "EVENTS"},
	}
	if mutate != nil {
		mutate(&b.cfg)
	}
	ctx, cancel := context.WithCancel(context.Background())
	b.cancel = cancel
	go func() { b.done <- server.Run(ctx, b.cfg, zaptest.NewLogger(t)) }()
	t.Cleanup(func() {
		cancel()
		select {
		case <-b.done:
		case <-time.After(15 * time.Second):
			t.Error("ingress did not stop")
		}
	})
	b.base = "http://" + ln.Addr().String()
	b.ops = "http://" + opsLn.Addr().String()
	b.client = &portalclient.Client{URL: b.base + server.WebhookPath, Signer: signature.NewSigner(b.secret), HTTP: &http.Client{Timeout: 10 * time.Second}}
	servicetest.WaitReady(t, b.ops, nil)

	b.js = ns.JetStream(t, nats.MaxReconnects(-1), nats.ReconnectWait(100*time.Millisecond))
	return b
}

// answered requires that r has the status and returns its body.
func answered(t *testing.T, r *portalclient.Response, status int) portalclient.Accepted {
	t.Helper()
	require.Equal(t, status, r.Status, string(r.Body))
	a, err := r.Accepted()
	require.NoError(t, err)
	return a
}

func sampleEvent(id, memberID string) map[string]any {
	return map[string]any{
		"id": id, "type": "membership-created", "occurred_at": "2026-11-25T10:00:00Z",
		"organization": map[string]any{"id": "org-1", "name": "HLF Bergen"},
		"member":       map[string]any{"id": memberID, "email": "ola@example.no", "first_name": "Ola", "last_name": "Nordmann", "phone": "+47 912 34 567"},
		"role":         "peer_mentor",
	}
}

func mustJSON(t *testing.T, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	require.NoError(t, err)
	return b
}

func decodeProblem(t *testing.T, r *portalclient.Response) server.Problem {
	t.Helper()
	require.Equal(t, server.ProblemContentType, r.Header.Get("Content-Type"))
	var p server.Problem
	require.NoError(t, json.Unmarshal(r.Body, &p), string(r.Body))
	require.Equal(t, r.Status, p.Status)
	require.NotEmpty(t, p.Type)
	require.NotEmpty(t, p.Detail)
	return p
}

func (b *testBundle) streamMsgs(t *testing.T) uint64 {
	t.Helper()
	s, err := b.js.Stream(context.Background(), "EVENTS")
	require.NoError(t, err)
	info, err := s.Info(context.Background())
	require.NoError(t, err)
	return info.State.Msgs
}

// storedEvents counts the events in the stream, leaving out refused-change
// records (stream.HeaderRefused).
func (b *testBundle) storedEvents(t *testing.T) int {
	t.Helper()
	n := 0
	for _, m := range b.storedMsgs(t) {
		if m.Header.Get(stream.HeaderRefused) == "" {
			n++
		}
	}
	return n
}

// storedMsgs are the messages in the stream, in order.
func (b *testBundle) storedMsgs(t *testing.T) []*jetstream.RawStreamMsg {
	t.Helper()
	ctx := context.Background()
	s, err := b.js.Stream(ctx, "EVENTS")
	require.NoError(t, err)
	info, err := s.Info(ctx)
	require.NoError(t, err)
	var out []*jetstream.RawStreamMsg
	for seq := info.State.FirstSeq; seq <= info.State.LastSeq && info.State.Msgs > 0; seq++ {
		m, err := s.GetMsg(ctx, seq)
		if err != nil {
			continue // deleted
		}
		out = append(out, m)
	}
	return out
}

func TestAccepted(t *testing.T) {
	t.Parallel()
	b := setup(t, nil)
	ctx := context.Background()
	resp, err := b.client.SendEvent(ctx, sampleEvent("evt_1", "member-1"))
	require.NoError(t, err)
	acc := answered(t, resp, http.StatusAccepted)
	require.Equal(t, "evt_1", acc.EventID)
	require.False(t, acc.Duplicate)
	require.NotZero(t, acc.StreamSeq)

	s, err := b.js.Stream(ctx, "EVENTS")
	require.NoError(t, err)
	msg, err := s.GetMsg(ctx, acc.StreamSeq)
	require.NoError(t, err)
	require.Equal(t, "portal.member.member-1", msg.Subject)
	require.Equal(t, "evt_1", msg.Header.Get(jetstream.MsgIDHeader))
	require.Equal(t, "membership-created", msg.Header.Get(stream.HeaderEventType))
	require.Equal(t, "member-1", msg.Header.Get(stream.HeaderMemberID))
	_, err = time.Parse(time.RFC3339Nano, msg.Header.Get(stream.HeaderReceivedAt))
	require.NoError(t, err)
	require.JSONEq(t, string(mustJSON(t, sampleEvent("evt_1", "member-1"))), string(msg.Data))
}

func TestDuplicateStoredOnce(t *testing.T) {
	t.Parallel()
	b := setup(t, nil)
	ctx := context.Background()
	body := mustJSON(t, sampleEvent("evt_dup", "member-2"))
	first, err := b.client.Send(ctx, "evt_dup", body)
	require.NoError(t, err)
	a1 := answered(t, first, http.StatusAccepted)
	// The portal retries: a new signature and timestamp, the same webhook-id.
	for range 3 {
		again, err := b.client.Send(ctx, "evt_dup", body)
		require.NoError(t, err)
		a2 := answered(t, again, http.StatusOK)
		require.True(t, a2.Duplicate)
		require.Equal(t, a1.StreamSeq, a2.StreamSeq)
	}
	require.EqualValues(t, 1, b.streamMsgs(t))
}

// TestWebhookIDReusedWithOtherBody: the same webhook-id with a different
// body is a 409 naming the id, and nothing more is stored; the same body
// again stays a 200 duplicate.
func TestWebhookIDReusedWithOtherBody(t *testing.T) {
	t.Parallel()
	b := setup(t, nil)
	ctx := context.Background()
	first, err := b.client.SendEvent(ctx, sampleEvent("evt_reuse", "member-3"))
	require.NoError(t, err)
	a1 := answered(t, first, http.StatusAccepted)

	other := sampleEvent("evt_reuse", "member-3")
	other["role"] = "org_admin"
	resp, err := b.client.SendEvent(ctx, other)
	require.NoError(t, err)
	require.Equal(t, http.StatusConflict, resp.Status, string(resp.Body))
	p := decodeProblem(t, resp)
	require.Equal(t, "urn:portalsync:problem:webhook-id-conflict", p.Type)
	require.Contains(t, p.Detail, "evt_reuse")
	require.Contains(t, p.Detail, fmt.Sprint(a1.StreamSeq))

	again, err := b.client.SendEvent(ctx, sampleEvent("evt_reuse", "member-3"))
	require.NoError(t, err)
	require.Equal(t, http.StatusOK, again.Status, string(again.Body))
	require.EqualValues(t, 1, b.streamMsgs(t))

	s, err := b.js.Stream(ctx, "EVENTS")
	require.NoError(t, err)
	msg, err := s.GetMsg(ctx, a1.StreamSeq)
	require.NoError(t, err)
	require.Len(t, msg.Header.Get(stream.HeaderBodySHA256), 64)
}

// TestGUIDMemberIDKeyedCanonically: one member's GUID in upper case, with
// braces, is stored under the lower-case subject.
func TestGUIDMemberIDKeyedCanonically(t *testing.T) {
	t.Parallel()
	b := setup(t, nil)
	resp, err := b.client.SendEvent(context.Background(), sampleEvent("evt_guid", "{0B9F2C1E-1A2B-4C3D-8E9F-00000000000A}"))
	require.NoError(t, err)
	acc := answered(t, resp, http.StatusAccepted)
	s, err := b.js.Stream(context.Background(), "EVENTS")
	require.NoError(t, err)
	msg, err := s.GetMsg(context.Background(), acc.StreamSeq)
	require.NoError(t, err)
	require.Equal(t, "portal.member.0b9f2c1e-1a2b-4c3d-8e9f-00000000000a", msg.Subject)
	require.Equal(t, "0b9f2c1e-1a2b-4c3d-8e9f-00000000000a", msg.Header.Get(stream.HeaderMemberID))
}

func TestOneStoredMessagePerDistinctWebhookID(t *testing.T) {
	t.Parallel()
	// 200 requests at once, 150 of them duplicates whose stored body is read
	// back: the default publish timeout, not the 1 s the other tests use to
	// see 503s quickly, so that a loaded machine does not time them out.
	b := setup(t, func(c *server.Config) { c.PublishTimeout = server.DefaultPublishTimeout })
	ctx := context.Background()
	var wg sync.WaitGroup
	errs := make(chan error, 200)
	for i := range 50 {
		for range 4 { // each id sent four times, concurrently
			wg.Add(1)
			go func() {
				defer wg.Done()
				id := fmt.Sprintf("evt_c%d", i)
				resp, err := b.client.SendEvent(ctx, sampleEvent(id, fmt.Sprintf("m%d", i%7)))
				if err == nil && resp.Status/100 != 2 {
					err = fmt.Errorf("status %d: %s", resp.Status, resp.Body)
				}
				errs <- err
			}()
		}
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		require.NoError(t, err)
	}
	require.EqualValues(t, 50, b.streamMsgs(t))
}

func TestUnknownTypeAccepted(t *testing.T) {
	t.Parallel()
	b := setup(t, nil)
	resp, err := b.client.SendEvent(context.Background(), map[string]any{
		"id": "evt_u", "type": "membership-merged", "occurred_at": "2026-11-25T10:00:00Z", "member": map[string]any{"id": "m-u"},
	})
	require.NoError(t, err)
	require.Equal(t, http.StatusAccepted, resp.Status, string(resp.Body))
	require.EqualValues(t, 1, b.streamMsgs(t))
}

func TestMemberIDWithDotsStaysInItsKey(t *testing.T) {
	t.Parallel()
	b := setup(t, nil)
	resp, err := b.client.SendEvent(context.Background(), sampleEvent("evt_dot", "a.b.c"))
	require.NoError(t, err)
	acc, err := resp.Accepted()
	require.NoError(t, err)
	s, err := b.js.Stream(context.Background(), "EVENTS")
	require.NoError(t, err)
	msg, err := s.GetMsg(context.Background(), acc.StreamSeq)
	require.NoError(t, err)
	require.Equal(t, event.Subject("a.b.c"), msg.Subject)
	require.Equal(t, 2, strings.Count(msg.Subject, "."), msg.Subject) // portal.member.<one token>
}

func TestRejections(t *testing.T) {
	t.Parallel()
	b := setup(t, func(c *server.Config) { c.MaxBodyBytes = 4096 })
	ctx := context.Background()
	valid := mustJSON(t, sampleEvent("evt_r", "member-r"))
	url := b.client.URL
	now := time.Now()

	post := func(t *testing.T, body []byte, header http.Header) *portalclient.Response {
		t.Helper()
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
		require.NoError(t, err)
		for k, v := range header {
			req.Header[k] = v
		}
		resp, err := b.client.Do(req)
		require.NoError(t, err)
		return resp
	}
	signed := func(id string, ts time.Time, body []byte, secret signature.Secret) http.Header {
		h := http.Header{"Content-Type": {"application/json"}}
		signature.NewSigner(secret).SetHeaders(h, id, ts, body)
		return h
	}
	other, err := signature.NewSecret([]byte("some-other-secret-32-bytes-long!"))
	require.NoError(t, err)
	// "Kåre" in Latin-1: not UTF-8.
	latin1 := []byte(`{"id":"evt_r","type":"membership-updated","occurred_at":"2026-11-25T10:00:00Z","organization":{"id":"o"},"member":{"id":"m","first_name":"K` + "\xe5" + `re"}}`)

	tests := []struct {
		name   string
		body   []byte
		header http.Header
		status int
		slug   string
		field  string
	}{
		{"MissingSignature", valid, http.Header{"Content-Type": {"application/json"}}, 401, "invalid-signature", ""},
		{"WrongSecret", valid, signed("evt_r", now, valid, other), 401, "invalid-signature", ""},
		{"TimestampTooOld", valid, signed("evt_r", now.Add(-6*time.Minute), valid, b.secret), 401, "invalid-signature", ""},
		{"TimestampTooNew", valid, signed("evt_r", now.Add(6*time.Minute), valid, b.secret), 401, "invalid-signature", ""},
		{"NotJSON", []byte("hello"), signed("evt_r", now, []byte("hello"), b.secret), 400, "not-json", ""},
		{"MissingField", mustJSON(t, map[string]any{"id": "evt_r", "type": "role-updated", "occurred_at": "2026-11-25T10:00:00Z", "organization": map[string]any{"id": "o"}, "member": map[string]any{"id": "m"}}), nil, 400, "invalid-event", "role"},
		{"MalformedField", mustJSON(t, map[string]any{"id": "evt_r", "type": "role-updated", "occurred_at": "yesterday", "organization": map[string]any{"id": "o"}, "member": map[string]any{"id": "m"}, "role": "coordinator"}), nil, 400, "invalid-event", "occurred_at"},
		{"WildcardMemberID", mustJSON(t, map[string]any{"id": "evt_r", "type": "role-updated", "occurred_at": "2026-11-25T10:00:00Z", "organization": map[string]any{"id": "o"}, "member": map[string]any{"id": "a.>"}, "role": "coordinator"}), nil, 400, "invalid-event", "member.id"},
		{"NotUTF8", latin1, nil, 400, "not-utf8", ""},
		{"OccurredAtInFuture", mustJSON(t, map[string]any{"id": "evt_r", "type": "membership-deactivated", "occurred_at": now.Add(6 * time.Minute).UTC().Format(time.RFC3339), "organization": map[string]any{"id": "o"}, "member": map[string]any{"id": "m"}}), nil, 400, "invalid-event", "occurred_at"},
		{"OccurredAt2099", mustJSON(t, map[string]any{"id": "evt_r", "type": "membership-deactivated", "occurred_at": "2099-01-01T00:00:00Z", "organization": map[string]any{"id": "o"}, "member": map[string]any{"id": "m"}}), nil, 400, "invalid-event", "occurred_at"},
		{"IDMismatch", mustJSON(t, sampleEvent("evt_other", "m")), signed("evt_r", now, mustJSON(t, sampleEvent("evt_other", "m")), b.secret), 400, "id-mismatch", "id"},
		{"TooLarge", bytes.Repeat([]byte("x"), 5000), signed("evt_r", now, bytes.Repeat([]byte("x"), 5000), b.secret), 413, "body-too-large", ""},
		{"TextPlain", valid, http.Header{"Content-Type": {"text/plain"}}, 415, "unsupported-media-type", ""},
		{"NoContentType", valid, http.Header{}, 415, "unsupported-media-type", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := tt.header
			if h == nil {
				h = signed("evt_r", now, tt.body, b.secret)
			}
			resp := post(t, tt.body, h)
			require.Equal(t, tt.status, resp.Status, string(resp.Body))
			p := decodeProblem(t, resp)
			require.Equal(t, "urn:portalsync:problem:"+tt.slug, p.Type)
			if tt.field != "" {
				var fields []string
				for _, fe := range p.Errors {
					fields = append(fields, fe.Field)
				}
				require.Contains(t, fields, tt.field)
				require.Contains(t, p.Detail, tt.field)
			}
			if tt.status == 401 {
				require.NotEmpty(t, p.Reason)
			}
		})
	}
	t.Run("TooLargeChunked", func(t *testing.T) {
		big := bytes.Repeat([]byte("y"), 10000)
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, struct{ *bytes.Reader }{bytes.NewReader(big)})
		require.NoError(t, err)
		req.ContentLength = -1 // chunked: the limit must hold while reading
		for k, v := range signed("evt_r", now, big, b.secret) {
			req.Header[k] = v
		}
		resp, err := b.client.Do(req)
		require.NoError(t, err)
		require.Equal(t, http.StatusRequestEntityTooLarge, resp.Status)
		decodeProblem(t, resp)
	})
	t.Run("WrongMethodAndPath", func(t *testing.T) {
		resp, err := http.Get(url)
		require.NoError(t, err)
		resp.Body.Close()
		require.Equal(t, http.StatusMethodNotAllowed, resp.StatusCode)
		require.Equal(t, server.ProblemContentType, resp.Header.Get("Content-Type"))
	})
	// Nothing rejected was stored.
	require.EqualValues(t, 0, b.streamMsgs(t))
}

func TestSecretRotation(t *testing.T) {
	t.Parallel()
	newSecret, err := signature.NewSecret([]byte("the-rotated-in-new-secret-32byte"))
	require.NoError(t, err)
	b := setup(t, func(c *server.Config) { c.Secrets = append(c.Secrets, newSecret) })
	ctx := context.Background()
	for i, sec := range []signature.Secret{b.secret, newSecret} {
		c := *b.client
		c.Signer = signature.NewSigner(sec)
		resp, err := c.SendEvent(ctx, sampleEvent(fmt.Sprintf("evt_rot%d", i), "m-rot"))
		require.NoError(t, err)
		require.Equal(t, http.StatusAccepted, resp.Status, string(resp.Body))
	}

	// The rotation ends: the old secret is removed and refused.
	after := setup(t, func(c *server.Config) { c.Secrets = []signature.Secret{newSecret} })
	oldClient := *after.client
	oldClient.Signer = signature.NewSigner(after.secret)
	resp, err := oldClient.SendEvent(ctx, sampleEvent("evt_rot_old", "m-rot"))
	require.NoError(t, err)
	require.Equal(t, http.StatusUnauthorized, resp.Status)
	newClient := *after.client
	newClient.Signer = signature.NewSigner(newSecret)
	resp, err = newClient.SendEvent(ctx, sampleEvent("evt_rot_new", "m-rot"))
	require.NoError(t, err)
	require.Equal(t, http.StatusAccepted, resp.Status)
}

func TestNATSOutage(t *testing.T) {
	t.Parallel()
	b := setup(t, nil)
	ctx := context.Background()
	accepted := map[string]bool{}
	send := func(id string) *portalclient.Response {
		resp, err := b.client.SendEvent(ctx, sampleEvent(id, "m-out"))
		require.NoError(t, err)
		if resp.Status/100 == 2 {
			accepted[id] = true
		}
		return resp
	}
	require.Equal(t, http.StatusAccepted, send("evt_before").Status)

	b.nats.Stop()
	resp := send("evt_during")
	require.Equal(t, http.StatusServiceUnavailable, resp.Status, string(resp.Body))
	require.Equal(t, "3", resp.Header.Get("Retry-After"))
	p := decodeProblem(t, resp)
	require.Equal(t, "urn:portalsync:problem:store-unavailable", p.Type)
	r, err := http.Get(b.ops + "/readyz")
	require.NoError(t, err)
	r.Body.Close()
	require.Equal(t, http.StatusServiceUnavailable, r.StatusCode)
	r, err = http.Get(b.ops + "/healthz")
	require.NoError(t, err)
	r.Body.Close()
	require.Equal(t, http.StatusOK, r.StatusCode)

	b.nats.Start()
	servicetest.WaitReady(t, b.ops, nil)
	// The portal retries what got a 503; it is accepted now.
	resp = send("evt_during")
	require.Contains(t, []int{http.StatusAccepted, http.StatusOK}, resp.Status, string(resp.Body))
	require.Equal(t, http.StatusAccepted, send("evt_after").Status)

	// Every accepted event is in the stream after the restart, once.
	s, err := b.js.Stream(ctx, "EVENTS")
	require.NoError(t, err)
	c, err := s.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{})
	require.NoError(t, err)
	stored := map[string]int{}
	batch, err := c.FetchNoWait(100)
	require.NoError(t, err)
	for m := range batch.Messages() {
		stored[m.Headers().Get(jetstream.MsgIDHeader)]++
	}
	for id := range accepted {
		require.Equal(t, 1, stored[id], id)
	}
	require.Len(t, stored, 3)
}

func TestGracefulShutdown(t *testing.T) {
	t.Parallel()
	var reads *readsListener
	b := setup(t, func(c *server.Config) { reads = countReads(c.Listener); c.Listener = reads })
	resp, err := b.client.SendEvent(context.Background(), sampleEvent("evt_s", "m-s"))
	require.NoError(t, err)
	require.Equal(t, http.StatusAccepted, resp.Status)

	// A request in flight when shutdown begins: its body is still arriving.
	body := mustJSON(t, sampleEvent("evt_inflight", "m-s"))
	h := http.Header{}
	signature.NewSigner(b.secret).SetHeaders(h, "evt_inflight", time.Now(), body)
	before := reads.counts() // the first request's connection has read all it will
	conn, err := net.Dial("tcp", strings.TrimPrefix(b.base, "http://"))
	require.NoError(t, err)
	defer conn.Close()
	head, err := fmt.Fprintf(conn, "POST %s HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: %d\r\n"+
		"webhook-id: %s\r\nwebhook-timestamp: %s\r\nwebhook-signature: %s\r\n\r\n",
		server.WebhookPath, len(body), h.Get("webhook-id"), h.Get("webhook-timestamp"), h.Get("webhook-signature"))
	require.NoError(t, err)
	_, err = conn.Write(body[:10])
	require.NoError(t, err)
	// The server has read the head and the start of the body: the request
	// is in flight.
	reads.waitRead(t, before, 1, int64(head+10))

	b.cancel()
	// New connections are refused soon after shutdown starts...
	require.Eventually(t, func() bool {
		c, err := net.Dial("tcp", strings.TrimPrefix(b.base, "http://"))
		if err == nil {
			c.Close()
		}
		return err != nil
	}, 5*time.Second, 10*time.Millisecond, "stops accepting")
	// ...while the request in flight finishes and is stored.
	_, err = conn.Write(body[10:])
	require.NoError(t, err)
	require.NoError(t, conn.SetReadDeadline(time.Now().Add(5*time.Second)))
	inflight, err := http.ReadResponse(bufio.NewReader(conn), nil)
	require.NoError(t, err)
	inflight.Body.Close()
	require.Equal(t, http.StatusAccepted, inflight.StatusCode)

	select {
	case err := <-b.done:
		require.NoError(t, err)
		b.done <- nil // for the cleanup
	case <-time.After(10 * time.Second):
		t.Fatal("ingress did not stop after its context ended")
	}
	require.EqualValues(t, 2, b.streamMsgs(t), "both events stored")
}

func TestRefusesToStartWithoutSecret(t *testing.T) {
	t.Parallel()
	err := server.Run(context.Background(), server.Config{NATSURL: "nats://127.0.0.1:1"}, zaptest.NewLogger(t))
	require.ErrorContains(t, err, "PORTAL_WEBHOOK_SECRETS")
}

// A body that breaks off (the sender's connection fails mid-body) is
// answered 503 with Retry-After, not 400: nothing of it was kept, and the
// sender must send it again.
func TestBrokenBodyIsRetried(t *testing.T) {
	t.Parallel()
	b := setup(t, nil)
	body := mustJSON(t, sampleEvent("evt_broken", "member-1"))
	h := http.Header{}
	signature.NewSigner(b.secret).SetHeaders(h, "evt_broken", time.Now(), body)
	conn, err := net.Dial("tcp", strings.TrimPrefix(b.base, "http://"))
	require.NoError(t, err)
	defer conn.Close()
	var req strings.Builder
	fmt.Fprintf(&req, "POST %s HTTP/1.1\r\nHost: ingress\r\nContent-Type: application/json\r\nContent-Length: %d\r\n", server.WebhookPath, len(body))
	for k := range h {
		fmt.Fprintf(&req, "%s: %s\r\n", k, h.Get(k))
	}
	req.WriteString("\r\n")
	req.Write(body[:len(body)/2])
	_, err = conn.Write([]byte(req.String()))
	require.NoError(t, err)
	require.NoError(t, conn.(*net.TCPConn).CloseWrite()) // the rest never comes
	require.NoError(t, conn.SetReadDeadline(time.Now().Add(10*time.Second)))
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	require.NoError(t, err)
	defer resp.Body.Close()
	require.Equal(t, http.StatusServiceUnavailable, resp.StatusCode)
	require.Equal(t, "3", resp.Header.Get("Retry-After"))
	require.Zero(t, b.streamMsgs(t))
}
