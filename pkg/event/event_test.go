package event_test

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/likeperson/portalsync/pkg/event"
)

const validCreated = `{"id":"evt_01JD0001","type":"membership-created","occurred_at":"2026-11-25T10:00:00Z",
 "organization":{"id":"org-1","name":"HLF Oslo"},
 "member":{"id":"0b9f2c1e-1a2b-4c3d-8e9f-000000000001","email":"kari@example.no","first_name":"Kari","last_name":"Nordmann","phone":"+47 912 34 567"},
 "role":"peer_mentor","extra":"ignored"}`

func TestDecodeValid(t *testing.T) {
	t.Parallel()
	ev, err := event.Decode([]byte(validCreated))
	require.NoError(t, err)
	require.Equal(t, "evt_01JD0001", ev.ID)
	require.Equal(t, event.MembershipCreated, ev.Type)
	require.Equal(t, time.Date(2026, 11, 25, 10, 0, 0, 0, time.UTC), ev.OccurredAt)
	require.Equal(t, "org-1", ev.Organization.ID)
	require.Equal(t, "Kari", ev.Member.FirstName)
	require.Equal(t, event.RolePeerMentor, ev.Role)
	require.True(t, ev.HasProfile())
}

func TestDecodeUnknownTypeNeedsOnlyEnvelope(t *testing.T) {
	t.Parallel()
	ev, err := event.Decode([]byte(`{"id":"e1","type":"membership-merged","occurred_at":"2026-11-25T10:00:00+01:00","member":{"id":"m1"}}`))
	require.NoError(t, err)
	require.False(t, ev.Type.Known())
	require.Equal(t, time.Date(2026, 11, 25, 9, 0, 0, 0, time.UTC), ev.OccurredAt)

	// A well-formed organization is kept, so the skipped row reaches it.
	ev, err = event.Decode([]byte(`{"id":"e1","type":"membership-merged","occurred_at":"2026-11-25T10:00:00Z","organization":{"id":"o-1"},"member":{"id":"m1"}}`))
	require.NoError(t, err)
	require.Equal(t, "o-1", ev.Organization.ID)
	ev, err = event.Decode([]byte(`{"id":"e1","type":"membership-merged","occurred_at":"2026-11-25T10:00:00Z","organization":{"id":"a b"},"member":{"id":"m1"}}`))
	require.NoError(t, err)
	require.Empty(t, ev.Organization.ID)
}

func TestDecodeInvalid(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		body   string
		fields []string
	}{
		{"MissingID", `{"type":"role-updated","occurred_at":"2026-11-25T10:00:00Z","organization":{"id":"o"},"member":{"id":"m"},"role":"coordinator"}`, []string{"id"}},
		{"MissingEverything", `{}`, []string{"id", "type", "occurred_at", "member"}},
		{"BadTimestamp", `{"id":"e","type":"membership-updated","occurred_at":"25.11.2026","organization":{"id":"o"},"member":{"id":"m"}}`, []string{"occurred_at"}},
		{"RoleRequired", `{"id":"e","type":"membership-created","occurred_at":"2026-11-25T10:00:00Z","organization":{"id":"o"},"member":{"id":"m"}}`, []string{"role"}},
		{"RoleUnknown", `{"id":"e","type":"membership-updated","occurred_at":"2026-11-25T10:00:00Z","organization":{"id":"o"},"member":{"id":"m"},"role":"king"}`, []string{"role"}},
		{"OrgMissing", `{"id":"e","type":"membership-deactivated","occurred_at":"2026-11-25T10:00:00Z","member":{"id":"m"}}`, []string{"organization"}},
		{"MemberIDWildcard", `{"id":"e","type":"membership-deactivated","occurred_at":"2026-11-25T10:00:00Z","organization":{"id":"o"},"member":{"id":"a.>"}}`, []string{"member.id"}},
		{"MemberIDSpace", `{"id":"e","type":"membership-deactivated","occurred_at":"2026-11-25T10:00:00Z","organization":{"id":"o"},"member":{"id":"a b"}}`, []string{"member.id"}},
		{"MemberIDTooLong", `{"id":"e","type":"membership-deactivated","occurred_at":"2026-11-25T10:00:00Z","organization":{"id":"o"},"member":{"id":"` + strings.Repeat("a", 129) + `"}}`, []string{"member.id"}},
		{"OrgIDStar", `{"id":"e","type":"membership-deactivated","occurred_at":"2026-11-25T10:00:00Z","organization":{"id":"*"},"member":{"id":"m"}}`, []string{"organization.id"}},
		{"BadEmailAndPhone", `{"id":"e","type":"membership-updated","occurred_at":"2026-11-25T10:00:00Z","organization":{"id":"o"},"member":{"id":"m","email":"not-an-address","phone":"call me"}}`, []string{"member.email", "member.phone"}},
		{"NameWithControl", `{"id":"e","type":"membership-updated","occurred_at":"2026-11-25T10:00:00Z","organization":{"id":"o"},"member":{"id":"m","first_name":"a\u0007b"}}`, []string{"member.first_name"}},
		{"IDWrongType", `{"id":42,"type":"membership-updated"}`, []string{"id"}},
		{"MemberIDWrongType", `{"id":"e","type":"membership-updated","occurred_at":"2026-11-25T10:00:00Z","organization":{"id":"o"},"member":{"id":7}}`, []string{"member.id"}},
		{"MemberNotObject", `{"id":"e","type":"membership-updated","occurred_at":"2026-11-25T10:00:00Z","organization":{"id":"o"},"member":"m"}`, []string{"member"}},
		{"TypeNotToken", `{"id":"e","type":"Membership Created!","occurred_at":"2026-11-25T10:00:00Z","member":{"id":"m"}}`, []string{"type"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			_, err := event.Decode([]byte(tt.body))
			var verr event.ValidationError
			require.ErrorAs(t, err, &verr, "%v", err)
			var got []string
			for _, fe := range verr {
				got = append(got, fe.Field)
			}
			require.Equal(t, tt.fields, got, err.Error())
		})
	}
}

