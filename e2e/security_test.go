package e2e

import (
	"context"
	"database/sql"
	"encoding/json"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	_ "github.com/jackc/pgx/v5/stdlib"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"
	"go.uber.org/zap/zaptest"

	"github.com/likeperson/portalsync/pkg/event"
	"github.com/likeperson/portalsync/schema"
	"github.com/likeperson/portalsync/syncer/replay"
	"github.com/likeperson/portalsync/syncer/store"
)

// The syncer works as a login role that is only a member of
// portalsync_syncer, and that role can do nothing beyond what ACCESS.md
// lists.
func TestSyncerLeastPrivilege(t *testing.T) {
	t.Parallel()
	sys := start(t, withoutSyncer())
	ctx := context.Background()
	roleURL := loginRole(t, sys, "portalsync_syncer")
	user := sys.addAuthUser(t, "lp-member@example.invalid")
	_, err := sys.pool.Exec(ctx, `INSERT INTO auth.sessions (id, user_id) VALUES (gen_random_uuid(), $1)`, user)
	require.NoError(t, err)
	sys.startSyncer(t, roleURL)

	var ids []string
	for _, e := range []evt{
		sys.event("membership-created", "lp-member", "lp-org", "peer_mentor", base),
		sys.event("role-updated", "lp-member", "lp-org", "coordinator", base.Add(time.Minute)),
		sys.event("membership-updated", "lp-member", "lp-org", "", base.Add(2*time.Minute)),
		sys.event("membership-deactivated", "lp-member", "lp-org", "", base.Add(3*time.Minute)),
		sys.event("membership-reactivated", "lp-other", "lp-org", "", base),
		sys.event("membership-merged", "lp-other", "lp-org", "", base),
	} {
		sys.send(t, e)
		ids = append(ids, e.ID)
	}
	for _, id := range ids[:5] {
		require.Equal(t, "success", sys.waitLogged(t, id))
	}
	require.Equal(t, "skipped", sys.waitLogged(t, ids[5]))
	var banned *time.Time
	var sessions int
	require.NoError(t, sys.pool.QueryRow(ctx, `SELECT banned_until FROM auth.users WHERE id = $1`, user).Scan(&banned))
	require.NotNil(t, banned, "banned by the least-privilege role")
	require.NoError(t, sys.pool.QueryRow(ctx, `SELECT count(*) FROM auth.sessions WHERE user_id = $1`, user).Scan(&sessions))
	require.Zero(t, sessions)

	// Erasure works as the role too, through portalsync.erase_member only.
	erased := sys.event("member-deleted", "lp-member", "lp-org", "", base.Add(4*time.Minute))
	sys.send(t, erased)
	require.Equal(t, "success", sys.waitLogged(t, erased.ID))
	var left int
	require.NoError(t, sys.pool.QueryRow(ctx, `SELECT count(*) FROM profiles WHERE portal_member_id = 'lp-member'`).Scan(&left))
	require.Zero(t, left)

	// A poison message: the failed row is written by the role too.
	js := sys.jetStream(t)
	msg := nats.NewMsg(event.Subject("lp-poison"))
	msg.Data = []byte(`{"id":"lp-poison"}`)
	msg.Header.Set(jetstream.MsgIDHeader, "lp-poison")
	_, err = js.PublishMsg(ctx, msg)
	require.NoError(t, err)
	require.Equal(t, "failed", sys.waitLogged(t, "lp-poison"))

	pool, err := pgxpool.New(ctx, roleURL)
	require.NoError(t, err)
	defer pool.Close()
	// Replay (dry run and real) and the log purge work as the role.
	r := replay.New(js, pool, zaptest.NewLogger(t))
	rep, err := r.Run(ctx, replay.Options{Stream: sys.stream.Name, DryRun: true}, &countProgress{})
	require.NoError(t, err)
	require.Zero(t, rep.TotalChanges(), "%+v", rep.Changes)
	_, err = r.Run(ctx, replay.Options{Stream: sys.stream.Name}, &countProgress{})
	require.NoError(t, err)
	_, err = store.New(pool).PurgeLog(ctx, 24*time.Hour, 100)
	require.NoError(t, err)

	// Nothing beyond.
	for _, stmt := range []string{
		`DELETE FROM profiles`,
		`DELETE FROM organization_memberships`,
		`DELETE FROM role_assignments`,
		`DELETE FROM organizations`,
		`UPDATE portal_sync_log SET detail = 'x'`,
		`TRUNCATE portal_sync_log`,
		`DROP TABLE profiles`,
		`ALTER TABLE profiles ADD COLUMN x int`,
		`CREATE TABLE public.x (a int)`,
		`CREATE TABLE portalsync.x (a int)`,
		`SELECT encrypted_password FROM auth.users`,
		`SELECT raw_user_meta_data FROM auth.users`,
		`UPDATE auth.users SET email = 'x@example.invalid'`,
		`INSERT INTO auth.users (id, email) VALUES (gen_random_uuid(), 'x@example.invalid')`,
		`DELETE FROM auth.users`,
		`INSERT INTO auth.sessions (id, user_id) SELECT gen_random_uuid(), id FROM auth.users LIMIT 1`,
		`SELECT * FROM auth.refresh_tokens`,
		`DELETE FROM portalsync.goose_db_version`,
		`CREATE ROLE x`,
		`SELECT public.custom_access_token_hook('{}')`,
	} {
		_, err := pool.Exec(ctx, stmt)
		require.True(t, isDenied(err), "%s: %v", stmt, err)
	}
	db, err := sql.Open("pgx", roleURL)
	require.NoError(t, err)
	defer db.Close()
	_, err = schema.Migrate(ctx, db)
	require.Error(t, err, "the syncer role cannot run migrations")
}

