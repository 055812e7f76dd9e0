package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap"

	"github.com/likeperson/portalsync/pkg/command"
	"github.com/likeperson/portalsync/syncer/reconcile"
	"github.com/likeperson/portalsync/syncer/service"
	"github.com/likeperson/portalsync/syncer/store"
)

type statusCmd struct {
	dbFlags
	dlqFlags
	Consumer        string        `env:"SYNCER_CONSUMER" default:"portalsync-syncer" help:"Durable consumer name."`
	SyncerURL       string        `name:"syncer-url" env:"SYNCER_URL" default:"http://127.0.0.1:8081" help:"Health address of a running syncer, asked whether it consumes or is paused."`
	JSON            bool          `name:"json" help:"Print JSON instead of a table."`
	ReconcileBucket string        `name:"reconcile-bucket" env:"RECONCILE_BUCKET" default:"PORTALSYNC_RECONCILE" help:"KV bucket of the Dataverse reconciler's position."`
	Timeout         time.Duration `default:"10s" help:"How long each part (syncer, NATS, database) may take to answer before it counts as unreachable."`
}

// health is how one part, or everything, is.
type health string

const (
	// healthy: the part answers and needs nothing.
	healthy health = "healthy"
	// degraded: the part answers but needs a look (paused, dead letters,
	// failed events, a stream or consumer not created yet).
	degraded health = "degraded"
	// unreachable: the part could not be read (not answering, refused,
	// timed out, or its query failed).
	unreachable health = "unreachable"
)

// The exit statuses of `syncer status` (docs/OPERATIONS.md); 1 is
// the command's own failure (a bad flag).
var exitCodes = map[health]int{healthy: 0, degraded: 2, unreachable: 3}

func (h health) rank() int {
	switch h {
	case healthy:
		return 0
	case degraded:
		return 1
	}
	return 2
}

// part is one part's health and why it is not healthy.
type part struct {
	Health health `json:"health"`
	// Reasons say why the part is degraded or unreachable.
	Reasons []string `json:"reasons,omitempty"`
}

func (p *part) degrade(format string, args ...any) {
	if p.Health != unreachable {
		p.Health = degraded
	}
	p.Reasons = append(p.Reasons, fmt.Sprintf(format, args...))
}

func (p *part) fail(err error) {
	p.Health = unreachable
	p.Reasons = append(p.Reasons, err.Error())
}

// status is what `syncer status` reports. A value a part could not read
// is null (JSON) or "unknown" (text), never zero.
type status struct {
	// Health is the worst of the parts' health; ExitCode is the exit
	// status that goes with it.
	Health   health `json:"health"`
	ExitCode int    `json:"exit_code"`
	// Syncer is what the running syncer at --syncer-url reports.
	Syncer struct {
		part
		URL    string          `json:"url"`
		Status *service.Status `json:"status"`
	} `json:"syncer"`
	// NATS is the event stream, the durable consumer, the dead letters
	// and the reconciler's position (kept in NATS KV).
	NATS struct {
		part
		Stream      *streamState   `json:"stream"`
		Consumer    *consumerState `json:"consumer"`
		DeadLetters *uint64        `json:"dead_letters"`
		// Reconciler is the Dataverse reconciler's position (null when
		// it never ran, or when it could not be read: then
		// ReconcilerError says why).
		Reconciler      *reconcile.Position `json:"reconciler"`
		ReconcilerError string              `json:"reconciler_error,omitempty"`
	} `json:"nats"`
	// Database is what the sync log says.
	Database struct {
		part
		// LastApplied is null when nothing was applied yet.
		LastApplied   *lastApplied    `json:"last_applied"`
		FailedLast24h *int            `json:"failed_last_24h"`
		Organizations []orgLastSynced `json:"organizations"`
	} `json:"database"`
}

type streamState struct {
	Name     string `json:"name"`
	Messages uint64 `json:"messages"`
	FirstSeq uint64 `json:"first_seq"`
	LastSeq  uint64 `json:"last_seq"`
	Bytes    uint64 `json:"bytes"`
	Replicas int    `json:"replicas"`
}

