package store_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/likeperson/portalsync/pkg/event"
	"github.com/likeperson/portalsync/syncer/consumer"
	"github.com/likeperson/portalsync/syncer/service"
	"github.com/likeperson/portalsync/syncer/store"
	"github.com/likeperson/portalsync/testkit/schematest"
)

// BenchmarkApplyBatchCeiling applies batches of the syncer's own set-based
// SQL straight to PostgreSQL from several connections at once, with no
// NATS and no decoding: the database's ceiling for the syncer's work.
// Reported as events/s. It runs as the syncer does: the pool comes from
// the syncer's own constructor (service.NewPool: the same session
// settings and pool size), batches and clients default to the consumer's
// BatchSize and Workers (BATCH and CLIENTS change them), and auth.users
// holds an account for every member (AUTH_USERS more, unrelated ones), so
// linking and banning cost what they cost in production.
func BenchmarkApplyBatchCeiling(b *testing.B) {
	db := schematest.NewDB(b)
	pool, err := service.NewPool(db.URL)
	if err != nil {
		b.Fatal(err)
	}
	defer pool.Close()
	s := store.New(pool)
	batchSize, clients := envInt("BATCH", consumer.DefaultBatchSize), envInt("CLIENTS", consumer.DefaultWorkers)
	// Accounts for the benchmark's 10,000 members (their e-mails,
	// confirmed) and further unrelated ones; in statements of 500 rows,
	// as the account trigger takes a lock per e-mail.
	for from, n := 0, 10000+envInt("AUTH_USERS", 40000); from < n; from += 500 {
		if _, err := db.Pool.Exec(context.Background(), `
			INSERT INTO auth.users (id, aud, role, email, email_confirmed_at)
			SELECT gen_random_uuid(), 'authenticated', 'authenticated',
			       CASE WHEN i < 10000 THEN 'm' || i || '@example.invalid' ELSE 'u' || i || '@example.invalid' END, now()
			FROM generate_series($1::int, least($1::int + 499, $2::int - 1)) AS i`, from, n); err != nil {
			b.Fatal(err)
		}
	}
	if _, err := db.Pool.Exec(context.Background(), `ANALYZE auth.users`); err != nil {
		b.Fatal(err)
	}
	types := []event.Type{event.MembershipCreated, event.MembershipCreated, event.MembershipUpdated, event.RoleUpdated, event.MembershipDeactivated, event.MembershipReactivated}
	var mu sync.Mutex
	seq := 0
	// Like the syncer, which routes each member to one worker, every
	// client has members of its own.
	next := func(rng *rand.Rand, client int) []store.Item {
		items := make([]store.Item, batchSize)
		mu.Lock()
		defer mu.Unlock()
		for i := range items {
			seq++
			m := rng.IntN(10000/clients)*clients + client
			typ := types[rng.IntN(len(types))]
			role := event.Role("")
			if typ.RequiresRole() {
				role = event.RoleCoordinator
			}
			items[i] = store.Item{Event: &event.Event{ID: fmt.Sprintf("b-%d", seq), Type: typ, OccurredAt: time.Now(),
				Organization: event.Organization{ID: fmt.Sprintf("o%d", m%20), Name: "HLF"},
				Member:       event.Member{ID: fmt.Sprintf("m%d", m), Email: fmt.Sprintf("m%d@example.invalid", m), FirstName: "A", LastName: "B"},
				Role:         role}, Meta: store.Meta{StreamSeq: uint64(seq), Attempt: 1, ReceivedAt: time.Now()}}
		}
		return items
	}
	b.ResetTimer()
	start := time.Now()
	var wg sync.WaitGroup
	per := (b.N + clients - 1) / clients
	for c := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(c), 3))
			for range per {
				if _, err := s.ApplyBatch(context.Background(), next(rng, c)); err != nil {
					b.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	b.ReportMetric(float64(per*clients*batchSize)/time.Since(start).Seconds(), "events/s")
}

func envInt(name string, def int) int {
	var v int
	if _, err := fmt.Sscan(os.Getenv(name), &v); err == nil && v > 0 {
		return v
	}
	return def
}