// hook calls the custom access token hook as Supabase Auth does and
// returns the org_roles claim it sets; it fails the test if the hook
// refuses the token.
func (s *system) hook(t *testing.T, user string) []map[string]any {
	t.Helper()
	roles, refusal := s.hookCall(t, user)
	require.Empty(t, refusal, "the hook refused a token")
	return roles
}

// hookCall calls the hook and returns the org_roles claim, or the error
// message of a refusal (Supabase Auth then issues no token).
func (s *system) hookCall(t *testing.T, user string) (roles []map[string]any, refusal string) {
	t.Helper()
	ctx := context.Background()
	var out []byte
	in, err := json.Marshal(map[string]any{"user_id": user, "claims": map[string]any{"sub": user, "role": "authenticated", "aud": "authenticated"}, "authentication_method": "password"})
	require.NoError(t, err)
	tx, err := s.pool.Begin(ctx)
	require.NoError(t, err)
	defer func() { _ = tx.Rollback(ctx) }()
	_, err = tx.Exec(ctx, `SET LOCAL ROLE supabase_auth_admin`)
	require.NoError(t, err)
	require.NoError(t, tx.QueryRow(ctx, `SELECT public.custom_access_token_hook($1::jsonb)::text`, string(in)).Scan(&out))
	var ev struct {
		Error *struct {
			HTTPCode int    `json:"http_code"`
			Message  string `json:"message"`
		} `json:"error"`
		UserID string `json:"user_id"`
		Claims struct {
			Sub      string           `json:"sub"`
			Role     string           `json:"role"`
			OrgRoles []map[string]any `json:"org_roles"`
		} `json:"claims"`
	}
	require.NoError(t, json.Unmarshal(out, &ev))
	if ev.Error != nil {
		require.Equal(t, 403, ev.Error.HTTPCode)
		require.NotEmpty(t, ev.Error.Message)
		return nil, ev.Error.Message
	}
	require.Equal(t, user, ev.Claims.Sub, "existing claims kept")
	require.Equal(t, "authenticated", ev.Claims.Role)
	require.NotNil(t, ev.Claims.OrgRoles, "org_roles always present")
	return ev.Claims.OrgRoles, ""
}

// requireHookRefuses requires the hook to refuse a token to user.
func (s *system) requireHookRefuses(t *testing.T, user string) {
	t.Helper()
	_, refusal := s.hookCall(t, user)
	require.NotEmpty(t, refusal, "the hook issued a token to a deactivated member")
}

