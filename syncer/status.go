package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap"

	"github.com/likeperson/portalsync/pkg/command"
	"github.com/likeperson/portalsync/pkg/stream"
	"github.com/likeperson/portalsync/syncer/deadletter"
	"github.com/likeperson/portalsync/syncer/reconcile"
	"github.com/likeperson/portalsync/syncer/service"
)

type statusCmd struct {
	dbFlags
	natsFlags
	Consumer        string `env:"SYNCER_CONSUMER" default:"portalsync-syncer" help:"Durable consumer name."`
	SyncerURL       string `name:"syncer-url" env:"SYNCER_URL" default:"http://127.0.0.1:8081" help:"Health address of a running syncer, asked whether it consumes or is paused."`
	JSON            bool   `name:"json" help:"Print JSON instead of a table."`
	ReconcileBucket string `name:"reconcile-bucket" env:"RECONCILE_BUCKET" default:"PORTALSYNC_RECONCILE" help:"KV bucket of the Dataverse reconciler's position."`
}

// status is what `syncer status` reports.
type status struct {
	Stream struct {
		Name     string `json:"name"`
		Messages uint64 `json:"messages"`
		FirstSeq uint64 `json:"first_seq"`
		LastSeq  uint64 `json:"last_seq"`
		Bytes    uint64 `json:"bytes"`
		Replicas int    `json:"replicas"`
	} `json:"stream"`
	Consumer struct {
		Name             string `json:"name"`
		Pending          uint64 `json:"pending"`
		AckPending       int    `json:"ack_pending"`
		Redelivered      int    `json:"redelivered"`
		DeliveredSeq     uint64 `json:"delivered_stream_seq"`
		AckFloorSeq      uint64 `json:"ack_floor_stream_seq"`
		WaitingPulls     int    `json:"waiting_pulls"`
		ConsumersPresent bool   `json:"exists"`
	} `json:"consumer"`
	LastApplied struct {
		StreamSeq int64     `json:"stream_seq"`
		At        time.Time `json:"at"`
	} `json:"last_applied"`
	// Syncer is what the running syncer at --syncer-url reports.
	Syncer struct {
		URL       string         `json:"url"`
		Reachable bool           `json:"reachable"`
		Error     string         `json:"error,omitempty"`
		Status    service.Status `json:"status"`
	} `json:"syncer"`
	// DatabaseError and NATSError say why a part could not be read.
	DatabaseError string          `json:"database_error,omitempty"`
	NATSError     string          `json:"nats_error,omitempty"`
	DeadLetters   uint64          `json:"dead_letters"`
	FailedLast24h int             `json:"failed_last_24h"`
	Organizations []orgLastSynced `json:"organizations"`
	// Reconciler is the Dataverse reconciler's position (empty when it
	// never ran).
	Reconciler *reconcile.Position `json:"reconciler,omitempty"`
}

type orgLastSynced struct {
	PortalOrgID string    `json:"portal_org_id"`
	LastSuccess time.Time `json:"last_success"`
	Events24h   int       `json:"events_24h"`
}

