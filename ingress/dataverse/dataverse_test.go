package dataverse_test

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/likeperson/portalsync/ingress/dataverse"
	"github.com/likeperson/portalsync/pkg/dvmap"
	"github.com/likeperson/portalsync/pkg/event"
)

const (
	contactID    = "a1b2c3d4-0000-4000-8000-00000000c001"
	accountID    = "b0000000-0000-4000-8000-00000000a001"
	membershipID = "c0000000-0000-4000-8000-00000000d001"
)

func fixture(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name))
	require.NoError(t, err)
	return b
}

// decode decodes a fixture that must decode.
func decode(t *testing.T, name string) *dataverse.Context {
	t.Helper()
	c, err := dataverse.Decode(fixture(t, name))
	require.NoError(t, err)
	return c
}

func translate(t *testing.T, name string, sizeExceeded bool) (dataverse.Result, error) {
	t.Helper()
	return dataverse.Translate(decode(t, name), dvmap.DefaultMapping(), sizeExceeded)
}

// translateOne translates a fixture that must become exactly one event.
func translateOne(t *testing.T, name string, sizeExceeded bool) dataverse.Translated {
	t.Helper()
	res, err := translate(t, name, sizeExceeded)
	require.NoError(t, err)
	require.Len(t, res.Events, 1)
	return res.Events[0]
}

// requireUntranslatable asserts that err is an *UntranslatableError with
// the reason, and returns it.
func requireUntranslatable(t *testing.T, err error, reason string) *dataverse.UntranslatableError {
	t.Helper()
	var ue *dataverse.UntranslatableError
	require.ErrorAs(t, err, &ue)
	require.Equal(t, reason, ue.Reason)
	return ue
}

// body decodes a translated event's stored JSON into a map, to see
// exactly which member fields it carries (absent, null or a value).
func body(t *testing.T, tr dataverse.Translated) map[string]any {
	t.Helper()
	var m map[string]any
	require.NoError(t, json.Unmarshal(tr.Body, &m))
	return m
}

func TestDecodeReadsRemoteExecutionContext(t *testing.T) {
	t.Parallel()
	c := decode(t, "contact-create.json")
	require.Equal(t, "Create", c.MessageName)
	require.Equal(t, "contact", c.PrimaryEntityName)
	require.Equal(t, contactID, c.PrimaryEntityID)
	require.Equal(t, time.Date(2026, 11, 25, 10, 0, 1, 0, time.UTC), c.OperationCreatedOn, "/Date(ms+0100)/ is UTC milliseconds")
	target := c.InputParameters["target"]
	require.Equal(t, dataverse.KindEntity, target.Kind)
	require.Equal(t, "Kari", target.Entity.Attributes["firstname"].Str)
	ref := target.Entity.Attributes["parentcustomerid"]
	require.Equal(t, dataverse.KindReference, ref.Kind)
	require.Equal(t, "account", ref.Logical)
	require.Equal(t, "HLF Bergen", ref.Name)
	require.Equal(t, dataverse.KindOption, target.Entity.Attributes["statecode"].Kind)
	require.Equal(t, dataverse.KindBool, target.Entity.Attributes["donotemail"].Kind)

	for _, bad := range []string{``, `[]`, `{}`, `{"MessageName":"Create"}`, "\xff",
		`{"MessageName":"Create","PrimaryEntityName":"contact","PrimaryEntityId":"x","OperationId":"y","OperationCreatedOn":"/Date(x)/"}`,
		`{"MessageName":"Create","PrimaryEntityName":"contact","PrimaryEntityId":"x","OperationId":"y","PostEntityImages":[{"key":"a","value":1}]}`,
		`{"MessageName":"Create","PrimaryEntityName":"contact","PrimaryEntityId":"kari@example.invalid","OperationId":"5d3c7a10-8b0e-4f11-9c2d-0000000000c1"}`,
		`{"MessageName":"Create","PrimaryEntityName":"contact","PrimaryEntityId":"a1b2c3d4-0000-4000-8000-00000000c001","OperationId":"../x"}`} {
		_, err := dataverse.Decode([]byte(bad))
		require.ErrorIs(t, err, dataverse.ErrNotContext, "%q", bad)
	}
}