func roleList(roles []map[string]any) []string {
	var out []string
	for _, r := range roles {
		out = append(out, r["portal_org_id"].(string)+":"+r["role"].(string))
	}
	return out
}

// A role change is what the member's next token carries; a deactivated
// member gets no token (the hook refuses it).
func TestRolesInTokens(t *testing.T) {
	t.Parallel()
	sys := start(t)
	user := sys.addAuthUser(t, "tok@example.invalid")
	last := ""
	send := func(e evt) { sys.send(t, e); last = e.ID; require.Equal(t, "success", sys.waitLogged(t, last)) }

	send(sys.event("membership-created", "tok", "org-a", "peer_mentor", base))
	send(sys.event("membership-created", "tok", "org-b", "coordinator", base))
	require.Equal(t, []string{"org-a:peer_mentor", "org-b:coordinator"}, roleList(sys.hook(t, user)))

	send(sys.event("role-updated", "tok", "org-a", "org_admin", base.Add(time.Minute)))
	require.Equal(t, []string{"org-a:org_admin", "org-b:coordinator"}, roleList(sys.hook(t, user)), "the next session has the new role")

	send(sys.event("membership-deactivated", "tok", "org-b", "", base.Add(2*time.Minute)))
	require.Equal(t, []string{"org-a:org_admin"}, roleList(sys.hook(t, user)))

	send(sys.event("membership-deactivated", "tok", "org-a", "", base.Add(3*time.Minute)))
	sys.requireHookRefuses(t, user) // a deactivated member gets no token at all

	require.Empty(t, sys.hook(t, "00000000-0000-0000-0000-0000000000ff"), "unknown user")

	// Only Supabase Auth may call it.
	for _, role := range []string{"authenticated", "anon"} {
		sys.as(t, persona{user: user}, role, func(tx pgx.Tx) {
			_, err := tx.Exec(context.Background(), `SELECT public.custom_access_token_hook('{}')`)
			require.True(t, isDenied(err), "%s: %v", role, err)
		})
	}
}

// The lock-out: a member who still holds a valid access token reads
// nothing from the moment the deactivation is applied, cannot refresh
// (sessions gone), cannot sign in again (banned), and a new token would
// carry no roles.
func TestDeactivatedMemberLockedOut(t *testing.T) {
	t.Parallel()
	sys := start(t)
	ctx := context.Background()
	user := sys.addAuthUser(t, "lock@example.invalid")
	_, err := sys.pool.Exec(ctx, `INSERT INTO auth.sessions (id, user_id) VALUES (gen_random_uuid(), $1)`, user)
	require.NoError(t, err)
	created := sys.event("membership-created", "lock", "org-a", "coordinator", base)
	sys.send(t, created)
	require.Equal(t, "success", sys.waitLogged(t, created.ID))
	token := persona{member: "lock", user: user} // the same JWT claims throughout

	readable := func() int {
		n := 0
		sys.as(t, token, "authenticated", func(tx pgx.Tx) {
			for table := range rowKeys {
				n += len(visible(t, sys, tx, table))
			}
		})
		return n
	}
	require.Positive(t, readable(), "active: reads own rows and the org's")

	deact := sys.event("membership-deactivated", "lock", "org-a", "", base.Add(time.Minute))
	sys.send(t, deact)
	require.Equal(t, "success", sys.waitLogged(t, deact.ID))
	require.Zero(t, readable(), "the still-valid token reads nothing")
	var banned *time.Time
	var sessions int
	require.NoError(t, sys.pool.QueryRow(ctx, `SELECT banned_until FROM auth.users WHERE id = $1`, user).Scan(&banned))
	require.NotNil(t, banned)
	require.NoError(t, sys.pool.QueryRow(ctx, `SELECT count(*) FROM auth.sessions WHERE user_id = $1`, user).Scan(&sessions))
	require.Zero(t, sessions)
	sys.requireHookRefuses(t, user)
}
