package reconcile_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/require"
	"go.uber.org/zap/zaptest"

	"github.com/likeperson/portalsync/pkg/event"
	"github.com/likeperson/portalsync/pkg/stream"
	"github.com/likeperson/portalsync/syncer/reconcile"
	"github.com/likeperson/portalsync/testkit/dataversetest"
	"github.com/likeperson/portalsync/testkit/natstest"
	"github.com/likeperson/portalsync/testkit/pgtest"
	"github.com/likeperson/portalsync/testkit/schematest"
)

const (
	clientID     = "11111111-2222-4333-8444-555555555555"
	clientSecret = "fake-client-secret"
	org          = "b0000000-0000-4000-8000-00000000a001"
)

type bundle struct {
	fake    *dataversetest.Server
	js      jetstream.JetStream
	rec     *reconcile.Reconciler
	reg     *prometheus.Registry
	metrics *reconcile.Metrics
	cfg     reconcile.Config
	db      *pgtest.DB
}

func setup(t testing.TB, mutate func(*reconcile.Config)) *bundle {
	t.Helper()
	ctx := context.Background()
	js, _ := natstest.JetStream(t, stream.Config{Name: "EVENTS"})
	db := schematest.NewDB(t)
	b := &bundle{fake: dataversetest.New(t, clientID, clientSecret), js: js, reg: prometheus.NewRegistry(), db: db}
	b.fake.AddTable("contacts", "contactid")
	b.fake.AddTable("hlf_memberships", "hlf_membershipid")
	b.metrics = reconcile.NewMetrics(b.reg)
	cfg := reconcile.Config{URL: b.fake.URL(), TokenURL: b.fake.TokenURL(), ClientID: clientID, ClientSecret: clientSecret,
		Stream: stream.Config{Name: "EVENTS"}, PageSize: 5}
	if mutate != nil {
		mutate(&cfg)
	}
	b.cfg = cfg
	var err error
	b.rec, err = reconcile.New(ctx, cfg, js, db.Pool, b.metrics, zaptest.NewLogger(t))
	require.NoError(t, err)
	return b
}

func contactID(i int) string { return fmt.Sprintf("a1b2c3d4-0000-4000-8000-%012d", i) }

func (b *bundle) putContact(i int, modified time.Time, first string) {
	b.fake.Put("contacts", "contactid", contactID(i), map[string]any{
		"firstname": first, "lastname": "Nordmann", "emailaddress1": fmt.Sprintf("m%d@example.invalid", i), "mobilephone": nil,
		"_parentcustomerid_value": dataversetest.Ref{Table: "account", ID: org}, "modifiedon": modified.Format(time.RFC3339),
	})
}

func (b *bundle) putMembership(i int, modified time.Time, role, state int) {
	b.fake.Put("hlf_memberships", "hlf_membershipid", fmt.Sprintf("c0000000-0000-4000-8000-%012d", i), map[string]any{
		"_hlf_contactid_value": dataversetest.Ref{Table: "contact", ID: contactID(i)}, "_hlf_accountid_value": dataversetest.Ref{Table: "account", ID: org}, "hlf_role": role, "statecode": state,
		"modifiedon": modified.Format(time.RFC3339),
	})
}

// events reads every event of the stream.
func (b *bundle) events(t *testing.T) []*event.Event {
	t.Helper()
	ctx := context.Background()
	s, err := b.js.Stream(ctx, "EVENTS")
	require.NoError(t, err)
	info, err := s.Info(ctx)
	require.NoError(t, err)
	var out []*event.Event
	for seq := info.State.FirstSeq; info.State.Msgs > 0 && seq <= info.State.LastSeq; seq++ {
		m, err := s.GetMsg(ctx, seq)
		require.NoError(t, err)
		ev, err := event.Decode(m.Data)
		require.NoError(t, err, "a reconciler event is the contract")
		require.Equal(t, ev.ID, m.Header.Get(jetstream.MsgIDHeader))
		require.Equal(t, event.Subject(ev.Member.ID), m.Subject)
		out = append(out, ev)
	}
	return out
}

var t0 = time.Date(2026, 11, 25, 10, 0, 0, 0, time.UTC)