func TestParseDate(t *testing.T) {
	t.Parallel()
	want := time.Date(2017, 9, 26, 6, 24, 8, 0, time.UTC)
	for _, s := range []string{"/Date(1506407048000)/", "/Date(1506407048000-0700)/", "/Date(1506407048000+0200)/", "2017-09-26T06:24:08Z"} {
		got, err := dataverse.ParseDate(s)
		require.NoError(t, err, s)
		require.Equal(t, want, got, s)
	}
	for _, s := range []string{"", "/Date()/", "/Date(12", "/Date(1506407048000-07)/", "/Date(abc)/", "/Date(99999999999999999999)/", "yesterday"} {
		_, err := dataverse.ParseDate(s)
		require.Error(t, err, s)
	}
}

func TestTranslateContactCreate(t *testing.T) {
	t.Parallel()
	ev := translateOne(t, "contact-create.json", false).Event
	require.Equal(t, event.MembershipUpdated, ev.Type)
	require.Equal(t, contactID, ev.Member.ID)
	require.Equal(t, "Kari", ev.Member.FirstName)
	require.Equal(t, "Nordmann", ev.Member.LastName)
	require.Equal(t, "kari.nordmann@example.invalid", ev.Member.Email)
	require.Equal(t, "+47 912 34 567", ev.Member.Phone)
	require.Equal(t, event.Organization{ID: accountID, Name: "HLF Bergen"}, ev.Organization)
	require.Equal(t, time.Date(2026, 11, 25, 10, 0, 0, 0, time.UTC), ev.OccurredAt, "occurred_at is modifiedon")
	require.True(t, strings.HasPrefix(ev.ID, "dv.5d3c7a10-8b0e-4f11-9c2d-0000000000c1.contact."), ev.ID)
	require.NotContains(t, ev.ID, contactID, "the member ID is not in the event id (erasure could not reach it)")
}

// An Update carries only the changed columns: the event carries those and
// nothing else (absent = unchanged), a column set to null clears the field.
func TestTranslateContactUpdateIsPartial(t *testing.T) {
	t.Parallel()
	tr := translateOne(t, "contact-update.json", false)
	m := body(t, tr)["member"].(map[string]any)
	require.Equal(t, map[string]any{"id": contactID, "phone": "+47 987 65 432", "email": nil}, m)
	ev := tr.Event
	require.Equal(t, accountID, ev.Organization.ID, "the organization from the post-image")
	require.Equal(t, time.Date(2026, 11, 25, 11, 0, 0, 0, time.UTC), ev.OccurredAt)

	res, err := translate(t, "contact-update-unmapped.json", false)
	require.NoError(t, err)
	require.Empty(t, res.Events)
	require.Contains(t, res.Ignored, "no mapped column")
}

func TestTranslateContactWithoutOrganizationIsUntranslatable(t *testing.T) {
	t.Parallel()
	c := decode(t, "contact-update.json")
	c.PostEntityImages = nil
	_, err := dataverse.Translate(c, dvmap.DefaultMapping(), false)
	ue := requireUntranslatable(t, err, "no-organization")
	require.NotContains(t, ue.Error(), "+47", "no personal data in the reason")
}

func TestTranslateContactDeleteIsErasure(t *testing.T) {
	t.Parallel()
	for _, sizeExceeded := range []bool{false, true} {
		tr := translateOne(t, "contact-delete.json", sizeExceeded)
		ev := tr.Event
		require.Equal(t, event.MemberDeleted, ev.Type)
		require.Equal(t, contactID, ev.Member.ID)
		require.NotContains(t, body(t, tr), "organization")
		require.Equal(t, time.Date(2026, 11, 25, 11, 0, 0, 0, time.UTC), ev.OccurredAt, "occurred_at is OperationCreatedOn")
	}
}

