package store_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"pgregory.net/rapid"

	"github.com/likeperson/portalsync/pkg/event"
	"github.com/likeperson/portalsync/syncer/store"
	"github.com/likeperson/portalsync/testkit/eventmodel"
)

// drawEvents draws 1..maxEvents events of 1..members members (ids
// "<prefix>-m<n>") in two organizations, with few distinct portal times so
// that ties, broken by event id, are common. Each member has one portal
// e-mail throughout: their own, or one that other members may share, in
// any case.
func drawEvents(rt *rapid.T, prefix string, members, maxEvents int) []event.Event {
	emails := make([]string, members)
	for i := range emails {
		emails[i] = rapid.SampledFrom([]string{
			fmt.Sprintf("%s-m%d@example.invalid", prefix, i), prefix + "-family@example.invalid",
		}).Draw(rt, "email")
		if rapid.Bool().Draw(rt, "upper") {
			emails[i] = strings.ToUpper(emails[i])
		}
	}
	types := []event.Type{event.MembershipCreated, event.MembershipUpdated, event.RoleUpdated, event.MembershipDeactivated, event.MembershipReactivated}
	roles := []event.Role{"", event.RolePeerMentor, event.RoleCoordinator, event.RoleOrgAdmin}
	events := make([]event.Event, rapid.IntRange(1, maxEvents).Draw(rt, "events"))
	for i := range events {
		typ := rapid.SampledFrom(types).Draw(rt, "type")
		role := event.Role("")
		if typ.RequiresRole() {
			role = rapid.SampledFrom(roles[1:]).Draw(rt, "role")
		} else if typ == event.MembershipUpdated {
			role = rapid.SampledFrom(roles).Draw(rt, "role")
		}
		at := t0.Add(time.Duration(rapid.IntRange(0, 3).Draw(rt, "minute")) * time.Minute)
		n := rapid.IntRange(0, members-1).Draw(rt, "member")
		member := fmt.Sprintf("%s-m%d", prefix, n)
		org := rapid.SampledFrom([]string{"o1", "o2"}).Draw(rt, "org")
		events[i] = *ev(fmt.Sprintf("%s-e%d", prefix, i), typ, at, member, org, role)
		events[i].Member.Email = emails[n]
		if rapid.IntRange(0, 24).Draw(rt, "erase") == 0 {
			// Now and then the portal deletes the contact.
			events[i] = event.Event{ID: events[i].ID, Type: event.MemberDeleted, OccurredAt: at, Member: event.Member{ID: member}}
			continue
		}
		if events[i].HasProfile() {
			events[i].Member = drawPatch(rt, events[i].Member)
		}
	}
	return events
}

// drawPatch makes a member's fields a random JSON Merge Patch: each field
// absent, null, or a value.
func drawPatch(rt *rapid.T, m event.Member) event.Member {
	out := event.Member{ID: m.ID}
	for _, f := range event.ProfileFields {
		switch rapid.IntRange(0, 2).Draw(rt, f.String()) {
		case 1:
			out.Cleared = out.Cleared.With(f)
		case 2:
			v := m.Value(f)
			switch f {
			case event.FieldEmail:
				out.Email = v
			case event.FieldFirstName:
				out.FirstName = v
			case event.FieldLastName:
				out.LastName = v + m.FirstName // distinct per event
			case event.FieldPhone:
				out.Phone = v
			}
		}
	}
	return out
}

// profileFields reads a member's profile fields by JSON name ("" for NULL).
func profileFields(t *testing.T, pool *pgxpool.Pool, member string) map[string]string {
	t.Helper()
	var e, f, l, p *string
	err := pool.QueryRow(context.Background(), `SELECT email, first_name, last_name, phone FROM profiles WHERE portal_member_id = $1`, member).Scan(&e, &f, &l, &p)
	if err != nil {
		t.Fatalf("read profile %s: %v", member, err)
	}
	out := map[string]string{}
	for name, v := range map[string]*string{"email": e, "first_name": f, "last_name": l, "phone": p} {
		out[name] = ""
		if v != nil {
			out[name] = *v
		}
	}
	return out
}

