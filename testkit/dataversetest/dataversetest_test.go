package dataversetest_test

import (
	"encoding/json"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/likeperson/portalsync/testkit/dataversetest"
)

// A lookup's table comes back as the lookuplogicalname annotation only
// when the request asks for it, as Dataverse does.
func TestLookupAnnotationsOnlyWhenAsked(t *testing.T) {
	t.Parallel()
	s := dataversetest.New(t, "id", "secret")
	s.Put("contacts", "contactid", "c1", map[string]any{"_parentcustomerid_value": dataversetest.Ref{Table: "account", ID: "a1", Name: "HLF"}})
	resp, err := http.PostForm(s.TokenURL(), url.Values{"grant_type": {"client_credentials"}, "client_id": {"id"},
		"client_secret": {"secret"}, "scope": {s.URL() + "/.default"}})
	require.NoError(t, err)
	var tok struct {
		AccessToken string `json:"access_token"`
	}
	require.NoError(t, json.NewDecoder(resp.Body).Decode(&tok))
	resp.Body.Close()

	row := func(prefer string) map[string]any {
		req, err := http.NewRequest(http.MethodGet, s.URL()+dataversetest.APIPath+"contacts?$select=_parentcustomerid_value", nil)
		require.NoError(t, err)
		req.Header.Set("Authorization", "Bearer "+tok.AccessToken)
		if prefer != "" {
			req.Header.Set("Prefer", prefer)
		}
		resp, err := http.DefaultClient.Do(req)
		require.NoError(t, err)
		defer resp.Body.Close()
		var page struct {
			Value []map[string]any `json:"value"`
		}
		require.NoError(t, json.NewDecoder(resp.Body).Decode(&page))
		require.Len(t, page.Value, 1)
		return page.Value[0]
	}
	const table = "_parentcustomerid_value@Microsoft.Dynamics.CRM.lookuplogicalname"
	const name = "_parentcustomerid_value@OData.Community.Display.V1.FormattedValue"
	for prefer, want := range map[string][]string{
		"":                     nil,
		"odata.maxpagesize=10": nil,
		`odata.include-annotations="Microsoft.Dynamics.CRM.lookuplogicalname"`:      {table},
		`odata.track-changes, odata.include-annotations="Microsoft.Dynamics.CRM.*"`: {table},
		`odata.include-annotations="*"`:                                             {table, name},
		`odata.include-annotations="OData.Community.Display.V1.FormattedValue"`:     {name},
	} {
		r := row(prefer)
		require.Equal(t, "a1", r["_parentcustomerid_value"], prefer)
		var got []string
		for k := range r {
			if strings.HasPrefix(k, "_parentcustomerid_value@") {
				got = append(got, k)
			}
		}
		require.ElementsMatch(t, want, got, prefer)
	}
}
