package e2e

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"github.com/likeperson/portalsync/pkg/event"
	"github.com/likeperson/portalsync/pkg/stream"
	"github.com/likeperson/portalsync/syncer/deadletter"
	"github.com/likeperson/portalsync/syncer/replay"
	"github.com/likeperson/portalsync/syncer/store"
)

// TestMemberDeletedErasesEverywhere: the portal deletes a contact; after
// the member-deleted event no table, log row, stream message or dead letter
// holds the member's ID, name, e-mail or phone, the account is banned with
// its sessions gone, and replay --all leaves the member erased.
func TestMemberDeletedErasesEverywhere(t *testing.T) {
	t.Parallel()
	sys := start(t)
	ctx := context.Background()
	const member = "5e1f0000-0000-4000-8000-0000000000f1"
	user := sys.addAuthUser(t, member+"@example.invalid")
	_, err := sys.pool.Exec(ctx, `INSERT INTO auth.sessions (id, user_id) VALUES (gen_random_uuid(), $1)`, user)
	require.NoError(t, err)

	var personal []string
	created := sys.event("membership-created", strings.ToUpper(member), "er-org", "coordinator", base)
	for _, k := range []string{"email", "first_name", "phone"} {
		personal = append(personal, created.Member[k].(string))
	}
	personal = append(personal, member)
	sys.send(t, created)
	require.Equal(t, "success", sys.waitLogged(t, created.ID))
	other := sys.event("membership-created", "er-other", "er-org", "peer_mentor", base)
	sys.send(t, other)

	// A dead letter of the member: a poison message on their subject.
	js := sys.jetStream(t)
	poison := nats.NewMsg(event.Subject(member))
	poison.Data = []byte(`{"id":"er-poison","member":{"id":"` + member + `"}}`)
	poison.Header.Set(jetstream.MsgIDHeader, "er-poison")
	poison.Header.Set(stream.HeaderMemberID, member)
	_, err = js.PublishMsg(ctx, poison)
	require.NoError(t, err)
	require.Equal(t, "failed", sys.waitLogged(t, "er-poison"))
	dlq := deadletter.New(js, deadletter.Config{EventStream: sys.stream.Name})
	require.Eventually(t, func() bool { n, err := dlq.Count(ctx); return err == nil && n == 1 }, 10*time.Second, 10*time.Millisecond)

	deleted := sys.event("member-deleted", "{"+member+"}", "er-org", "", base.Add(time.Hour))
	delete(deleted.Org, "name")
	sys.send(t, deleted)
	require.Equal(t, "success", sys.waitLogged(t, deleted.ID))
	// The purge follows the commit: wait for the stream to lose the member.
	s, err := js.Stream(ctx, sys.stream.Name)
	require.NoError(t, err)
	require.Eventually(t, func() bool {
		info, err := s.Info(ctx, jetstream.WithSubjectFilter(event.Subject(member)))
		return err == nil && info.State.Subjects[event.Subject(member)] == 0
	}, 10*time.Second, 10*time.Millisecond)

	requireNoTrace := func() {
		t.Helper()
		rows, err := sys.pool.Query(ctx, `SELECT format('%I.%I', table_schema, table_name) FROM information_schema.tables
			WHERE table_schema IN ('public', 'portalsync') AND table_type = 'BASE TABLE'`)
		require.NoError(t, err)
		tables, err := pgx.CollectRows(rows, pgx.RowTo[string])
		require.NoError(t, err)
		for _, table := range tables {
			for _, p := range personal {
				var n int
				require.NoError(t, sys.pool.QueryRow(ctx, fmt.Sprintf(`SELECT count(*) FROM %s t WHERE t::text ILIKE '%%' || $1 || '%%'`, table), p).Scan(&n))
				require.Zero(t, n, "%s holds %q", table, p)
			}
		}
		for _, name := range []string{sys.stream.Name, deadletter.DefaultName} {
			st, err := js.Stream(ctx, name)
			require.NoError(t, err)
			info, err := st.Info(ctx)
			require.NoError(t, err)
			for seq := info.State.FirstSeq; info.State.Msgs > 0 && seq <= info.State.LastSeq; seq++ {
				m, err := st.GetMsg(ctx, seq)
				if err != nil {
					continue
				}
				text := strings.ToLower(m.Subject + fmt.Sprint(m.Header) + string(m.Data))
				for _, p := range personal {
					require.NotContains(t, text, strings.ToLower(p), "%s seq %d", name, seq)
				}
			}
		}
	}
	requireNoTrace()
	var banned *time.Time
	var sessions, hashed int
	require.NoError(t, sys.pool.QueryRow(ctx, `SELECT banned_until FROM auth.users WHERE id = $1`, user).Scan(&banned))
	require.NotNil(t, banned)
	require.NoError(t, sys.pool.QueryRow(ctx, `SELECT count(*) FROM auth.sessions WHERE user_id = $1`, user).Scan(&sessions))
	require.Zero(t, sessions)
	require.NoError(t, sys.pool.QueryRow(ctx, `SELECT count(*) FROM portal_sync_log WHERE portal_member_id = $1`, store.MemberHash(member)).Scan(&hashed))
	require.Equal(t, 4, hashed, "created, poison and deleted rows are kept, pseudonymized; the erasure has a row for er-org too")

	// replay --all, then the portal sending an old event again: still erased.
	_, err = replay.New(js, sys.pool, sys.logger(t, "replay")).Run(ctx, replay.Options{Stream: sys.stream.Name}, &countProgress{})
	require.NoError(t, err)
	again := sys.event("membership-updated", member, "er-org", "", base.Add(2*time.Hour))
	sys.send(t, again)
	require.Equal(t, "skipped", sys.waitLogged(t, again.ID))
	// Its message is purged too.
	require.Eventually(t, func() bool {
		info, err := s.Info(ctx, jetstream.WithSubjectFilter(event.Subject(member)))
		return err == nil && info.State.Subjects[event.Subject(member)] == 0
	}, 10*time.Second, 10*time.Millisecond)
	requireNoTrace()
	var profiles int
	require.NoError(t, sys.pool.QueryRow(ctx, `SELECT count(*) FROM profiles WHERE portal_member_id = $1`, member).Scan(&profiles))
	require.Zero(t, profiles)
	require.Equal(t, "success", sys.waitLogged(t, other.ID), "the other member is untouched")
}
