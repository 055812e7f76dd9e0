// Package replay re-applies the event stream to the database, to rebuild or
// repair it: with an ordered ephemeral consumer, up to the last event present
// when it started, optionally filtered, optionally as a dry run that reports
// what would change and writes nothing.
package replay

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"sort"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap"

	"github.com/likeperson/portalsync/pkg/event"
	"github.com/likeperson/portalsync/pkg/stream"
	"github.com/likeperson/portalsync/syncer/store"
)

// Options select what to replay. With none of Since, FromSeq, MemberID and
// OrgID set, the whole stream is replayed.
type Options struct {
	// Stream is the event stream's name.
	Stream string
	// Since replays events the stream received at or after this time.
	Since time.Time
	// FromSeq replays from this stream sequence on.
	FromSeq uint64
	// MemberID replays one member's events (by subject).
	MemberID string
	// OrgID replays events of one organization (read and filtered).
	OrgID string
	// DryRun applies everything in one transaction that is rolled back,
	// and reports per table how many rows would change.
	DryRun bool
}

// Progress is told how far the replay is.
type Progress interface {
	Start(total int64)
	Add(n int)
	Finish()
}

// Report says what a replay did.
type Report struct {
	// Read is how many events were read from the stream.
	Read int
	// Applied counts events applied (or, in a dry run, that would be).
	Applied int
	// Skipped counts events of an unknown type, and events whose every
	// part newer data had superseded.
	Skipped int
	// FilteredOut counts events read but not of the selected organization.
	FilteredOut int
	// Invalid counts events that could not be decoded or applied, or that
	// the store refused (dated in the future).
	Invalid int
	// Changes holds, per table, the rows inserted, updated and deleted.
	Changes []TableChange
	// LastSeq is the last stream sequence replayed.
	LastSeq uint64
	// Took is how long the replay ran.
	Took time.Duration
}

// TableChange counts row changes in one table.
type TableChange struct {
	Table    string
	Inserted int64
	Updated  int64
	Deleted  int64
}

// Total is the number of changed rows.
func (c TableChange) Total() int64 { return c.Inserted + c.Updated + c.Deleted }

// TotalChanges sums the changes of every table.
func (r Report) TotalChanges() int64 {
	var n int64
	for _, c := range r.Changes {
		n += c.Total()
	}
	return n
}

// Replayer replays the stream into the database.
type Replayer struct {
	js   jetstream.JetStream
	pool *pgxpool.Pool
	st   *store.Store
	log  *zap.Logger
}

// New returns a Replayer.
func New(js jetstream.JetStream, pool *pgxpool.Pool, log *zap.Logger) *Replayer {
	return &Replayer{js: js, pool: pool, st: store.New(pool), log: log}
}

