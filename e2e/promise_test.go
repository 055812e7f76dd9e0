package e2e

import (
	"context"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/likeperson/portalsync/syncer/consumer"
	"github.com/likeperson/portalsync/syncer/service"
	"github.com/likeperson/portalsync/testkit/servicetest"
)

// ageThreshold stands in for the alerts' 60 and 120 s
// (deploy/prometheus/alerts.yml): 2 s, or PORTALSYNC_E2E_AGE_THRESHOLD
// (e.g. 61s to watch the age cross the warning's own threshold).
func ageThreshold(t *testing.T) time.Duration {
	t.Helper()
	v := os.Getenv("PORTALSYNC_E2E_AGE_THRESHOLD")
	if v == "" {
		return 2 * time.Second
	}
	d, err := time.ParseDuration(v)
	require.NoError(t, err, "PORTALSYNC_E2E_AGE_THRESHOLD")
	return d
}

// oldestAge reads portalsync_syncer_oldest_unapplied_seconds from a
// syncer's /metrics.
func oldestAge(t *testing.T, base string) float64 {
	t.Helper()
	v, err := strconv.ParseFloat(metricValue(t, scrape(t, base), "portalsync_syncer_oldest_unapplied_seconds "), 64)
	require.NoError(t, err)
	return v
}

// healthRow is a process's row of portalsync.sync_health, read past the
// syncer (the database itself stays up in these tests).
type healthRow struct {
	State      string
	Reason     *string
	Oldest     *time.Time
	ReportedAt time.Time
}

func (s *system) healthRow(t *testing.T, process string) (healthRow, bool) {
	t.Helper()
	var r healthRow
	err := s.pool.QueryRow(context.Background(), `SELECT state, reason, oldest_unapplied_at, reported_at
		FROM portalsync.sync_health WHERE process = $1`, process).Scan(&r.State, &r.Reason, &r.Oldest, &r.ReportedAt)
	if err == pgx.ErrNoRows {
		return r, false
	}
	require.NoError(t, err)
	return r, true
}

// appHealth is public.sync_health as an org admin reads it.
type appHealth struct {
	State  string
	Reason *string
	Oldest *time.Time
}

func (s *system) appHealth(t *testing.T, admin string) appHealth {
	t.Helper()
	var h appHealth
	s.asUser(t, admin, func(tx pgx.Tx) {
		require.NoError(t, tx.QueryRow(context.Background(), `SELECT state, paused_reason, oldest_unapplied_at FROM public.sync_health`).
			Scan(&h.State, &h.Reason, &h.Oldest))
	})
	return h
}

// orgAdmin makes an app user who is org admin of an organization (through
// an event the syncer applies) and returns its auth id.
func (s *system) orgAdmin(t *testing.T, member, org string) string {
	t.Helper()
	admin := s.addAuthUser(t, member+"@example.invalid")
	e := s.event("membership-created", member, org, "org_admin", base)
	s.send(t, e)
	require.Equal(t, "success", s.waitLogged(t, e.ID))
	return admin
}

