package e2e

import (
	"context"
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"
	"go.uber.org/zap/zaptest"

	"github.com/likeperson/portalsync/pkg/event"
	"github.com/likeperson/portalsync/syncer/replay"
)

// snapshot renders what the app reads, keyed by portal IDs (row ids and
// bookkeeping times differ after a rebuild).
// Lines starting with one of the skip prefixes are left out.
func (s *system) snapshot(t *testing.T, skip ...string) string {
	t.Helper()
	ctx := context.Background()
	var b strings.Builder
	for _, q := range []string{
		`SELECT portal_org_id || '|' || name || '|' || coalesce(portal_updated_at::text, '') FROM organizations ORDER BY 1`,
		`SELECT portal_member_id || '|' || coalesce(email, '') || '|' || coalesce(first_name, '') || '|' || coalesce(last_name, '') || '|' ||
		        coalesce(phone, '') || '|' || status || '|' || coalesce(deactivated_at::text, '') || '|' || coalesce(portal_updated_at::text, '')
		   FROM profiles ORDER BY 1`,
		`SELECT p.portal_member_id || '|' || o.portal_org_id || '|' || m.status || '|' || coalesce(m.deactivated_at::text, '') || '|' ||
		        coalesce(m.status_portal_at::text, '') || '|' || m.portal_updated_at::text
		   FROM organization_memberships m JOIN profiles p ON p.id = m.profile_id JOIN organizations o ON o.id = m.organization_id ORDER BY 1`,
		`SELECT p.portal_member_id || '|' || o.portal_org_id || '|' || r.role || '|' || r.portal_updated_at::text || '|' || r.portal_event_id
		   FROM role_assignments r JOIN profiles p ON p.id = r.profile_id JOIN organizations o ON o.id = r.organization_id ORDER BY 1`,
		// Handled (success, or skipped as superseded: which one depends on
		// what the tables held when the event came) or not.
		`SELECT event_id || '|' || CASE WHEN status IN ('success', 'skipped') THEN 'handled' ELSE status END FROM portal_sync_log ORDER BY 1`,
	} {
		rows, err := s.pool.Query(ctx, q)
		require.NoError(t, err)
		lines, err := pgx.CollectRows(rows, pgx.RowTo[string])
		require.NoError(t, err)
	line:
		for _, l := range lines {
			for _, p := range skip {
				if strings.HasPrefix(l, p) {
					continue line
				}
			}
			b.WriteString(l)
			b.WriteString("\n")
		}
		b.WriteString("\n--\n")
	}
	return b.String()
}

func (s *system) replayer(t *testing.T) *replay.Replayer {
	t.Helper()
	return replay.New(s.jetStream(t), s.pool, zaptest.NewLogger(t))
}

type countProgress struct{ total, done int64 }

func (p *countProgress) Start(total int64) { p.total = total }
func (p *countProgress) Add(n int)         { p.done += int64(n) }
func (p *countProgress) Finish()           {}

// startApplied starts a system and sends it count events of the
// workload (seed, prefix, members), waiting until every one is applied.
func startApplied(t *testing.T, seed uint64, prefix string, members, count int) (*system, []event.Event) {
	t.Helper()
	sys := start(t)
	events := sys.sendAll(t, workload(seed, prefix, members, count), 4)
	sys.waitApplied(t, ids(events), 60*time.Second)
	return sys, events
}