func TestTranslateMembershipCreate(t *testing.T) {
	t.Parallel()
	tr := translateOne(t, "membership-create.json", false)
	ev := tr.Event
	require.Equal(t, event.MembershipCreated, ev.Type)
	require.Equal(t, event.RoleCoordinator, ev.Role)
	require.Equal(t, contactID, ev.Member.ID)
	require.Equal(t, event.Organization{ID: accountID, Name: "HLF Bergen"}, ev.Organization)
	m := body(t, tr)["member"].(map[string]any)
	require.Equal(t, map[string]any{"id": contactID}, m, "a membership changes no profile field")
}

func TestTranslateMembershipUpdateRoleFromImages(t *testing.T) {
	t.Parallel()
	ev := translateOne(t, "membership-update-role.json", false).Event
	require.Equal(t, event.RoleUpdated, ev.Type)
	require.Equal(t, event.RoleOrgAdmin, ev.Role)
	require.Equal(t, accountID, ev.Organization.ID)
	require.Equal(t, time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC), ev.OccurredAt)
}

func TestTranslateMembershipSetStateAndDelete(t *testing.T) {
	t.Parallel()
	ev := translateOne(t, "membership-setstate.json", false).Event
	require.Equal(t, event.MembershipDeactivated, ev.Type)
	require.Equal(t, contactID, ev.Member.ID)

	c := decode(t, "membership-setstate.json")
	c.InputParameters["state"] = dataverse.Value{Kind: dataverse.KindOption, Num: 0}
	res, err := dataverse.Translate(c, dvmap.DefaultMapping(), false)
	require.NoError(t, err)
	require.Equal(t, event.MembershipReactivated, res.Events[0].Event.Type)

	c.MessageName = "Delete"
	c.InputParameters = map[string]dataverse.Value{"target": {Kind: dataverse.KindReference, Str: membershipID, Logical: "hlf_membership"}}
	res, err = dataverse.Translate(c, dvmap.DefaultMapping(), false)
	require.NoError(t, err)
	require.Equal(t, event.MembershipDeactivated, res.Events[0].Event.Type, "a deleted membership ends")

	c.PreEntityImages = nil
	_, err = dataverse.Translate(c, dvmap.DefaultMapping(), false)
	requireUntranslatable(t, err, "no-member")
}

// One Update that changes both the state and the role becomes two events
// with distinct ids, each stable across Dataverse's retry.
func TestTranslateMembershipStateAndRole(t *testing.T) {
	t.Parallel()
	c := decode(t, "membership-update-role.json")
	c.InputParameters["target"].Entity.Attributes["statecode"] = dataverse.Value{Kind: dataverse.KindOption, Num: 1}
	res, err := dataverse.Translate(c, dvmap.DefaultMapping(), false)
	require.NoError(t, err)
	require.Len(t, res.Events, 2)
	require.Equal(t, event.MembershipDeactivated, res.Events[0].Event.Type)
	require.Equal(t, event.RoleUpdated, res.Events[1].Event.Type)
	require.NotEqual(t, res.Events[0].Event.ID, res.Events[1].Event.ID)

	c.InputParameters["target"].Entity.Attributes["hlf_role"] = dataverse.Value{Kind: dataverse.KindOption, Num: 7}
	_, err = dataverse.Translate(c, dvmap.DefaultMapping(), false)
	requireUntranslatable(t, err, "unknown-role")
}

// Dataverse retries with the same context: the same ids, so JetStream
// stores the retry as a duplicate.
func TestTranslateRetryGivesSameIDs(t *testing.T) {
	t.Parallel()
	for _, name := range []string{"contact-create.json", "contact-update.json", "contact-delete.json", "membership-create.json", "membership-setstate.json"} {
		a, err := translate(t, name, false)
		require.NoError(t, err)
		b, err := translate(t, name, false)
		require.NoError(t, err)
		require.Equal(t, a.Events[0].Event.ID, b.Events[0].Event.ID, name)
		require.Equal(t, a.Events[0].Body, b.Events[0].Body, name)
		require.True(t, event.ValidID(a.Events[0].Event.ID), name)
	}
	// An id too long for the contract is hashed, still stable.
	c := decode(t, "contact-delete.json")
	c.OperationID = strings.Repeat("o", 120)
	a, err := dataverse.Translate(c, dvmap.DefaultMapping(), false)
	require.NoError(t, err)
	b, err := dataverse.Translate(c, dvmap.DefaultMapping(), false)
	require.NoError(t, err)
	require.LessOrEqual(t, len(a.Events[0].Event.ID), event.MaxIDLength)
	require.Equal(t, a.Events[0].Event.ID, b.Events[0].Event.ID)
}

