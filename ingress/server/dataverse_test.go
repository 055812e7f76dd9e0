package server_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/likeperson/portalsync/ingress/dataverse"
	"github.com/likeperson/portalsync/ingress/server"
	"github.com/likeperson/portalsync/pkg/event"
	"github.com/likeperson/portalsync/pkg/signature"
	"github.com/likeperson/portalsync/pkg/stream"
	"github.com/likeperson/portalsync/testkit/servicetest"
)

const (
	dvOldKey = "dataverse-old-key-0123456789abcdef"
	dvNewKey = "dataverse-new-key-0123456789abcdef"
	dvOrg    = "hlf.crm4.dynamics.com"
)

func dvSetup(t *testing.T, mutate func(*server.Config)) *testBundle {
	t.Helper()
	return setup(t, func(c *server.Config) {
		c.Dataverse = &dataverse.Config{Keys: []string{dvOldKey, dvNewKey}, Organization: dvOrg}
		if mutate != nil {
			mutate(c)
		}
	})
}

// dvFixture is a RemoteExecutionContext of the dataverse package's test
// data: the shapes Dataverse posts.
func dvFixture(t *testing.T, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "dataverse", "testdata", name))
	require.NoError(t, err)
	return b
}

type dvResponse struct {
	status int
	header http.Header
	body   []byte
}

// dvPost posts a context as Dataverse does: its headers, the key in the
// configured header (or in ?code= when query is set).
func (b *testBundle) dvPost(t *testing.T, body []byte, mutate func(*http.Request)) dvResponse {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, b.base+server.DataversePath, bytes.NewReader(body))
	require.NoError(t, err)
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set(dataverse.HeaderOrganization, dvOrg)
	req.Header.Set(dataverse.HeaderEntityName, "contact")
	req.Header.Set(dataverse.HeaderRequestName, "Create")
	req.Header.Set(dataverse.HeaderCorrelationID, "0b7e7c6a-1a2b-4c3d-8e9f-000000000001")
	req.Header.Set(dataverse.DefaultKeyHeader, dvNewKey)
	if mutate != nil {
		mutate(req)
	}
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	var buf bytes.Buffer
	_, err = buf.ReadFrom(resp.Body)
	require.NoError(t, err)
	return dvResponse{status: resp.StatusCode, header: resp.Header, body: buf.Bytes()}
}

func (r dvResponse) accepted(t *testing.T) server.DataverseAccepted {
	t.Helper()
	var a server.DataverseAccepted
	require.NoError(t, json.Unmarshal(r.body, &a), string(r.body))
	return a
}

func (r dvResponse) problem(t *testing.T) server.Problem {
	t.Helper()
	require.Equal(t, server.ProblemContentType, r.header.Get("Content-Type"), string(r.body))
	var p server.Problem
	require.NoError(t, json.Unmarshal(r.body, &p))
	require.Equal(t, r.status, p.Status)
	return p
}

// requireRefused requires a 422 naming reason, and no event stored (the
// stream holds a refusal record only), and returns the problem.
func (b *testBundle) requireRefused(t *testing.T, r dvResponse, reason string) server.Problem {
	t.Helper()
	require.Equal(t, http.StatusUnprocessableEntity, r.status, string(r.body))
	p := r.problem(t)
	require.Equal(t, reason, p.Reason)
	require.EqualValues(t, 0, b.storedEvents(t), "no event stored (a refusal record only)")
	return p
}

// dvObservedHandler is a handler that takes Dataverse changes (and
// nothing to store them in), with the log lines it writes, from debug up.
func dvObservedHandler(t *testing.T) (http.Handler, *observer.ObservedLogs) {
	t.Helper()
	core, logs := observer.New(zap.DebugLevel)
	h, err := server.NewHandler(server.Config{Secrets: []signature.Secret{testSecret(t)},
		Dataverse: &dataverse.Config{Keys: []string{dvNewKey}, Organization: dvOrg}}, nil, nil, nil, zap.New(core))
	require.NoError(t, err)
	return h, logs
}

