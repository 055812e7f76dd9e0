package e2e

import (
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/likeperson/portalsync/ingress/dataverse"
)

// waitLoggedType waits for a log row of the given event type for the
// portal organization ("" for none), and returns its status.
func (s *system) waitLoggedType(t *testing.T, eventType, portalOrg string) (status, eventID string) {
	t.Helper()
	require.Eventually(t, func() bool {
		return s.pool.QueryRow(context.Background(), `SELECT status, event_id FROM portal_sync_log
			WHERE event_type = $1 AND portal_org_id IS NOT DISTINCT FROM nullif($2, '') ORDER BY id DESC LIMIT 1`,
			eventType, portalOrg).Scan(&status, &eventID) == nil
	}, 20*time.Second, 20*time.Millisecond, "no %s row for %q", eventType, portalOrg)
	return status, eventID
}

// refusedContact puts a value the contract refuses (not a phone number,
// not an e-mail address) in a contact update's mobile phone and e-mail.
func refusedContact(c map[string]any) {
	attrs := c["InputParameters"].([]any)[0].(map[string]any)["value"].(map[string]any)["Attributes"].([]any)
	for _, a := range attrs {
		if kv := a.(map[string]any); kv["key"] == "mobilephone" || kv["key"] == "emailaddress1" {
			kv["value"] = "kari-at-example"
		}
	}
}

// refuseThenErase plays the story the refusal tests read: Dataverse
// creates the fixtures' contact (dvContact) in her organization
// (dvAccount), the portal adds her to orgB, Dataverse sends a change of
// hers the contract refuses (422: a failed change-refused row of
// dvAccount), then her Delete. It returns the refusal's event id.
func (s *system) refuseThenErase(t *testing.T, orgB string) (refusalID string) {
	t.Helper()
	status, created := s.dvSend(t, "contact-create.json", nil)
	require.Equal(t, http.StatusAccepted, status)
	require.Equal(t, "success", s.waitLogged(t, created.Events[0].EventID))
	inB := s.event("membership-created", dvContact, orgB, "peer_mentor", base)
	s.send(t, inB)
	require.Equal(t, "success", s.waitLogged(t, inB.ID))

	status, _ = s.dvSend(t, "contact-update.json", refusedContact)
	require.Equal(t, http.StatusUnprocessableEntity, status)
	refusalStatus, refusalID := s.waitLoggedType(t, "change-refused", dvAccount)
	require.Equal(t, "failed", refusalStatus)

	status, deleted := s.dvSend(t, "contact-delete.json", nil)
	require.Equal(t, http.StatusAccepted, status)
	require.Equal(t, "success", s.waitLogged(t, deleted.Events[0].EventID))
	return refusalID
}

