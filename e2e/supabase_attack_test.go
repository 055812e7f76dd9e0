package e2e

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/likeperson/portalsync/testkit/schematest"
	"github.com/likeperson/portalsync/testkit/supabasetest"
)

// These tests attack account linking as an outsider would, against Supabase
// Auth: unusual orders and inputs, and the API roles calling what only the
// syncer and the trigger may.

// asToken runs fn as PostgREST runs a request with the access token:
// logged in as authenticator, SET LOCAL ROLE authenticated, the verified
// claims in request.jwt.claims.
func (s *supa) asToken(t *testing.T, accessToken string, fn func(tx pgx.Tx)) {
	t.Helper()
	ctx := context.Background()
	claims, err := supabasetest.Claims(accessToken)
	require.NoError(t, err)
	b, err := json.Marshal(claims)
	require.NoError(t, err)
	conn, err := pgx.Connect(ctx, s.db.URL("authenticator"))
	require.NoError(t, err)
	defer conn.Close(ctx)
	tx, err := conn.Begin(ctx)
	require.NoError(t, err)
	defer func() { _ = tx.Rollback(ctx) }()
	schematest.Become(t, tx, "authenticated", b)
	fn(tx)
}

// None of the identity functions, nor the access-token hook, can be called
// by Supabase's API roles the way PostgREST runs requests (authenticator,
// SET LOCAL ROLE): they run with the owner's rights on auth's tables.
func TestSupabaseIdentityFunctionsRefuseAPIRoles(t *testing.T) {
	db := supabasetest.Get(t).NewDatabase(t, supabasetest.Project)
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, db.URL("authenticator"))
	require.NoError(t, err)
	defer conn.Close(ctx)
	calls := []string{
		`SELECT * FROM portalsync.link_members('{m}')`,
		`SELECT * FROM portalsync.link_members('{m}', '{m}', '{x@example.invalid}')`,
		`SELECT * FROM portalsync.apply_access('{m}')`,
		`SELECT portalsync.lock_emails('{x@example.invalid}')`,
		`SELECT * FROM portalsync.email_accounts('x@example.invalid')`,
		`SELECT portalsync.link_account()`,
		`SELECT public.custom_access_token_hook('{"user_id": "00000000-0000-0000-0000-000000000000", "claims": {}}')`,
	}
	for _, role := range []string{"anon", "authenticated"} {
		for _, call := range calls {
			tx, err := conn.Begin(ctx)
			require.NoError(t, err)
			_, err = tx.Exec(ctx, "SET LOCAL ROLE "+role)
			require.NoError(t, err)
			_, err = tx.Exec(ctx, `SELECT set_config('request.jwt.claims', '{"sub": "00000000-0000-0000-0000-000000000000", "role": "`+role+`"}', true)`)
			require.NoError(t, err)
			_, err = tx.Exec(ctx, call)
			require.True(t, isDenied(err), "%s may run %s: %v", role, call, err)
			require.NoError(t, tx.Rollback(ctx))
		}
	}
}

// Who may execute the project's functions and the access-token hook, by
// the catalog: the syncer's role the four it calls, the app's users the
// policy helpers, Supabase Auth the hook, nobody else but their owner
// (the trigger functions and the linking rule, email_accounts, nobody) —
// service_role included, which Supabase's default privileges hand every
// function postgres creates in public.
func TestSupabaseIdentityFunctionExecuteHolders(t *testing.T) {
	holders := queryStrings(t, supabaseAdmin(t), `
		SELECT p.proname || ' ' || CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE pg_get_userbyid(a.grantee) END
		FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace,
		     aclexplode(coalesce(p.proacl, acldefault('f', p.proowner))) a
		WHERE (n.nspname = 'portalsync' OR n.nspname = 'public' AND p.proname IN ('custom_access_token_hook', 'sync_log'))
		  AND a.grantee <> p.proowner AND a.privilege_type = 'EXECUTE'
		ORDER BY 1`)
	require.Equal(t, []string{
		"apply_access portalsync_syncer",
		"custom_access_token_hook supabase_auth_admin",
		"erase_member portalsync_syncer",
		"link_members portalsync_syncer",
		// The policy helpers (docs/ACCESS.md).
		"my_org_ids authenticated",
		"my_profile_id authenticated",
		"newer portalsync_syncer", // the upserts' guard (00026), inlined
		// The app's contract (docs/APP.md): not service_role's either.
		"sync_log authenticated",
	}, holders, "every function of the portalsync schema, the hook and the contract's function")
}