func TestDecodeNotJSON(t *testing.T) {
	t.Parallel()
	for _, body := range []string{``, `not json`, `{"id":`, `[]`, `"x"`, `{} {}`, `{"id":"e"} trailing`} {
		_, err := event.Decode([]byte(body))
		require.True(t, errors.Is(err, event.ErrNotJSON), "%q: %v", body, err)
	}
}

func TestDecodeErrorsDoNotEchoValues(t *testing.T) {
	t.Parallel()
	_, err := event.Decode([]byte(`{"id":"e","type":"membership-updated","occurred_at":"2026-11-25T10:00:00Z","organization":{"id":"o"},"member":{"id":"m","email":"secret-person@","phone":"phone-secret"}}`))
	require.Error(t, err)
	require.NotContains(t, err.Error(), "secret-person")
	require.NotContains(t, err.Error(), "phone-secret")
}

func TestMemberKey(t *testing.T) {
	t.Parallel()
	require.Equal(t, "0b9f2c1e-1a2b-4c3d-8e9f-000000000001", event.MemberKey("0b9f2c1e-1a2b-4c3d-8e9f-000000000001"))
	require.Equal(t, "portal.member.abc_D-9", event.Subject("abc_D-9"))
	for _, id := range []string{"a.>", "*", ">", "a b", "a.b", "", "~x", "æøå", "a\tb", "..."} {
		key := event.MemberKey(id)
		require.True(t, strings.HasPrefix(key, "~"), id)
		require.NotContains(t, key, ".")
		require.NotContains(t, key, "*")
		require.NotContains(t, key, ">")
		require.NotContains(t, key, " ")
		back, ok := event.MemberIDFromKey(key)
		require.True(t, ok)
		require.Equal(t, id, back)
	}
	// Plain and encoded keys never collide.
	require.NotEqual(t, event.MemberKey("a.b"), event.MemberKey("a_b"))
}

func FuzzDecode(f *testing.F) {
	f.Add([]byte(validCreated))
	f.Add([]byte(`{"id":"e","type":"x","occurred_at":"2026-11-25T10:00:00Z","member":{"id":"m"}}`))
	f.Add([]byte(`{"member":{"id":null},"organization":[]}`))
	f.Add([]byte(`[[[[[[[[[[[[[[[[[[[[[[[[[[[[`))
	f.Add([]byte(`{"id":"\u0000"}`))
	f.Add([]byte(`{"id":"e","type":"membership-updated","occurred_at":"2026-11-25T10:00:00Z","organization":{"id":"{0B9F2C1E-1A2B-4C3D-8E9F-00000000000A}","name":null},"member":{"id":"0B9F2C1E-1A2B-4C3D-8E9F-00000000000A","email":null,"phone":"+47 1"}}`))
	f.Add([]byte("{\"id\":\"e\",\"member\":{\"id\":\"K\xe5re\"}}"))
	f.Fuzz(func(t *testing.T, body []byte) {
		ev, err := event.Decode(body)
		if err != nil {
			require.Nil(t, ev)
			var verr event.ValidationError
			if !errors.As(err, &verr) && !errors.Is(err, event.ErrNotJSON) && !errors.Is(err, event.ErrNotUTF8) {
				t.Fatalf("unclassified error: %v", err)
			}
			return
		}
		// Anything accepted is keyable and in range.
		require.True(t, event.ValidID(ev.ID))
		require.True(t, event.ValidID(ev.Member.ID))
		require.False(t, ev.OccurredAt.IsZero())
		if ev.Type.Known() {
			require.True(t, event.ValidID(ev.Organization.ID))
			if ev.Type.RequiresRole() {
				require.True(t, ev.Role.Valid())
			}
		}
		// IDs are canonical, and a patch survives a round trip.
		require.Equal(t, event.CanonicalID(ev.Member.ID), ev.Member.ID)
		require.Equal(t, event.CanonicalID(ev.Organization.ID), ev.Organization.ID)
		if ev.Type.Known() {
			b, err := json.Marshal(ev)
			require.NoError(t, err)
			again, err := event.Decode(b)
			require.NoError(t, err)
			require.Equal(t, ev.Member, again.Member)
		}
		back, ok := event.MemberIDFromKey(event.MemberKey(ev.Member.ID))
		require.True(t, ok)
		require.Equal(t, ev.Member.ID, back)
	})
}