func TestTranslateSizeExceeded(t *testing.T) {
	t.Parallel()
	_, err := translate(t, "contact-update-size-exceeded.json", true)
	ue := requireUntranslatable(t, err, "size-exceeded")
	require.Contains(t, ue.Detail, "reconciliation")
	_, err = translate(t, "membership-create.json", true)
	requireUntranslatable(t, err, "size-exceeded")
}

func TestTranslateTablesNotMirrored(t *testing.T) {
	t.Parallel()
	c := decode(t, "contact-create.json")
	c.PrimaryEntityName = "account"
	res, err := dataverse.Translate(c, dvmap.DefaultMapping(), false)
	require.NoError(t, err)
	require.NotEmpty(t, res.Ignored)

	c.PrimaryEntityName = "lead"
	_, err = dataverse.Translate(c, dvmap.DefaultMapping(), false)
	requireUntranslatable(t, err, "table-not-mapped")

	c.PrimaryEntityName = "contact"
	c.MessageName = "Assign"
	res, err = dataverse.Translate(c, dvmap.DefaultMapping(), false)
	require.NoError(t, err)
	require.Contains(t, res.Ignored, "not mapped")
}

// A value the contract refuses (an e-mail that is none) is untranslatable
// and names the field, not the value.
func TestTranslateInvalidValue(t *testing.T) {
	t.Parallel()
	c := decode(t, "contact-create.json")
	c.InputParameters["target"].Entity.Attributes["emailaddress1"] = dataverse.Value{Kind: dataverse.KindString, Str: "not-an-email"}
	_, err := dataverse.Translate(c, dvmap.DefaultMapping(), false)
	ue := requireUntranslatable(t, err, "invalid-event")
	require.NotContains(t, ue.Error(), "not-an-email")
	require.Equal(t, "member.email", ue.Fields[0].Field)
}

func TestLoadMapping(t *testing.T) {
	t.Parallel()
	m, err := dvmap.LoadMapping("")
	require.NoError(t, err)
	require.Equal(t, "contact", m.Member.Table)
	require.Equal(t, "emailaddress1", m.Member.Email)
	require.Equal(t, "account", m.Organization.Table)

	dir := t.TempDir()
	write := func(s string) string {
		p := filepath.Join(dir, "m.json")
		require.NoError(t, os.WriteFile(p, []byte(s), 0o600))
		return p
	}
	m, err = dvmap.LoadMapping(write(`{"membership": {"table": "HLF_Medlemskap", "role": "hlf_rolle", "roles": {"1": "peer_mentor", "2": "coordinator"}}}`))
	require.NoError(t, err)
	require.Equal(t, "hlf_medlemskap", m.Membership.Table, "logical names in lower case")
	require.Equal(t, "hlf_contactid", m.Membership.Member, "the rest from the defaults")
	require.Len(t, m.Membership.Roles, 2, "roles in the file replace the defaults")
	require.Equal(t, event.MemberDeleted, m.Member.Messages["delete"])

	// The file's mapping is used by Translate.
	c := decode(t, "membership-create.json")
	c.PrimaryEntityName = "hlf_medlemskap"
	tgt := c.InputParameters["target"].Entity
	tgt.LogicalName = "hlf_medlemskap" // a Target of the context's own table
	tgt.Attributes["hlf_rolle"] = dataverse.Value{Kind: dataverse.KindOption, Num: 2}
	delete(tgt.Attributes, "hlf_role")
	res, err := dataverse.Translate(c, m, false)
	require.NoError(t, err)
	require.Equal(t, event.RoleCoordinator, res.Events[0].Event.Role)

	for bad, want := range map[string]string{
		`{"member": {"tabel": "contact"}}`:                               "unknown field",
		`{"member": {"table": "contact; drop"}}`:                         "not a Dataverse logical name",
		`{"membership": {"roles": {"x": "peer_mentor"}}}`:                "not an option set value",
		`{"membership": {"roles": {"1": "boss"}}}`:                       "not peer_mentor",
		`{"member": {"messages": {"Update": "member-deleted"}}}`:         "only Delete",
		`{"member": {"messages": {"Merge": "membership-updated"}}}`:      "not Create, Update or Delete",
		`{"organization": {"table": "contact"}}`:                         "three different tables",
		`{"membership": {"active_states": [0], "inactive_states": [0]}}`: "both active and inactive",
		`not json`: "invalid character",
	} {
		_, err := dvmap.LoadMapping(write(bad))
		require.ErrorContains(t, err, want, bad)
	}
	_, err = dvmap.LoadMapping(filepath.Join(dir, "missing.json"))
	require.Error(t, err)
}

