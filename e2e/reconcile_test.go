package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/likeperson/portalsync/ingress/dataverse"
	"github.com/likeperson/portalsync/pkg/dvmap"
	"github.com/likeperson/portalsync/syncer/reconcile"
	"github.com/likeperson/portalsync/testkit/dataversetest"
)

// TestDataverseReconciliation, end to end (ingress, JetStream, syncer,
// PostgreSQL, a fake Dataverse Web API): a change delivered by webhook
// and read again by the reconciler is applied once (the reconciler's
// event is skipped as superseded); a change whose webhook was lost is
// applied after the next pass; a membership the app holds and the portal
// no longer has is deactivated after a full read; a contact deleted in the
// portal is erased; --dry-run only prints; the position is kept.
func TestDataverseReconciliation(t *testing.T) {
	t.Parallel()
	sys := start(t, withDataverse(dataverse.Config{Keys: []string{dvKey}, Organization: dvOrg}))
	ctx := context.Background()
	const (
		both  = "a1b2c3d4-0000-4000-8000-00000000c001" // the webhook fixtures' contact
		lost  = "a1b2c3d4-0000-4000-8000-00000000c002"
		org   = "b0000000-0000-4000-8000-00000000a001"
		stale = "e2e-stale-member"
	)
	sys.remember("Kari", "Nordmann", "kari.nordmann@example.invalid", "+47 912 34 567", "Lost", "lost@example.invalid")
	fake := dataversetest.New(t, "client", "secret")
	fake.AddTable("contacts", "contactid")
	fake.AddTable("hlf_memberships", "hlf_membershipid")
	js := sys.jetStream(t)
	rec, err := reconcile.New(ctx, reconcile.Config{URL: fake.URL(), TokenURL: fake.TokenURL(), ClientID: "client", ClientSecret: "secret",
		Stream: sys.stream, PageSize: 2}, js, sys.pool, nil, sys.logger(t, "reconcile"))
	require.NoError(t, err)

	// Delivered by webhook, and in the portal as the webhook said.
	for _, f := range []string{"contact-create.json", "membership-create.json"} {
		_, a := sys.dvSend(t, f, nil)
		require.Equal(t, "success", sys.waitLogged(t, a.Events[0].EventID))
	}
	fake.Put("contacts", "contactid", both, map[string]any{"firstname": "Kari", "lastname": "Nordmann", "emailaddress1": "kari.nordmann@example.invalid",
		"mobilephone": "+47 912 34 567", "_parentcustomerid_value": dataversetest.Ref{Table: "account", ID: org}, "modifiedon": "2026-11-25T10:00:00Z"})
	fake.Put("hlf_memberships", "hlf_membershipid", "c0000000-0000-4000-8000-00000000d001", map[string]any{"_hlf_contactid_value": dataversetest.Ref{Table: "contact", ID: both},
		"_hlf_accountid_value": dataversetest.Ref{Table: "account", ID: org}, "hlf_role": 100000001, "statecode": 0, "modifiedon": "2026-11-25T10:01:00Z"})
	// Its webhook lost.
	fake.Put("contacts", "contactid", lost, map[string]any{"firstname": "Lost", "lastname": "Nordmann", "emailaddress1": "lost@example.invalid",
		"_parentcustomerid_value": dataversetest.Ref{Table: "account", ID: org}, "modifiedon": "2026-11-25T10:05:00Z"})
	fake.Put("hlf_memberships", "hlf_membershipid", "c0000000-0000-4000-8000-00000000d002", map[string]any{"_hlf_contactid_value": dataversetest.Ref{Table: "contact", ID: lost},
		"_hlf_accountid_value": dataversetest.Ref{Table: "account", ID: org}, "hlf_role": 100000000, "statecode": 0, "modifiedon": "2026-11-25T10:05:00Z"})
	// In the app, not (any more) in the portal.
	staleEvt := sys.event("membership-created", stale, org, "peer_mentor", base)
	sys.send(t, staleEvt)
	require.Equal(t, "success", sys.waitLogged(t, staleEvt.ID))

	streamMsgs := func() uint64 {
		s, err := js.Stream(ctx, sys.stream.Name)
		require.NoError(t, err)
		info, err := s.Info(ctx)
		require.NoError(t, err)
		return info.State.Msgs
	}
	before := streamMsgs()
	var out bytes.Buffer
	dry, err := rec.Once(ctx, reconcile.Options{DryRun: true, Out: &out})
	require.NoError(t, err)
	require.Contains(t, out.String(), "member "+lost+": in the portal, not in the app")
	require.Contains(t, out.String(), fmt.Sprintf("membership %s in %s: active in the app, not in the portal", stale, org))
	require.NotContains(t, out.String(), "member "+both, "what the webhook delivered does not differ")
	require.Equal(t, 3, dry.Differences, out.String())
	require.Equal(t, before, streamMsgs(), "a dry run publishes nothing")

	waitReconciled := func(published int) {
		t.Helper()
		require.Eventually(t, func() bool {
			var n int
			err := sys.pool.QueryRow(ctx, `SELECT count(DISTINCT event_id) FROM portal_sync_log WHERE event_id LIKE 'dr.%'`).Scan(&n)
			return err == nil && n >= published
		}, 20*time.Second, 10*time.Millisecond)
	}
	rep, err := rec.Once(ctx, reconcile.Options{})
	require.NoError(t, err)
	require.Equal(t, 1, rep.Corrections)
	require.Equal(t, 5, rep.Published, "2 contacts, 2 memberships, 1 correction")
	waitReconciled(5)

	var first, role, status string
	require.NoError(t, sys.pool.QueryRow(ctx, `SELECT p.first_name, r.role::text, m.status::text FROM profiles p
		JOIN organization_memberships m ON m.profile_id = p.id JOIN role_assignments r ON r.profile_id = p.id AND r.organization_id = m.organization_id
		WHERE p.portal_member_id = $1`, lost).Scan(&first, &role, &status))
	require.Equal(t, []string{"Lost", "peer_mentor", "active"}, []string{first, role, status}, "the lost webhook's change is applied")

	var statuses []string
	rows, err := sys.pool.Query(ctx, `SELECT l.status::text FROM portal_sync_log l WHERE l.event_id LIKE 'dr.%' AND l.portal_member_id = $1`, both)
	require.NoError(t, err)
	for rows.Next() {
		var s string
		require.NoError(t, rows.Scan(&s))
		statuses = append(statuses, s)
	}
	require.NoError(t, rows.Err())
	require.Equal(t, []string{"skipped", "skipped"}, statuses, "the change the webhook delivered is applied once: the reconciler's events are superseded")

	require.NoError(t, sys.pool.QueryRow(ctx, `SELECT m.status::text FROM organization_memberships m JOIN profiles p ON p.id = m.profile_id
		WHERE p.portal_member_id = $1`, stale).Scan(&status))
	require.Equal(t, "inactive", status, "the correction deactivated what the portal no longer has")

	// Deleted in the portal (its webhook lost too): erased after the next pass.
	fake.Delete("contacts", "contactid", lost)
	rep, err = rec.Once(ctx, reconcile.Options{})
	require.NoError(t, err)
	require.Equal(t, map[string]bool{"member": false, "membership": false}, rep.FullRead, "a delta read")
	require.Equal(t, 1, rep.Published)
	require.Eventually(t, func() bool {
		var n int
		err := sys.pool.QueryRow(ctx, `SELECT count(*) FROM profiles WHERE portal_member_id = $1`, lost).Scan(&n)
		return err == nil && n == 0
	}, 20*time.Second, 10*time.Millisecond, "the contact deleted in the portal is erased")

	pos, err := rec.Position(ctx)
	require.NoError(t, err)
	require.NotEmpty(t, pos.Tables["member"].DeltaLink)
	require.NotEmpty(t, pos.Tables["membership"].DeltaLink)
	require.Equal(t, 1, pos.Corrections, "the corrections of the last full read")
}

