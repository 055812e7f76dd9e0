// Package load generates portal webhook traffic against an ingress and
// measures it: accept latency per request and, when a database is given,
// end-to-end latency from sending to the sync log's processed_at.
package load

import (
	"bufio"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"golang.org/x/time/rate"

	"github.com/likeperson/portalsync/pkg/event"
	"github.com/likeperson/portalsync/pkg/portalclient"
	"github.com/likeperson/portalsync/pkg/signature"
)

// Defaults for Config.
const (
	DefaultURL         = "http://127.0.0.1:8080/webhooks/portal"
	DefaultDuration    = 10 * time.Second
	DefaultConcurrency = 50
	DefaultMembers     = 10000
	DefaultOrgs        = 20
	DefaultE2EWait     = 2 * time.Minute
)

// Config describes one load run. Zero fields take the defaults named in
// their comments; Secrets is required.
type Config struct {
	// URL is the ingress webhook endpoint. Default
	// "http://127.0.0.1:8080/webhooks/portal".
	URL string
	// Secrets sign the requests.
	Secrets []signature.Secret
	// Rate is events per second; 0 sends as fast as the concurrency allows.
	Rate float64
	// Events bounds the run by count; when it is 0, Duration bounds it by
	// time (default 10 s), and Duration is ignored otherwise.
	Duration time.Duration
	Events   int
	// Concurrency is the number of requests in flight. Default 50.
	Concurrency int
	// Members and Orgs size the population; events pick members at
	// random. Defaults 10,000 and 20.
	Members int
	Orgs    int
	// Mix weighs event types (created, updated, role, deactivated,
	// reactivated). Default DefaultMix.
	Mix map[event.Type]int
	// RunID prefixes event ids, so runs and their log rows stay apart.
	// Default a new one per run.
	RunID string
	// DB, when set, is read for end-to-end latency after the run.
	DB *pgxpool.Pool
	// E2EWait bounds the wait for the last events to be applied. Default
	// 2 minutes.
	E2EWait time.Duration
}

// WithDefaults returns c with every zero field set to its default (but
// RunID, new per run), the values the loadgen binary's flags default to.
func (c Config) WithDefaults() Config {
	c.URL = cmp.Or(c.URL, DefaultURL)
	if c.Events > 0 {
		c.Duration = 0
	} else {
		c.Duration = cmp.Or(c.Duration, DefaultDuration)
	}
	c.Concurrency = cmp.Or(c.Concurrency, DefaultConcurrency)
	c.Members = cmp.Or(c.Members, DefaultMembers)
	c.Orgs = cmp.Or(c.Orgs, DefaultOrgs)
	c.E2EWait = cmp.Or(c.E2EWait, DefaultE2EWait)
	if c.Mix == nil {
		c.Mix = DefaultMix
	}
	return c
}

// DefaultMix is a plausible day in the portal.
var DefaultMix = map[event.Type]int{
	event.MembershipCreated: 35, event.MembershipUpdated: 30, event.RoleUpdated: 20,
	event.MembershipDeactivated: 10, event.MembershipReactivated: 5,
}

// Report is what a run measured.
type Report struct {
	Sent, Accepted, Duplicates, Rejected, Errors int64
	Elapsed                                      time.Duration
	// Accept is the latency of accepted requests.
	Accept Percentiles
	// EndToEnd is send to processed_at, for accepted events; zero without
	// a database.
	EndToEnd  Percentiles
	Applied   int
	Unapplied int
}

// Percentiles summarize latencies.
type Percentiles struct {
	P50, P95, P99, Max time.Duration
	N                  int
}

func percentiles(d []time.Duration) Percentiles {
	if len(d) == 0 {
		return Percentiles{}
	}
	slices.Sort(d)
	at := func(q float64) time.Duration { return d[min(len(d)-1, int(q*float64(len(d))))] }
	return Percentiles{P50: at(0.50), P95: at(0.95), P99: at(0.99), Max: d[len(d)-1], N: len(d)}
}

// Throughput is accepted requests per second.
func (r Report) Throughput() float64 {
	if r.Elapsed <= 0 {
		return 0
	}
	return float64(r.Accepted) / r.Elapsed.Seconds()
}

// validate reports what is wrong with c, after WithDefaults.
func (c Config) validate() error {
	switch {
	case len(c.Secrets) == 0:
		return errors.New("a webhook secret is required")
	case c.Duration <= 0 && c.Events <= 0:
		return errors.New("give a duration or a number of events")
	case c.Concurrency < 1:
		return errors.New("concurrency must be at least 1")
	case c.Members < 1 || c.Orgs < 1:
		return errors.New("members and orgs must be at least 1")
	}
	return nil
}

type sent struct {
	id string
	at time.Time
}