// TestDataverseCreateStoredAndRetryIsDuplicate: a Create of a contact is
// stored as the contract's event on the member's subject; Dataverse's
// retry of the same context answers 200 and stores nothing more.
func TestDataverseCreateStoredAndRetryIsDuplicate(t *testing.T) {
	t.Parallel()
	b := dvSetup(t, nil)
	ctx := context.Background()
	body := dvFixture(t, "contact-create.json")
	r := b.dvPost(t, body, nil)
	require.Equal(t, http.StatusAccepted, r.status, string(r.body))
	a := r.accepted(t)
	require.Len(t, a.Events, 1)
	require.False(t, a.Events[0].Duplicate)

	s, err := b.js.Stream(ctx, "EVENTS")
	require.NoError(t, err)
	msg, err := s.GetMsg(ctx, a.Events[0].StreamSeq)
	require.NoError(t, err)
	const member = "a1b2c3d4-0000-4000-8000-00000000c001"
	require.Equal(t, event.Subject(member), msg.Subject)
	require.Equal(t, a.Events[0].EventID, msg.Header.Get(jetstream.MsgIDHeader))
	require.Equal(t, "membership-updated", msg.Header.Get(stream.HeaderEventType))
	ev, err := event.Decode(msg.Data)
	require.NoError(t, err, "the stored body is the contract")
	require.Equal(t, "Kari", ev.Member.FirstName)

	again := b.dvPost(t, body, nil)
	require.Equal(t, http.StatusOK, again.status, string(again.body))
	require.True(t, again.accepted(t).Events[0].Duplicate)
	require.EqualValues(t, 1, b.streamMsgs(t))
}

// TestDataverseKeys: the key in the configured header or in ?code=
// (WebhookKey, HttpQueryString), either key of a rotation; no key or a
// wrong one is 401, which Dataverse does not retry.
func TestDataverseKeys(t *testing.T) {
	t.Parallel()
	b := dvSetup(t, func(c *server.Config) { c.Dataverse.KeyHeader = "X-Api-Key" })
	body := dvFixture(t, "contact-delete.json")
	inHeader := func(key string) func(*http.Request) {
		return func(r *http.Request) { r.Header.Del(dataverse.DefaultKeyHeader); r.Header.Set("x-api-key", key) }
	}
	inCode := func(key string) func(*http.Request) {
		return func(r *http.Request) { r.Header.Del(dataverse.DefaultKeyHeader); r.URL.RawQuery = "code=" + key }
	}
	for _, tc := range []struct {
		name   string
		mutate func(*http.Request)
	}{
		{"the default header, not the configured one", nil},
		{"no key", func(r *http.Request) { r.Header.Del(dataverse.DefaultKeyHeader) }},
		{"wrong key", inHeader(dvNewKey + "x")},
		{"a prefix of a key", inHeader(dvNewKey[:20])},
		{"wrong code", inCode("dataverse-wrong-key-0123456789abcdef")},
	} {
		r := b.dvPost(t, body, tc.mutate)
		require.Equal(t, http.StatusUnauthorized, r.status, tc.name)
		require.Equal(t, "urn:portalsync:problem:invalid-key", r.problem(t).Type, tc.name)
	}
	require.EqualValues(t, 0, b.streamMsgs(t))

	r := b.dvPost(t, body, inHeader(dvOldKey))
	require.Equal(t, http.StatusAccepted, r.status, "HttpHeader with the old key of a rotation: %s", r.body)
	for name, mutate := range map[string]func(*http.Request){"HttpHeader, new key": inHeader(dvNewKey), "WebhookKey": inCode(dvNewKey), "HttpQueryString, old key": inCode(dvOldKey)} {
		r := b.dvPost(t, body, mutate)
		require.Equal(t, http.StatusOK, r.status, "%s: %s", name, r.body)
	}
	require.EqualValues(t, 1, b.streamMsgs(t))
}

func TestDataverseWrongOrganization(t *testing.T) {
	t.Parallel()
	b := dvSetup(t, nil)
	for _, org := range []string{"", "other.crm4.dynamics.com"} {
		r := b.dvPost(t, dvFixture(t, "contact-create.json"), func(r *http.Request) { r.Header.Set(dataverse.HeaderOrganization, org) })
		require.Equal(t, http.StatusForbidden, r.status)
		require.Equal(t, "urn:portalsync:problem:wrong-organization", r.problem(t).Type)
	}
	r := b.dvPost(t, dvFixture(t, "contact-create.json"), func(r *http.Request) { r.Header.Set(dataverse.HeaderOrganization, "HLF.CRM4.Dynamics.com") })
	require.Equal(t, http.StatusAccepted, r.status, "compared without regard to case")
}