func TestKeys(t *testing.T) {
	t.Parallel()
	const oldKey, newKey = "old-key-0123456789abcdefghij", "new-key-0123456789abcdefghij"
	k, err := dataverse.NewKeys([]string{oldKey, newKey}, "X-Api-Key")
	require.NoError(t, err)
	req := func(header, code string) *http.Request {
		r := httptest.NewRequest(http.MethodPost, "/webhooks/dataverse", nil)
		if code != "" {
			r.URL.RawQuery = "code=" + code
		}
		if header != "" {
			r.Header.Set("x-api-key", header)
		}
		return r
	}
	require.NoError(t, k.Check(req(oldKey, "")), "HttpHeader, the old key during a rotation")
	require.NoError(t, k.Check(req(newKey, "")), "HttpHeader, the new key")
	require.NoError(t, k.Check(req("", newKey)), "WebhookKey: ?code=")
	require.ErrorIs(t, k.Check(req("", "")), dataverse.ErrNoKey)
	require.ErrorIs(t, k.Check(req("wrong-key-0123456789abcdefg", "")), dataverse.ErrWrongKey)
	require.ErrorIs(t, k.Check(req(oldKey[:10], "")), dataverse.ErrWrongKey, "a prefix is no key")
	require.ErrorIs(t, k.Check(req(oldKey+"x", "")), dataverse.ErrWrongKey)

	_, err = dataverse.NewKeys([]string{"short"}, "")
	require.ErrorContains(t, err, "shorter than")
	_, err = dataverse.NewKeys(nil, "")
	require.Error(t, err)
	_, err = dataverse.NewKeys([]string{newKey}, "bad header:")
	require.Error(t, err)
	require.Equal(t, []string{"a", "b", "c"}, dataverse.ParseKeys(" a,b\nc\r\n,"))
}

func FuzzDecode(f *testing.F) {
	for _, name := range []string{"contact-create.json", "contact-update.json", "contact-delete.json", "membership-create.json",
		"membership-update-role.json", "membership-setstate.json", "contact-update-size-exceeded.json"} {
		f.Add(fixture(f, name), false)
	}
	f.Add([]byte(`{"MessageName":"Update","PrimaryEntityName":"contact","PrimaryEntityId":"a1b2c3d4-0000-4000-8000-00000000c001","OperationId":"{5D3C7A10-8B0E-4F11-9C2D-0000000000C1}","InputParameters":[{"key":"Target","value":{"Attributes":[{"key":"a","value":{"Attributes":[{"key":"b","value":{"Attributes":[]}}]}}]}}]}`), true)
	m := dvmap.DefaultMapping()
	f.Fuzz(func(t *testing.T, body []byte, sizeExceeded bool) {
		c, err := dataverse.Decode(body)
		if err != nil {
			require.ErrorIs(t, err, dataverse.ErrNotContext)
			return
		}
		res, err := dataverse.Translate(c, m, sizeExceeded)
		if err != nil {
			var ue *dataverse.UntranslatableError
			require.ErrorAs(t, err, &ue)
			return
		}
		for _, tr := range res.Events {
			// Whatever is published is a valid contract event.
			ev, err := event.Decode(tr.Body)
			require.NoError(t, err)
			require.Equal(t, tr.Event.ID, ev.ID)
			require.True(t, ev.Type.Known())
		}
	})
}