// Run sends the load and measures it.
func Run(ctx context.Context, cfg Config) (Report, error) {
	cfg = cfg.WithDefaults()
	if err := cfg.validate(); err != nil {
		return Report{}, err
	}
	if cfg.RunID == "" {
		cfg.RunID = fmt.Sprintf("load%d", time.Now().UnixNano())
	}
	runCtx := ctx
	if cfg.Duration > 0 {
		var cancel context.CancelFunc
		runCtx, cancel = context.WithTimeout(ctx, cfg.Duration)
		defer cancel()
	}
	var t tally
	start := time.Now()
	t.send(ctx, runCtx, cfg)
	rep := t.report(time.Since(start))
	if cfg.DB != nil && len(t.events) > 0 {
		e2e, applied, err := endToEnd(ctx, cfg.DB, cfg.RunID, t.events, cfg.E2EWait)
		if err != nil {
			return rep, err
		}
		rep.EndToEnd, rep.Applied, rep.Unapplied = percentiles(e2e), applied, len(t.events)-applied
	}
	return rep, nil
}

// tally is what the senders did: counts, and the latency and send time of
// each accepted event.
type tally struct {
	sent, accepted, duplicates, rejected, errs atomic.Int64
	mu                                         sync.Mutex
	lat                                        []time.Duration
	events                                     []sent
}

// send runs cfg.Concurrency senders until runCtx ends or cfg.Events are
// sent; a request under way finishes (it is sent with ctx).
func (t *tally) send(ctx, runCtx context.Context, cfg Config) {
	transport := &http.Transport{MaxIdleConns: cfg.Concurrency, MaxIdleConnsPerHost: cfg.Concurrency, IdleConnTimeout: time.Minute}
	client := &portalclient.Client{URL: cfg.URL, Signer: signature.NewSigner(cfg.Secrets...), HTTP: &http.Client{Transport: transport, Timeout: 30 * time.Second}}
	var limiter *rate.Limiter
	if cfg.Rate > 0 {
		limiter = rate.NewLimiter(rate.Limit(cfg.Rate), max(1, int(cfg.Rate/100)))
	}
	types, weights := mix(cfg.Mix)
	var seq atomic.Int64
	seed := uint64(time.Now().UnixNano())
	var wg sync.WaitGroup
	for w := range cfg.Concurrency {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(w), seed))
			var myLat []time.Duration
			var mySent []sent
			defer func() {
				t.mu.Lock()
				t.lat = append(t.lat, myLat...)
				t.events = append(t.events, mySent...)
				t.mu.Unlock()
			}()
			for runCtx.Err() == nil {
				n := seq.Add(1)
				if cfg.Events > 0 && n > int64(cfg.Events) {
					return
				}
				if limiter != nil && limiter.Wait(runCtx) != nil {
					return
				}
				ev := build(rng, cfg, n, types, weights)
				if at, d, ok := t.post(ctx, client, ev); ok {
					myLat = append(myLat, d)
					mySent = append(mySent, sent{ev.ID, at})
				}
			}
		})
	}
	wg.Wait()
}

// post sends one event and counts the answer; it returns when it was
// sent, the latency and true when the event was accepted.
func (t *tally) post(ctx context.Context, client *portalclient.Client, ev event.Event) (time.Time, time.Duration, bool) {
	body, err := json.Marshal(ev)
	if err != nil {
		t.errs.Add(1)
		return time.Time{}, 0, false
	}
	t0 := time.Now()
	resp, err := client.Send(ctx, ev.ID, body)
	d := time.Since(t0)
	t.sent.Add(1)
	switch {
	case err != nil:
		t.errs.Add(1)
	case resp.Status == http.StatusAccepted:
		t.accepted.Add(1)
		return t0, d, true
	case resp.Status == http.StatusOK:
		t.duplicates.Add(1)
	default:
		t.rejected.Add(1)
	}
	return time.Time{}, 0, false
}

// report is the tally after elapsed, without the end-to-end figures.
func (t *tally) report(elapsed time.Duration) Report {
	return Report{Elapsed: elapsed, Sent: t.sent.Load(), Accepted: t.accepted.Load(), Duplicates: t.duplicates.Load(),
		Rejected: t.rejected.Load(), Errors: t.errs.Load(), Accept: percentiles(t.lat)}
}

func mix(m map[event.Type]int) ([]event.Type, []int) {
	var types []event.Type
	var weights []int
	total := 0
	for _, t := range event.Types {
		if w := m[t]; w > 0 {
			total += w
			types = append(types, t)
			weights = append(weights, total)
		}
	}
	return types, weights
}

