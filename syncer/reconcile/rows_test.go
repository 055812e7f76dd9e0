package reconcile

import (
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/likeperson/portalsync/pkg/dvmap"
	"github.com/likeperson/portalsync/pkg/event"
)

func TestTranslateRow(t *testing.T) {
	t.Parallel()
	m := dvmap.DefaultMapping()
	const member, org = "A1B2C3D4-0000-4000-8000-00000000C001", "b0000000-0000-4000-8000-00000000a001"
	const lookupTable = "@Microsoft.Dynamics.CRM.lookuplogicalname"
	membership := func(role, state any) map[string]any {
		return map[string]any{"hlf_membershipid": "c0000000-0000-4000-8000-00000000d001",
			"_hlf_contactid_value": member, "_hlf_contactid_value" + lookupTable: "contact",
			"_hlf_accountid_value": org, "_hlf_accountid_value" + lookupTable: "account",
			"hlf_role": role, "statecode": state, "modifiedon": "2026-11-25T10:01:00Z", "versionnumber": float64(77)}
	}
	contact := func(cols map[string]any) map[string]any {
		row := map[string]any{"contactid": member, "_parentcustomerid_value": org, "_parentcustomerid_value" + lookupTable: "account",
			"modifiedon": "2026-11-25T10:00:00Z"}
		for k, v := range cols {
			if v == nil {
				delete(row, k)
				continue
			}
			row[k] = v
		}
		return row
	}
	for name, tc := range map[string]struct {
		kind   Kind
		row    map[string]any
		typ    event.Type
		role   event.Role
		skip   string
		errHas string
	}{
		"active with a mapped role": {kind: KindMembership, row: membership(float64(100000001), float64(0)), typ: event.MembershipCreated, role: event.RoleCoordinator},
		"active, no role":           {kind: KindMembership, row: membership(nil, float64(0)), typ: event.MembershipReactivated},
		"inactive":                  {kind: KindMembership, row: membership(float64(100000000), float64(1)), typ: event.MembershipDeactivated},
		// The intake's checks, with its reasons (dvmap).
		"active, role not mapped":     {kind: KindMembership, row: membership(float64(5), float64(0)), skip: "unknown-role"},
		"fractional role":             {kind: KindMembership, row: membership(100000001.5, float64(0)), skip: "bad-attribute"},
		"role as text":                {kind: KindMembership, row: membership("coordinator", float64(0)), skip: "bad-attribute"},
		"unknown state":               {kind: KindMembership, row: membership(nil, float64(7)), skip: "unknown-state"},
		"no state":                    {kind: KindMembership, row: membership(nil, nil), skip: "no statecode"},
		"membership without member":   {kind: KindMembership, row: map[string]any{"hlf_membershipid": "x", "statecode": float64(0)}, skip: "no-member"},
		"member lookup to an account": {kind: KindMembership, row: with(membership(nil, float64(0)), "_hlf_contactid_value"+lookupTable, "account"), skip: "no-member"},
		"lookup without its table":    {kind: KindMembership, row: with(membership(nil, float64(0)), "_hlf_accountid_value"+lookupTable, nil), skip: "no-organization"},
		"contact":                     {kind: KindMember, row: contact(map[string]any{"firstname": "Kari"}), typ: event.MembershipUpdated},
		"contact without org":         {kind: KindMember, row: contact(map[string]any{"_parentcustomerid_value": nil}), skip: "no-organization"},
		"contact parented by contact": {kind: KindMember, row: contact(map[string]any{"_parentcustomerid_value" + lookupTable: "contact"}), skip: "no-organization"},
		"contact parented by no row":  {kind: KindMember, row: contact(map[string]any{"_parentcustomerid_value": "00000000-0000-0000-0000-000000000000"}), skip: "no-organization"},
		"contact with a number name":  {kind: KindMember, row: contact(map[string]any{"firstname": float64(7)}), skip: "bad-attribute"},
		"contact without time":        {kind: KindMember, row: contact(map[string]any{"modifiedon": nil}), errHas: "modifiedon"},
		"contact with a bad e-mail":   {kind: KindMember, row: contact(map[string]any{"emailaddress1": "nope"}), errHas: "email"},
		"deleted contact":             {kind: KindMember, row: map[string]any{"@odata.context": "https://x/api/data/v9.2/$metadata#contacts/$deletedEntity", "id": member, "reason": "deleted"}, typ: event.MemberDeleted},
		"deleted membership":          {kind: KindMembership, row: map[string]any{"@odata.context": "https://x/api/data/v9.2/$metadata#hlf_memberships/$deletedEntity", "id": "c0", "reason": "deleted"}, skip: "next full read"},
		"row without key":             {kind: KindMember, row: map[string]any{"firstname": "x"}, errHas: "contactid"},
	} {
		re, err := translateRow(m, tc.kind, tc.row)
		if tc.errHas != "" {
			require.ErrorContains(t, err, tc.errHas, name)
			continue
		}
		require.NoError(t, err, name)
		if tc.skip != "" {
			require.Nil(t, re.ev, name)
			require.Contains(t, re.skip, tc.skip, name)
			if strings.Contains(tc.skip, "-") {
				require.Equal(t, tc.skip, re.refused, "%s: refused for the intake's reason", name)
			}
			continue
		}
		require.Equal(t, tc.typ, re.ev.Type, name)
		require.Equal(t, tc.role, re.ev.Role, name)
		require.Equal(t, strings.ToLower(member), re.ev.Member.ID, "%s: canonical member id", name)
		require.True(t, strings.HasPrefix(re.ev.ID, IDPrefix), name)
		require.NotContains(t, re.ev.ID, strings.ToLower(member), "%s: no member ID inside the event id", name)
	}
	// The same version of a row gives the same id; another version another.
	a, _ := translateRow(m, KindMembership, membership(float64(100000001), float64(0)))
	b, _ := translateRow(m, KindMembership, membership(float64(100000001), float64(0)))
	require.Equal(t, a.ev.ID, b.ev.ID)
	row := membership(float64(100000001), float64(0))
	row["versionnumber"] = float64(78)
	c, _ := translateRow(m, KindMembership, row)
	require.NotEqual(t, a.ev.ID, c.ev.ID)
	require.Less(t, IDPrefix, "dv.", "reconciler ids sort below the intake's, so a tie keeps the webhook's event")
	require.Equal(t, time.Date(2026, 11, 25, 10, 1, 0, 0, time.UTC), a.ev.OccurredAt)
}