// drawDeliveries is a random order of the events with up to maxRepeats
// redeliveries appended.
func drawDeliveries(rt *rapid.T, events []event.Event, maxRepeats int) []event.Event {
	order := rapid.Permutation(events).Draw(rt, "order")
	for _, i := range rapid.SliceOfN(rapid.IntRange(0, len(events)-1), 0, maxRepeats).Draw(rt, "redeliveries") {
		order = append(order, order[i])
	}
	return order
}

// applyInBatches applies the deliveries in order, in batches of random
// sizes.
func applyInBatches(rt *rapid.T, s *store.Store, order []event.Event) {
	for len(order) > 0 {
		size := rapid.IntRange(1, len(order)).Draw(rt, "batch")
		evs := make([]*event.Event, size)
		for i := range evs {
			evs[i] = &order[i]
		}
		if _, err := s.ApplyBatch(context.Background(), items(evs...)); err != nil {
			rt.Fatalf("apply batch: %v", err)
		}
		order = order[size:]
	}
}

// requireModel fails rt unless every member's state equals the reference
// model's and each distinct event has exactly one log row.
func requireModel(t *testing.T, rt *rapid.T, pool *pgxpool.Pool, prefix string, events []event.Event) {
	for member, want := range eventmodel.Expect(events) {
		got := memberState(t, pool, member)
		if got.ProfileStatus != want.Status || (want.HasSnapshot && got.FirstName != want.FirstName) {
			rt.Fatalf("%s: status %s first name %q, model %s %q", member, got.ProfileStatus, got.FirstName, want.Status, want.FirstName)
		}
		fields := profileFields(t, pool, member)
		for name, v := range want.Fields {
			if fields[name] != v {
				rt.Fatalf("%s: %s is %q, model (portal-time order) %q", member, name, fields[name], v)
			}
		}
		wantMS, wantRoles := map[string]string{}, map[string]string{}
		for org, m := range want.Memberships {
			wantMS[org] = m.Status
			if m.Role != "" {
				wantRoles[org] = m.Role
			}
		}
		if fmt.Sprint(got.Memberships) != fmt.Sprint(wantMS) || fmt.Sprint(got.Roles) != fmt.Sprint(wantRoles) {
			rt.Fatalf("%s: memberships %v roles %v, model %v %v", member, got.Memberships, got.Roles, wantMS, wantRoles)
		}
	}
	for _, e := range events {
		if e.Type == event.MemberDeleted {
			var n int
			if err := pool.QueryRow(context.Background(), `SELECT count(*) FROM profiles WHERE portal_member_id = $1`, e.Member.ID).Scan(&n); err != nil {
				rt.Fatal(err)
			}
			if n != 0 {
				rt.Fatalf("%s: erased, but its profile is back", e.Member.ID)
			}
		}
	}
	var logged int
	// An erasure's rows for the member's organizations (event id
	// "<event id>:<organization>") come besides its own.
	if err := pool.QueryRow(context.Background(), `SELECT count(*) FROM portal_sync_log WHERE event_id LIKE $1
		AND NOT (event_type = 'member-deleted' AND portal_org_id IS NOT NULL)`, prefix+"-%").Scan(&logged); err != nil {
		rt.Fatal(err)
	}
	if logged != len(events) {
		rt.Fatalf("%d log rows for %d distinct events", logged, len(events))
	}
}

// drawAccounts creates, before any event is applied, an app account (with
// one session) or none for each e-mail the events carry: confirmed,
// unconfirmed, SSO, or confirmed and banned by an administrator; its e-mail
// in lower case, as Supabase Auth stores it (the portal's may be in any).
func drawAccounts(rt *rapid.T, pool *pgxpool.Pool, events []event.Event) []eventmodel.Account {
	ctx := context.Background()
	seen := map[string]bool{}
	var out []eventmodel.Account
	for _, e := range events {
		email := strings.ToLower(e.Member.Email)
		if email == "" || seen[email] { // absent or cleared in a partial update
			continue
		}
		seen[email] = true
		kind := rapid.SampledFrom([]string{"none", "confirmed", "unconfirmed", "sso", "banned"}).Draw(rt, "account")
		if kind == "none" {
			continue
		}
		a := eventmodel.Account{Email: email, Confirmed: kind != "unconfirmed", SSO: kind == "sso", AdminBanned: kind == "banned"}
		err := pool.QueryRow(ctx, `
			WITH u AS (
			  INSERT INTO auth.users (id, email, email_confirmed_at, is_sso_user, banned_until)
			  VALUES (gen_random_uuid(), $1, CASE WHEN $2 THEN now() END, $3, CASE WHEN $4 THEN now() + interval '10 years' END)
			  RETURNING id),
			s AS (INSERT INTO auth.sessions (id, user_id) SELECT gen_random_uuid(), id FROM u)
			SELECT id::text FROM u`, a.Email, a.Confirmed, a.SSO, a.AdminBanned).Scan(&a.ID)
		if err != nil {
			rt.Fatalf("create account: %v", err)
		}
		out = append(out, a)
	}
	return out
}

