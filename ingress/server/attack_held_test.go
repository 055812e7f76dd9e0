package server_test

import (
	"net/http"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/likeperson/portalsync/ingress/dataverse"
)

// TestDataverseAttackHeld: hostile input the intake already answers as
// Dataverse's retry rule wants (4xx for what never succeeds), each through
// the real ingress (a Latin-1 body included). Nothing of it is stored.
func TestDataverseAttackHeld(t *testing.T) {
	t.Parallel()
	b := dvSetup(t, nil)
	del := dvFixture(t, "contact-delete.json")
	create := dvFixture(t, "contact-create.json")
	opOn := `"OperationCreatedOn": "/Date(1795604400000-0000)/"`
	for _, tc := range []struct {
		name   string
		body   []byte
		mutate func(*http.Request)
		status int
		typ    string
	}{
		{"KeyInHeaderWrongCodeRight", del, func(r *http.Request) {
			r.Header.Set(dataverse.DefaultKeyHeader, "dataverse-wrong-key-0123456789abcdef")
			r.URL.RawQuery = "code=" + dvNewKey
		}, http.StatusUnauthorized, "invalid-key"},
		{"EmptyKeyHeaderEmptyCode", del, func(r *http.Request) { r.Header.Set(dataverse.DefaultKeyHeader, ""); r.URL.RawQuery = "code=" }, http.StatusUnauthorized, "invalid-key"},
		{"SecondCodeRight", del, func(r *http.Request) {
			r.Header.Del(dataverse.DefaultKeyHeader)
			r.URL.RawQuery = "code=dataverse-wrong-key-0123456789abcdef&code=" + dvNewKey
		}, http.StatusUnauthorized, "invalid-key"},
		{"OrganizationSuffix", del, func(r *http.Request) { r.Header.Set(dataverse.HeaderOrganization, dvOrg+".evil.example") }, http.StatusForbidden, "wrong-organization"},
		{"DateOverflow", replaceOnce(t, del, opOn, `"OperationCreatedOn": "\/Date(99999999999999999999)\/"`), nil, http.StatusBadRequest, "not-dataverse-context"},
		{"DateBeyondYear9999", replaceOnce(t, del, opOn, `"OperationCreatedOn": "\/Date(253402300800000)\/"`), nil, http.StatusBadRequest, "not-dataverse-context"},
		{"DateBadZone", replaceOnce(t, del, opOn, `"OperationCreatedOn": "\/Date(1795600801000+01)\/"`), nil, http.StatusBadRequest, "not-dataverse-context"},
		{"DateFarFuture", replaceOnce(t, del, opOn, `"OperationCreatedOn": "\/Date(253402300799999)\/"`), nil, http.StatusUnprocessableEntity, "dataverse-occurred-at-in-future"},
		{"NumberForFirstName", replaceOnce(t, create, `{"key": "firstname", "value": "Kari"}`, `{"key": "firstname", "value": 42}`), nil, http.StatusUnprocessableEntity, "dataverse-bad-attribute"},
		{"ReferenceWithoutID", replaceOnce(t, create, `"Id": "B0000000-0000-4000-8000-00000000A001", `, ``), nil, http.StatusUnprocessableEntity, "dataverse-no-organization"},
		{"DeepNesting", []byte(strings.Replace(string(create), `{"key": "donotemail", "value": false}`,
			`{"key": "donotemail", "value": `+strings.Repeat(`{"Attributes":[{"key":"a","value":`, 50)+`1`+strings.Repeat(`}]}`, 50)+`}`, 1)), nil, http.StatusBadRequest, "not-dataverse-context"},
		{"Latin1Name", replaceOnce(t, create, `{"key": "firstname", "value": "Kari"}`, "{\"key\": \"firstname\", \"value\": \"K\xe5re\"}"), nil, http.StatusBadRequest, "not-dataverse-context"},
		{"TooLarge", []byte(`{"MessageName":"` + strings.Repeat("a", 2<<20) + `"}`), nil, http.StatusRequestEntityTooLarge, "body-too-large"},
	} {
		r := b.dvPost(t, tc.body, tc.mutate)
		require.Equal(t, tc.status, r.status, "%s: %s", tc.name, r.body)
		require.Equal(t, "urn:portalsync:problem:"+tc.typ, r.problem(t).Type, tc.name)
	}
	require.EqualValues(t, 0, b.storedEvents(t), "no event stored (a refusal record only)")
}