func TestReplayRebuildsWipedAndCorruptedTables(t *testing.T) {
	t.Parallel()
	sys, events := startApplied(t, 7, "replay", 30, 400)
	ctx := context.Background()
	before := sys.snapshot(t)
	r := sys.replayer(t)
	all := replay.Options{Stream: testStream.Name}

	// A dry run on an intact database changes nothing.
	var p countProgress
	rep, err := r.Run(ctx, replay.Options{Stream: testStream.Name, DryRun: true}, &p)
	require.NoError(t, err)
	require.Equal(t, len(events), rep.Read)
	require.EqualValues(t, len(events), p.total)
	require.EqualValues(t, len(events), p.done)
	require.Zero(t, rep.TotalChanges(), "%+v", rep.Changes)

	// Corrupt: wrong roles, memberships flipped, a member deleted.
	_, err = sys.pool.Exec(ctx, `UPDATE role_assignments SET role = 'org_admin' WHERE role = 'peer_mentor'`)
	require.NoError(t, err)
	_, err = sys.pool.Exec(ctx, `UPDATE organization_memberships SET status = CASE status WHEN 'active' THEN 'inactive' ELSE 'active' END`)
	require.NoError(t, err)
	_, err = sys.pool.Exec(ctx, `DELETE FROM profiles WHERE portal_member_id = 'replay-m3'`)
	require.NoError(t, err)
	require.NotEqual(t, before, sys.snapshot(t))

	// The dry run sees the damage and repairs nothing.
	rep, err = r.Run(ctx, replay.Options{Stream: testStream.Name, DryRun: true}, &countProgress{})
	require.NoError(t, err)
	require.NotZero(t, rep.TotalChanges())
	tables := map[string]bool{}
	for _, c := range rep.Changes {
		tables[c.Table] = true
	}
	require.True(t, tables["public.role_assignments"], "%+v", rep.Changes)
	require.True(t, tables["public.profiles"], "%+v", rep.Changes)
	require.NotEqual(t, before, sys.snapshot(t))

	rep, err = r.Run(ctx, all, &countProgress{})
	require.NoError(t, err)
	require.Equal(t, len(events), rep.Applied+rep.Skipped)
	require.Equal(t, before, sys.snapshot(t), "repaired")

	// Wipe everything, the sync log included, and rebuild while live
	// events keep arriving for other members.
	_, err = sys.pool.Exec(ctx, `TRUNCATE organizations, profiles, organization_memberships, role_assignments, portal_sync_log`)
	require.NoError(t, err)
	live := make(chan []string, 1)
	go func() {
		var evs []string
		for i := range 20 {
			e := sys.event("membership-created", fmt.Sprintf("live-%d", i), "live-org", "peer_mentor", base)
			sys.send(t, e)
			evs = append(evs, e.ID)
		}
		live <- evs
	}()
	rep, err = r.Run(ctx, all, &countProgress{})
	require.NoError(t, err)
	liveIDs := <-live
	sys.waitApplied(t, liveIDs, 20*time.Second)
	require.GreaterOrEqual(t, rep.Read, len(events))
	sys.requireMatchesModel(t, append(events, liveEvents(liveIDs)...))

	// The rebuilt database equals the original, the live events aside.
	require.Equal(t, before, sys.snapshot(t, "live-", "evt_"), "rebuilt")

	// A dry run again: nothing to do.
	rep, err = r.Run(ctx, replay.Options{Stream: testStream.Name, DryRun: true}, &countProgress{})
	require.NoError(t, err)
	require.Zero(t, rep.TotalChanges(), "%+v", rep.Changes)
}

// liveEvents rebuilds the model input of the live events sent above.
func liveEvents(ids []string) []event.Event {
	out := make([]event.Event, len(ids))
	for i, id := range ids {
		out[i] = event.Event{ID: id, Type: event.MembershipCreated, OccurredAt: base,
			Organization: event.Organization{ID: "live-org"}, Member: event.Member{ID: fmt.Sprintf("live-%d", i), FirstName: "Fornavnlive-" + fmt.Sprint(i)},
			Role: event.RolePeerMentor}
	}
	return out
}

func TestReplayFilters(t *testing.T) {
	t.Parallel()
	sys := start(t)
	ctx := context.Background()
	events := sys.sendAll(t, workload(8, "filter", 10, 200), 2)
	sys.waitApplied(t, ids(events), 30*time.Second)
	r := sys.replayer(t)

	countMember, countOrg := 0, 0
	for _, e := range events {
		if e.Member.ID == "filter-m1" {
			countMember++
		}
		if e.Organization.ID == "filter-o2" {
			countOrg++
		}
	}
	rep, err := r.Run(ctx, replay.Options{Stream: testStream.Name, MemberID: "filter-m1"}, &countProgress{})
	require.NoError(t, err)
	require.Equal(t, countMember, rep.Read)

	rep, err = r.Run(ctx, replay.Options{Stream: testStream.Name, OrgID: "filter-o2"}, &countProgress{})
	require.NoError(t, err)
	require.Equal(t, countOrg, rep.Applied+rep.Skipped)
	require.Equal(t, len(events)-countOrg, rep.FilteredOut)

	rep, err = r.Run(ctx, replay.Options{Stream: testStream.Name, FromSeq: 151}, &countProgress{})
	require.NoError(t, err)
	require.Equal(t, 50, rep.Read)
	require.EqualValues(t, 200, rep.LastSeq)

	rep, err = r.Run(ctx, replay.Options{Stream: testStream.Name, Since: time.Now().Add(time.Hour)}, &countProgress{})
	require.NoError(t, err)
	require.Zero(t, rep.Read)
	rep, err = r.Run(ctx, replay.Options{Stream: testStream.Name, Since: time.Now().Add(-time.Hour)}, &countProgress{})
	require.NoError(t, err)
	require.Equal(t, len(events), rep.Read)
}