// requireIdentity fails rt unless every member's link, ban flag, ban and
// sessions are the reference model's, the durable link table agrees with
// the profiles, and accounts nobody may link are left alone.
func requireIdentity(rt *rapid.T, pool *pgxpool.Pool, events []event.Event, accounts []eventmodel.Account) {
	ctx := context.Background()
	type got struct {
		user         string
		bannedBySync bool
		banned       bool
		sessions     int
		kept         string
	}
	read := func(member string) got {
		var g got
		err := pool.QueryRow(ctx, `
			SELECT coalesce(p.auth_user_id::text, ''), p.auth_banned_by_sync, coalesce(u.banned_until > now(), false),
			       (SELECT count(*) FROM auth.sessions s WHERE s.user_id = p.auth_user_id),
			       coalesce((SELECT l.auth_user_id::text || '/' || l.banned_by_sync FROM portalsync.account_links l WHERE l.portal_member_id = p.portal_member_id), '')
			FROM public.profiles p LEFT JOIN auth.users u ON u.id = p.auth_user_id
			WHERE p.portal_member_id = $1`, member).Scan(&g.user, &g.bannedBySync, &g.banned, &g.sessions, &g.kept)
		if err != nil {
			rt.Fatalf("%s: %v", member, err)
		}
		if want := g.user + "/" + fmt.Sprint(g.bannedBySync); g.user != "" && g.kept != want || g.user == "" && g.kept != "" {
			rt.Fatalf("%s: profile %s, account_links %s", member, want, g.kept)
		}
		return g
	}
	linked := map[string]string{} // account -> member
	erasedEmails := eventmodel.ErasedEmails(events)
	for member, want := range eventmodel.ExpectIdentity(events, accounts) {
		g := read(member)
		if g.user != "" {
			if other, ok := linked[g.user]; ok {
				rt.Fatalf("account %s linked to %s and %s", g.user, other, member)
			}
			linked[g.user] = member
		}
		if want.Undecided {
			continue // checked below: at most one sharer, with the e-mail's account
		}
		if g.user != want.Account || g.bannedBySync != want.BannedBySync || (g.user != "" && g.banned != want.Banned) ||
			(g.user != "" && !want.SessionsEither && (g.sessions == 0) != want.SessionsEnded) {
			rt.Fatalf("%s: account %q by-sync %v banned %v sessions %d; model %+v", member, g.user, g.bannedBySync, g.banned, g.sessions, want)
		}
	}
	for _, a := range accounts {
		member, ok := linked[a.ID]
		if ok {
			for _, e := range events {
				if e.Member.ID == member && e.Member.Email != "" && !strings.EqualFold(e.Member.Email, a.Email) {
					rt.Fatalf("account %s linked to %s, whose e-mail is another", a.ID, member)
				}
			}
			continue
		}
		// Nobody's account: the sync left it alone.
		var banned bool
		var sessions int
		if err := pool.QueryRow(ctx, `SELECT coalesce(banned_until > now(), false), (SELECT count(*) FROM auth.sessions WHERE user_id = $1)
			FROM auth.users WHERE id = $1`, a.ID).Scan(&banned, &sessions); err != nil {
			rt.Fatalf("account %s: %v", a.ID, err)
		}
		if erasedEmails[a.Email] && banned && sessions == 0 {
			continue // linked to a member who was then erased (see eventmodel.ErasedEmails)
		}
		if banned != a.AdminBanned || sessions != 1 {
			rt.Fatalf("unlinked account %+v: banned %v sessions %d", a, banned, sessions)
		}
	}
}