func (c *statusCmd) Run(ctx context.Context, g *command.Globals) error {
	// Each source is optional: during an outage, status says what it can
	// reach and what not, rather than failing.
	st := &status{}
	if pool, err := service.OpenPool(ctx, c.DatabaseURL); err != nil {
		st.DatabaseError = err.Error()
	} else {
		defer pool.Close()
		if err := collectDatabase(ctx, pool, st); err != nil {
			st.DatabaseError = err.Error()
		}
	}
	if nc, js, err := stream.Open(ctx, c.NATSURL, "portalsync-status", zap.NewNop()); err != nil {
		st.NATSError = err.Error()
	} else {
		defer nc.Close()
		if err := collectNATS(ctx, js, st, c.Config().Name, c.Consumer, c.DeadLetterStream); err != nil {
			st.NATSError = err.Error()
		}
		if kv, err := js.KeyValue(ctx, c.ReconcileBucket); err == nil {
			if pos, err := reconcile.ReadPosition(ctx, kv); err == nil {
				st.Reconciler = &pos
			}
		}
	}
	fetchSyncerStatus(ctx, c.SyncerURL, st)
	if c.JSON {
		enc := json.NewEncoder(g.Stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(st)
	}
	return printStatus(g.Stdout, st)
}

func collectNATS(ctx context.Context, js jetstream.JetStream, st *status, streamName, consumerName, dlqName string) error {
	s, err := js.Stream(ctx, streamName)
	if err != nil {
		return fmt.Errorf("stream %s: %w", streamName, err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		return fmt.Errorf("stream info: %w", err)
	}
	st.Stream.Name, st.Stream.Messages, st.Stream.FirstSeq, st.Stream.LastSeq = streamName, info.State.Msgs, info.State.FirstSeq, info.State.LastSeq
	st.Stream.Bytes, st.Stream.Replicas = info.State.Bytes, info.Config.Replicas

	st.Consumer.Name = consumerName
	cons, err := s.Consumer(ctx, consumerName)
	switch {
	case errors.Is(err, jetstream.ErrConsumerNotFound):
	case err != nil:
		return fmt.Errorf("consumer %s: %w", consumerName, err)
	default:
		ci, err := cons.Info(ctx)
		if err != nil {
			return fmt.Errorf("consumer info: %w", err)
		}
		st.Consumer.ConsumersPresent = true
		st.Consumer.Pending, st.Consumer.AckPending, st.Consumer.Redelivered = ci.NumPending, ci.NumAckPending, ci.NumRedelivered
		st.Consumer.DeliveredSeq, st.Consumer.AckFloorSeq, st.Consumer.WaitingPulls = ci.Delivered.Stream, ci.AckFloor.Stream, ci.NumWaiting
	}

	q := deadletter.New(js, deadletter.Config{Name: dlqName, EventStream: streamName})
	if st.DeadLetters, err = q.Count(ctx); err != nil {
		return err
	}
	return nil
}

func collectDatabase(ctx context.Context, pool *pgxpool.Pool, st *status) error {
	var seq *int64
	var at *time.Time
	if err := pool.QueryRow(ctx, `SELECT max(stream_seq), max(processed_at) FROM portal_sync_log WHERE status = 'success'`).Scan(&seq, &at); err != nil {
		return fmt.Errorf("last applied: %w", err)
	}
	if seq != nil {
		st.LastApplied.StreamSeq = *seq
	}
	if at != nil {
		st.LastApplied.At = *at
	}
	// An event that failed and later succeeded (redriven after a fix, or
	// applied on a later delivery) is failed no more.
	if err := pool.QueryRow(ctx, `
		SELECT count(DISTINCT f.event_id) FROM portal_sync_log f
		WHERE f.status = 'failed' AND f.processed_at > now() - interval '24 hours'
		  AND NOT EXISTS (SELECT 1 FROM portal_sync_log s
		                  WHERE s.event_id = f.event_id AND s.status IN ('success', 'skipped'))`).Scan(&st.FailedLast24h); err != nil {
		return fmt.Errorf("failed count: %w", err)
	}
	rows, err := pool.Query(ctx, `
		SELECT o.portal_org_id, max(l.processed_at),
		       count(*) FILTER (WHERE l.processed_at > now() - interval '24 hours')
		FROM portal_sync_log l JOIN organizations o ON o.id = l.organization_id
		WHERE l.status = 'success'
		GROUP BY o.portal_org_id ORDER BY 2 DESC LIMIT 50`)
	if err != nil {
		return fmt.Errorf("last success per organization: %w", err)
	}
	st.Organizations, err = pgx.CollectRows(rows, func(r pgx.CollectableRow) (orgLastSynced, error) {
		var o orgLastSynced
		err := r.Scan(&o.PortalOrgID, &o.LastSuccess, &o.Events24h)
		return o, err
	})
	if err != nil {
		return fmt.Errorf("last success per organization: %w", err)
	}
	return nil
}

func printStatus(w io.Writer, st *status) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "syncer\t%s\n", syncerLine(st))
	if st.NATSError != "" {
		fmt.Fprintf(tw, "nats\tunreachable: %s\n", oneLine(st.NATSError, 200))
	}
	if st.DatabaseError != "" {
		fmt.Fprintf(tw, "database\tunreachable: %s\n", oneLine(st.DatabaseError, 200))
	}
	fmt.Fprintf(tw, "stream\t%s: %d events (seq %d..%d), %d bytes, %d replica(s)\n",
		st.Stream.Name, st.Stream.Messages, st.Stream.FirstSeq, st.Stream.LastSeq, st.Stream.Bytes, st.Stream.Replicas)
	if st.Consumer.ConsumersPresent {
		fmt.Fprintf(tw, "consumer\t%s: pending %d, ack pending %d, redelivered %d, delivered up to seq %d, acked up to seq %d, waiting pulls %d\n",
			st.Consumer.Name, st.Consumer.Pending, st.Consumer.AckPending, st.Consumer.Redelivered,
			st.Consumer.DeliveredSeq, st.Consumer.AckFloorSeq, st.Consumer.WaitingPulls)
	} else {
		fmt.Fprintf(tw, "consumer\t%s: not created yet (no syncer has run)\n", st.Consumer.Name)
	}
	if st.LastApplied.At.IsZero() {
		fmt.Fprintln(tw, "last applied\tnothing yet")
	} else {
		fmt.Fprintf(tw, "last applied\tstream seq %d at %s (%s ago)\n", st.LastApplied.StreamSeq,
			st.LastApplied.At.UTC().Format(time.RFC3339), time.Since(st.LastApplied.At).Round(time.Second))
	}
	fmt.Fprintf(tw, "dead letters\t%d\n", st.DeadLetters)
	fmt.Fprintf(tw, "failed (24 h)\t%d\n", st.FailedLast24h)
	fmt.Fprintf(tw, "reconciler\t%s\n", reconcilerLine(st.Reconciler))
	if err := tw.Flush(); err != nil {
		return err
	}
	if len(st.Organizations) == 0 {
		return nil
	}
	fmt.Fprintln(w)
	tw = tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ORGANIZATION\tLAST SUCCESS\tEVENTS (24 H)")
	for _, o := range st.Organizations {
		fmt.Fprintf(tw, "%s\t%s\t%d\n", o.PortalOrgID, o.LastSuccess.UTC().Format(time.RFC3339), o.Events24h)
	}
	return tw.Flush()
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

// fetchSyncerStatus asks the running syncer what it does.
func fetchSyncerStatus(ctx context.Context, base string, st *status) {
	st.Syncer.URL = base
	ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, strings.TrimRight(base, "/")+"/status", nil)
	if err != nil {
		st.Syncer.Error = err.Error()
		return
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		st.Syncer.Error = err.Error()
		return
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		st.Syncer.Error = resp.Status
		return
	}
	if err := json.NewDecoder(resp.Body).Decode(&st.Syncer.Status); err != nil {
		st.Syncer.Error = fmt.Sprintf("read status: %v", err)
		return
	}
	st.Syncer.Reachable = true
}

// syncerLine says in one line what the running syncer does.
func syncerLine(st *status) string {
	s := st.Syncer
	switch {
	case !s.Reachable:
		return fmt.Sprintf("not reachable at %s (%s)", s.URL, s.Error)
	case s.Status.Starting != "":
		return fmt.Sprintf("starting: %s", s.Status.Starting)
	case s.Status.Consumer.Paused != "":
		return fmt.Sprintf("paused: %s since %s (%s), %d events held",
			s.Status.Consumer.Paused, s.Status.Consumer.PausedSince.UTC().Format(time.RFC3339),
			time.Since(s.Status.Consumer.PausedSince).Round(time.Second), s.Status.Consumer.Held)
	case !s.Status.Consumer.Consuming:
		return fmt.Sprintf("not consuming, %d events held", s.Status.Consumer.Held)
	default:
		return fmt.Sprintf("consuming, %d events held", s.Status.Consumer.Held)
	}
}
