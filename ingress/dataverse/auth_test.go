package dataverse_test

import (
	"net/http/httptest"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/likeperson/portalsync/ingress/dataverse"
)

// TestOrganizationMatches: a request is from the configured environment
// only when its x-ms-dynamics-organization names exactly that environment,
// ignoring case and surrounding white space; a missing header, another
// environment, or one whose name merely contains, prefixes or extends the
// configured one does not match.
func TestOrganizationMatches(t *testing.T) {
	t.Parallel()
	cfg := dataverse.Config{Organization: " hlf.crm4.dynamics.com "}
	for name, tc := range map[string]struct {
		header string
		set    bool
		want   bool
	}{
		"Same":               {header: "hlf.crm4.dynamics.com", set: true, want: true},
		"OtherCase":          {header: "HLF.CRM4.Dynamics.com", set: true, want: true},
		"Spaces":             {header: "  hlf.crm4.dynamics.com\t", set: true, want: true},
		"Missing":            {set: false, want: false},
		"Empty":              {header: "", set: true, want: false},
		"Blank":              {header: "   ", set: true, want: false},
		"OtherEnvironment":   {header: "hlf-test.crm4.dynamics.com", set: true, want: false},
		"PrefixOfConfigured": {header: "hlf", set: true, want: false},
		"ExtendsConfigured":  {header: "hlf.crm4.dynamics.com.attacker.example", set: true, want: false},
		"EndsWithConfigured": {header: "evil-hlf.crm4.dynamics.com", set: true, want: false},
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			r := httptest.NewRequest("POST", "/dataverse", nil)
			if tc.set {
				r.Header.Set(dataverse.HeaderOrganization, tc.header)
			}
			require.Equal(t, tc.want, cfg.OrganizationMatches(r), "header %q", tc.header)
		})
	}
}
