package dvmap_test

import (
	"errors"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/likeperson/portalsync/pkg/dvmap"
	"github.com/likeperson/portalsync/pkg/event"
)

const (
	contactID = "a1b2c3d4-0000-4000-8000-00000000c001"
	accountID = "b0000000-0000-4000-8000-00000000a001"
)

func ref(table, id string) dvmap.Value {
	return dvmap.Value{Kind: dvmap.KindReference, Table: table, Str: id}
}

func reason(t *testing.T, err error) string {
	t.Helper()
	var re *dvmap.RowError
	require.True(t, errors.As(err, &re), "a RowError: %v", err)
	return re.Reason
}

// A member row's organization lookup counts only as a reference to the
// organization table naming a row; the first such of the row, then of its
// images in order.
func TestMemberOrganization(t *testing.T) {
	t.Parallel()
	m := dvmap.DefaultMapping()
	for name, tc := range map[string]struct {
		row    dvmap.Row
		org    string
		reason string
	}{
		"an account":              {row: dvmap.Row{Columns: map[string]dvmap.Value{"parentcustomerid": ref("account", accountID)}}, org: accountID},
		"braces and upper case":   {row: dvmap.Row{Columns: map[string]dvmap.Value{"parentcustomerid": ref("account", "{B0000000-0000-4000-8000-00000000A001}")}}, org: accountID},
		"a contact":               {row: dvmap.Row{Columns: map[string]dvmap.Value{"parentcustomerid": ref("contact", accountID)}}, reason: "no-organization"},
		"a table not said":        {row: dvmap.Row{Columns: map[string]dvmap.Value{"parentcustomerid": ref("", accountID)}}, reason: "no-organization"},
		"the empty GUID":          {row: dvmap.Row{Columns: map[string]dvmap.Value{"parentcustomerid": ref("account", "00000000-0000-0000-0000-000000000000")}}, reason: "no-organization"},
		"text, not a reference":   {row: dvmap.Row{Columns: map[string]dvmap.Value{"parentcustomerid": {Kind: dvmap.KindString, Str: accountID}}}, reason: "no-organization"},
		"none":                    {row: dvmap.Row{}, reason: "no-organization"},
		"from an image":           {row: dvmap.Row{Images: []map[string]dvmap.Value{{"parentcustomerid": ref("account", accountID)}}}, org: accountID},
		"a contact, then account": {row: dvmap.Row{Columns: map[string]dvmap.Value{"parentcustomerid": ref("contact", contactID)}, Images: []map[string]dvmap.Value{{"parentcustomerid": ref("account", accountID)}}}, org: accountID},
	} {
		tc.row.Table, tc.row.ID = "contact", contactID
		org, err := m.MemberOrganization(tc.row)
		if tc.reason != "" {
			require.Equal(t, tc.reason, reason(t, err), name)
			require.NotContains(t, err.Error(), accountID, "%s: the refused reference's id is not named", name)
			continue
		}
		require.NoError(t, err, name)
		require.Equal(t, tc.org, org.ID, name)
	}
}

// Profile fields: absent is unchanged, null or blank clears, text is
// trimmed, anything else is refused.
func TestMemberOf(t *testing.T) {
	t.Parallel()
	m := dvmap.DefaultMapping()
	mem, err := m.MemberOf(dvmap.Row{Table: "contact", ID: "A1B2C3D4-0000-4000-8000-00000000C001", Columns: map[string]dvmap.Value{
		"firstname": {Kind: dvmap.KindString, Str: " Kari "}, "lastname": {Kind: dvmap.KindNull}, "mobilephone": {Kind: dvmap.KindString, Str: "  "},
	}})
	require.NoError(t, err)
	require.Equal(t, contactID, mem.ID)
	require.Equal(t, "Kari", mem.FirstName)
	require.True(t, mem.Cleared.Has(event.FieldLastName))
	require.True(t, mem.Cleared.Has(event.FieldPhone))
	require.False(t, mem.Cleared.Has(event.FieldEmail), "absent: unchanged")

	_, err = m.MemberOf(dvmap.Row{Table: "contact", ID: contactID, Columns: map[string]dvmap.Value{"emailaddress1": {Kind: dvmap.KindOption, Num: 1}}})
	require.Equal(t, "bad-attribute", reason(t, err))
}

// Role and state: option values the mapping knows; anything else refused.
func TestMembershipRoleAndState(t *testing.T) {
	t.Parallel()
	m := dvmap.DefaultMapping()
	row := func(role, state dvmap.Value) dvmap.Row {
		return dvmap.Row{Table: "hlf_membership", ID: contactID, Columns: map[string]dvmap.Value{"hlf_role": role, "statecode": state}}
	}
	opt := func(n float64) dvmap.Value { return dvmap.Value{Kind: dvmap.KindOption, Num: n} }
	role, err := m.MembershipRole(row(opt(100000001), dvmap.Value{}))
	require.NoError(t, err)
	require.Equal(t, event.RoleCoordinator, role)
	role, err = m.MembershipRole(row(dvmap.Value{Kind: dvmap.KindNull}, dvmap.Value{}))
	require.NoError(t, err)
	require.Empty(t, role)
	for name, v := range map[string]dvmap.Value{"fraction": opt(100000001.5), "text": {Kind: dvmap.KindString, Str: "coordinator"}, "other": {Kind: dvmap.KindOther}} {
		_, err = m.MembershipRole(row(v, dvmap.Value{}))
		require.Equal(t, "bad-attribute", reason(t, err), name)
	}
	_, err = m.MembershipRole(row(opt(7), dvmap.Value{}))
	require.Equal(t, "unknown-role", reason(t, err))

	for n, want := range map[float64]dvmap.State{0: dvmap.StateActive, 1: dvmap.StateInactive} {
		st, err := m.MembershipState(row(dvmap.Value{}, opt(n)))
		require.NoError(t, err)
		require.Equal(t, want, st)
	}
	st, err := m.MembershipState(row(dvmap.Value{}, dvmap.Value{}))
	require.NoError(t, err)
	require.Equal(t, dvmap.StateNone, st)
	_, err = m.MembershipState(row(dvmap.Value{}, opt(7)))
	require.Equal(t, "unknown-state", reason(t, err))
}

// A membership names its member in the member table and its organization
// in the organization table.
func TestMembershipParties(t *testing.T) {
	t.Parallel()
	m := dvmap.DefaultMapping()
	r := dvmap.Row{Table: "hlf_membership", ID: contactID, Columns: map[string]dvmap.Value{
		"hlf_contactid": ref("contact", contactID), "hlf_accountid": ref("account", accountID)}}
	member, org, err := m.MembershipParties(r)
	require.NoError(t, err)
	require.Equal(t, contactID, member)
	require.Equal(t, accountID, org.ID)
	r.Columns["hlf_contactid"] = ref("account", contactID)
	_, _, err = m.MembershipParties(r)
	require.Equal(t, "no-member", reason(t, err))
	r.Columns["hlf_contactid"] = ref("contact", contactID)
	r.Columns["hlf_accountid"] = ref("contact", accountID)
	_, _, err = m.MembershipParties(r)
	require.Equal(t, "no-organization", reason(t, err))
}
