package server_test

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/likeperson/portalsync/ingress/dataverse"
	"github.com/likeperson/portalsync/ingress/server"
	"github.com/likeperson/portalsync/pkg/event"
)

// replaceOnce returns body with old replaced by repl, failing when old is
// not in the fixture (so a changed fixture cannot make the test vacuous).
func replaceOnce(t *testing.T, body []byte, old, repl string) []byte {
	t.Helper()
	require.Equal(t, 1, bytes.Count(body, []byte(old)), "fixture must hold %q once", old)
	return bytes.Replace(body, []byte(old), []byte(repl), 1)
}

// storedOrganization reads the organization id of the event stored at seq.
func (b *testBundle) storedEvent(t *testing.T, seq uint64) *event.Event {
	t.Helper()
	ctx := context.Background()
	s, err := b.js.Stream(ctx, "EVENTS")
	require.NoError(t, err)
	msg, err := s.GetMsg(ctx, seq)
	require.NoError(t, err)
	ev, err := event.Decode(msg.Data)
	require.NoError(t, err)
	return ev
}

const contactOrgRef = `"Id": "B0000000-0000-4000-8000-00000000A001", "KeyAttributes": [], "LogicalName": "account"`

// TestDataverseAttackLookupToOtherTable: a contact's parentcustomerid is a
// Customer lookup, which may point at another contact. That contact's id
// must not become an organization: the change is 422 no-organization.
func TestDataverseAttackLookupToOtherTable(t *testing.T) {
	t.Parallel()
	b := dvSetup(t, nil)
	body := replaceOnce(t, dvFixture(t, "contact-create.json"), contactOrgRef,
		`"Id": "B0000000-0000-4000-8000-00000000A001", "KeyAttributes": [], "LogicalName": "contact"`)
	b.requireRefused(t, b.dvPost(t, body, nil), "no_organization")
}

// TestDataverseAttackEmptyGUIDLookup: Guid.Empty in a lookup points at no
// row; it must not become organization 00000000-….
func TestDataverseAttackEmptyGUIDLookup(t *testing.T) {
	t.Parallel()
	b := dvSetup(t, nil)
	body := replaceOnce(t, dvFixture(t, "contact-create.json"), contactOrgRef,
		`"Id": "00000000-0000-0000-0000-000000000000", "KeyAttributes": [], "LogicalName": "account"`)
	b.requireRefused(t, b.dvPost(t, body, nil), "no_organization")
}

// TestDataverseAttackBracedUpperCaseGUIDs: GUIDs in braces and upper case,
// in PrimaryEntityId and in a lookup, are the same rows as their canonical
// lower-case form: stored under the canonical ids, and the same event id.
func TestDataverseAttackBracedUpperCaseGUIDs(t *testing.T) {
	t.Parallel()
	b := dvSetup(t, nil)
	plain := dvFixture(t, "contact-create.json")
	body := replaceOnce(t, plain, `"PrimaryEntityId": "a1b2c3d4-0000-4000-8000-00000000c001"`,
		`"PrimaryEntityId": "{A1B2C3D4-0000-4000-8000-00000000C001}"`)
	body = replaceOnce(t, body, contactOrgRef,
		`"Id": "{B0000000-0000-4000-8000-00000000A001}", "KeyAttributes": [], "LogicalName": "account"`)
	r := b.dvPost(t, body, nil)
	require.Equal(t, http.StatusAccepted, r.status, string(r.body))
	a := r.accepted(t)
	require.Len(t, a.Events, 1)
	ev := b.storedEvent(t, a.Events[0].StreamSeq)
	require.Equal(t, "a1b2c3d4-0000-4000-8000-00000000c001", ev.Member.ID)
	require.Equal(t, "b0000000-0000-4000-8000-00000000a001", ev.Organization.ID)

	// The same operation in the plain form is Dataverse's retry: a duplicate.
	r = b.dvPost(t, plain, nil)
	require.Equal(t, http.StatusOK, r.status, string(r.body))
	require.True(t, r.accepted(t).Events[0].Duplicate)
	require.EqualValues(t, 1, b.streamMsgs(t))
}

