package e2e

import (
	"context"
	"sort"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"
	"go.uber.org/zap/zaptest"

	"github.com/likeperson/portalsync/syncer/replay"
	"github.com/likeperson/portalsync/testkit/supabasetest"
)

// These tests run against the real thing: a database laid out by
// Supabase's own init scripts with GoTrue's auth schema (row-level
// security on auth.users and auth.sessions, postgres not a superuser, auth
// owned by supabase_auth_admin), Supabase Auth built from source with the
// project's access-token hook, the real ingress, and the syncer connected
// as the least-privileged login role docs/CONTRACT.md documents.
//
// They are not parallel: a Supabase Auth process per test and the cluster
// are heavy for a 2-core machine, and Go runs serial tests before the
// parallel ones, so they do not slow down the timing-sensitive fault
// tests of this package.

const password = "a-long-test-password-1"

// supa is one system on its own Supabase database and Auth server.
type supa struct {
	*system
	auth *supabasetest.Auth
	db   *supabasetest.Database
}

func startSupabase(t *testing.T, opts ...Option) *supa {
	t.Helper()
	c := supabasetest.Get(t)
	db := c.NewDatabase(t, supabasetest.Project)
	auth := db.StartAuth(t)
	return &supa{system: start(t, append([]Option{onSupabase(db)}, opts...)...), auth: auth, db: db}
}

// supabaseAdmin connects, as supabase_admin, to a fresh database of the
// Supabase project (its migrations run, no system on it), closed when the
// test ends.
func supabaseAdmin(t *testing.T) *pgx.Conn {
	t.Helper()
	db := supabasetest.Get(t).NewDatabase(t, supabasetest.Project)
	conn, err := pgx.Connect(context.Background(), db.URL("supabase_admin"))
	require.NoError(t, err)
	t.Cleanup(func() { _ = conn.Close(context.Background()) })
	return conn
}

// apply sends an event with the given portal e-mail and waits for its
// success row.
func (s *supa) apply(t *testing.T, typ, member, org, role, email string, at time.Time) evt {
	t.Helper()
	e := s.event(typ, member, org, role, at)
	if email != "" {
		e.Member["email"] = email
	}
	s.send(t, e)
	require.Equal(t, "success", s.waitLogged(t, e.ID))
	return e
}

func (s *supa) signUp(t *testing.T, email string) supabasetest.Reply {
	t.Helper()
	r, err := s.auth.SignUp(context.Background(), email, password)
	require.NoError(t, err)
	return r
}

func (s *supa) signIn(t *testing.T, email string) supabasetest.Reply {
	t.Helper()
	r, err := s.auth.SignIn(context.Background(), email, password)
	require.NoError(t, err)
	return r
}

func (s *supa) refresh(t *testing.T, token string) supabasetest.Reply {
	t.Helper()
	r, err := s.auth.Refresh(context.Background(), token)
	require.NoError(t, err)
	return r
}

// orgRoles reads the org_roles claim of an access token GoTrue issued.
func orgRoles(t *testing.T, r supabasetest.Reply) []string {
	t.Helper()
	require.True(t, r.OK(), "GoTrue answered %d: %s", r.Status, r.Body)
	claims, err := supabasetest.Claims(r.Session.AccessToken)
	require.NoError(t, err)
	raw, ok := claims["org_roles"].([]any)
	require.True(t, ok, "org_roles claim missing: %v", claims)
	out := []string{}
	for _, x := range raw {
		m := x.(map[string]any)
		out = append(out, m["portal_org_id"].(string)+":"+m["role"].(string))
	}
	sort.Strings(out)
	return out
}

// readsAs counts the rows of every table a request with the access token
// reads, as PostgREST runs it (asToken).
func (s *supa) readsAs(t *testing.T, accessToken string) int {
	t.Helper()
	n := 0
	s.asToken(t, accessToken, func(tx pgx.Tx) {
		for table := range rowKeys {
			n += len(visible(t, s.system, tx, table))
		}
	})
	return n
}

// link is a member's identity state: the linked account and the sync's
// ban flag, as the profile and the durable link table hold them, and
// whether the account is banned now.
type link struct {
	User         string
	BannedBySync bool
	Banned       bool
}

