package main

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"github.com/likeperson/portalsync/pkg/event"
	"github.com/likeperson/portalsync/syncer/deadletter"
	"github.com/likeperson/portalsync/syncer/store"
)

// tracesInDatabase lists the tables (and sync-log rows) of the public and
// portalsync schemas whose rows contain any of needles, case-insensitively.
// auth.users is the app's: the account is banned, and deleting it is the
// app's decision (docs/DATA-PROTECTION.md).
func tracesInDatabase(t *testing.T, pool *pgxpool.Pool, needles ...string) []string {
	t.Helper()
	ctx := context.Background()
	rows, err := pool.Query(ctx, `SELECT format('%I.%I', table_schema, table_name) FROM information_schema.tables
		WHERE table_schema IN ('public', 'portalsync') AND table_type = 'BASE TABLE'`)
	require.NoError(t, err)
	tables, err := pgx.CollectRows(rows, pgx.RowTo[string])
	require.NoError(t, err)
	var found []string
	for _, table := range tables {
		for _, n := range needles {
			var hits int
			require.NoError(t, pool.QueryRow(ctx, fmt.Sprintf(`SELECT count(*) FROM %s t WHERE t::text ILIKE '%%' || $1 || '%%'`, table), n).Scan(&hits))
			if hits > 0 {
				found = append(found, fmt.Sprintf("%s holds %q", table, n))
			}
		}
	}
	var sessions int
	require.NoError(t, pool.QueryRow(ctx, `SELECT count(*) FROM auth.sessions s JOIN auth.users u ON u.id = s.user_id
		WHERE u.email = ANY($1)`, needles).Scan(&sessions))
	if sessions > 0 {
		found = append(found, "auth.sessions holds the member's sessions")
	}
	return found
}

// tracesInStream lists messages of a stream whose subject, headers or body
// contain any of needles.
func tracesInStream(t *testing.T, js jetstream.JetStream, name string, needles ...string) []string {
	t.Helper()
	ctx := context.Background()
	s, err := js.Stream(ctx, name)
	require.NoError(t, err)
	info, err := s.Info(ctx)
	require.NoError(t, err)
	var found []string
	for seq := info.State.FirstSeq; seq <= info.State.LastSeq && info.State.Msgs > 0; seq++ {
		m, err := s.GetMsg(ctx, seq)
		if err != nil {
			continue // deleted
		}
		text := strings.ToLower(m.Subject + fmt.Sprint(m.Header) + string(m.Data))
		for _, n := range needles {
			if strings.Contains(text, strings.ToLower(n)) {
				found = append(found, fmt.Sprintf("%s seq %d holds %q", name, seq, n))
			}
		}
	}
	return found
}

