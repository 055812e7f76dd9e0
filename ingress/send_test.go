package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/stretchr/testify/require"
)

// `ingress send` builds each sample type with what the portal sends with
// it: a role only where the type needs one (or when asked), the profile
// fields only with membership-created and membership-updated. A
// deactivation sent without --role used to carry peer_mentor and reset the
// member's role. It says what it sent before the ingress's answer.
func TestSendSampleCarriesWhatItsTypeDoes(t *testing.T) {
	t.Parallel()
	var got []map[string]any
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		var ev map[string]any
		require.NoError(t, json.Unmarshal(b, &ev))
		got = append(got, ev)
		w.WriteHeader(http.StatusAccepted)
		_, _ = w.Write([]byte(`{"event_id":"x","stream_seq":1,"duplicate":false}`))
	}))
	defer srv.Close()

	for _, tc := range []struct {
		args     []string
		role     any // nil: no role
		profile  bool
		saysSent string
	}{
		{nil, "peer_mentor", true, "sent membership-created evt_"},
		{[]string{"--type", "role-updated", "--role", "coordinator"}, "coordinator", false, "member demo-member-1 in organization demo-org-1, role coordinator"},
		{[]string{"--type", "role-updated"}, "peer_mentor", false, "role peer_mentor"},
		{[]string{"--type", "membership-deactivated"}, nil, false, "sent membership-deactivated evt_"},
		{[]string{"--type", "membership-reactivated"}, nil, false, "no role"},
		{[]string{"--type", "membership-updated"}, nil, true, "no role"},
		{[]string{"--type", "membership-updated", "--role", "org_admin"}, "org_admin", true, "role org_admin"},
		{[]string{"--type", "member-deleted", "--member", "m9"}, nil, false, "sent member-deleted evt_"},
	} {
		var out bytes.Buffer
		args := append([]string{"send", "--url", srv.URL, "--secrets", secretA}, tc.args...)
		require.NoError(t, run(context.Background(), args, &out, &out), tc.args)
		require.Contains(t, out.String(), tc.saysSent, tc.args)
		require.Contains(t, out.String(), "202 Accepted", tc.args)
		ev := got[len(got)-1]
		require.Equal(t, tc.role, ev["role"], tc.args)
		member := ev["member"].(map[string]any)
		_, hasEmail := member["email"]
		require.Equal(t, tc.profile, hasEmail, "profile fields with %v", tc.args)
	}

	// -f sends the file as it is; a sample flag beside it would be ignored,
	// so it is refused.
	var out bytes.Buffer
	err := run(context.Background(), []string{"send", "--url", srv.URL, "--secrets", secretA, "-f", "../docs/examples/role-updated.json", "--role", "org_admin"}, &out, &out)
	require.ErrorContains(t, err, "can't be used together")
	require.NoError(t, run(context.Background(), []string{"send", "--url", srv.URL, "--secrets", secretA, "-f", "../docs/examples/role-updated.json"}, &out, &out))
	require.Contains(t, out.String(), "sent role-updated evt_01JD0000000000000000000003: member 3b2a1f00-0000-4000-8000-0000000000aa in organization 7d9f1c2e-0000-4000-8000-000000000001, role coordinator")
}
