package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/likeperson/portalsync/ingress/dataverse"
	"github.com/likeperson/portalsync/ingress/server"
)

const (
	dvKey = "e2e-dataverse-key-0123456789abcdef"
	dvOrg = "hlf.crm4.dynamics.com"
	// dvContact is the contact of the dataverse package's test data, and
	// dvAccount her organization (the account of her parent customer).
	dvContact = "a1b2c3d4-0000-4000-8000-00000000c001"
	dvAccount = "b0000000-0000-4000-8000-00000000a001"
)

// dvSend posts a RemoteExecutionContext of the dataverse package's test
// data as Dataverse does, and returns the status and the answer.
func (s *system) dvSend(t *testing.T, fixture string, edit func(map[string]any)) (int, server.DataverseAccepted) {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join("..", "ingress", "dataverse", "testdata", fixture))
	require.NoError(t, err)
	if edit != nil {
		var c map[string]any
		require.NoError(t, json.Unmarshal(raw, &c))
		edit(c)
		raw, err = json.Marshal(c)
		require.NoError(t, err)
	}
	req, err := http.NewRequest(http.MethodPost, s.ingressURL+server.DataversePath+"?code="+dvKey, bytes.NewReader(raw))
	require.NoError(t, err)
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set(dataverse.HeaderOrganization, dvOrg)
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	var a server.DataverseAccepted
	require.NoError(t, json.NewDecoder(resp.Body).Decode(&a))
	return resp.StatusCode, a
}

// TestDataverseWebhooksApplied: Dynamics 365 webhooks, as Dataverse posts
// them, end in the app's tables: a contact's Create, a membership's
// Create, a partial Update of the contact (one field changed, one
// cleared, the others kept), Dataverse's retry of it (applied once), a
// SetState that deactivates the membership, and the contact's Delete,
// which erases the member.
func TestDataverseWebhooksApplied(t *testing.T) {
	t.Parallel()
	sys := start(t, withDataverse(dataverse.Config{Keys: []string{dvKey}, Organization: dvOrg}))
	sys.remember("Kari", "Nordmann", "kari.nordmann@example.invalid", "+47 912 34 567", "+47 987 65 432")
	ctx := context.Background()
	const member, org = dvContact, dvAccount

	send := func(fixture string) server.DataverseAccepted {
		t.Helper()
		status, a := sys.dvSend(t, fixture, nil)
		require.Contains(t, []int{http.StatusAccepted, http.StatusOK}, status, fixture)
		for _, e := range a.Events {
			require.Equal(t, "success", sys.waitLogged(t, e.EventID), fixture)
		}
		return a
	}
	send("contact-create.json")
	send("membership-create.json")
	var first, last, email, phone, orgName, role, status *string
	profile := func() {
		t.Helper()
		require.NoError(t, sys.pool.QueryRow(ctx, `SELECT p.first_name, p.last_name, p.email, p.phone, o.name, r.role::text, m.status::text
			FROM profiles p JOIN organization_memberships m ON m.profile_id = p.id JOIN organizations o ON o.id = m.organization_id
			LEFT JOIN role_assignments r ON r.profile_id = p.id AND r.organization_id = o.id
			WHERE p.portal_member_id = $1 AND o.portal_org_id = $2`, member, org).Scan(&first, &last, &email, &phone, &orgName, &role, &status))
	}
	profile()
	require.Equal(t, "Kari", *first)
	require.Equal(t, "kari.nordmann@example.invalid", *email)
	require.Equal(t, "HLF Bergen", *orgName)
	require.Equal(t, "coordinator", *role)
	require.Equal(t, "active", *status)

	update := send("contact-update.json")
	require.Len(t, update.Events, 1)
	profile()
	require.Equal(t, "Kari", *first, "a column the Update did not carry is kept")
	require.Equal(t, "+47 987 65 432", *phone)
	require.Nil(t, email, "a column set to null is cleared")

	// Dataverse retries the same context: a duplicate, applied once.
	code, again := sys.dvSend(t, "contact-update.json", nil)
	require.Equal(t, http.StatusOK, code)
	require.True(t, again.Events[0].Duplicate)
	var rows int
	require.NoError(t, sys.pool.QueryRow(ctx, `SELECT count(*) FROM portal_sync_log WHERE event_id = $1`, update.Events[0].EventID).Scan(&rows))
	require.Equal(t, 1, rows)

	send("membership-setstate.json")
	profile()
	require.Equal(t, "inactive", *status)

	deleted := send("contact-delete.json")
	require.Len(t, deleted.Events, 1)
	var profiles int
	require.NoError(t, sys.pool.QueryRow(ctx, `SELECT count(*) FROM profiles WHERE portal_member_id = $1`, member).Scan(&profiles))
	require.Zero(t, profiles, "the contact's Delete erased the member")
	var traces int
	require.NoError(t, sys.pool.QueryRow(ctx, `SELECT count(*) FROM portal_sync_log l WHERE l::text ILIKE '%' || $1 || '%'`, member).Scan(&traces))
	require.Zero(t, traces, "no sync-log row, event ids included, holds the erased member's ID")
}