func (s *supa) link(t *testing.T, member string) link {
	t.Helper()
	var l link
	var kept *string
	var keptBan *bool
	err := s.pool.QueryRow(context.Background(), `
		SELECT coalesce(p.auth_user_id::text, ''), p.auth_banned_by_sync, coalesce(u.banned_until > now(), false),
		       l.auth_user_id::text, l.banned_by_sync
		FROM profiles p LEFT JOIN auth.users u ON u.id = p.auth_user_id
		LEFT JOIN portalsync.account_links l ON l.portal_member_id = p.portal_member_id
		WHERE p.portal_member_id = $1`, member).Scan(&l.User, &l.BannedBySync, &l.Banned, &kept, &keptBan)
	require.NoError(t, err, member)
	if l.User != "" {
		require.Equal(t, l.User, *kept, "the profile mirrors the kept link")
		require.Equal(t, l.BannedBySync, *keptBan, "the profile mirrors the kept ban flag")
	} else {
		require.Nil(t, kept, "a kept link is on the profile")
	}
	return l
}

// The usual order: the portal adds the member, who signs up later. The
// account is linked at sign-up; the token carries the role; a role change
// is in the next refreshed token; the member reads their rows under RLS.
func TestSupabaseSignUpAfterPortalEvent(t *testing.T) {
	s := startSupabase(t)
	s.apply(t, "membership-created", "sb-after", "org-a", "coordinator", "SB-After@Example.INVALID", base)

	up := s.signUp(t, "sb-after@example.invalid")
	require.True(t, up.OK(), up.Body)
	require.Equal(t, up.Session.User.ID, s.link(t, "sb-after").User, "linked at sign-up, e-mail compared without case")

	in := s.signIn(t, "sb-after@example.invalid")
	require.Equal(t, []string{"org-a:coordinator"}, orgRoles(t, in))
	require.Positive(t, s.readsAs(t, in.Session.AccessToken), "the member reads their rows")

	s.apply(t, "role-updated", "sb-after", "org-a", "org_admin", "", base.Add(time.Minute))
	require.Equal(t, []string{"org-a:org_admin"}, orgRoles(t, s.refresh(t, in.Session.RefreshToken)), "the role change is in the refreshed token")
}

// The other order: the account exists first; the portal event links it,
// and the next refresh carries the role.
func TestSupabaseSignUpBeforePortalEvent(t *testing.T) {
	s := startSupabase(t)
	up := s.signUp(t, "sb-before@example.invalid")
	require.True(t, up.OK(), up.Body)
	require.Empty(t, orgRoles(t, up))

	e := s.apply(t, "membership-created", "sb-before", "org-a", "peer_mentor", "sb-before@example.invalid", base)
	require.Equal(t, up.Session.User.ID, s.link(t, "sb-before").User)
	require.Contains(t, s.logDetail(t, e.ID), "app account linked")
	require.Equal(t, []string{"org-a:peer_mentor"}, orgRoles(t, s.refresh(t, up.Session.RefreshToken)))
}

func (s *supa) logDetail(t *testing.T, eventID string) string {
	t.Helper()
	var d string
	require.NoError(t, s.pool.QueryRow(context.Background(), `SELECT detail FROM portal_sync_log WHERE event_id = $1`, eventID).Scan(&d))
	return d
}

// Deactivation: sign-in and refresh are refused, and the access token the
// member still holds reads nothing; reactivation gives access back.
func TestSupabaseDeactivationAndReactivation(t *testing.T) {
	s := startSupabase(t)
	s.apply(t, "membership-created", "sb-deact", "org-a", "coordinator", "sb-deact@example.invalid", base)
	require.True(t, s.signUp(t, "sb-deact@example.invalid").OK())
	in := s.signIn(t, "sb-deact@example.invalid")
	require.Equal(t, []string{"org-a:coordinator"}, orgRoles(t, in))
	require.Positive(t, s.readsAs(t, in.Session.AccessToken))

	s.apply(t, "membership-deactivated", "sb-deact", "org-a", "", "", base.Add(time.Minute))
	require.Equal(t, link{User: in.Session.User.ID, BannedBySync: true, Banned: true}, s.link(t, "sb-deact"))
	again := s.signIn(t, "sb-deact@example.invalid")
	require.False(t, again.OK(), "sign-in after deactivation: %s", again.Body)
	require.Equal(t, "user_banned", again.ErrorCode, again.Body)
	ref := s.refresh(t, in.Session.RefreshToken)
	require.False(t, ref.OK(), "refresh after deactivation: %s", ref.Body)
	require.Zero(t, s.readsAs(t, in.Session.AccessToken), "the old access token reads nothing")

	s.apply(t, "membership-reactivated", "sb-deact", "org-a", "", "", base.Add(2*time.Minute))
	require.Equal(t, link{User: in.Session.User.ID}, s.link(t, "sb-deact"))
	back := s.signIn(t, "sb-deact@example.invalid")
	require.Equal(t, []string{"org-a:coordinator"}, orgRoles(t, back))
	require.Positive(t, s.readsAs(t, back.Session.AccessToken))
}