// identityState renders every member's link and the sync's ban flag (the
// profile's and the durable link table's) and whether the account is
// banned, keyed by portal member ID.
func (s *system) identityState(t *testing.T) string {
	t.Helper()
	rows, err := s.pool.Query(context.Background(), `
		SELECT p.portal_member_id || '|' || coalesce(p.auth_user_id::text, '-') || '|' || p.auth_banned_by_sync || '|' ||
		       CASE WHEN u.id IS NULL THEN '-' ELSE coalesce(u.banned_until > now(), false)::text END || '|' || coalesce(l.auth_user_id::text, '-') || '|' || coalesce(l.banned_by_sync::text, '-')
		FROM profiles p LEFT JOIN auth.users u ON u.id = p.auth_user_id
		LEFT JOIN portalsync.account_links l ON l.portal_member_id = p.portal_member_id
		ORDER BY 1`)
	require.NoError(t, err)
	lines, err := pgx.CollectRows(rows, pgx.RowTo[string])
	require.NoError(t, err)
	return strings.Join(lines, "\n")
}

// A replay after a wipe restores links and ban flags exactly: it does not
// link again by the e-mails the portal holds now (a changed e-mail, another
// member with the old one), and a later reactivation lifts the sync's ban.
func TestReplayRestoresLinksAndBans(t *testing.T) {
	t.Parallel()
	sys := start(t)
	ctx := context.Background()
	apply := func(typ, member, role, email string, at time.Time) {
		e := sys.event(typ, member, "org-a", role, at)
		if email != "" {
			e.Member["email"] = email
		}
		sys.send(t, e)
		require.Equal(t, "success", sys.waitLogged(t, e.ID))
	}
	for _, m := range []string{"id-keep", "id-gone", "id-move", "id-admin"} {
		sys.addAuthUser(t, m+"@example.invalid")
		apply("membership-created", m, "coordinator", "", base)
	}
	_, err := sys.pool.Exec(ctx, `UPDATE auth.users SET banned_until = now() + interval '1 year' WHERE email = 'id-admin@example.invalid'`)
	require.NoError(t, err)
	apply("membership-deactivated", "id-gone", "", "", base.Add(time.Minute))
	apply("membership-deactivated", "id-admin", "", "", base.Add(time.Minute))
	// id-move's portal e-mail changes and id-heir gets the old one.
	apply("membership-updated", "id-move", "", "elsewhere@example.invalid", base.Add(time.Minute))
	apply("membership-created", "id-heir", "peer_mentor", "id-move@example.invalid", base.Add(2*time.Minute))
	before := sys.identityState(t)
	require.Regexp(t, `id-gone\|[0-9a-f-]{36}\|true\|true\|[0-9a-f-]{36}\|true`, before)
	require.Regexp(t, `id-admin\|[0-9a-f-]{36}\|false\|true\|`, before)
	require.Regexp(t, `id-heir\|-\|false\|-\|-\|-`, before)
	require.Regexp(t, `id-move\|[0-9a-f-]{36}\|`, before)

	_, err = sys.pool.Exec(ctx, `TRUNCATE organizations, profiles, organization_memberships, role_assignments, portal_sync_log`)
	require.NoError(t, err)
	_, err = sys.replayer(t).Run(ctx, replay.Options{Stream: testStream.Name}, &countProgress{})
	require.NoError(t, err)
	require.Equal(t, before, sys.identityState(t), "links and ban flags restored exactly")

	apply("membership-reactivated", "id-gone", "", "", base.Add(3*time.Minute))
	apply("membership-reactivated", "id-admin", "", "", base.Add(3*time.Minute))
	after := sys.identityState(t)
	require.Regexp(t, `id-gone\|[0-9a-f-]{36}\|false\|false\|`, after, "the sync's ban lifted")
	require.Regexp(t, `id-admin\|[0-9a-f-]{36}\|false\|true\|`, after, "an administrator's ban kept")
}

