// Package replay re-applies the event stream to the database, to rebuild or
// repair it: with an ordered ephemeral consumer, up to the last event present
// when it started, optionally filtered, optionally as a dry run that reports
// what would change and writes nothing. It routes, applies and settles
// events as the syncer's consumer does (consumer.Worker, consumer.Settle),
// with a settler of its own where a replay differs (settle.go).
package replay

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"sort"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap"

	"github.com/likeperson/portalsync/pkg/event"
	"github.com/likeperson/portalsync/pkg/stream"
	"github.com/likeperson/portalsync/syncer/consumer"
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
	// DryRun applies each fetch (fetchSize events) in a transaction of
	// its own that is rolled back, and reports per table how many rows
	// would change. A fetch does not see what earlier fetches would have
	// changed, so on a damaged database a row that events of several
	// fetches repair is counted once per fetch.
	DryRun bool
	// ApplyTimeout bounds each batch's transaction (default
	// consumer.DefaultApplyTimeout, the syncer's): one that takes longer
	// is retried and then stops the replay with the --from-seq to rerun.
	ApplyTimeout time.Duration
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
	// Skipped counts events of an unknown type, events whose every part
	// newer data had superseded, and the records of refused changes
	// (logged when they were consumed; there is no event to apply).
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
	// applyTimeout is the run's Options.ApplyTimeout, with its default.
	applyTimeout time.Duration
}

// New returns a Replayer.
func New(js jetstream.JetStream, pool *pgxpool.Pool, log *zap.Logger) *Replayer {
	return &Replayer{js: js, pool: pool, st: store.New(pool), log: log}
}

// Run replays according to opts: it opens an ordered consumer from where
// opts start, then fetches and applies until the last event present when
// it started; a dry run applies each fetch in a transaction of its own,
// reads what it changed and rolls it back.
func (r *Replayer) Run(ctx context.Context, opts Options, progress Progress) (Report, error) {
	started := time.Now()
	r.applyTimeout = cmp.Or(opts.ApplyTimeout, consumer.DefaultApplyTimeout)
	var rep Report
	cons, lastSeq, err := r.open(ctx, opts, progress)
	if err != nil || cons == nil {
		rep.Took = time.Since(started)
		return rep, err
	}
	defer progress.Finish()
	apply := func(ctx context.Context, f fetched) error { return r.applyAll(ctx, r.st, false, f, &rep) }
	if opts.DryRun {
		conn, err := pgx.ConnectConfig(ctx, r.pool.Config().ConnConfig.Copy())
		if err != nil {
			return rep, fmt.Errorf("connect for dry run: %w", err)
		}
		defer func() { _ = conn.Close(context.WithoutCancel(ctx)) }()
		apply = func(ctx context.Context, f fetched) error { return r.dryRun(ctx, conn, f, &rep) }
	}
	if err := r.replay(ctx, cons, lastSeq, apply, opts, progress, &rep); err != nil {
		return rep, err
	}
	rep.Took = time.Since(started)
	return rep, nil
}

// open creates the ordered consumer that delivers what opts select and
// starts progress with how many events it will deliver. It returns a nil
// consumer (and finishes progress) when there is nothing to replay, and
// the stream's last sequence when it started, where the replay ends.
func (r *Replayer) open(ctx context.Context, opts Options, progress Progress) (jetstream.Consumer, uint64, error) {
	s, err := r.js.Stream(ctx, opts.Stream)
	if err != nil {
		return nil, 0, fmt.Errorf("stream %s: %w", opts.Stream, err)
	}
	info := s.CachedInfo() // fetched by js.Stream just now
	lastSeq := info.State.LastSeq
	if info.State.Msgs == 0 || lastSeq < opts.FromSeq {
		progress.Start(0)
		progress.Finish()
		return nil, 0, nil
	}
	cons, err := s.OrderedConsumer(ctx, consumerConfig(opts))
	if err != nil {
		return nil, 0, fmt.Errorf("ordered consumer: %w", err)
	}
	// The consumer's creation answered with what it will deliver.
	cinfo := cons.CachedInfo()
	progress.Start(int64(cinfo.NumPending))
	if cinfo.NumPending == 0 {
		progress.Finish()
		return nil, 0, nil
	}
	return cons, lastSeq, nil
}

// consumerConfig selects the events opts ask for: one member's subject,
// from a sequence or a time, or everything.
func consumerConfig(opts Options) jetstream.OrderedConsumerConfig {
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
	return cfg
}

// dryRun applies one fetch's events in a transaction of its own on conn,
// a connection of the dry run's own (the per-transaction statistics that
// count the changes also hold a pooled backend's earlier, not yet flushed,
// activity), adds what it changed to rep and rolls it back. A transaction
// per fetch, not one for the whole replay: the rows it upserts stay locked
// until it ends, and the live syncer's events of those rows (every
// organization the stream names) would wait for the whole dry run.
func (r *Replayer) dryRun(ctx context.Context, conn *pgx.Conn, f fetched, rep *Report) error {
	if len(f.items) == 0 {
		return nil
	}
	tx, err := conn.Begin(ctx)
	if err != nil {
		return fmt.Errorf("begin dry run: %w", err)
	}
	defer func() { _ = tx.Rollback(context.WithoutCancel(ctx)) }()
	if err := r.applyAll(ctx, store.New(tx), true, f, rep); err != nil {
		return err
	}
	changes, err := tableChanges(ctx, tx)
	if err != nil {
		return err
	}
	rep.Changes = addChanges(rep.Changes, changes)
	return nil
}