// TestDataverseAttackTargetIDMismatch: a Target whose Id is another row
// than PrimaryEntityId is ambiguous (whose data is it?) and never becomes
// an event.
func TestDataverseAttackTargetIDMismatch(t *testing.T) {
	t.Parallel()
	b := dvSetup(t, nil)
	body := replaceOnce(t, dvFixture(t, "contact-create.json"), `"Id": "a1b2c3d4-0000-4000-8000-00000000c001"`,
		`"Id": "a1b2c3d4-0000-4000-8000-00000000c999"`)
	b.requireRefused(t, b.dvPost(t, body, nil), "target_mismatch")

	// Only case and braces differ: the same row.
	body = replaceOnce(t, dvFixture(t, "contact-create.json"), `"Id": "a1b2c3d4-0000-4000-8000-00000000c001"`,
		`"Id": "{A1B2C3D4-0000-4000-8000-00000000C001}"`)
	r := b.dvPost(t, body, nil)
	require.Equal(t, http.StatusAccepted, r.status, string(r.body))
}

// TestDataverseAttackBOM: a body that starts with a UTF-8 byte order mark
// (as .NET writers may emit) is the same context, not a 400 that Dataverse
// would never retry.
func TestDataverseAttackBOM(t *testing.T) {
	t.Parallel()
	b := dvSetup(t, nil)
	body := append([]byte("\xef\xbb\xbf"), dvFixture(t, "contact-create.json")...)
	r := b.dvPost(t, body, nil)
	require.Equal(t, http.StatusAccepted, r.status, string(r.body))
	require.EqualValues(t, 1, b.streamMsgs(t))
}

// TestDataverseAttackOptionSetWithoutValue: a role or state that is not an
// option set value ({"Value": null}, a string, a bare number) is not
// silently dropped (the member would lose the role the portal gives them):
// 422 bad-attribute naming the column.
func TestDataverseAttackOptionSetWithoutValue(t *testing.T) {
	t.Parallel()
	b := dvSetup(t, nil)
	role := `"key": "hlf_role",
      "value": {
       "__type": "OptionSetValue:http://schemas.microsoft.com/xrm/2011/Contracts",
       "Value": 100000001
      }`
	for name, repl := range map[string]string{
		"NullValue":  `"key": "hlf_role", "value": {"__type": "OptionSetValue:http://schemas.microsoft.com/xrm/2011/Contracts", "Value": null}`,
		"NoValue":    `"key": "hlf_role", "value": {"__type": "OptionSetValue:http://schemas.microsoft.com/xrm/2011/Contracts"}`,
		"BareNumber": `"key": "hlf_role", "value": 100000001`,
		"Text":       `"key": "hlf_role", "value": "coordinator"`,
		"Fractional": `"key": "hlf_role", "value": {"__type": "OptionSetValue:http://schemas.microsoft.com/xrm/2011/Contracts", "Value": 100000001.5}`,
	} {
		body := replaceOnce(t, dvFixture(t, "membership-create.json"), role, repl)
		r := b.dvPost(t, body, nil)
		require.Equal(t, http.StatusUnprocessableEntity, r.status, "%s: %s", name, r.body)
		p := r.problem(t)
		require.Equal(t, "bad_attribute", p.Reason, name)
		require.Contains(t, p.Detail, "hlf_role", name)
	}
	require.EqualValues(t, 0, b.storedEvents(t), "no event stored (a refusal record only)")
}

// TestDataverseAttackNonGUIDRowID: a PrimaryEntityId that is no GUID (here
// an e-mail address) is not a context: 400, and no log line carries it as
// a row id.
func TestDataverseAttackNonGUIDRowID(t *testing.T) {
	t.Parallel()
	h, logs := dvObservedHandler(t)
	const email = "kari.nordmann@example.invalid"
	body := replaceOnce(t, dvFixture(t, "contact-create.json"), `"PrimaryEntityId": "a1b2c3d4-0000-4000-8000-00000000c001"`,
		`"PrimaryEntityId": "`+email+`"`)
	req := httptest.NewRequest(http.MethodPost, server.DataversePath, bytes.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set(dataverse.HeaderOrganization, dvOrg)
	req.Header.Set(dataverse.DefaultKeyHeader, dvNewKey)
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	require.Equal(t, http.StatusBadRequest, rec.Code, rec.Body.String())
	require.Contains(t, rec.Body.String(), "PrimaryEntityId is not a GUID")
	require.NotContains(t, rec.Body.String(), email)
	for _, e := range logs.All() {
		require.NotContains(t, e.Message+fmt.Sprint(e.ContextMap()), "example.invalid")
	}
}