// TestDataverseSizeExceeded: a stripped body cannot be translated; the
// answer is a final 422 that says reconciliation takes it, no event is
// stored, only a refusal record for the sync log (ids and the reason, no
// value). A stripped Delete of a contact still erases (it needs the id
// only).
func TestDataverseSizeExceeded(t *testing.T) {
	t.Parallel()
	b := dvSetup(t, nil)
	r := b.dvPost(t, dvFixture(t, "contact-update-size-exceeded.json"), func(r *http.Request) { r.Header.Set(dataverse.HeaderMsgSizeExceeded, "true") })
	require.Equal(t, http.StatusUnprocessableEntity, r.status, string(r.body))
	p := r.problem(t)
	require.Equal(t, "urn:portalsync:problem:dataverse-size-exceeded", p.Type)
	require.Equal(t, "size_exceeded", p.Reason)
	require.Contains(t, p.Detail, "reconciliation")
	require.EqualValues(t, 0, b.storedEvents(t))
	msgs := b.storedMsgs(t)
	require.Len(t, msgs, 1)
	rec := msgs[0]
	require.Equal(t, "size-exceeded", rec.Header.Get(stream.HeaderRefused))
	require.Equal(t, stream.RefusedEventType, rec.Header.Get(stream.HeaderEventType))
	require.Equal(t, stream.SourceDataverseWebhook, rec.Header.Get(stream.HeaderSource))
	require.NotEmpty(t, rec.Header.Get(stream.HeaderMemberID), "a contact's row id is the member's id")
	require.Contains(t, string(rec.Data), "size-exceeded")
	require.NotContains(t, string(rec.Data), "@")

	var stripped map[string]any
	require.NoError(t, json.Unmarshal(dvFixture(t, "contact-delete.json"), &stripped))
	delete(stripped, "InputParameters")
	delete(stripped, "PreEntityImages")
	body, err := json.Marshal(stripped)
	require.NoError(t, err)
	r = b.dvPost(t, body, func(r *http.Request) { r.Header.Set(dataverse.HeaderMsgSizeExceeded, "true") })
	require.Equal(t, http.StatusAccepted, r.status, string(r.body))
	require.EqualValues(t, 1, b.storedEvents(t))

	metrics, err := http.Get(b.ops + "/metrics")
	require.NoError(t, err)
	defer metrics.Body.Close()
	var buf bytes.Buffer
	_, _ = buf.ReadFrom(metrics.Body)
	require.Contains(t, buf.String(), `portalsync_ingress_dataverse_untranslated_total{reason="size-exceeded"} 1`)
}

// TestDataverseAnswers: what may succeed later is 503 (Dataverse retries
// only 502/503/504), what never will is 4xx, a table or column the app
// does not mirror is 200 with nothing stored.
func TestDataverseAnswers(t *testing.T) {
	t.Parallel()
	b := dvSetup(t, func(c *server.Config) { c.RateLimit, c.RateBurst = 0.001, 2 })

	r := b.dvPost(t, []byte(`{"not":"a context"}`), nil)
	require.Equal(t, http.StatusBadRequest, r.status)
	require.Equal(t, "urn:portalsync:problem:not-dataverse-context", r.problem(t).Type)

	r = b.dvPost(t, dvFixture(t, "contact-update-unmapped.json"), nil)
	require.Equal(t, http.StatusOK, r.status, string(r.body))
	require.NotEmpty(t, r.accepted(t).Ignored)
	require.Empty(t, r.accepted(t).Events)
	require.EqualValues(t, 0, b.streamMsgs(t))

	// The rate limit is a 503 with Retry-After here, not a 429 that
	// Dataverse would not retry.
	r = b.dvPost(t, dvFixture(t, "contact-create.json"), nil)
	require.Equal(t, http.StatusServiceUnavailable, r.status, string(r.body))
	require.NotEmpty(t, r.header.Get("Retry-After"))
	require.Equal(t, "urn:portalsync:problem:rate-limited", r.problem(t).Type)
}

func TestDataverseUntranslatableIs422(t *testing.T) {
	t.Parallel()
	b := dvSetup(t, nil)
	var c map[string]any
	require.NoError(t, json.Unmarshal(dvFixture(t, "membership-update-role.json"), &c))
	delete(c, "PostEntityImages") // no image registered: the lookups are unknown
	body, err := json.Marshal(c)
	require.NoError(t, err)
	r := b.dvPost(t, body, nil)
	require.Equal(t, http.StatusUnprocessableEntity, r.status, string(r.body))
	p := r.problem(t)
	require.Equal(t, "urn:portalsync:problem:dataverse-no-member", p.Type)
	require.Contains(t, p.Detail, "image")
	require.EqualValues(t, 0, b.storedEvents(t), "no event stored (a refusal record only)")
}