// A replay whose database connections are terminated under it stops with
// where to rerun from; rerunning from there until it completes rebuilds the
// database exactly: nothing lost, no event logged twice.
func TestReplayStopsOnOutageAndResumesFromSeq(t *testing.T) {
	t.Parallel()
	sys, _ := startApplied(t, 11, "resume", 40, 3000)
	ctx := context.Background()
	before := sys.snapshot(t)

	cfg, err := pgxpool.ParseConfig(sys.dbURL)
	require.NoError(t, err)
	cfg.ConnConfig.RuntimeParams["application_name"] = "replay-under-attack"
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	require.NoError(t, err)
	t.Cleanup(pool.Close)
	r := replay.New(sys.jetStream(t), pool, zaptest.NewLogger(t))

	_, err = sys.pool.Exec(ctx, `TRUNCATE organizations, profiles, organization_memberships, role_assignments, portal_sync_log`)
	require.NoError(t, err)

	// kill terminates the replay's busy backends every few milliseconds
	// until stop closes, then says how many it terminated.
	kill := func(stop <-chan struct{}) <-chan int {
		killed := make(chan int, 1)
		go func() {
			n := 0
			for {
				select {
				case <-stop:
					killed <- n
					return
				case <-time.After(time.Duration(20+rand.IntN(60)) * time.Millisecond):
				}
				var k int
				_ = sys.pool.QueryRow(ctx, `SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
					WHERE application_name = 'replay-under-attack' AND state <> 'idle'`).Scan(&k)
				n += k
			}
		}()
		return killed
	}
	from := uint64(0)
	stops, invalid := 0, 0
	for run := 0; ; run++ {
		require.Less(t, run, 200, "replay never completed")
		stop := make(chan struct{})
		killed := kill(stop)
		rep, err := r.Run(ctx, replay.Options{Stream: sys.stream.Name, FromSeq: from}, &countProgress{})
		close(stop)
		t.Logf("run %d from %d: read %d applied %d skipped %d invalid %d, %d backends terminated, err %v",
			run, from, rep.Read, rep.Applied, rep.Skipped, rep.Invalid, <-killed, err)
		invalid += rep.Invalid
		if err == nil {
			break
		}
		var s *replay.StoppedError
		require.ErrorAs(t, err, &s)
		require.Contains(t, err.Error(), fmt.Sprintf("rerun with --from-seq %d", s.Seq))
		require.GreaterOrEqual(t, s.Seq, max(from, 1), "a rerun never starts before where the last began")
		from = s.Seq
		stops++
	}
	require.Zero(t, invalid, "no event counted invalid for the database's sake")
	require.Equal(t, before, sys.snapshot(t), "rebuilt exactly across %d stops", stops)
}

// stepProgress calls step after each fetched batch is applied.
type stepProgress struct {
	countProgress
	step func()
}

func (p *stepProgress) Add(n int) { p.countProgress.Add(n); p.step() }

// A dry run while the syncer consumes: a live event of an organization the
// dry run has read is applied while the dry run goes on, not held until
// it ends (its one transaction held every organization row it upserted).
func TestReplayDryRunDoesNotHoldLiveEvents(t *testing.T) {
	t.Parallel()
	sys, _ := startApplied(t, 12, "dry", 40, 5000)
	ctx := context.Background()

	var waited time.Duration
	p := &stepProgress{}
	p.step = func() {
		if waited != 0 {
			return
		}
		// Between two fetches of the dry run: a new member of an
		// organization the first fetch read, and one the syncer knows.
		created := sys.event("membership-created", "dry-live", "dry-o1", "peer_mentor", base.Add(time.Hour))
		updated := sys.event("membership-updated", "dry-m1", "dry-o2", "", base.Add(time.Hour))
		started := time.Now()
		sys.send(t, created)
		sys.send(t, updated)
		var n int
		for time.Since(started) < 10*time.Second && n < 2 {
			require.NoError(t, sys.pool.QueryRow(ctx, `SELECT count(*) FROM portal_sync_log WHERE event_id = ANY($1)`,
				[]string{created.ID, updated.ID}).Scan(&n))
			time.Sleep(10 * time.Millisecond)
		}
		waited = time.Since(started)
	}
	rep, err := sys.replayer(t).Run(ctx, replay.Options{Stream: sys.stream.Name, DryRun: true}, p)
	require.NoError(t, err)
	require.Greater(t, rep.Read, 4096, "the live events were sent between two fetches")
	require.NotZero(t, waited)
	require.Less(t, waited, 5*time.Second, "the live events waited for the dry run")
	require.Zero(t, rep.TotalChanges(), "%+v", rep.Changes)
}