// replay fetches and applies until the last event present when it
// started (lastSeq), or the consumer has no more.
func (r *Replayer) replay(ctx context.Context, cons jetstream.Consumer, lastSeq uint64, apply func(context.Context, fetched) error, opts Options, progress Progress, rep *Report) error {
	for {
		f, err := r.fetch(cons, lastSeq, opts, rep)
		if err != nil {
			return err
		}
		if err := apply(ctx, f); err != nil {
			return err
		}
		progress.Add(f.read)
		if f.done || f.read == 0 {
			return nil
		}
	}
}

// fetched is what one fetch read: the events to apply, each with its
// subject, how many messages were read, and whether the replay's end was
// reached.
type fetched struct {
	items    []store.Item
	subjects []string
	read     int
	done     bool
}

// fetch reads up to fetchSize messages and decodes them.
func (r *Replayer) fetch(cons jetstream.Consumer, lastSeq uint64, opts Options, rep *Report) (fetched, error) {
	var f fetched
	batch, err := cons.Fetch(fetchSize, jetstream.FetchMaxWait(2*time.Second))
	if err != nil {
		return f, fmt.Errorf("fetch: %w", err)
	}
	for msg := range batch.Messages() {
		f.read++
		meta, md, err := consumer.Meta(msg)
		if err != nil {
			return f, err
		}
		rep.Read++
		rep.LastSeq = meta.StreamSeq
		if it, ok := r.item(msg, meta, opts, rep); ok {
			f.items = append(f.items, it)
			f.subjects = append(f.subjects, msg.Subject())
		}
		if meta.StreamSeq >= lastSeq || md.NumPending == 0 {
			f.done = true
			break
		}
	}
	if err := batch.Error(); err != nil && !errors.Is(err, jetstream.ErrNoMessages) && !f.done {
		return f, fmt.Errorf("fetch: %w", err)
	}
	return f, nil
}

// item decodes one message into a replay item; invalid events and events
// of other organizations are counted and left out.
func (r *Replayer) item(msg jetstream.Msg, meta store.Meta, opts Options, rep *Report) (store.Item, bool) {
	if msg.Headers().Get(stream.HeaderRefused) != "" {
		// A refused change's record (logged when it was consumed): no
		// event to apply again.
		rep.Skipped++
		return store.Item{}, false
	}
	ev, err := event.Decode(msg.Data())
	if err != nil {
		rep.Invalid++
		r.log.Warn("replay: invalid event", zap.Uint64("stream_seq", meta.StreamSeq), zap.Error(err))
		return store.Item{}, false
	}
	if opts.OrgID != "" && ev.Organization.ID != event.CanonicalID(opts.OrgID) {
		rep.FilteredOut++
		return store.Item{}, false
	}
	// Logged as a replay's, whatever its first delivery's source was.
	meta.Attempt, meta.Replay, meta.Source = 1, true, stream.SourceReplay
	return store.Item{Event: ev, Meta: meta}, true
}

// fetchSize is how many events replay reads at a time; workers is how many
// transactions apply them at once (the dry run uses its fetch's one
// transaction).
const (
	fetchSize = 4096
	workers   = 4
)

// applyAll applies fetched events: each worker's share in a transaction
// of its own, at once. A member's events all go to the same worker, in
// stream order, routed as the syncer routes them (consumer.Worker). The
// dry run, and a fetch too small to share, apply in one batch.
func (r *Replayer) applyAll(ctx context.Context, db Applier, dryRun bool, f fetched, rep *Report) error {
	if len(f.items) == 0 {
		return nil
	}
	if dryRun || len(f.items) < 2*workers {
		return r.apply(ctx, db, f.items, rep)
	}
	groups := group(f.items, f.subjects, workers)
	reps := make([]Report, workers)
	errs := make([]error, workers)
	var wg sync.WaitGroup
	for i, g := range groups {
		wg.Go(func() { errs[i] = r.apply(ctx, db, g, &reps[i]) })
	}
	wg.Wait()
	for i := range reps {
		rep.Applied += reps[i].Applied
		rep.Skipped += reps[i].Skipped
		rep.Invalid += reps[i].Invalid
	}
	return firstStop(errs)
}

// group shares items out among n workers by their subjects, as the
// syncer's consumer does, keeping their order.
func group(items []store.Item, subjects []string, n int) [][]store.Item {
	groups := make([][]store.Item, n)
	for i, it := range items {
		w := consumer.Worker(subjects[i], n)
		groups[w] = append(groups[w], it)
	}
	return groups
}

// apply applies items as one batch (in the dry run, a savepoint of its
// fetch's transaction) and settles them by the consumer's outcome table, through
// replay's settler.
func (r *Replayer) apply(ctx context.Context, db Applier, items []store.Item, rep *Report) error {
	if len(items) == 0 {
		return nil
	}
	return consumer.Settle(ctx, &settler{db: db, rep: rep, log: r.log, timeout: r.applyTimeout}, items, r.log)
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
	return out, nil
}

// addChanges adds the changes of one transaction to those counted so far,
// per table, in table order.
func addChanges(sum, add []TableChange) []TableChange {
	for _, a := range add {
		i := sort.Search(len(sum), func(i int) bool { return sum[i].Table >= a.Table })
		if i == len(sum) || sum[i].Table != a.Table {
			sum = slices.Insert(sum, i, TableChange{Table: a.Table})
		}
		sum[i].Inserted += a.Inserted
		sum[i].Updated += a.Updated
		sum[i].Deleted += a.Deleted
	}
	return sum
}