// A member deactivated before signing up is locked out from the first
// second: no token at sign-up, the account banned by the sync, no sign-in;
// a reactivation lifts exactly that ban.
func TestSupabaseDeactivatedBeforeSignUp(t *testing.T) {
	s := startSupabase(t)
	s.apply(t, "membership-created", "sb-early", "org-a", "peer_mentor", "sb-early@example.invalid", base)
	s.apply(t, "membership-deactivated", "sb-early", "org-a", "", "", base.Add(time.Minute))

	up := s.signUp(t, "sb-early@example.invalid")
	// The account is created (and banned by the trigger), but the hook
	// refuses the token Supabase Auth would hand out with it.
	require.Equal(t, 403, up.Status, "a token issued at sign-up: %s", up.Body)
	l := s.link(t, "sb-early")
	require.NotEmpty(t, l.User, "the account exists and is linked")
	require.Equal(t, link{User: l.User, BannedBySync: true, Banned: true}, l)
	in := s.signIn(t, "sb-early@example.invalid")
	require.False(t, in.OK(), in.Body)
	require.Equal(t, "user_banned", in.ErrorCode, in.Body)

	s.apply(t, "membership-reactivated", "sb-early", "org-a", "", "", base.Add(2*time.Minute))
	require.Equal(t, []string{"org-a:peer_mentor"}, orgRoles(t, s.signIn(t, "sb-early@example.invalid")))
}

// A shared e-mail links nobody new and says so in the sync log (never the
// e-mail); an existing link is never moved to another member.
func TestSupabaseSharedEmail(t *testing.T) {
	s := startSupabase(t)
	ctx := context.Background()
	s.apply(t, "membership-created", "sb-fam1", "org-a", "org_admin", "family@example.invalid", base)
	s.apply(t, "membership-created", "sb-fam2", "org-a", "peer_mentor", "family@example.invalid", base)
	up := s.signUp(t, "family@example.invalid")
	require.True(t, up.OK(), up.Body)
	require.Empty(t, s.link(t, "sb-fam1").User)
	require.Empty(t, s.link(t, "sb-fam2").User)
	require.Empty(t, orgRoles(t, s.signIn(t, "family@example.invalid")), "nobody's org_admin role in the shared account's token")
	details := queryStrings(t, s.pool, `SELECT portal_member_id || ': ' || detail FROM portal_sync_log WHERE event_type = 'account-link' ORDER BY 1`)
	require.Equal(t, []string{
		"sb-fam1: e-mail shared by 2 portal members; app account not linked",
		"sb-fam2: e-mail shared by 2 portal members; app account not linked",
	}, details)
	e := s.apply(t, "membership-updated", "sb-fam1", "org-a", "", "family@example.invalid", base.Add(time.Minute))
	require.Contains(t, s.logDetail(t, e.ID), "e-mail shared by several portal members; app account not linked")
	require.Empty(t, s.link(t, "sb-fam1").User)

	// A link made while the e-mail was one member's stays with that member.
	s.apply(t, "membership-created", "sb-solo", "org-b", "coordinator", "solo@example.invalid", base)
	solo := s.signUp(t, "solo@example.invalid")
	require.True(t, solo.OK(), solo.Body)
	e = s.apply(t, "membership-created", "sb-other", "org-a", "org_admin", "solo@example.invalid", base.Add(time.Minute))
	require.Contains(t, s.logDetail(t, e.ID), "app account not linked")
	require.Equal(t, solo.Session.User.ID, s.link(t, "sb-solo").User, "never moved")
	require.Empty(t, s.link(t, "sb-other").User)
	require.Equal(t, []string{"org-b:coordinator"}, orgRoles(t, s.signIn(t, "solo@example.invalid")))

	var leaked int
	require.NoError(t, s.pool.QueryRow(ctx, `SELECT count(*) FROM portal_sync_log WHERE detail ILIKE '%@example.invalid%'`).Scan(&leaked))
	require.Zero(t, leaked, "an e-mail in the sync log")
}