// TestFullReadThenDelta: the first pass reads every page of both tables
// (following @odata.nextLink) and publishes each row as an event; the
// delta link is kept; the next pass reads only what changed, a deleted
// contact as member-deleted; a pass without changes publishes nothing.
func TestFullReadThenDelta(t *testing.T) {
	t.Parallel()
	b := setup(t, nil)
	ctx := context.Background()
	for i := range 12 {
		b.putContact(i, t0, fmt.Sprintf("F%d", i))
		b.putMembership(i, t0, 100000000, 0)
	}
	b.putContact(99, t0, "No org")
	b.fake.Put("contacts", "contactid", contactID(98), map[string]any{"firstname": "x", "modifiedon": t0.Format(time.RFC3339)})

	rep, err := b.rec.Once(ctx, reconcile.Options{})
	require.NoError(t, err)
	require.Equal(t, map[string]int{"member": 14, "membership": 12}, rep.Rows)
	require.Equal(t, map[string]bool{"member": true, "membership": true}, rep.FullRead)
	require.Equal(t, 25, rep.Published, "12 + 1 contacts with an organization, 12 memberships")
	require.Equal(t, 1, rep.Skipped, "the contact without an organization")
	evs := b.events(t)
	require.Len(t, evs, 25)
	require.Equal(t, event.MembershipUpdated, evs[0].Type)
	require.Equal(t, "F0", evs[0].Member.FirstName)
	require.True(t, evs[0].Member.Cleared.Has(event.FieldPhone), "a null column of a full row clears the field")
	require.Equal(t, t0, evs[0].OccurredAt, "occurred_at is modifiedon")

	pos, err := b.rec.Position(ctx)
	require.NoError(t, err)
	require.Contains(t, pos.Tables["member"].DeltaLink, "deltatoken=")
	require.False(t, pos.LastSuccess.IsZero())

	rep, err = b.rec.Once(ctx, reconcile.Options{})
	require.NoError(t, err)
	require.Equal(t, map[string]int{"member": 0, "membership": 0}, rep.Rows, "nothing changed")
	require.Equal(t, map[string]bool{"member": false, "membership": false}, rep.FullRead)
	require.Equal(t, 0, rep.Published)

	b.putContact(3, t0.Add(time.Hour), "Changed")
	b.fake.Delete("contacts", "contactid", contactID(4))
	b.putMembership(5, t0.Add(time.Hour), 100000001, 1)
	rep, err = b.rec.Once(ctx, reconcile.Options{})
	require.NoError(t, err)
	require.Equal(t, map[string]int{"member": 2, "membership": 1}, rep.Rows)
	evs = b.events(t)[25:]
	require.Len(t, evs, 3)
	byType := map[event.Type]*event.Event{}
	for _, ev := range evs {
		byType[ev.Type] = ev
	}
	require.Equal(t, "Changed", byType[event.MembershipUpdated].Member.FirstName)
	require.Equal(t, contactID(4), byType[event.MemberDeleted].Member.ID, "$deletedEntity of a contact is erasure")
	require.Equal(t, contactID(5), byType[event.MembershipDeactivated].Member.ID)
	require.EqualValues(t, 3, testutil.ToFloat64(b.metrics.RowsRead("member"))+testutil.ToFloat64(b.metrics.RowsRead("membership"))-26)
}

// TestDeletedMembershipTriggersFullRead: a membership's $deletedEntity in
// a delta names neither member nor organization, so the pass reads the
// memberships in full and deactivates what the app holds active and the
// portal no longer has. Every other delete test deletes a contact.
func TestDeletedMembershipTriggersFullRead(t *testing.T) {
	t.Parallel()
	b := setup(t, nil)
	ctx := context.Background()
	for i := 1; i <= 2; i++ {
		b.putContact(i, t0, fmt.Sprintf("F%d", i))
		b.putMembership(i, t0, 100000000, 0)
	}
	rep, err := b.rec.Once(ctx, reconcile.Options{})
	require.NoError(t, err)
	require.Equal(t, 4, rep.Published)
	// The app holds both memberships active, as the events above made it.
	_, err = b.db.Pool.Exec(ctx, `WITH o AS (INSERT INTO organizations (portal_org_id) VALUES ($1) RETURNING id),
		p AS (INSERT INTO profiles (portal_member_id) VALUES ($2), ($3) RETURNING id)
		INSERT INTO organization_memberships (profile_id, organization_id, status, portal_updated_at)
		SELECT p.id, o.id, 'active', $4 FROM p, o`, org, contactID(1), contactID(2), t0)
	require.NoError(t, err)

	b.fake.Delete("hlf_memberships", "hlf_membershipid", fmt.Sprintf("c0000000-0000-4000-8000-%012d", 2))
	rep, err = b.rec.Once(ctx, reconcile.Options{})
	require.NoError(t, err)
	require.Equal(t, map[string]bool{"member": false, "membership": true}, rep.FullRead,
		"a deleted membership in the delta makes the memberships a full read")
	require.Equal(t, 1.0, testutil.ToFloat64(b.metrics.FullReads("membership", "membership_deleted")))
	require.Equal(t, 1, rep.Corrections)
	evs := b.events(t)[4:]
	require.NotEmpty(t, evs)
	last := evs[len(evs)-1]
	require.Equal(t, event.MembershipDeactivated, last.Type)
	require.Equal(t, contactID(2), last.Member.ID)
	require.Equal(t, org, last.Organization.ID)
}