func FuzzMemberKey(f *testing.F) {
	for _, s := range []string{"m1", "a.>", "*", " ", "", "~", "~~", "æ"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, id string) {
		key := event.MemberKey(id)
		require.NotEmpty(t, key)
		require.False(t, strings.ContainsAny(key, ".*> \t\r\n"), key)
		back, ok := event.MemberIDFromKey(key)
		require.True(t, ok)
		require.Equal(t, id, back)
	})
}

// TestDecodeMergePatch: an absent field is left out of the event, an
// explicit null or "" clears it (RFC 7386), for the member and the
// organization name.
func TestDecodeMergePatch(t *testing.T) {
	t.Parallel()
	ev, err := event.Decode([]byte(`{"id":"e","type":"membership-updated","occurred_at":"2026-11-25T10:00:00Z",
		"organization":{"id":"o","name":null},"member":{"id":"m","phone":"+47 99","email":null,"last_name":""}}`))
	require.NoError(t, err)
	require.Equal(t, "+47 99", ev.Member.Phone)
	require.True(t, ev.Member.Has(event.FieldPhone))
	require.True(t, ev.Member.Has(event.FieldEmail))
	require.True(t, ev.Member.Has(event.FieldLastName))
	require.False(t, ev.Member.Has(event.FieldFirstName), "absent means unchanged")
	require.Equal(t, event.Fields(0).With(event.FieldEmail).With(event.FieldLastName), ev.Member.Cleared)
	require.True(t, ev.Organization.NameCleared)
	require.True(t, ev.Organization.HasName())

	// The Go form writes the same patch back.
	b, err := json.Marshal(ev)
	require.NoError(t, err)
	again, err := event.Decode(b)
	require.NoError(t, err)
	require.Equal(t, ev, again)
	require.Contains(t, string(b), `"email":null`)
	require.NotContains(t, string(b), `first_name`)

	_, err = event.Decode([]byte(`{"id":"e","type":"membership-updated","occurred_at":"2026-11-25T10:00:00Z","organization":{"id":"o"},"member":{"id":"m","email":5}}`))
	var verr event.ValidationError
	require.ErrorAs(t, err, &verr)
	require.Equal(t, "member.email", verr[0].Field)
}

// TestDecodeRefusesInvalidUTF8: Latin-1 "Kåre" is refused, not stored as
// "K\uFFFDre".
func TestDecodeRefusesInvalidUTF8(t *testing.T) {
	t.Parallel()
	body := []byte(`{"id":"e","type":"membership-updated","occurred_at":"2026-11-25T10:00:00Z","organization":{"id":"o"},"member":{"id":"m","first_name":"K` + "\xe5" + `re"}}`)
	_, err := event.Decode(body)
	require.ErrorIs(t, err, event.ErrNotUTF8)
}

// TestCanonicalIDs: GUIDs in any case, with or without braces, decode to one
// lower-case form, which keys one subject; other IDs are left alone.
func TestCanonicalIDs(t *testing.T) {
	t.Parallel()
	const canon = "0b9f2c1e-1a2b-4c3d-8e9f-00000000000a"
	for _, id := range []string{canon, "0B9F2C1E-1A2B-4C3D-8E9F-00000000000A", "{0b9f2c1e-1A2B-4c3d-8e9f-00000000000a}", "{0B9F2C1E-1A2B-4C3D-8E9F-00000000000A}"} {
		require.Equal(t, canon, event.CanonicalID(id), id)
		ev, err := event.Decode([]byte(`{"id":"e","type":"membership-deactivated","occurred_at":"2026-11-25T10:00:00Z","organization":{"id":"` + strings.ToUpper(id) + `"},"member":{"id":"` + id + `"}}`))
		require.NoError(t, err, id)
		require.Equal(t, canon, ev.Member.ID)
		require.Equal(t, canon, ev.Organization.ID)
		require.Equal(t, "portal.member."+canon, event.Subject(ev.Member.ID))
	}
	for _, id := range []string{"ABC-1", "{not-a-guid}", "0B9F2C1E1A2B4C3D8E9F00000000000A", "0b9f2c1e-1a2b-4c3d-8e9f-00000000000g"} {
		require.Equal(t, id, event.CanonicalID(id))
	}
}

func TestCheckClock(t *testing.T) {
	t.Parallel()
	now := time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC)
	ev := &event.Event{OccurredAt: now.Add(5 * time.Minute)}
	require.NoError(t, ev.CheckClock(now, 5*time.Minute))
	ev.OccurredAt = now.AddDate(73, 0, 0)
	err := ev.CheckClock(now, 5*time.Minute)
	var verr event.ValidationError
	require.ErrorAs(t, err, &verr)
	require.Equal(t, "occurred_at", verr[0].Field)
	ev.OccurredAt = now.AddDate(-1, 0, 0)
	require.NoError(t, ev.CheckClock(now, 5*time.Minute), "the past is fine")
}