// build makes one event of the run, with fictional member data.
func build(rng *rand.Rand, cfg Config, n int64, types []event.Type, weights []int) event.Event {
	pick := rng.IntN(weights[len(weights)-1])
	typ := types[0]
	for i, w := range weights {
		if pick < w {
			typ = types[i]
			break
		}
	}
	m := rng.IntN(cfg.Members)
	member := fmt.Sprintf("%s-m%d", cfg.RunID, m)
	org := fmt.Sprintf("%s-o%d", cfg.RunID, m%cfg.Orgs)
	role := event.Role("")
	if typ.RequiresRole() {
		role = []event.Role{event.RolePeerMentor, event.RolePeerMentor, event.RoleCoordinator, event.RoleOrgAdmin}[rng.IntN(4)]
	}
	return event.Event{
		ID: fmt.Sprintf("%s-e%d", cfg.RunID, n), Type: typ, OccurredAt: time.Now().UTC(),
		Organization: event.Organization{ID: org, Name: "HLF " + org},
		Member: event.Member{ID: member, Email: member + "@example.invalid", FirstName: "Load", LastName: fmt.Sprintf("Test%d", m),
			Phone: fmt.Sprintf("+47 4%07d", m)},
		Role: role,
	}
}

// endToEnd waits until the run's events are logged, then reads each one's
// processed_at.
func endToEnd(ctx context.Context, db *pgxpool.Pool, runID string, evs []sent, wait time.Duration) ([]time.Duration, int, error) {
	pattern := strings.NewReplacer("%", `\%`, "_", `\_`).Replace(runID) + "-e%"
	deadline := time.Now().Add(wait)
	for {
		var n int
		if err := db.QueryRow(ctx, `SELECT count(*) FROM portal_sync_log WHERE event_id LIKE $1 AND status IN ('success', 'skipped')`, pattern).Scan(&n); err != nil {
			return nil, 0, fmt.Errorf("count applied: %w", err)
		}
		if n >= len(evs) || time.Now().After(deadline) {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	rows, err := db.Query(ctx, `SELECT event_id, processed_at FROM portal_sync_log WHERE event_id LIKE $1 AND status IN ('success', 'skipped')`, pattern)
	if err != nil {
		return nil, 0, fmt.Errorf("read processed_at: %w", err)
	}
	defer rows.Close()
	done := make(map[string]time.Time, len(evs))
	for rows.Next() {
		var id string
		var at time.Time
		if err := rows.Scan(&id, &at); err != nil {
			return nil, 0, fmt.Errorf("read processed_at: %w", err)
		}
		done[id] = at
	}
	if err := rows.Err(); err != nil {
		return nil, 0, fmt.Errorf("read processed_at: %w", err)
	}
	out := make([]time.Duration, 0, len(evs))
	for _, s := range evs {
		if at, ok := done[s.id]; ok {
			out = append(out, at.Sub(s.at))
		}
	}
	return out, len(out), nil
}

// Format renders a report as a small table.
func (r Report) Format() string {
	var b strings.Builder
	fmt.Fprintf(&b, "sent %d, accepted %d, duplicates %d, rejected %d, errors %d in %s: %.0f accepted/s\n",
		r.Sent, r.Accepted, r.Duplicates, r.Rejected, r.Errors, r.Elapsed.Round(time.Millisecond), r.Throughput())
	row := func(name string, p Percentiles) {
		fmt.Fprintf(&b, "%-12s n=%-8d p50 %-10s p95 %-10s p99 %-10s max %s\n", name, p.N,
			p.P50.Round(10*time.Microsecond), p.P95.Round(10*time.Microsecond), p.P99.Round(10*time.Microsecond), p.Max.Round(10*time.Microsecond))
	}
	row("accept", r.Accept)
	if r.EndToEnd.N > 0 || r.Unapplied > 0 {
		row("end-to-end", r.EndToEnd)
		if r.Unapplied > 0 {
			fmt.Fprintf(&b, "not applied within the wait: %d\n", r.Unapplied)
		}
	}
	return b.String()
}

// Emit writes n signed requests, one per line as
// "webhook-id<TAB>webhook-timestamp<TAB>webhook-signature<TAB>body", for a
// lighter HTTP load tool (wrk with scripts/bench/signed.lua) to replay.
// The signatures are valid for the ingress's timestamp tolerance.
func Emit(w io.Writer, cfg Config, n int) error {
	cfg = cfg.WithDefaults()
	if cfg.RunID == "" {
		cfg.RunID = fmt.Sprintf("emit%d", time.Now().UnixNano())
	}
	if len(cfg.Secrets) == 0 || cfg.Members < 1 || cfg.Orgs < 1 {
		return errors.New("emit needs a secret, members and orgs")
	}
	signer := signature.NewSigner(cfg.Secrets...)
	types, weights := mix(cfg.Mix)
	rng := rand.New(rand.NewPCG(1, uint64(time.Now().UnixNano())))
	bw := bufio.NewWriterSize(w, 1<<20)
	now := time.Now()
	for i := range n {
		ev := build(rng, cfg, int64(i+1), types, weights)
		body, err := json.Marshal(ev)
		if err != nil {
			return fmt.Errorf("marshal: %w", err)
		}
		fmt.Fprintf(bw, "%s\t%d\t%s\t%s\n", ev.ID, now.Unix(), signer.SignatureHeader(ev.ID, now, body), body)
	}
	return bw.Flush()
}