// TestDataverseNATSOutage: JetStream down is a 503 with Retry-After, the
// one answer Dataverse retries; the retry after the outage is stored.
func TestDataverseNATSOutage(t *testing.T) {
	t.Parallel()
	b := dvSetup(t, nil)
	body := dvFixture(t, "membership-create.json")
	b.nats.Stop()
	r := b.dvPost(t, body, nil)
	require.Equal(t, http.StatusServiceUnavailable, r.status, string(r.body))
	require.Equal(t, "3", r.header.Get("Retry-After"))
	b.nats.Start()
	servicetest.WaitReady(t, b.ops, nil)
	r = b.dvPost(t, body, nil)
	require.Contains(t, []int{http.StatusAccepted, http.StatusOK}, r.status, string(r.body))
	require.EqualValues(t, 1, b.streamMsgs(t))
}

func TestDataverseRouteOffWithoutConfig(t *testing.T) {
	t.Parallel()
	b := setup(t, nil)
	r := b.dvPost(t, dvFixture(t, "contact-create.json"), nil)
	require.Equal(t, http.StatusNotFound, r.status)
}

func TestDataverseConfigValidated(t *testing.T) {
	t.Parallel()
	for _, dv := range []dataverse.Config{
		{Keys: []string{dvNewKey}},
		{Keys: []string{"short"}, Organization: dvOrg},
		{Organization: dvOrg},
	} {
		_, err := server.NewHandler(server.Config{Secrets: []signature.Secret{testSecret(t)}, Dataverse: &dv}, nil, nil, nil, nil)
		require.Error(t, err)
	}
}

// TestDataverseFutureTimeIs422: a modifiedon further ahead of the
// ingress's clock than the tolerance would win every later comparison; it
// is refused as final, like a portal webhook's.
func TestDataverseFutureTimeIs422(t *testing.T) {
	t.Parallel()
	fixtureTime := time.Date(2026, 11, 25, 10, 0, 0, 0, time.UTC)
	b := dvSetup(t, func(c *server.Config) { c.Now = func() time.Time { return fixtureTime.Add(-time.Hour) } })
	p := b.requireRefused(t, b.dvPost(t, dvFixture(t, "contact-create.json"), nil), "occurred_at_in_future")
	require.Equal(t, "occurred_at", p.Errors[0].Field)
}

// TestDataverseUntranslatableLogHoldsNoPersonalData: the log line a 422
// leaves for reconciliation names the reason, table, row and operation,
// never a column's value.
func TestDataverseUntranslatableLogHoldsNoPersonalData(t *testing.T) {
	t.Parallel()
	h, logs := dvObservedHandler(t)
	var c map[string]any
	require.NoError(t, json.Unmarshal(dvFixture(t, "contact-create.json"), &c))
	attrs := c["InputParameters"].([]any)[0].(map[string]any)["value"].(map[string]any)["Attributes"].([]any)
	for _, a := range attrs {
		if kv := a.(map[string]any); kv["key"] == "emailaddress1" {
			kv["value"] = "kari-at-example" // the contract refuses it: 422
		}
	}
	body, err := json.Marshal(c)
	require.NoError(t, err)
	req := httptest.NewRequest(http.MethodPost, server.DataversePath+"?code="+dvNewKey, bytes.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set(dataverse.HeaderOrganization, dvOrg)
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	require.Equal(t, http.StatusUnprocessableEntity, rec.Code, rec.Body.String())
	require.NotContains(t, rec.Body.String(), "kari-at-example")

	found := false
	for _, e := range logs.All() {
		text := e.Message + fmt.Sprint(e.ContextMap())
		for _, personal := range []string{"kari-at-example", "Kari", "Nordmann", "+47 912 34 567", dvNewKey} {
			require.NotContains(t, text, personal)
		}
		if e.Message == "dataverse change not translated; left to reconciliation" {
			found = true
			require.Equal(t, "invalid-event", e.ContextMap()["reason"])
			require.Equal(t, "a1b2c3d4-0000-4000-8000-00000000c001", e.ContextMap()["row_id"])
		}
	}
	require.True(t, found, "the 422 is logged for reconciliation")
}
