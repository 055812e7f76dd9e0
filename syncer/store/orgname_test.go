package store_test

import (
	"context"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"
	"pgregory.net/rapid"

	"github.com/likeperson/portalsync/pkg/event"
	"github.com/likeperson/portalsync/testkit/eventmodel"
)

// TestOrganizationNameNewestInOneBatchWins: events of one batch carry
// different names for one organization, in any order. The row gets the
// name of the newest event that carries one (portal time, then event id),
// as one event at a time would leave it: an event without a name keeps
// it, a null clears it; a later batch's older name changes nothing.
func TestOrganizationNameNewestInOneBatchWins(t *testing.T) {
	t.Parallel()
	s, pool := setup(t)
	ctx := context.Background()
	named := func(id string, at time.Time, member, org, name string) *event.Event {
		e := ev(id, event.MembershipUpdated, at, member, org, "")
		e.Organization.Name = name
		return e
	}
	unnamed := named("e4", t0.Add(3*time.Minute), "d", "o1", "")
	cleared := named("e8", t0.Add(time.Minute), "c", "o3", "")
	cleared.Organization.NameCleared = true

	_, err := s.ApplyBatch(ctx, items(
		named("e1", t0.Add(2*time.Minute), "a", "o1", "Newest"),
		named("e2", t0, "b", "o1", "Oldest"),
		named("e3", t0.Add(time.Minute), "c", "o1", "Middle"),
		unnamed,                           // newer still, but names nothing: the name stays
		named("e6", t0, "a", "o2", "Six"), // same time: the higher id wins
		named("e5", t0, "b", "o2", "Five"),
		cleared,
		named("e7", t0, "d", "o3", "Before the null"),
	))
	require.NoError(t, err)
	require.Equal(t, map[string]string{"o1": "Newest e1", "o2": "Six e6", "o3": " e8"}, orgNames(t, pool))

	// A later batch: an older name changes nothing, a newer one wins.
	_, err = s.ApplyBatch(ctx, items(
		named("e9", t0.Add(90*time.Second), "b", "o1", "Late but older"),
		named("e10", t0.Add(time.Hour), "a", "o2", "Renamed"),
	))
	require.NoError(t, err)
	require.Equal(t, map[string]string{"o1": "Newest e1", "o2": "Renamed e10", "o3": " e8"}, orgNames(t, pool))
}

// TestOrganizationNamesMatchModel: events whose organizations carry
// random names (absent, null or one of a few), delivered in random order
// with redeliveries and cut into random batches, leave each organization
// with the name the reference model gives it.
func TestOrganizationNamesMatchModel(t *testing.T) {
	t.Parallel()
	s, pool := setup(t)
	var check atomic.Int64
	rapid.Check(t, func(rt *rapid.T) {
		prefix := fmt.Sprintf("n%d", check.Add(1))
		events := drawEvents(rt, prefix, 3, 16)
		for i := range events {
			e := &events[i]
			if e.Organization.ID == "" {
				continue // member-deleted names no organization
			}
			e.Organization = event.Organization{ID: prefix + "-" + e.Organization.ID}
			switch name := rapid.SampledFrom([]string{"", "null", "A", "B", "C"}).Draw(rt, "name"); name {
			case "":
			case "null":
				e.Organization.NameCleared = true
			default:
				e.Organization.Name = name
			}
		}
		order := drawDeliveries(rt, events, 4)
		applyInBatches(rt, s, order)
		got := orgNames(t, pool)
		for org, want := range eventmodel.OrganizationNames(events) {
			name, _, _ := strings.Cut(got[org], " ")
			if name != want {
				rt.Fatalf("%s is named %q, model %q", org, name, want)
			}
		}
	})
}

// orgNames returns each organization's name and the event it came from.
func orgNames(t *testing.T, pool *pgxpool.Pool) map[string]string {
	t.Helper()
	rows, err := pool.Query(context.Background(), `SELECT portal_org_id, name || ' ' || coalesce(portal_event_id, '') FROM organizations`)
	require.NoError(t, err)
	defer rows.Close()
	out := map[string]string{}
	for rows.Next() {
		var id, name string
		require.NoError(t, rows.Scan(&id, &name))
		out[id] = name
	}
	require.NoError(t, rows.Err())
	return out
}