// Run replays according to opts.
func (r *Replayer) Run(ctx context.Context, opts Options, progress Progress) (Report, error) {
	started := time.Now()
	var rep Report
	s, err := r.js.Stream(ctx, opts.Stream)
	if err != nil {
		return rep, fmt.Errorf("stream %s: %w", opts.Stream, err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		return rep, fmt.Errorf("stream info: %w", err)
	}
	lastSeq := info.State.LastSeq
	cfg := jetstream.OrderedConsumerConfig{DeliverPolicy: jetstream.DeliverAllPolicy}
	if opts.MemberID != "" {
		cfg.FilterSubjects = []string{event.Subject(event.CanonicalID(opts.MemberID))}
	}
	switch {
	case opts.FromSeq > 0:
		cfg.DeliverPolicy, cfg.OptStartSeq = jetstream.DeliverByStartSequencePolicy, opts.FromSeq
	case !opts.Since.IsZero():
		since := opts.Since
		cfg.DeliverPolicy, cfg.OptStartTime = jetstream.DeliverByStartTimePolicy, &since
	}
	if info.State.Msgs == 0 || lastSeq < opts.FromSeq {
		progress.Start(0)
		progress.Finish()
		rep.Took = time.Since(started)
		return rep, nil
	}
	cons, err := s.OrderedConsumer(ctx, cfg)
	if err != nil {
		return rep, fmt.Errorf("ordered consumer: %w", err)
	}
	cinfo, err := cons.Info(ctx)
	if err != nil {
		return rep, fmt.Errorf("consumer info: %w", err)
	}
	progress.Start(int64(cinfo.NumPending))
	defer progress.Finish()
	if cinfo.NumPending == 0 {
		rep.Took = time.Since(started)
		return rep, nil
	}

	var tx pgx.Tx
	if opts.DryRun {
		// A connection of its own: the per-transaction statistics that
		// count the changes also hold a pooled backend's earlier, not yet
		// flushed, activity.
		conn, err := pgx.ConnectConfig(ctx, r.pool.Config().ConnConfig.Copy())
		if err != nil {
			return rep, fmt.Errorf("connect for dry run: %w", err)
		}
		defer func() { _ = conn.Close(context.WithoutCancel(ctx)) }()
		if tx, err = conn.Begin(ctx); err != nil {
			return rep, fmt.Errorf("begin dry run: %w", err)
		}
		defer func() { _ = tx.Rollback(context.WithoutCancel(ctx)) }()
	}

	for {
		batch, err := cons.Fetch(fetchSize, jetstream.FetchMaxWait(2*time.Second))
		if err != nil {
			return rep, fmt.Errorf("fetch: %w", err)
		}
		var items []store.Item
		n := 0
		done := false
		for msg := range batch.Messages() {
			n++
			md, err := msg.Metadata()
			if err != nil {
				return rep, fmt.Errorf("metadata: %w", err)
			}
			rep.Read++
			rep.LastSeq = md.Sequence.Stream
			if it, ok := r.item(msg, md, opts, &rep); ok {
				items = append(items, it)
			}
			if md.Sequence.Stream >= lastSeq || md.NumPending == 0 {
				done = true
				break
			}
		}
		if err := batch.Error(); err != nil && !errors.Is(err, jetstream.ErrNoMessages) && !done {
			return rep, fmt.Errorf("fetch: %w", err)
		}
		if err := r.applyAll(ctx, tx, items, &rep); err != nil {
			return rep, err
		}
		progress.Add(n)
		if done || n == 0 {
			break
		}
	}
	if opts.DryRun {
		if rep.Changes, err = tableChanges(ctx, tx); err != nil {
			return rep, err
		}
	}
	rep.Took = time.Since(started)
	return rep, nil
}

// item decodes one message into a replay item; invalid events and events
// of other organizations are counted and left out.
func (r *Replayer) item(msg jetstream.Msg, md *jetstream.MsgMetadata, opts Options, rep *Report) (store.Item, bool) {
	if msg.Headers().Get(stream.HeaderRefused) != "" {
		// A refused change's record (logged when it was consumed): no
		// event to apply again.
		return store.Item{}, false
	}
	ev, err := event.Decode(msg.Data())
	if err != nil {
		rep.Invalid++
		r.log.Warn("replay: invalid event", zap.Uint64("stream_seq", md.Sequence.Stream), zap.Error(err))
		return store.Item{}, false
	}
	if opts.OrgID != "" && ev.Organization.ID != event.CanonicalID(opts.OrgID) {
		rep.FilteredOut++
		return store.Item{}, false
	}
	meta := store.Meta{StreamSeq: md.Sequence.Stream, Attempt: 1, Replay: true, Source: stream.SourceReplay}
	if ts := msg.Headers().Get(stream.HeaderReceivedAt); ts != "" {
		meta.ReceivedAt, _ = time.Parse(time.RFC3339Nano, ts)
	}
	return store.Item{Event: ev, Meta: meta}, true
}

// fetchSize is how many events replay reads at a time; workers is how many
// transactions apply them at once (the dry run uses its one transaction).
const (
	fetchSize = 4096
	workers   = 4
)

// applyAll applies fetched events. A member's events all go to the same
// worker, in stream order, as in the syncer.
func (r *Replayer) applyAll(ctx context.Context, tx pgx.Tx, items []store.Item, rep *Report) error {
	if tx != nil || len(items) < 2*workers {
		return r.apply(ctx, tx, items, rep)
	}
	groups := make([][]store.Item, workers)
	for _, it := range items {
		h := fnv.New32a()
		h.Write([]byte(it.Event.Member.ID))
		i := h.Sum32() % workers
		groups[i] = append(groups[i], it)
	}
	reps := make([]Report, workers)
	errs := make([]error, workers)
	var wg sync.WaitGroup
	for i, g := range groups {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = r.apply(ctx, nil, g, &reps[i])
		}()
	}
	wg.Wait()
	for i := range reps {
		rep.Applied += reps[i].Applied
		rep.Skipped += reps[i].Skipped
		rep.Invalid += reps[i].Invalid
	}
	return errors.Join(errs...)
}