// A link follows the member, not the e-mail: after the portal and the
// account change e-mails (and another member takes the old one), a wipe
// and replay restore every link and the sync's ban flags exactly, and a
// later reactivation lifts the ban.
func TestSupabaseEmailChangeThenReplay(t *testing.T) {
	s := startSupabase(t)
	ctx := context.Background()
	s.apply(t, "membership-created", "sb-move", "org-a", "coordinator", "old@example.invalid", base)
	move := s.signUp(t, "old@example.invalid")
	require.True(t, move.OK(), move.Body)
	s.apply(t, "membership-created", "sb-gone", "org-a", "peer_mentor", "gone@example.invalid", base)
	require.True(t, s.signUp(t, "gone@example.invalid").OK())
	s.apply(t, "membership-deactivated", "sb-gone", "org-a", "", "", base.Add(time.Minute))

	// The portal's e-mail changes, another member gets the old one, and the
	// account's e-mail changes too.
	s.apply(t, "membership-updated", "sb-move", "org-a", "", "new@example.invalid", base.Add(time.Minute))
	s.apply(t, "membership-created", "sb-heir", "org-a", "org_admin", "old@example.invalid", base.Add(2*time.Minute))
	r, err := s.auth.AdminUpdateUser(ctx, move.Session.User.ID, map[string]any{"email": "moved@example.invalid", "email_confirm": true})
	require.NoError(t, err)
	require.True(t, r.OK(), r.Body)
	require.Equal(t, move.Session.User.ID, s.link(t, "sb-move").User, "the link follows the member")
	require.Empty(t, s.link(t, "sb-heir").User)
	before := map[string]link{}
	for _, m := range []string{"sb-move", "sb-gone", "sb-heir"} {
		before[m] = s.link(t, m)
	}
	require.True(t, before["sb-gone"].BannedBySync)

	// Wipe what a resync rebuilds and replay the stream as the syncer's role.
	_, err = s.pool.Exec(ctx, `TRUNCATE organizations, profiles, organization_memberships, role_assignments, portal_sync_log`)
	require.NoError(t, err)
	pool, err := pgxpool.New(ctx, s.db.URL(supabasetest.SyncerRole))
	require.NoError(t, err)
	defer pool.Close()
	nc, err := nats.Connect(s.natsURL)
	require.NoError(t, err)
	defer nc.Close()
	js, err := jetstream.New(nc)
	require.NoError(t, err)
	_, err = replay.New(js, pool, zaptest.NewLogger(t)).Run(ctx, replay.Options{Stream: testStream.Name}, &countProgress{})
	require.NoError(t, err)
	for m, want := range before {
		require.Equal(t, want, s.link(t, m), "%s after the replay", m)
	}
	require.Equal(t, []string{"org-a:coordinator"}, orgRoles(t, s.signIn(t, "moved@example.invalid")))

	s.apply(t, "membership-reactivated", "sb-gone", "org-a", "", "", base.Add(3*time.Minute))
	require.Equal(t, link{User: before["sb-gone"].User}, s.link(t, "sb-gone"), "the sync's ban lifted after the replay")
	require.Equal(t, []string{"org-a:peer_mentor"}, orgRoles(t, s.signIn(t, "gone@example.invalid")))
}

// The syncer's login role holds no right on Supabase's auth tables, only
// the identity functions; everything above ran through it.
func TestSupabaseSyncerRoleLeastPrivilege(t *testing.T) {
	s := startSupabase(t)
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, s.db.URL(supabasetest.SyncerRole))
	require.NoError(t, err)
	defer conn.Close(ctx)
	for _, stmt := range []string{
		`SELECT id FROM auth.users`,
		`DELETE FROM auth.sessions`,
		`UPDATE auth.users SET banned_until = NULL`,
		`INSERT INTO portalsync.account_links VALUES ('x', gen_random_uuid())`,
		`SELECT public.custom_access_token_hook('{}')`,
	} {
		_, err := conn.Exec(ctx, stmt)
		require.True(t, isDenied(err), "%s: %v", stmt, err)
	}
	// The deactivation still bans and ends sessions through it.
	s.apply(t, "membership-created", "sb-lp", "org-a", "peer_mentor", "sb-lp@example.invalid", base)
	in := s.signUp(t, "sb-lp@example.invalid")
	require.True(t, in.OK(), in.Body)
	s.apply(t, "membership-deactivated", "sb-lp", "org-a", "", "", base.Add(time.Minute))
	require.Equal(t, link{User: in.Session.User.ID, BannedBySync: true, Banned: true}, s.link(t, "sb-lp"))
	var sessions int
	require.NoError(t, s.pool.QueryRow(ctx, `SELECT count(*) FROM auth.sessions WHERE user_id = $1`, in.Session.User.ID).Scan(&sessions))
	require.Zero(t, sessions)
}