// TestThrottledRequestsWaitRetryAfter: a 429 is waited out as Retry-After
// says, counted, and the pass completes.
func TestThrottledRequestsWaitRetryAfter(t *testing.T) {
	t.Parallel()
	b := setup(t, nil)
	b.putContact(1, t0, "A")
	b.fake.Throttle(2, time.Second)
	start := time.Now()
	rep, err := b.rec.Once(context.Background(), reconcile.Options{})
	require.NoError(t, err)
	require.Equal(t, 1, rep.Published)
	require.EqualValues(t, 2, b.fake.Throttled.Load())
	require.GreaterOrEqual(t, time.Since(start), 2*time.Second, "Retry-After: 1 twice")
	require.EqualValues(t, 2, testutil.ToFloat64(b.metrics.ThrottleWaits()))

	// A Retry-After beyond the limit fails the pass instead of hanging.
	b2 := setup(t, func(c *reconcile.Config) { c.MaxThrottleWait = time.Second })
	b2.fake.Throttle(1, time.Minute)
	_, err = b2.rec.Once(context.Background(), reconcile.Options{})
	require.ErrorContains(t, err, "beyond the limit")
}

// TestExpiredDeltaLinkFallsBackToFullRead: Dataverse refuses an expired
// delta token (4xx); the table is read in full and a new link kept.
func TestExpiredDeltaLinkFallsBackToFullRead(t *testing.T) {
	t.Parallel()
	b := setup(t, nil)
	ctx := context.Background()
	b.putContact(1, t0, "A")
	_, err := b.rec.Once(ctx, reconcile.Options{})
	require.NoError(t, err)
	before, err := b.rec.Position(ctx)
	require.NoError(t, err)
	b.fake.ExpireDeltaTokens()
	rep, err := b.rec.Once(ctx, reconcile.Options{})
	require.NoError(t, err)
	require.Equal(t, map[string]bool{"member": true, "membership": true}, rep.FullRead)
	require.Equal(t, 1, rep.Rows["member"])
	after, err := b.rec.Position(ctx)
	require.NoError(t, err)
	require.NotEqual(t, before.Tables["member"].DeltaLink, after.Tables["member"].DeltaLink)
	rep, err = b.rec.Once(ctx, reconcile.Options{})
	require.NoError(t, err)
	require.Equal(t, map[string]bool{"member": false, "membership": false}, rep.FullRead, "the new link works")
	require.Equal(t, 1.0, testutil.ToFloat64(b.metrics.FullReads("member", "delta_refused")))
}

func TestWrongCredentialsFail(t *testing.T) {
	t.Parallel()
	b := setup(t, func(c *reconcile.Config) { c.ClientSecret = "wrong" })
	_, err := b.rec.Once(context.Background(), reconcile.Options{})
	require.ErrorContains(t, err, "invalid_client")
	pos, err := b.rec.Position(context.Background())
	require.NoError(t, err)
	require.True(t, pos.LastSuccess.IsZero())
}

// TestDryRunPublishesNothing: --dry-run reads the portal and prints what
// the app lacks (ids and field names only), storing and publishing
// nothing.
func TestDryRunPublishesNothing(t *testing.T) {
	t.Parallel()
	b := setup(t, nil)
	b.putContact(1, t0, "Kari")
	b.putMembership(1, t0, 100000001, 0)
	var out bytes.Buffer
	rep, err := b.rec.Once(context.Background(), reconcile.Options{DryRun: true, Out: &out})
	require.NoError(t, err)
	require.Equal(t, 2, rep.Differences)
	require.Contains(t, out.String(), "member "+contactID(1)+": in the portal, not in the app")
	require.Contains(t, out.String(), "membership "+contactID(1)+" in "+org+": in the portal (active), not in the app")
	require.NotContains(t, out.String(), "Kari")
	require.Empty(t, b.events(t))
	pos, err := b.rec.Position(context.Background())
	require.NoError(t, err)
	require.Empty(t, pos.Tables)
}