// with is row with column set to v (removed when v is nil).
func with(row map[string]any, column string, v any) map[string]any {
	if v == nil {
		delete(row, column)
	} else {
		row[column] = v
	}
	return row
}

// A membership whose role the mapping lacks becomes no event, as in the
// intake, but still counts as the portal's (active) membership, so that a
// full read does not deactivate it in the app.
func TestUnknownRoleKeepsPortalMembership(t *testing.T) {
	t.Parallel()
	row := map[string]any{"hlf_membershipid": "c0000000-0000-4000-8000-00000000d001",
		"_hlf_contactid_value": "a1b2c3d4-0000-4000-8000-00000000c001", "_hlf_contactid_value@Microsoft.Dynamics.CRM.lookuplogicalname": "contact",
		"_hlf_accountid_value": "b0000000-0000-4000-8000-00000000a001", "_hlf_accountid_value@Microsoft.Dynamics.CRM.lookuplogicalname": "account",
		"hlf_role": float64(5), "statecode": float64(0), "modifiedon": "2026-11-25T10:01:00Z"}
	re, err := translateRow(dvmap.DefaultMapping(), KindMembership, row)
	require.NoError(t, err)
	require.Nil(t, re.ev)
	require.Equal(t, "unknown-role", re.refused)
	require.Equal(t, &Membership{Member: "a1b2c3d4-0000-4000-8000-00000000c001", Org: "b0000000-0000-4000-8000-00000000a001", Active: true}, re.membership)
}

func TestRetryAfter(t *testing.T) {
	t.Parallel()
	now := time.Date(2026, 11, 27, 3, 0, 0, 0, time.UTC)
	require.Equal(t, 7*time.Second, retryAfter("7", now))
	require.Equal(t, time.Second, retryAfter("0", now))
	require.Equal(t, time.Second, retryAfter("", now))
	require.Equal(t, 30*time.Second, retryAfter(now.Add(30*time.Second).Format(http1123), now))
}

const http1123 = "Mon, 02 Jan 2006 15:04:05 GMT"