// TestDataverseParentContactIsNoOrganization: a contact whose
// parentcustomerid (a Customer lookup: an account or a contact) names
// another contact. Neither the webhook intake nor the reconciler makes
// that contact an organization: both refuse the row for the same reason
// (dvmap's no-organization; the intake answers 422), and the app gets no
// organization, member or event from it.
func TestDataverseParentContactIsNoOrganization(t *testing.T) {
	t.Parallel()
	sys := start(t, withDataverse(dataverse.Config{Keys: []string{dvKey}, Organization: dvOrg}))
	ctx := context.Background()
	const (
		member = "a1b2c3d4-0000-4000-8000-00000000c001" // the fixture's contact
		parent = "b0000000-0000-4000-8000-00000000a001" // the fixture's parent, here a contact
	)
	toContact := func(c map[string]any) {
		target := c["InputParameters"].([]any)[0].(map[string]any)["value"].(map[string]any)
		for _, a := range target["Attributes"].([]any) {
			if kv := a.(map[string]any); kv["key"] == "parentcustomerid" {
				kv["value"].(map[string]any)["LogicalName"] = "contact"
			}
		}
	}

	// The webhook intake.
	status, _ := sys.dvSend(t, "contact-create.json", toContact)
	require.Equal(t, 422, status)
	raw, err := os.ReadFile(filepath.Join("..", "ingress", "dataverse", "testdata", "contact-create.json"))
	require.NoError(t, err)
	var c map[string]any
	require.NoError(t, json.Unmarshal(raw, &c))
	toContact(c)
	raw, err = json.Marshal(c)
	require.NoError(t, err)
	dctx, err := dataverse.Decode(raw)
	require.NoError(t, err)
	_, err = dataverse.Translate(dctx, dvmap.DefaultMapping(), false)
	var ue *dataverse.UntranslatableError
	require.ErrorAs(t, err, &ue)

	// The reconciler, reading the same contact through the Web API.
	fake := dataversetest.New(t, "client", "secret")
	fake.AddTable("hlf_memberships", "hlf_membershipid")
	fake.Put("contacts", "contactid", member, map[string]any{"firstname": "Kari", "lastname": "Nordmann",
		"_parentcustomerid_value": dataversetest.Ref{Table: "contact", ID: parent}, "modifiedon": "2026-11-25T10:00:00Z"})
	rec, err := reconcile.New(ctx, reconcile.Config{URL: fake.URL(), TokenURL: fake.TokenURL(), ClientID: "client", ClientSecret: "secret",
		Stream: sys.stream}, sys.jetStream(t), sys.pool, nil, sys.logger(t, "reconcile"))
	require.NoError(t, err)
	rep, err := rec.Once(ctx, reconcile.Options{})
	require.NoError(t, err)
	require.Zero(t, rep.Published)
	require.Equal(t, map[string]int{ue.Reason: 1}, rep.Refused, "the reconciler refuses it for the intake's reason")
	require.Equal(t, "no-organization", ue.Reason)

	// The intake's refusal is logged as failed, naming no organization
	// (the lookup named none): no org admin sees it.
	refused, _ := sys.waitLoggedType(t, "change-refused", "")
	require.Equal(t, "failed", refused)
	var orgs, members, logged int
	require.NoError(t, sys.pool.QueryRow(ctx, `SELECT (SELECT count(*) FROM organizations), (SELECT count(*) FROM profiles),
		(SELECT count(*) FROM portal_sync_log WHERE event_type <> 'change-refused' OR organization_id IS NOT NULL OR portal_org_id IS NOT NULL)`).Scan(&orgs, &members, &logged))
	require.Equal(t, []int{0, 0, 0}, []int{orgs, members, logged})
}