func TestConfigValidate(t *testing.T) {
	t.Parallel()
	ok := reconcile.Config{URL: "https://hlf.crm4.dynamics.com", TokenURL: "https://login.microsoftonline.com/t/oauth2/v2.0/token", ClientID: "c", ClientSecret: "s"}.WithDefaults()
	require.NoError(t, ok.Validate())
	require.Equal(t, "https://hlf.crm4.dynamics.com/.default", ok.Scope)
	for _, bad := range []func(*reconcile.Config){
		func(c *reconcile.Config) { c.URL = "" },
		func(c *reconcile.Config) { c.TokenURL = "login" },
		func(c *reconcile.Config) { c.ClientSecret = "" },
		func(c *reconcile.Config) { c.PageSize = 5001 },
	} {
		c := ok
		bad(&c)
		require.Error(t, c.Validate())
	}
	var pos reconcile.Position
	require.NoError(t, json.Unmarshal([]byte(`{"tables":{}}`), &pos))
}

// TestRunPassesOnSchedule: Run makes a pass at once and then one every
// Interval, picking up changes, sets the last-success metric, and returns
// when its context ends.
func TestRunPassesOnSchedule(t *testing.T) {
	t.Parallel()
	b := setup(t, func(c *reconcile.Config) { c.Interval = 50 * time.Millisecond })
	b.putContact(1, t0, "A")
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- b.rec.Run(ctx) }()
	require.Eventually(t, func() bool { return len(b.events(t)) == 1 }, 10*time.Second, 10*time.Millisecond, "the first pass")
	b.putContact(2, t0, "B")
	require.Eventually(t, func() bool { return len(b.events(t)) == 2 }, 10*time.Second, 10*time.Millisecond, "a later pass reads the change")
	cancel()
	select {
	case err := <-done:
		require.NoError(t, err)
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return")
	}
	families, err := b.reg.Gather()
	require.NoError(t, err)
	found := false
	for _, f := range families {
		if f.GetName() == "portalsync_reconcile_last_success_timestamp_seconds" {
			found = true
			require.Greater(t, f.GetMetric()[0].GetGauge().GetValue(), 0.0)
		}
	}
	require.True(t, found)
}

// The position is exported: the interval, the last success and each
// table's last read; a reconciler started again over the same bucket
// starts from the stored position (metrics and LastSuccess), so that a
// restart neither forgets a recent success nor hides an old one.
func TestPositionMetrics(t *testing.T) {
	t.Parallel()
	b := setup(t, func(c *reconcile.Config) {
		c.Interval = 10 * time.Minute
		c.Now = func() time.Time { return t0 }
	})
	ctx := context.Background()
	require.Equal(t, 600.0, testutil.ToFloat64(b.metrics.Interval()))
	require.Zero(t, testutil.ToFloat64(b.metrics.LastSuccess()), "no pass yet")
	require.True(t, b.rec.LastSuccess().IsZero())

	b.putContact(1, t0, "F1")
	_, err := b.rec.Once(ctx, reconcile.Options{})
	require.NoError(t, err)
	require.Equal(t, float64(t0.Unix()), testutil.ToFloat64(b.metrics.LastSuccess()))
	require.Equal(t, t0, b.rec.LastSuccess())
	for _, table := range []string{"member", "membership"} {
		require.Equal(t, float64(t0.Unix()), testutil.ToFloat64(b.metrics.TableRead(table)), table)
		require.Equal(t, float64(t0.Unix()), testutil.ToFloat64(b.metrics.TableFullRead(table)), table)
	}

	restarted := reconcile.NewMetrics(prometheus.NewRegistry())
	again, err := reconcile.New(ctx, b.cfg, b.js, b.db.Pool, restarted, zaptest.NewLogger(t))
	require.NoError(t, err)
	require.Equal(t, t0, again.LastSuccess())
	require.Equal(t, float64(t0.Unix()), testutil.ToFloat64(restarted.LastSuccess()))
	require.Equal(t, float64(t0.Unix()), testutil.ToFloat64(restarted.TableRead("membership")))
}
