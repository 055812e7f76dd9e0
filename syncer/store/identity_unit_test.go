package store

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/likeperson/portalsync/pkg/event"
)

func TestSeenEmails(t *testing.T) {
	t.Parallel()
	at := time.Date(2026, 11, 27, 10, 0, 0, 0, time.UTC)
	ev := func(id, member, email string, minute int) Item {
		return Item{Event: &event.Event{ID: id, OccurredAt: at.Add(time.Duration(minute) * time.Minute),
			Member: event.Member{ID: member, Email: email}}}
	}
	tests := []struct {
		name          string
		items         []Item
		live          []int
		members, mail []string
	}{
		{name: "Empty"},
		{
			name:    "NewestFirstLowerCasedOnce",
			items:   []Item{ev("e1", "m1", "Old@X.invalid", 0), ev("e2", "m1", "new@x.invalid", 2), ev("e3", "m1", "OLD@x.invalid", 1)},
			live:    []int{0, 1, 2},
			members: []string{"m1", "m1"},
			mail:    []string{"new@x.invalid", "old@x.invalid"},
		},
		{
			name:    "TiesBrokenByEventID",
			items:   []Item{ev("e2", "m1", "b@x.invalid", 0), ev("e1", "m1", "a@x.invalid", 0)},
			live:    []int{0, 1},
			members: []string{"m1", "m1"},
			mail:    []string{"b@x.invalid", "a@x.invalid"},
		},
		{
			name:    "OnlyLiveItemsAndNoEmptyEmail",
			items:   []Item{ev("e1", "m1", "a@x.invalid", 0), ev("e2", "m2", "", 1), ev("e3", "m3", "c@x.invalid", 2)},
			live:    []int{1, 2},
			members: []string{"m3"},
			mail:    []string{"c@x.invalid"},
		},
		{
			name:    "SameEmailTwoMembers",
			items:   []Item{ev("e1", "m1", "s@x.invalid", 0), ev("e2", "m2", "S@x.invalid", 1)},
			live:    []int{0, 1},
			members: []string{"m2", "m1"},
			mail:    []string{"s@x.invalid", "s@x.invalid"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			members, emails := seenEmails(tt.items, tt.live)
			require.Equal(t, tt.members, members)
			require.Equal(t, tt.mail, emails)
		})
	}
}

func TestIdentityNote(t *testing.T) {
	t.Parallel()
	for _, o := range []string{"linked", "shared", "revoked", "restored"} {
		note, ok := identityNote(o)
		require.True(t, ok, o)
		require.NotEmpty(t, note)
		require.NotContains(t, note, "@")
	}
	_, ok := identityNote("something else")
	require.False(t, ok)
}