// Every SECURITY DEFINER function of the project pins search_path empty,
// so a caller's search_path (or a temporary table named like one of ours)
// cannot redirect what it reads or writes.
func TestSupabaseSecurityDefinerSearchPathPinned(t *testing.T) {
	ctx := context.Background()
	loose := queryStrings(t, supabaseAdmin(t), `
		SELECT n.nspname || '.' || p.proname FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
		WHERE n.nspname IN ('public', 'portalsync') AND p.prosecdef
		  AND NOT coalesce('search_path=""' = ANY (p.proconfig), false)
		  AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_proc'::regclass AND d.objid = p.oid AND d.deptype = 'e')`)
	require.Empty(t, loose, "SECURITY DEFINER functions without search_path=''")

	// The syncer's role shadows the tables in pg_temp and points its
	// search_path there; linking still reads and writes the real ones.
	s := startSupabase(t)
	sc, err := pgx.Connect(ctx, s.db.URL(supabasetest.SyncerRole))
	require.NoError(t, err)
	defer sc.Close(ctx)
	for _, stmt := range []string{
		`CREATE TEMP TABLE profiles (portal_member_id text, email text, auth_user_id uuid, auth_banned_by_sync boolean, status text, updated_at timestamptz)`,
		`CREATE TEMP TABLE account_links (portal_member_id text, auth_user_id uuid, banned_by_sync boolean)`,
		`SET search_path = pg_temp, public`,
	} {
		_, err := sc.Exec(ctx, stmt)
		require.NoError(t, err, stmt)
	}
	up := s.signUp(t, "sb-hijack@example.invalid")
	require.True(t, up.OK(), up.Body)
	s.apply(t, "membership-created", "sb-hijack", "org-a", "peer_mentor", "sb-hijack@example.invalid", base)
	rows, err := sc.Query(ctx, `SELECT portal_member_id, outcome FROM portalsync.link_members('{sb-hijack}')`)
	require.NoError(t, err)
	rows.Close()
	require.NoError(t, rows.Err())
	require.Equal(t, up.Session.User.ID, s.link(t, "sb-hijack").User)
}