// Issue 21: outcomes that reached nobody reach the right org admins,
// through public.sync_log read as authenticated with the caller's claims.
// A Dataverse change the ingress authenticated and refused (422) is a
// failed change-refused row of the organization it names; an erasure is a
// row, without the member's id, in every organization the member belonged
// to; each says where it came from, and an applied change what it
// changed. Another organization's admin sees neither the refusal nor
// anything of A.
func TestRefusalAndErasureReachOrgAdmins(t *testing.T) {
	t.Parallel()
	sys := start(t, withDataverse(dataverse.Config{Keys: []string{dvKey}, Organization: dvOrg}))
	sys.remember("Kari", "Nordmann", "kari.nordmann@example.invalid", "kari-at-example")
	const member, org = dvContact, dvAccount

	admin := sys.addAuthUser(t, "r-admin@example.invalid")
	adminB := sys.addAuthUser(t, "r-admin-b@example.invalid")
	adminC := sys.addAuthUser(t, "r-admin-c@example.invalid")
	for _, e := range []evt{
		sys.event("membership-created", "r-admin", org, "org_admin", base),
		sys.event("membership-created", "r-admin-b", "org-rb", "org_admin", base),
		sys.event("membership-created", "r-admin-c", "org-rc", "org_admin", base),
	} {
		sys.send(t, e)
		require.Equal(t, "success", sys.waitLogged(t, e.ID))
	}
	// Kari is a member of B as well (from the portal); a change of hers
	// the contract refuses is authenticated, then answered 422.
	refusalID := sys.refuseThenErase(t, "org-rb")

	find := func(rows []logEntry, eventType string) *logEntry {
		for i := range rows {
			if rows[i].EventType == eventType {
				return &rows[i]
			}
		}
		return nil
	}
	sys.asUser(t, admin, func(tx pgx.Tx) {
		rows := syncLog(t, tx, "")
		refused := find(rows, "change-refused")
		require.NotNil(t, refused, "the refusal is in A's log")
		require.Equal(t, refusalID, refused.EventID)
		require.Equal(t, "failed", refused.Status)
		require.Equal(t, "dataverse-webhook", *refused.Source)
		require.Nil(t, refused.Changes, "nothing applied")
		require.True(t, refused.Erased, "its member was erased since")
		var detail string
		require.NoError(t, tx.QueryRow(context.Background(), `SELECT detail FROM public.sync_log(entry_id => $1)`, refused.ID).Scan(&detail))
		require.Contains(t, detail, "refused")
		require.NotContains(t, detail, "kari-at-example")
		require.NotContains(t, strings.ToLower(detail), member, "an erased member never by id, in the detail neither (found by attack)")
		require.Len(t, syncLog(t, tx, "status_filter => 'failed'"), 1)

		erasure := find(rows, "member-deleted")
		require.NotNil(t, erasure, "the erasure is in A's log")
		require.True(t, erasure.Erased)
		require.Nil(t, erasure.Member, "without the member's id")
		require.Nil(t, erasure.Name)
		require.Equal(t, "success", erasure.Status)
		require.Equal(t, "dataverse-webhook", *erasure.Source)

		add := find(rows, "membership-updated")
		if add == nil {
			add = find(rows, "membership-created")
		}
		require.NotNil(t, add)
		require.NotNil(t, add.Changes, "an applied change says what it changed")

		var failed int
		require.NoError(t, tx.QueryRow(context.Background(), `SELECT failed_last_24h FROM public.sync_health`).Scan(&failed))
		require.Equal(t, 1, failed, "the refusal counts as a failure of A")
	})
	sys.asUser(t, adminB, func(tx pgx.Tx) {
		rows := syncLog(t, tx, "")
		require.Nil(t, find(rows, "change-refused"), "the refusal named A, not B")
		erasure := find(rows, "member-deleted")
		require.NotNil(t, erasure, "B's admin sees the erasure of a member B had")
		require.True(t, erasure.Erased)
		require.Nil(t, erasure.Member)
		for _, r := range rows {
			require.Equal(t, "org-rb", r.Org)
		}
	})
	sys.asUser(t, adminC, func(tx pgx.Tx) {
		rows := syncLog(t, tx, "")
		require.Nil(t, find(rows, "member-deleted"), "C never had the member")
		require.Nil(t, find(rows, "change-refused"))
	})
}

// The same on the Supabase-shaped cluster, read as PostgREST reads it:
// role authenticated with the claims of an access token the real Supabase
// Auth issued to each org admin at sign-in.
func TestRefusalAndErasureReachOrgAdminsOnSupabase(t *testing.T) {
	s := startSupabase(t, withDataverse(dataverse.Config{Keys: []string{dvKey}, Organization: dvOrg}))
	const org = dvAccount
	adminA := person{"rs-admin-a", "Aud", "Adminsen"}
	adminB := person{"rs-admin-b", "Bent", "Bsjef"}
	s.join(t, adminA, org, "org_admin", base)
	s.join(t, adminB, "org-rsb", "org_admin", base)
	// A value the contract refuses: 422, naming A through its images.
	s.refuseThenErase(t, "org-rsb")

	tokens := s.accessTokens(t, adminA, adminB)
	types := func(rows []logEntry) map[string]logEntry {
		out := map[string]logEntry{}
		for _, r := range rows {
			out[r.EventType] = r
		}
		return out
	}
	s.asToken(t, tokens[adminA.member], func(tx pgx.Tx) {
		got := types(syncLog(t, tx, ""))
		require.Contains(t, got, "change-refused")
		require.Equal(t, "failed", got["change-refused"].Status)
		require.Equal(t, "dataverse-webhook", *got["change-refused"].Source)
		require.Contains(t, got, "member-deleted")
		require.True(t, got["member-deleted"].Erased)
		require.Nil(t, got["member-deleted"].Member)
	})
	s.asToken(t, tokens[adminB.member], func(tx pgx.Tx) {
		got := types(syncLog(t, tx, ""))
		require.NotContains(t, got, "change-refused")
		require.Contains(t, got, "member-deleted")
		require.True(t, got["member-deleted"].Erased)
		for _, r := range syncLog(t, tx, "") {
			require.Equal(t, "org-rsb", r.Org)
		}
	})
}