// apply applies one fetched batch in one transaction (a savepoint of the
// dry run's transaction). When that fails for a reason no retry fixes, the
// events are applied one by one so that only the bad ones are left out.
func (r *Replayer) apply(ctx context.Context, tx pgx.Tx, items []store.Item, rep *Report) error {
	if len(items) == 0 {
		return nil
	}
	results, err := r.batch(ctx, tx, items)
	if err == nil {
		count(results, rep)
		return nil
	}
	if !store.IsPermanent(err) {
		seq := items[0].Meta.StreamSeq
		return fmt.Errorf("replay stopped at stream seq %d (rerun with --from-seq %d): %w", seq, seq, err)
	}
	for _, it := range items {
		res, err := r.batch(ctx, tx, []store.Item{it})
		if err != nil {
			if !store.IsPermanent(err) {
				return fmt.Errorf("replay stopped at stream seq %d (rerun with --from-seq %d): %w", it.Meta.StreamSeq, it.Meta.StreamSeq, err)
			}
			rep.Invalid++
			r.log.Warn("replay: event not applied", zap.Uint64("stream_seq", it.Meta.StreamSeq),
				zap.String("event_id", it.Event.ID), zap.Error(err))
			continue
		}
		count(res, rep)
	}
	return nil
}

// retryAttempts bounds how often a batch that met concurrent work is tried.
const retryAttempts = 3

func (r *Replayer) batch(ctx context.Context, tx pgx.Tx, items []store.Item) ([]store.Result, error) {
	if tx == nil {
		// A conflict with concurrent work (a deadlock, the live syncer
		// logging the same event) is retried, as the syncer retries it.
		for attempt := 1; ; attempt++ {
			res, err := r.st.ApplyBatch(ctx, items)
			if store.KindOf(err) != store.KindRetry || attempt == retryAttempts {
				return res, err
			}
			select {
			case <-ctx.Done():
				return nil, ctx.Err()
			case <-time.After(time.Duration(attempt) * 100 * time.Millisecond):
			}
		}
	}
	// In the dry run's transaction, each batch is a savepoint of it.
	return store.New(tx).ApplyBatch(ctx, items)
}

func count(results []store.Result, rep *Report) {
	for _, res := range results {
		switch {
		case res.AlreadyDone:
		case res.Status == store.StatusSkipped:
			rep.Skipped++
		case res.Status == store.StatusFailed:
			rep.Invalid++
		default:
			rep.Applied++
		}
	}
}

// tableChanges reads the row counts the transaction changed, per table.
func tableChanges(ctx context.Context, tx pgx.Tx) ([]TableChange, error) {
	rows, err := tx.Query(ctx, `SELECT schemaname || '.' || relname, n_tup_ins, n_tup_upd, n_tup_del
		FROM pg_stat_xact_user_tables
		WHERE schemaname IN ('public', 'auth') AND (n_tup_ins + n_tup_upd + n_tup_del) > 0`)
	if err != nil {
		return nil, fmt.Errorf("read changes: %w", err)
	}
	out, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (TableChange, error) {
		var c TableChange
		err := row.Scan(&c.Table, &c.Inserted, &c.Updated, &c.Deleted)
		return c, err
	})
	if err != nil {
		return nil, fmt.Errorf("read changes: %w", err)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Table < out[j].Table })
	return out, nil
}