// Hostile and unusual orders, one Supabase Auth server for all of them
// (each case has members, organizations and e-mails of its own).
func TestSupabaseLinkingAttacks(t *testing.T) {
	s := startSupabase(t)
	ctx := context.Background()

	t.Run("EmailCaseDiffers", func(t *testing.T) {
		up := s.signUp(t, "Sb.Case@Example.INVALID")
		require.True(t, up.OK(), up.Body)
		s.apply(t, "membership-created", "sb-case", "org-case", "coordinator", "SB.CASE@example.invalid", base)
		require.Equal(t, up.Session.User.ID, s.link(t, "sb-case").User, "the portal's e-mail in other case links")
	})

	t.Run("UnconfirmedThenConfirmed", func(t *testing.T) {
		s.apply(t, "membership-created", "sb-unconf", "org-unconf", "coordinator", "sb-unconf@example.invalid", base)
		u, err := s.auth.AdminCreateUser(ctx, "sb-unconf@example.invalid", password, false)
		require.NoError(t, err)
		require.True(t, u.OK(), u.Body)
		require.Empty(t, s.link(t, "sb-unconf").User, "an unconfirmed e-mail links nobody")
		s.apply(t, "membership-updated", "sb-unconf", "org-unconf", "", "sb-unconf@example.invalid", base.Add(time.Minute))
		require.Empty(t, s.link(t, "sb-unconf").User, "nor does an event while it is unconfirmed")
		r, err := s.auth.AdminUpdateUser(ctx, u.Session.User.ID, map[string]any{"email_confirm": true})
		require.NoError(t, err)
		require.True(t, r.OK(), r.Body)
		require.Equal(t, u.Session.User.ID, s.link(t, "sb-unconf").User, "linked once confirmed")
		require.Equal(t, []string{"org-unconf:coordinator"}, orgRoles(t, s.signIn(t, "sb-unconf@example.invalid")))
	})

	t.Run("ConfirmedWhileDeactivated", func(t *testing.T) {
		s.apply(t, "membership-created", "sb-unconf-off", "org-unconf", "coordinator", "sb-unconf-off@example.invalid", base)
		s.apply(t, "membership-deactivated", "sb-unconf-off", "org-unconf", "", "", base.Add(time.Minute))
		u, err := s.auth.AdminCreateUser(ctx, "sb-unconf-off@example.invalid", password, false)
		require.NoError(t, err)
		require.True(t, u.OK(), u.Body)
		r, err := s.auth.AdminUpdateUser(ctx, u.Session.User.ID, map[string]any{"email_confirm": true})
		require.NoError(t, err)
		require.True(t, r.OK(), r.Body)
		require.Equal(t, link{User: u.Session.User.ID, BannedBySync: true, Banned: true}, s.link(t, "sb-unconf-off"))
		in := s.signIn(t, "sb-unconf-off@example.invalid")
		require.False(t, in.OK(), in.Body)
	})

	t.Run("SSOAccountNeverLinked", func(t *testing.T) {
		s.apply(t, "membership-created", "sb-sso", "org-sso", "org_admin", "sb-sso@example.invalid", base)
		// GoTrue makes SSO users only from a SAML assertion; the row it
		// would write, as its own role writes it.
		id := insertAuthUser(t, s, "sb-sso@example.invalid", true)
		require.Empty(t, s.link(t, "sb-sso").User, "the trigger links no SSO account")
		s.apply(t, "membership-updated", "sb-sso", "org-sso", "", "sb-sso@example.invalid", base.Add(time.Minute))
		require.Empty(t, s.link(t, "sb-sso").User, "nor does an event")
		var linked int
		require.NoError(t, s.pool.QueryRow(ctx, `SELECT count(*) FROM portalsync.account_links WHERE auth_user_id = $1`, id).Scan(&linked))
		require.Zero(t, linked)
	})

	t.Run("AccountEmailChangesToMembers", func(t *testing.T) {
		up := s.signUp(t, "sb-chg-before@example.invalid")
		require.True(t, up.OK(), up.Body)
		s.apply(t, "membership-created", "sb-chg", "org-chg", "peer_mentor", "sb-chg@example.invalid", base)
		require.Empty(t, s.link(t, "sb-chg").User)
		r, err := s.auth.AdminUpdateUser(ctx, up.Session.User.ID, map[string]any{"email": "sb-chg@example.invalid", "email_confirm": true})
		require.NoError(t, err)
		require.True(t, r.OK(), r.Body)
		require.Equal(t, up.Session.User.ID, s.link(t, "sb-chg").User, "linked when its e-mail becomes the member's")
		// A linked account that takes another member's e-mail keeps its
		// link and takes no other.
		s.apply(t, "membership-created", "sb-chg2", "org-chg", "org_admin", "sb-chg2@example.invalid", base)
		r, err = s.auth.AdminUpdateUser(ctx, up.Session.User.ID, map[string]any{"email": "sb-chg2@example.invalid", "email_confirm": true})
		require.NoError(t, err)
		require.True(t, r.OK(), r.Body)
		s.apply(t, "membership-updated", "sb-chg2", "org-chg", "", "sb-chg2@example.invalid", base.Add(time.Minute))
		require.Equal(t, up.Session.User.ID, s.link(t, "sb-chg").User)
		require.Empty(t, s.link(t, "sb-chg2").User)
		require.Equal(t, []string{"org-chg:peer_mentor"}, orgRoles(t, s.signIn(t, "sb-chg2@example.invalid")))
	})

	t.Run("PortalEmailChangesToLinkedMembers", func(t *testing.T) {
		s.apply(t, "membership-created", "sb-own", "org-own", "peer_mentor", "sb-own@example.invalid", base)
		own := s.signUp(t, "sb-own@example.invalid")
		require.True(t, own.OK(), own.Body)
		s.apply(t, "membership-created", "sb-taker", "org-own", "org_admin", "sb-taker@example.invalid", base)
		e := s.apply(t, "membership-updated", "sb-taker", "org-own", "", "SB-OWN@example.invalid", base.Add(time.Minute))
		require.Contains(t, s.logDetail(t, e.ID), "app account not linked")
		require.Equal(t, own.Session.User.ID, s.link(t, "sb-own").User, "never moved")
		require.Empty(t, s.link(t, "sb-taker").User)
		require.Equal(t, []string{"org-own:peer_mentor"}, orgRoles(t, s.signIn(t, "sb-own@example.invalid")), "no org_admin for the account")
	})

	t.Run("DeleteLinkedAccount", func(t *testing.T) {
		s.apply(t, "membership-created", "sb-del", "org-del", "coordinator", "sb-del@example.invalid", base)
		first := s.signUp(t, "sb-del@example.invalid")
		require.True(t, first.OK(), first.Body)
		s.apply(t, "membership-deactivated", "sb-del", "org-del", "", "", base.Add(time.Minute))
		require.Equal(t, link{User: first.Session.User.ID, BannedBySync: true, Banned: true}, s.link(t, "sb-del"))
		r, err := s.auth.AdminDeleteUser(ctx, first.Session.User.ID)
		require.NoError(t, err)
		require.True(t, r.OK(), r.Body)
		require.Equal(t, link{}, s.link(t, "sb-del"), "no link and no ban flag left for a deleted account")

		s.apply(t, "membership-reactivated", "sb-del", "org-del", "", "", base.Add(2*time.Minute))
		second := s.signUp(t, "sb-del@example.invalid")
		require.True(t, second.OK(), second.Body)
		require.Equal(t, link{User: second.Session.User.ID}, s.link(t, "sb-del"), "a new account links afresh")
		require.Equal(t, []string{"org-del:coordinator"}, orgRoles(t, second))
	})

	t.Run("OrgAdminSeesSharedEmailConflict", func(t *testing.T) {
		s.apply(t, "membership-created", "sb-boss", "org-fam", "org_admin", "sb-boss@example.invalid", base)
		boss := s.signUp(t, "sb-boss@example.invalid")
		require.True(t, boss.OK(), boss.Body)
		s.apply(t, "membership-created", "sb-kid1", "org-fam", "peer_mentor", "sb-home@example.invalid", base)
		s.apply(t, "membership-created", "sb-kid2", "org-fam", "peer_mentor", "sb-home@example.invalid", base)
		s.apply(t, "membership-created", "sb-kid2", "org-other", "peer_mentor", "sb-home@example.invalid", base)
		require.True(t, s.signUp(t, "sb-home@example.invalid").OK())
		var seen []string
		s.asToken(t, boss.Session.AccessToken, func(tx pgx.Tx) {
			seen = queryStrings(t, tx, `SELECT portal_member_id || ' ' || coalesce(portal_org_id, '-') || ': ' || detail
				FROM portal_sync_log WHERE event_type = 'account-link' ORDER BY 1`)
		})
		require.Equal(t, []string{
			"sb-kid1 org-fam: e-mail shared by 2 portal members; app account not linked",
			"sb-kid2 org-fam: e-mail shared by 2 portal members; app account not linked",
		}, seen, "the org admin of the members' organization sees the conflict (and only their organization's rows)")
	})
}

// insertAuthUser writes a confirmed auth.users row as Supabase Auth's own
// role would, and returns its id.
func insertAuthUser(t *testing.T, s *supa, email string, sso bool) string {
	t.Helper()
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, s.db.URL("supabase_auth_admin"))
	require.NoError(t, err)
	defer conn.Close(ctx)
	var id string
	require.NoError(t, conn.QueryRow(ctx, `
		INSERT INTO auth.users (instance_id, id, aud, role, email, email_confirmed_at, is_sso_user, created_at, updated_at)
		VALUES ('00000000-0000-0000-0000-000000000000', gen_random_uuid(), 'authenticated', 'authenticated', $1, now(), $2, now(), now())
		RETURNING id::text`, email, sso).Scan(&id))
	return id
}
