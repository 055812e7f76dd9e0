package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/likeperson/portalsync/pkg/event"
)

func TestReplayAndDLQCommands(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	b := setupCLI(t)
	db := b.db
	for i := range 5 {
		b.publish(t, event.Event{
			ID: fmt.Sprintf("e%d", i), Type: event.MembershipCreated, OccurredAt: time.Date(2026, 11, 25, 10, i, 0, 0, time.UTC),
			Organization: event.Organization{ID: "o1"}, Member: event.Member{ID: fmt.Sprintf("m%d", i)}, Role: event.RolePeerMentor,
		})
	}
	common := b.common
	cli := func(args ...string) (string, error) {
		var out, errOut bytes.Buffer
		err := run(ctx, append(args, common...), &out, &errOut)
		return out.String(), err
	}

	_, err := cli("replay")
	require.ErrorContains(t, err, "say what to replay")

	out, err := cli("replay", "--all", "--dry-run")
	require.NoError(t, err)
	require.Contains(t, out, "would apply 5")
	require.Contains(t, out, "public.profiles")
	require.Contains(t, out, "nothing was written")
	var n int
	require.NoError(t, db.Pool.QueryRow(ctx, `SELECT count(*) FROM profiles`).Scan(&n))
	require.Zero(t, n)

	out, err = cli("replay", "--all")
	require.NoError(t, err)
	require.Contains(t, out, "applied 5")
	require.NoError(t, db.Pool.QueryRow(ctx, `SELECT count(*) FROM profiles`).Scan(&n))
	require.Equal(t, 5, n)

	out, err = cli("replay", "--since", "1h", "--dry-run")
	require.NoError(t, err)
	require.Contains(t, out, "no row would change")

	out, err = cli("replay", "--member", "m3")
	require.NoError(t, err)
	require.Contains(t, out, "read 1 events")

	// No syncer runs (nothing listens at --syncer-url): unreachable, exit 3.
	out, err = cli("status", "--syncer-url", "http://"+closedPort(t))
	require.Equal(t, 3, exitCode(t, err))
	require.Contains(t, out, "EVENTS: 5 events (seq 1..5)")
	require.Contains(t, out, "not created yet")
	require.Regexp(t, `dead letters +0`, out)
	require.Contains(t, out, "o1")
	out, err = cli("status", "--json", "--syncer-url", "http://"+closedPort(t))
	require.Equal(t, 3, exitCode(t, err))
	var st status
	require.NoError(t, json.Unmarshal([]byte(out), &st))
	require.EqualValues(t, 5, st.NATS.Stream.Messages)
	require.EqualValues(t, 5, st.Database.LastApplied.StreamSeq)
	require.Len(t, st.Database.Organizations, 1)

	dlqArgs := []string{"--nats-url", b.nats.URL(), "--stream-name", "EVENTS"}
	var buf bytes.Buffer
	require.NoError(t, run(ctx, append([]string{"dlq", "list"}, dlqArgs...), &buf, &buf))
	require.Contains(t, buf.String(), "no dead letters")
	buf.Reset()
	require.NoError(t, run(ctx, append([]string{"dlq", "redrive", "--all"}, dlqArgs...), &buf, &buf))
	require.Contains(t, buf.String(), "no dead letters")
	require.Error(t, run(ctx, append([]string{"dlq", "redrive", "--event", "nope"}, dlqArgs...), &buf, &buf))
}

func TestParseSince(t *testing.T) {
	t.Parallel()
	now := time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC)
	got, err := parseSince("24h", now)
	require.NoError(t, err)
	require.Equal(t, now.Add(-24*time.Hour), got)
	got, err = parseSince("2026-11-25T10:00:00Z", now)
	require.NoError(t, err)
	require.Equal(t, time.Date(2026, 11, 25, 10, 0, 0, 0, time.UTC), got)
	_, err = parseSince("yesterday", now)
	require.Error(t, err)
}

// Flags that exclude each other say so: in the usage line when one of them
// is required (dlq redrive), and as an error when both are given.
func TestExclusiveFlags(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	var out bytes.Buffer
	require.NoError(t, run(ctx, []string{"dlq", "redrive", "--help"}, &out, &out))
	require.Contains(t, out.String(), "Usage: syncer dlq redrive (--event=ID | --all) [flags]\n")
	for _, args := range [][]string{
		{"dlq", "redrive", "--event", "e1", "--all"},
		{"replay", "--database-url", "postgres://x", "--all", "--member", "m1"},
		{"replay", "--database-url", "postgres://x", "--all", "--since", "1h"},
		{"replay", "--database-url", "postgres://x", "--since", "1h", "--from-seq", "3"},
	} {
		require.ErrorContains(t, run(ctx, args, &out, &out), "can't be used together", args)
	}
}
