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
	membership := func(role, state any) map[string]any {
		return map[string]any{"hlf_membershipid": "c0000000-0000-4000-8000-00000000d001", "_hlf_contactid_value": member,
			"_hlf_accountid_value": org, "hlf_role": role, "statecode": state, "modifiedon": "2026-11-25T10:01:00Z", "versionnumber": float64(77)}
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
		"active, role not mapped":   {kind: KindMembership, row: membership(float64(5), float64(0)), typ: event.MembershipReactivated},
		"active, no role":           {kind: KindMembership, row: membership(nil, float64(0)), typ: event.MembershipReactivated},
		"inactive":                  {kind: KindMembership, row: membership(float64(100000000), float64(1)), typ: event.MembershipDeactivated},
		"unknown state":             {kind: KindMembership, row: membership(nil, float64(7)), skip: "neither active nor inactive"},
		"membership without member": {kind: KindMembership, row: map[string]any{"hlf_membershipid": "x", "statecode": float64(0)}, skip: "no member"},
		"contact":                   {kind: KindMember, row: map[string]any{"contactid": member, "firstname": "Kari", "_parentcustomerid_value": org, "modifiedon": "2026-11-25T10:00:00Z"}, typ: event.MembershipUpdated},
		"contact without org":       {kind: KindMember, row: map[string]any{"contactid": member, "modifiedon": "2026-11-25T10:00:00Z"}, skip: "no organization"},
		"contact without time":      {kind: KindMember, row: map[string]any{"contactid": member, "_parentcustomerid_value": org}, errHas: "modifiedon"},
		"contact with a bad e-mail": {kind: KindMember, row: map[string]any{"contactid": member, "emailaddress1": "nope", "_parentcustomerid_value": org, "modifiedon": "2026-11-25T10:00:00Z"}, errHas: "email"},
		"deleted contact":           {kind: KindMember, row: map[string]any{"@odata.context": "https://x/api/data/v9.2/$metadata#contacts/$deletedEntity", "id": member, "reason": "deleted"}, typ: event.MemberDeleted},
		"deleted membership":        {kind: KindMembership, row: map[string]any{"@odata.context": "https://x/api/data/v9.2/$metadata#hlf_memberships/$deletedEntity", "id": "c0", "reason": "deleted"}, skip: "next full read"},
		"row without key":           {kind: KindMember, row: map[string]any{"firstname": "x"}, errHas: "contactid"},
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

func TestRetryAfter(t *testing.T) {
	t.Parallel()
	now := time.Date(2026, 11, 27, 3, 0, 0, 0, time.UTC)
	require.Equal(t, 7*time.Second, retryAfter("7", now))
	require.Equal(t, time.Second, retryAfter("0", now))
	require.Equal(t, time.Second, retryAfter("", now))
	require.Equal(t, 30*time.Second, retryAfter(now.Add(30*time.Second).Format(http1123), now))
}

const http1123 = "Mon, 02 Jan 2006 15:04:05 GMT"
