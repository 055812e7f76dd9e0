package eventmodel_test

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/likeperson/portalsync/pkg/event"
	"github.com/likeperson/portalsync/testkit/eventmodel"
)

func TestExpectIdentity(t *testing.T) {
	t.Parallel()
	t0 := time.Date(2026, 11, 25, 10, 0, 0, 0, time.UTC)
	ev := func(id string, typ event.Type, min int, member, email string) event.Event {
		return event.Event{ID: id, Type: typ, OccurredAt: t0.Add(time.Duration(min) * time.Minute),
			Organization: event.Organization{ID: "o1"}, Member: event.Member{ID: member, Email: email}, Role: event.RolePeerMentor}
	}
	got := eventmodel.ExpectIdentity([]event.Event{
		ev("a1", event.MembershipCreated, 0, "active", "Active@x.invalid"),
		ev("g1", event.MembershipCreated, 0, "gone", "gone@x.invalid"),
		ev("g2", event.MembershipDeactivated, 1, "gone", "gone@x.invalid"),
		ev("b1", event.MembershipCreated, 0, "back", "back@x.invalid"),
		ev("b2", event.MembershipDeactivated, 1, "back", "back@x.invalid"),
		ev("b3", event.MembershipReactivated, 2, "back", "back@x.invalid"),
		ev("s1", event.MembershipCreated, 0, "share1", "family@x.invalid"),
		ev("s2", event.MembershipCreated, 0, "share2", "FAMILY@x.invalid"),
		ev("u1", event.MembershipDeactivated, 0, "unconfirmed", "u@x.invalid"),
		ev("o1", event.MembershipDeactivated, 0, "sso", "sso@x.invalid"),
		ev("h1", event.MembershipDeactivated, 0, "held", "held@x.invalid"),
	}, []eventmodel.Account{
		{ID: "A", Email: "active@x.invalid", Confirmed: true},
		{ID: "C", Email: "Active@x.invalid", Confirmed: true}, // not as Supabase Auth stores it
		{ID: "G", Email: "gone@x.invalid", Confirmed: true},
		{ID: "B", Email: "back@x.invalid", Confirmed: true},
		{ID: "F", Email: "family@x.invalid", Confirmed: true},
		{ID: "U", Email: "u@x.invalid"},
		{ID: "S", Email: "sso@x.invalid", Confirmed: true, SSO: true},
		{ID: "H", Email: "held@x.invalid", Confirmed: true, AdminBanned: true},
	})
	require.Equal(t, map[string]eventmodel.Identity{
		"active":      {Account: "A"},
		"gone":        {Account: "G", Banned: true, BannedBySync: true, SessionsEnded: true},
		"back":        {Account: "B", SessionsEither: true},
		"share1":      {Undecided: true},
		"share2":      {Undecided: true},
		"unconfirmed": {},
		"sso":         {},
		"held":        {Account: "H", Banned: true, SessionsEnded: true},
	}, got)
}