type consumerState struct {
	Name         string `json:"name"`
	Pending      uint64 `json:"pending"`
	AckPending   int    `json:"ack_pending"`
	Redelivered  int    `json:"redelivered"`
	DeliveredSeq uint64 `json:"delivered_stream_seq"`
	AckFloorSeq  uint64 `json:"ack_floor_stream_seq"`
	WaitingPulls int    `json:"waiting_pulls"`
}

type lastApplied struct {
	StreamSeq int64     `json:"stream_seq"`
	At        time.Time `json:"at"`
}

type orgLastSynced struct {
	PortalOrgID string    `json:"portal_org_id"`
	LastSuccess time.Time `json:"last_success"`
	Events24h   int       `json:"events_24h"`
}

// Run prints the status and returns command.ExitCode 2 when a part is
// degraded, 3 when one is unreachable.
func (c *statusCmd) Run(ctx context.Context, g *command.Globals) error {
	// Each part is read on its own: during an outage, status says what it
	// can reach and what not, rather than failing. The parts are read at
	// the same time (each writes only its own part of st), so an answer
	// takes at most one --timeout, not one per part.
	st := &status{}
	var wg sync.WaitGroup
	wg.Go(func() { c.collectDatabase(ctx, st) })
	wg.Go(func() { c.collectNATS(ctx, st) })
	wg.Go(func() { c.fetchSyncerStatus(ctx, st) })
	wg.Wait()
	st.judge()
	if c.JSON {
		enc := json.NewEncoder(g.Stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(st); err != nil {
			return err
		}
	} else if err := printStatus(g.Stdout, st); err != nil {
		return err
	}
	if st.ExitCode != 0 {
		return command.ExitCode(st.ExitCode)
	}
	return nil
}

func (c *statusCmd) collectDatabase(ctx context.Context, st *status) {
	ctx, cancel := context.WithTimeout(ctx, c.Timeout)
	defer cancel()
	db := &st.Database
	pool, err := c.open(ctx)
	if err != nil {
		db.fail(err)
		return
	}
	defer pool.Close()
	s, err := store.ReadSyncState(ctx, pool)
	if err != nil {
		db.fail(err)
		return
	}
	if !s.LastAppliedAt.IsZero() {
		db.LastApplied = &lastApplied{StreamSeq: s.LastAppliedSeq, At: s.LastAppliedAt}
	}
	db.FailedLast24h = &s.FailedLast24h
	db.Organizations = make([]orgLastSynced, 0, len(s.Organizations))
	for _, o := range s.Organizations {
		db.Organizations = append(db.Organizations, orgLastSynced(o))
	}
}

func (c *statusCmd) collectNATS(ctx context.Context, st *status) {
	ctx, cancel := context.WithTimeout(ctx, c.Timeout)
	defer cancel()
	n := &st.NATS
	nc, js, err := c.dial(ctx, "portalsync-status", zap.NewNop())
	if err != nil {
		n.fail(err)
		return
	}
	defer nc.Close()
	streamName := c.Config().Name
	s, err := js.Stream(ctx, streamName)
	switch {
	case errors.Is(err, jetstream.ErrStreamNotFound):
		n.degrade("stream %s not created yet (the ingress and the syncer create it at start)", streamName)
	case err != nil:
		n.fail(fmt.Errorf("stream %s: %w", streamName, err))
		return
	default:
		info := s.CachedInfo() // fetched by js.Stream just now
		n.Stream = &streamState{Name: streamName, Messages: info.State.Msgs, FirstSeq: info.State.FirstSeq,
			LastSeq: info.State.LastSeq, Bytes: info.State.Bytes, Replicas: info.Config.Replicas}
		cons, err := s.Consumer(ctx, c.Consumer)
		switch {
		case errors.Is(err, jetstream.ErrConsumerNotFound):
			n.degrade("consumer %s not created yet (no syncer has run)", c.Consumer)
		case err != nil:
			n.fail(fmt.Errorf("consumer %s: %w", c.Consumer, err))
			return
		default:
			ci := cons.CachedInfo() // fetched by s.Consumer just now
			n.Consumer = &consumerState{Name: c.Consumer, Pending: ci.NumPending, AckPending: ci.NumAckPending,
				Redelivered: ci.NumRedelivered, DeliveredSeq: ci.Delivered.Stream, AckFloorSeq: ci.AckFloor.Stream,
				WaitingPulls: ci.NumWaiting}
		}
	}
	dead, err := c.queue(js).Count(ctx)
	if err != nil {
		n.fail(err)
		return
	}
	n.DeadLetters = &dead
	if dead > 0 {
		n.degrade("%d dead letter(s): syncer dlq list", dead)
	}
	// No bucket: the reconciler never ran. Any other failure is not
	// shown as "never ran": the position is unknown, and said so.
	kv, err := js.KeyValue(ctx, c.ReconcileBucket)
	switch {
	case errors.Is(err, jetstream.ErrBucketNotFound):
		return
	case err != nil:
		n.ReconcilerError = err.Error()
	default:
		pos, err := reconcile.ReadPosition(ctx, kv)
		if err != nil {
			n.ReconcilerError = err.Error()
			break
		}
		n.Reconciler = &pos
	}
	if n.ReconcilerError != "" {
		n.degrade("reconciler position unreadable")
	}
}

// fetchSyncerStatus asks the running syncer what it does.
func (c *statusCmd) fetchSyncerStatus(ctx context.Context, st *status) {
	s := &st.Syncer
	s.URL = c.SyncerURL
	ctx, cancel := context.WithTimeout(ctx, c.Timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, strings.TrimRight(c.SyncerURL, "/")+"/status", nil)
	if err != nil {
		s.fail(err)
		return
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		s.fail(err)
		return
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		s.fail(fmt.Errorf("GET /status: %s", resp.Status))
		return
	}
	var ss service.Status
	if err := json.NewDecoder(resp.Body).Decode(&ss); err != nil {
		s.fail(fmt.Errorf("read status: %w", err))
		return
	}
	s.Status = &ss
	switch {
	case ss.Starting != "":
		s.degrade("starting: %s", ss.Starting)
	case ss.Consumer.Paused != "":
		s.degrade("paused: %s since %s (%s), %d events held",
			ss.Consumer.Paused, ss.Consumer.PausedSince.UTC().Format(time.RFC3339),
			time.Since(ss.Consumer.PausedSince).Round(time.Second), ss.Consumer.Held)
	case !ss.Consumer.Consuming:
		s.degrade("not consuming, %d events held", ss.Consumer.Held)
	}
}

// judge sets each healthy part's health, the overall health and the exit
// code.
func (st *status) judge() {
	if fc := st.Database.FailedLast24h; fc != nil && *fc > 0 {
		st.Database.degrade("%d event(s) failed in the last 24 hours and not applied since: the sync log's failed rows", *fc)
	}
	st.Health = healthy
	for _, p := range st.parts() {
		if p.part.Health == "" {
			p.part.Health = healthy
		}
		if p.part.Health.rank() > st.Health.rank() {
			st.Health = p.part.Health
		}
	}
	st.ExitCode = exitCodes[st.Health]
}

type namedPart struct {
	name string
	part *part
}

func (st *status) parts() []namedPart {
	return []namedPart{{"syncer", &st.Syncer.part}, {"nats", &st.NATS.part}, {"database", &st.Database.part}}
}

func printStatus(w io.Writer, st *status) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	var bad []string
	for _, p := range st.parts() {
		if p.part.Health != healthy {
			bad = append(bad, p.name+" "+string(p.part.Health))
		}
	}
	if len(bad) == 0 {
		fmt.Fprintf(tw, "health\t%s (exit %d)\n", st.Health, st.ExitCode)
	} else {
		fmt.Fprintf(tw, "health\t%s: %s (exit %d)\n", st.Health, strings.Join(bad, ", "), st.ExitCode)
	}
	fmt.Fprintf(tw, "syncer\t%s\n", syncerLine(st))

	n := &st.NATS
	fmt.Fprintf(tw, "nats\t%s\n", partLine(n.part, 200))
	if n.Health == unreachable {
		for _, k := range []string{"stream", "consumer", "dead letters", "reconciler"} {
			fmt.Fprintf(tw, "%s\tunknown: nats unreachable\n", k)
		}
	} else {
		if s := n.Stream; s != nil {
			fmt.Fprintf(tw, "stream\t%s: %d events (seq %d..%d), %d bytes, %d replica(s)\n",
				s.Name, s.Messages, s.FirstSeq, s.LastSeq, s.Bytes, s.Replicas)
		} else {
			fmt.Fprintln(tw, "stream\tnot created yet")
		}
		if c := n.Consumer; c != nil {
			fmt.Fprintf(tw, "consumer\t%s: pending %d, ack pending %d, redelivered %d, delivered up to seq %d, acked up to seq %d, waiting pulls %d\n",
				c.Name, c.Pending, c.AckPending, c.Redelivered, c.DeliveredSeq, c.AckFloorSeq, c.WaitingPulls)
		} else {
			fmt.Fprintln(tw, "consumer\tnot created yet (no syncer has run)")
		}
		fmt.Fprintf(tw, "dead letters\t%d\n", *n.DeadLetters)
		if n.ReconcilerError != "" {
			fmt.Fprintf(tw, "reconciler\tunknown: %s\n", oneLine(n.ReconcilerError, 80))
		} else {
			fmt.Fprintf(tw, "reconciler\t%s\n", reconcilerLine(n.Reconciler))
		}
	}

	d := &st.Database
	fmt.Fprintf(tw, "database\t%s\n", partLine(d.part, 200))
	if d.Health == unreachable {
		for _, k := range []string{"last applied", "failed (24 h)"} {
			fmt.Fprintf(tw, "%s\tunknown: database unreachable\n", k)
		}
	} else {
		if d.LastApplied == nil {
			fmt.Fprintln(tw, "last applied\tnothing yet")
		} else {
			fmt.Fprintf(tw, "last applied\tstream seq %d at %s (%s ago)\n", d.LastApplied.StreamSeq,
				d.LastApplied.At.UTC().Format(time.RFC3339), time.Since(d.LastApplied.At).Round(time.Second))
		}
		fmt.Fprintf(tw, "failed (24 h)\t%d\n", *d.FailedLast24h)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if len(d.Organizations) == 0 {
		return nil
	}
	fmt.Fprintln(w)
	tw = tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ORGANIZATION\tLAST SUCCESS\tEVENTS (24 H)")
	for _, o := range d.Organizations {
		fmt.Fprintf(tw, "%s\t%s\t%d\n", o.PortalOrgID, o.LastSuccess.UTC().Format(time.RFC3339), o.Events24h)
	}
	return tw.Flush()
}

// partLine says in one line how a part is: "healthy", "degraded: why" or
// "unreachable: why".
func partLine(p part, width int) string {
	if len(p.Reasons) == 0 {
		return string(p.Health)
	}
	return string(p.Health) + ": " + oneLine(strings.Join(p.Reasons, "; "), width)
}

// reconcilerLine says where the Dataverse reconciler stands.
func reconcilerLine(pos *reconcile.Position) string {
	if pos == nil || (pos.LastSuccess.IsZero() && len(pos.Tables) == 0) {
		return "never ran"
	}
	var parts []string
	if pos.LastSuccess.IsZero() {
		parts = append(parts, "no pass completed")
	} else {
		parts = append(parts, fmt.Sprintf("last pass %s (%s ago), %d correction(s) at the last full read", pos.LastSuccess.UTC().Format(time.RFC3339),
			time.Since(pos.LastSuccess).Round(time.Second), pos.Corrections))
	}
	for _, k := range []string{"member", "membership"} {
		if t, ok := pos.Tables[k]; ok {
			parts = append(parts, fmt.Sprintf("%s: read %s (%d rows), full read %s, delta link kept", k,
				t.ReadAt.UTC().Format(time.RFC3339), t.Rows, t.FullReadAt.UTC().Format(time.RFC3339)))
		}
	}
	return strings.Join(parts, "; ")
}

// syncerLine says in one line what the running syncer does.
func syncerLine(st *status) string {
	s := st.Syncer
	switch {
	case s.Health == unreachable:
		return fmt.Sprintf("unreachable at %s: %s", s.URL, oneLine(strings.Join(s.Reasons, "; "), 200))
	case s.Health == degraded:
		return partLine(s.part, 200)
	default:
		return fmt.Sprintf("healthy: consuming, %d events held", s.Status.Consumer.Held)
	}
}