// TestEraseCommandLeavesNoTrace: `syncer erase --member ID` leaves no
// table, log row, stream message or dead letter holding the member's ID,
// name, e-mail or phone; the account is banned and its sessions gone; the
// log keeps its rows; replay --all and a new event leave the member erased.
func TestEraseCommandLeavesNoTrace(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	b := setupCLI(t)
	db, js := b.db, b.js
	dlq, err := deadletter.Open(ctx, js, deadletter.Config{Name: "DEAD", EventStream: "EVENTS"})
	require.NoError(t, err)

	const (
		gone  = "5e1f0000-0000-4000-8000-0000000000e1"
		kept  = "5e1f0000-0000-4000-8000-0000000000e2"
		email = "kare.erased@example.invalid"
		first = "Kåre"
		last  = "Slettmegsen"
		phone = "+47 555 99 123"
		user  = "00000000-0000-0000-0000-0000000000e1"
	)
	personal := []string{gone, first, last, email, phone}
	at := time.Date(2026, 11, 25, 10, 0, 0, 0, time.UTC)
	var seq uint64
	publish := func(ev event.Event) *nats.Msg {
		msg, n := b.publish(t, ev)
		seq = n
		return msg
	}
	member := event.Member{ID: gone, Email: email, FirstName: first, LastName: last, Phone: phone}
	publish(event.Event{ID: "e1", Type: event.MembershipCreated, OccurredAt: at, Organization: event.Organization{ID: "o1", Name: "HLF"}, Member: member, Role: event.RoleCoordinator})
	publish(event.Event{ID: "e2", Type: event.MembershipCreated, OccurredAt: at, Organization: event.Organization{ID: "o2"}, Member: member, Role: event.RolePeerMentor})
	bad := publish(event.Event{ID: "e3", Type: event.RoleUpdated, OccurredAt: at.Add(time.Minute), Organization: event.Organization{ID: "o1"}, Member: member, Role: event.RoleOrgAdmin})
	require.NoError(t, dlq.Add(ctx, deadletter.Letter{Subject: bad.Subject, Header: bad.Header, Data: bad.Data, StreamSeq: seq, Deliveries: 1, Reason: "test"}))
	publish(event.Event{ID: "k1", Type: event.MembershipCreated, OccurredAt: at, Organization: event.Organization{ID: "o1"},
		Member: event.Member{ID: kept, Email: "kept@example.invalid"}, Role: event.RolePeerMentor})
	_, err = db.Pool.Exec(ctx, `INSERT INTO auth.users (id, email, email_confirmed_at) VALUES ($1, $2, now())`, user, email)
	require.NoError(t, err)
	_, err = db.Pool.Exec(ctx, `INSERT INTO auth.sessions (id, user_id) VALUES (gen_random_uuid(), $1)`, user)
	require.NoError(t, err)

	b.mustRun(t, "replay", "--all")
	require.NotEmpty(t, tracesInDatabase(t, db.Pool, personal...), "the fixture holds the member")
	var logRows int
	require.NoError(t, db.Pool.QueryRow(ctx, `SELECT count(*) FROM portal_sync_log`).Scan(&logRows))

	// The ID as the portal may write it: upper case, in braces.
	out := b.mustRun(t, "erase", "--member", "{"+strings.ToUpper(gone)+"}", "--dead-letter-stream", "DEAD")
	require.Contains(t, out, "member erased; profile and 2 memberships deleted; app access revoked")
	require.Contains(t, out, "purged 3 events")

	require.Empty(t, tracesInDatabase(t, db.Pool, personal...))
	require.Empty(t, tracesInStream(t, js, "EVENTS", personal...))
	require.Empty(t, tracesInStream(t, js, "DEAD", personal...))
	n, err := dlq.Count(ctx)
	require.NoError(t, err)
	require.Zero(t, n)
	var banned *time.Time
	require.NoError(t, db.Pool.QueryRow(ctx, `SELECT banned_until FROM auth.users WHERE id = $1`, user).Scan(&banned))
	require.NotNil(t, banned, "the account is banned; deleting it is the app's")
	var afterRows, hashed int
	require.NoError(t, db.Pool.QueryRow(ctx, `SELECT count(*), count(*) FILTER (WHERE portal_member_id = $1) FROM portal_sync_log`,
		store.MemberHash(gone)).Scan(&afterRows, &hashed))
	require.Equal(t, logRows+3, afterRows, "log rows are kept, and the erasure logged: its own row and one per organization of the member (2)")
	require.Equal(t, 6, hashed, "the member's three rows and the erasure's carry the hash")
	var sources []string
	rows, err := db.Pool.Query(ctx, `SELECT DISTINCT coalesce(source, '') FROM portal_sync_log WHERE event_type = 'member-deleted'`)
	require.NoError(t, err)
	sources, err = pgx.CollectRows(rows, pgx.RowTo[string])
	require.NoError(t, err)
	require.Equal(t, []string{"erase-command"}, sources)

	// Replay cannot bring the member back, nor can an event sent again.
	b.mustRun(t, "replay", "--all")
	publish(event.Event{ID: "e4", Type: event.MembershipUpdated, OccurredAt: at.Add(time.Hour), Organization: event.Organization{ID: "o1"}, Member: member})
	b.mustRun(t, "replay", "--all")
	var profiles int
	require.NoError(t, db.Pool.QueryRow(ctx, `SELECT count(*) FROM profiles WHERE portal_member_id = $1`, gone).Scan(&profiles))
	require.Zero(t, profiles)
	var status, detail string
	require.NoError(t, db.Pool.QueryRow(ctx, `SELECT status, detail FROM portal_sync_log WHERE event_id = 'e4'`).Scan(&status, &detail))
	require.Equal(t, "skipped", status)
	require.Equal(t, "member erased", detail)
	found := tracesInDatabase(t, db.Pool, personal...)
	require.Empty(t, found)

	// The other member is untouched.
	require.NoError(t, db.Pool.QueryRow(ctx, `SELECT count(*) FROM profiles WHERE portal_member_id = $1`, kept).Scan(&profiles))
	require.Equal(t, 1, profiles)
}

// TestEraseCommandPurgesDeadLettersOfEncodedID: a member ID outside the
// plain subject alphabet (here with a '.') is a subject token only once
// encoded (event.MemberKey); erasure purges its dead letters by that key,
// and leaves those of a member whose ID is a prefix of it.
func TestEraseCommandPurgesDeadLettersOfEncodedID(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	b := setupCLI(t)
	dlq, err := deadletter.Open(ctx, b.js, deadletter.Config{Name: "DEAD", EventStream: "EVENTS"})
	require.NoError(t, err)

	const gone, kept = "kari.nordmann", "kari"
	require.NotEqual(t, gone, event.MemberKey(gone), "the ID needs encoding")
	at := time.Date(2026, 11, 25, 10, 0, 0, 0, time.UTC)
	for i, id := range []string{gone, kept} {
		msg, seq := b.publish(t, event.Event{ID: fmt.Sprintf("e%d", i), Type: event.MembershipCreated, OccurredAt: at,
			Organization: event.Organization{ID: "o1"}, Member: event.Member{ID: id, Email: id + "@example.invalid"}, Role: event.RolePeerMentor})
		require.NoError(t, dlq.Add(ctx, deadletter.Letter{Subject: msg.Subject, Header: msg.Header, Data: msg.Data, StreamSeq: seq, Deliveries: 1, Reason: "test"}))
	}
	b.mustRun(t, "replay", "--all")
	require.NotEmpty(t, tracesInStream(t, b.js, "DEAD", gone), "the fixture holds the member's dead letter")

	require.Contains(t, b.mustRun(t, "erase", "--member", gone, "--dead-letter-stream", "DEAD"), "member erased")

	require.Empty(t, tracesInStream(t, b.js, "DEAD", gone), "the member's dead letters are purged")
	require.Empty(t, tracesInStream(t, b.js, "EVENTS", gone))
	entries, err := dlq.List(ctx)
	require.NoError(t, err)
	require.Len(t, entries, 1, "the other member's dead letter is kept")
	require.Equal(t, kept, entries[0].MemberID)
}