// The two-minute promise is watched by the syncer's own metric. Two
// replicas run with the database cut (a proxy in front of it): they are
// paused, apply nothing, and go on exporting
// portalsync_syncer_oldest_unapplied_seconds. The events accepted
// meanwhile age there, by the second, on both replicas alike (one
// stream-wide value), until they cross the threshold (the alerts' rule:
// the largest over the replicas above it; the test's threshold is short).
// Nothing reaches sync_health while the database is unreachable: the rows
// keep what was written before. Once it is back every event is applied,
// the age falls to 0, and both rows say running again.
func TestTwoMinutePromiseWatched(t *testing.T) {
	t.Parallel()
	threshold := ageThreshold(t)
	sys := start(t, withoutSyncer())
	proxy := newTCPProxy(t, hostOf(t, sys.dbURL))
	replica := func(name string) string {
		return sys.runSyncer(t, viaProxy(t, sys.dbURL, proxy), func(c *service.Config) {
			tightBudget(c)
			c.BacklogInterval = 100 * time.Millisecond
			c.HealthProcess = "syncer:e2e:" + name
			c.HealthTick = 50 * time.Millisecond
		})
	}
	replicas := map[string]string{"syncer:e2e:a": replica("a"), "syncer:e2e:b": replica("b")}
	for process, h := range replicas {
		servicetest.WaitReady(t, h, nil)
		require.Eventually(t, func() bool { r, ok := sys.healthRow(t, process); return ok && r.State == "running" },
			10*time.Second, 20*time.Millisecond, "%s reports running", process)
	}
	admin := sys.orgAdmin(t, "age-admin", "org-age")
	first := workload(31, "age-a", 5, 20)
	require.Len(t, sys.sendAll(t, first, 2), len(first))
	sys.waitApplied(t, ids(first), 20*time.Second)
	for _, h := range replicas {
		require.Eventually(t, func() bool { return oldestAge(t, h) == 0 }, 10*time.Second, 20*time.Millisecond, "nothing waits")
	}
	require.Equal(t, "running", sys.appHealth(t, admin).State)

	proxy.Cut()
	before := time.Now()
	during := workload(32, "age-b", 5, 20)
	require.Len(t, sys.sendAll(t, during[:1], 1), 1, "the ingress accepts while the database is down")
	afterFirst := time.Now()
	require.Len(t, sys.sendAll(t, during[1:], 2), len(during)-1)
	last := map[string]time.Time{}
	for process, h := range replicas {
		require.Eventually(t, func() bool { return syncerStatus(t, h).Consumer.Paused == consumer.ReasonDatabase },
			20*time.Second, 20*time.Millisecond, "%s pauses", process)
		r, ok := sys.healthRow(t, process)
		require.True(t, ok)
		last[process] = r.ReportedAt
	}

	require.Eventually(t, func() bool {
		return max(oldestAge(t, replicas["syncer:e2e:a"]), oldestAge(t, replicas["syncer:e2e:b"])) > threshold.Seconds()
	}, threshold+30*time.Second, 50*time.Millisecond, "the age crosses %s", threshold)
	t1 := time.Now()
	ageA, ageB := oldestAge(t, replicas["syncer:e2e:a"]), oldestAge(t, replicas["syncer:e2e:b"])
	t2 := time.Now()
	for _, age := range []float64{ageA, ageB} {
		// The first event accepted during the outage: stored after
		// before, and before afterFirst.
		require.LessOrEqual(t, age, t2.Sub(before).Seconds()+0.05, "not older than the first event sent")
		require.GreaterOrEqual(t, age, t1.Sub(afterFirst).Seconds()-0.05, "as old as the first event sent")
	}
	require.InDelta(t, ageA, ageB, 0.5, "both replicas report the same stream-wide age")
	require.Equal(t, len(first)+1, sys.countLog(t, "processed"), "nothing applied while the database is down")
	for process, at := range last {
		r, _ := sys.healthRow(t, process)
		require.Equal(t, at, r.ReportedAt, "%s: nothing written to sync_health while the database is unreachable", process)
		require.Equal(t, "running", r.State, "%s: the row keeps the last state written", process)
	}

	var restoredAt time.Time
	require.NoError(t, sys.pool.QueryRow(context.Background(), `SELECT now()`).Scan(&restoredAt))
	proxy.Restore()
	sys.waitApplied(t, ids(during), 30*time.Second)
	for process, h := range replicas {
		require.Eventually(t, func() bool { return oldestAge(t, h) == 0 }, 10*time.Second, 20*time.Millisecond, "%s: the age falls to 0", process)
		require.Eventually(t, func() bool {
			r, ok := sys.healthRow(t, process)
			return ok && r.State == "running" && r.ReportedAt.After(restoredAt)
		}, 10*time.Second, 20*time.Millisecond, "%s: reported again once the database answers", process)
	}
	require.Equal(t, "running", sys.appHealth(t, admin).State)
}

// public.sync_health, as an org admin reads it, follows what the syncer
// does: running; catching_up while an event waits longer than
// CatchingUpAfter (its transaction waits for a row lock the test holds:
// the syncer is not paused, it is behind), with when that event arrived;
// running once it is applied; paused with a fixed reason while NATS is
// down (the database is up, so the pause is written); running again.
func TestSyncHealthFollowsTheSyncer(t *testing.T) {
	t.Parallel()
	sys := start(t, withoutSyncer())
	health := sys.runSyncer(t, sys.dbURL, func(c *service.Config) {
		c.BacklogInterval = 100 * time.Millisecond
		c.CatchingUpAfter = time.Second
		c.HealthTick = 50 * time.Millisecond
		c.HealthProcess = "syncer:e2e:h"
	})
	servicetest.WaitReady(t, health, nil)
	admin := sys.orgAdmin(t, "sh-admin", "org-sh")
	require.Eventually(t, func() bool { return sys.appHealth(t, admin).State == "running" }, 10*time.Second, 20*time.Millisecond)

	ctx := context.Background()
	tx, err := sys.pool.Begin(ctx)
	require.NoError(t, err)
	defer func() { _ = tx.Rollback(ctx) }()
	// The organization's row, locked for update: the event's transaction
	// waits for it (its foreign keys share-lock it), readers do not.
	_, err = tx.Exec(ctx, "SELECT 1 FROM organizations WHERE portal_org_id = 'org-sh' FOR UPDATE")
	require.NoError(t, err)
	sent := time.Now()
	e := sys.event("membership-created", "sh-late", "org-sh", "peer_mentor", base)
	sys.send(t, e)
	var h appHealth
	require.Eventually(t, func() bool { h = sys.appHealth(t, admin); return h.State == "catching_up" },
		20*time.Second, 20*time.Millisecond, "catching_up once the event has waited a second")
	require.NotNil(t, h.Oldest)
	require.WithinDuration(t, sent, *h.Oldest, time.Second, "when the waiting event arrived")
	require.Nil(t, h.Reason)
	require.NoError(t, tx.Rollback(ctx))
	require.Equal(t, "success", sys.waitLogged(t, e.ID))
	require.Eventually(t, func() bool { h = sys.appHealth(t, admin); return h.State == "running" && h.Oldest == nil },
		10*time.Second, 20*time.Millisecond)

	sys.nats.Stop()
	require.Eventually(t, func() bool { h = sys.appHealth(t, admin); return h.State == "paused" },
		30*time.Second, 20*time.Millisecond, "paused while NATS is down")
	require.Equal(t, consumer.ReasonNATS, *h.Reason, "a fixed phrase, not the error")
	sys.nats.Start()
	servicetest.WaitReady(t, health, nil)
	require.Eventually(t, func() bool { return sys.appHealth(t, admin).State == "running" }, 30*time.Second, 20*time.Millisecond)
}
