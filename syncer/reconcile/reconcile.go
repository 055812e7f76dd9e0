package reconcile

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap"
	"golang.org/x/oauth2/clientcredentials"

	"github.com/likeperson/portalsync/pkg/dvmap"
	"github.com/likeperson/portalsync/pkg/event"
	"github.com/likeperson/portalsync/pkg/stream"
)

// Reconciler reads the portal and publishes what the app may lack.
type Reconciler struct {
	cfg     Config
	api     *webAPI
	js      jetstream.JetStream
	kv      jetstream.KeyValue
	db      DB
	metrics *Metrics
	log     *zap.Logger
	// lastSuccess is when the last pass that succeeded ended, in Unix
	// nanoseconds (0: none); from the stored position at first.
	lastSuccess atomic.Int64
}

// TableState is what the reconciler keeps per table in the KV bucket.
type TableState struct {
	// DeltaLink is the @odata.deltaLink of the last complete read; the
	// next pass asks it for the changes since.
	DeltaLink  string    `json:"delta_link,omitempty"`
	FullReadAt time.Time `json:"full_read_at"`
	ReadAt     time.Time `json:"read_at"`
	Rows       int       `json:"rows"`
}

// Position is the reconciler's position, as `syncer status` shows it.
type Position struct {
	LastSuccess time.Time             `json:"last_success"`
	Tables      map[string]TableState `json:"tables"`
	// Corrections is how many the last full read of the memberships emitted.
	Corrections int `json:"corrections"`
}

// Options change one pass.
type Options struct {
	// Full reads every table in full, ignoring the stored delta links.
	Full bool
	// DryRun reads the portal in full and writes to Out what differs from
	// the app's tables, publishing and storing nothing.
	DryRun bool
	Out    io.Writer
}

// Report says what one pass did.
type Report struct {
	Rows        map[string]int
	FullRead    map[string]bool
	Published   int
	Corrections int
	// Skipped counts the rows that became no event; Refused those of them
	// the mapping refused, by reason (dvmap.RowError's: the reason the
	// intake answers for the same row).
	Skipped     int
	Refused     map[string]int
	Differences int
}

// New connects the reconciler: the token source, and the KV bucket of
// positions (created when missing).
func New(ctx context.Context, cfg Config, js jetstream.JetStream, db DB, metrics *Metrics, log *zap.Logger) (*Reconciler, error) {
	cfg = cfg.WithDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("reconcile config: %w", err)
	}
	if metrics == nil {
		metrics = NewMetrics(nil)
	}
	cc := clientcredentials.Config{ClientID: cfg.ClientID, ClientSecret: cfg.ClientSecret, TokenURL: cfg.TokenURL, Scopes: []string{cfg.Scope}}
	kv, err := js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
		Bucket: cfg.Bucket, Description: "portalsync reconciler: Dataverse delta links and last pass",
		Storage: jetstream.FileStorage, Replicas: cfg.Stream.Replicas, History: 1,
	})
	if err != nil {
		return nil, fmt.Errorf("kv bucket %s: %w", cfg.Bucket, err)
	}
	r := &Reconciler{
		cfg: cfg, js: js, kv: kv, db: db, metrics: metrics, log: log,
		api: &webAPI{cfg: cfg, http: cc.Client(context.WithoutCancel(ctx)), log: log, metrics: metrics},
	}
	metrics.interval.Set(cfg.Interval.Seconds())
	// The metrics and LastSuccess start from the stored position, so that
	// a restart neither forgets a recent success nor hides an old one.
	pos, err := r.Position(ctx)
	if err != nil {
		return nil, err
	}
	metrics.observePosition(pos)
	r.setLastSuccess(pos.LastSuccess)
	return r, nil
}

// LastSuccess returns when the last pass that succeeded ended: this
// process's, or the stored position's; zero before any.
func (r *Reconciler) LastSuccess() time.Time {
	if n := r.lastSuccess.Load(); n != 0 {
		return time.Unix(0, n).UTC()
	}
	return time.Time{}
}

func (r *Reconciler) setLastSuccess(t time.Time) {
	if !t.IsZero() {
		r.lastSuccess.Store(t.UnixNano())
	}
}

// Run makes a pass, then one every Interval, until ctx ends. A failed pass
// is logged and counted; the next one starts from the last stored links.
func (r *Reconciler) Run(ctx context.Context) error {
	for {
		rep, err := r.Once(ctx, Options{})
		switch {
		case ctx.Err() != nil:
			return nil
		case err != nil:
			r.log.Error("reconciliation failed", zap.Error(err))
		default:
			r.log.Info("reconciliation done", zap.Any("rows", rep.Rows), zap.Int("published", rep.Published), zap.Int("corrections", rep.Corrections),
				zap.Any("refused", rep.Refused))
		}
		t := time.NewTimer(r.cfg.Interval)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-t.C:
		}
	}
}

func (r *Reconciler) collectionURL(k Kind) string {
	set := r.cfg.Mapping.Member.EntitySet
	if k == KindMembership {
		set = r.cfg.Mapping.Membership.EntitySet
	}
	return r.cfg.URL + APIPath + set + "?" + url.Values{"$select": {strings.Join(selectColumns(*r.cfg.Mapping, k), ",")}}.Encode()
}

// Once makes one pass over the member and membership tables.
func (r *Reconciler) Once(ctx context.Context, opts Options) (Report, error) {
	rep, err := r.once(ctx, opts)
	if err != nil && ctx.Err() == nil {
		r.metrics.failures.Inc()
	}
	return rep, err
}

func (r *Reconciler) once(ctx context.Context, opts Options) (Report, error) {
	now := r.cfg.Now().UTC()
	rep := Report{Rows: map[string]int{}, FullRead: map[string]bool{}, Refused: map[string]int{}}
	pos, err := r.Position(ctx)
	if err != nil {
		return rep, err
	}
	pub := &publisher{js: r.js, window: r.cfg.PublishWindow, stream: r.cfg.Stream.Name, now: now}
	var portal map[[2]string]Membership // the memberships of a full read
	var portalMembers map[string]event.Member
	for _, k := range []Kind{KindMember, KindMembership} {
		st := pos.Tables[k.String()]
		t, err := r.readTable(ctx, k, st, opts, pub, &rep)
		if err != nil {
			return rep, fmt.Errorf("read %s: %w", k, err)
		}
		if err := pub.flush(ctx); err != nil {
			return rep, err
		}
		rep.Rows[k.String()] = t.rows
		rep.FullRead[k.String()] = t.full
		r.metrics.rowsRead.WithLabelValues(k.String()).Add(float64(t.rows))
		if t.full {
			r.metrics.fullReads.WithLabelValues(k.String(), t.cause).Inc()
		}
		if k == KindMembership && t.full {
			portal = t.memberships
		}
		if k == KindMember && opts.DryRun {
			portalMembers = t.members
		}
		if opts.DryRun {
			continue
		}
		if err := r.advance(ctx, k, st, t, now, &pos); err != nil {
			return rep, err
		}
	}

	if opts.DryRun {
		n, err := r.diff(ctx, opts.Out, portalMembers, portal)
		rep.Differences = n
		return rep, err
	}
	return rep, r.finish(ctx, pub, portal, now, &pos, &rep)
}

// tableRead is what reading one table found.
type tableRead struct {
	rows  int
	full  bool
	cause string // why the read was full: first, forced, delta_refused, membership_deleted
	next  string // the delta link the next pass asks
	// memberships are a full membership read's rows, by member and
	// organization; members a dry run's members, by id.
	memberships       map[[2]string]Membership
	members           map[string]event.Member
	deletedMembership bool
}

// readTable reads table k, in full or as the changes since st's delta
// link, and publishes the events its rows translate to (a dry run only
// collects them). A refused delta link, and a deleted membership in a
// delta (its row names no member or organization), are read again in full.
func (r *Reconciler) readTable(ctx context.Context, k Kind, st TableState, opts Options, pub *publisher, rep *Report) (tableRead, error) {
	t := tableRead{full: opts.Full || opts.DryRun || st.DeltaLink == "", cause: "first", members: map[string]event.Member{}}
	if opts.Full || opts.DryRun {
		t.cause = "forced"
	}
	read := func(link string, delta bool) (err error) {
		t.rows = 0
		if !delta {
			t.memberships = map[[2]string]Membership{}
		}
		t.next, err = r.api.read(ctx, link, delta, func(page []map[string]any) error {
			return r.takeRows(ctx, k, page, opts.DryRun, pub, rep, &t)
		})
		return err
	}
	if t.full {
		return t, read(r.collectionURL(k), false)
	}
	err := read(st.DeltaLink, true)
	if errors.Is(err, ErrDeltaRefused) {
		r.log.Warn("delta link refused; reading the table in full", zap.String("table", k.String()), zap.Error(err))
		t.full, t.cause = true, "delta_refused"
		return t, read(r.collectionURL(k), false)
	}
	if err == nil && k == KindMembership && t.deletedMembership {
		t.full, t.cause = true, "membership_deleted"
		return t, read(r.collectionURL(k), false)
	}
	return t, err
}

// takeRows translates one page of table k's rows and publishes their
// events (a dry run keeps the members instead), counting in rep what it
// skipped or refused and in t what the pass needs after the read.
func (r *Reconciler) takeRows(ctx context.Context, k Kind, page []map[string]any, dryRun bool, pub *publisher, rep *Report, t *tableRead) error {
	for _, row := range page {
		t.rows++
		re, err := translateRow(*r.cfg.Mapping, k, row)
		if err != nil {
			rep.Skipped++
			r.log.Warn("portal row not translated", zap.String("table", k.String()), zap.Error(err))
			continue
		}
		if re.deletedMembership {
			t.deletedMembership = true
		}
		if re.membership != nil && t.memberships != nil {
			t.memberships[[2]string{re.membership.Member, re.membership.Org}] = *re.membership
		}
		if re.ev == nil {
			if re.skip != "" && !re.deletedMembership {
				rep.Skipped++
			}
			if re.refused != "" {
				rep.Refused[re.refused]++
			}
			continue
		}
		if dryRun {
			if k == KindMember {
				t.members[re.ev.Member.ID] = re.ev.Member
			}
			continue
		}
		if err := pub.publish(ctx, re); err != nil {
			return err
		}
	}
	return nil
}

// advance stores table k's new position after a complete read.
func (r *Reconciler) advance(ctx context.Context, k Kind, st TableState, t tableRead, now time.Time, pos *Position) error {
	if t.next == "" {
		return fmt.Errorf("read %s: no @odata.deltaLink (is change tracking enabled on the table?)", k)
	}
	st.DeltaLink, st.ReadAt, st.Rows = t.next, now, t.rows
	if t.full {
		st.FullReadAt = now
	}
	pos.Tables[k.String()] = st
	if err := r.put(ctx, "table."+k.String(), st); err != nil {
		return err
	}
	r.metrics.observeTable(k.String(), st)
	return nil
}

// finish ends a pass that read both tables: it corrects the memberships
// a full read no longer has, and records the pass's success.
func (r *Reconciler) finish(ctx context.Context, pub *publisher, portal map[[2]string]Membership, now time.Time, pos *Position, rep *Report) error {
	if portal != nil {
		n, err := r.correct(ctx, pub, portal, now)
		if err != nil {
			return err
		}
		rep.Corrections = n
		pos.Corrections = n
	}
	rep.Published = pub.published
	r.metrics.published.Add(float64(pub.published))
	pos.LastSuccess = now
	if err := r.put(ctx, "last", Position{LastSuccess: now, Corrections: pos.Corrections}); err != nil {
		return err
	}
	r.metrics.lastSuccess.Set(float64(now.Unix()))
	r.setLastSuccess(now)
	return nil
}

// correct deactivates every membership the app holds active that the
// portal's full read does not have as active.
func (r *Reconciler) correct(ctx context.Context, pub *publisher, portal map[[2]string]Membership, now time.Time) (int, error) {
	app, err := appMemberships(ctx, r.db)
	if err != nil {
		return 0, err
	}
	n := 0
	for _, k := range sortedPairs(app) {
		ms := app[k]
		if !ms.Active || portal[k].Active {
			continue
		}
		re, err := correction(ms, now, strconv.FormatInt(now.Unix(), 10))
		if err != nil {
			return n, err
		}
		if err := pub.publish(ctx, re); err != nil {
			return n, err
		}
		n++
		r.log.Info("correction: membership active in the app, not in the portal", zap.String("member_id", ms.Member), zap.String("organization_id", ms.Org))
	}
	if err := pub.flush(ctx); err != nil {
		return n, err
	}
	r.metrics.corrections.Add(float64(n))
	return n, nil
}

// diff writes what differs between the portal's rows and the app's tables:
// ids and field names, never values.
func (r *Reconciler) diff(ctx context.Context, w io.Writer, members map[string]event.Member, portal map[[2]string]Membership) (int, error) {
	profiles, err := appProfiles(ctx, r.db)
	if err != nil {
		return 0, err
	}
	app, err := appMemberships(ctx, r.db)
	if err != nil {
		return 0, err
	}
	var lines []string
	for id, m := range members {
		p, ok := profiles[id]
		if !ok {
			lines = append(lines, fmt.Sprintf("member %s: in the portal, not in the app", id))
			continue
		}
		var fields []string
		if !strings.EqualFold(m.Email, p.Email) {
			fields = append(fields, "email")
		}
		if m.FirstName != p.FirstName {
			fields = append(fields, "first_name")
		}
		if m.LastName != p.LastName {
			fields = append(fields, "last_name")
		}
		if m.Phone != p.Phone {
			fields = append(fields, "phone")
		}
		if len(fields) > 0 {
			lines = append(lines, fmt.Sprintf("member %s: %s differ", id, strings.Join(fields, ", ")))
		}
	}
	for k, pm := range portal {
		am, ok := app[k]
		switch {
		case !ok:
			lines = append(lines, fmt.Sprintf("membership %s in %s: in the portal (%s), not in the app", k[0], k[1], state(pm.Active)))
		case am.Active != pm.Active:
			lines = append(lines, fmt.Sprintf("membership %s in %s: %s in the portal, %s in the app", k[0], k[1], state(pm.Active), state(am.Active)))
		case pm.Active && pm.Role != "" && am.Role != pm.Role:
			lines = append(lines, fmt.Sprintf("membership %s in %s: role %s in the portal, %q in the app", k[0], k[1], pm.Role, am.Role))
		}
	}
	for k, am := range app {
		if _, ok := portal[k]; !ok && am.Active {
			lines = append(lines, fmt.Sprintf("membership %s in %s: active in the app, not in the portal (a pass would deactivate it)", k[0], k[1]))
		}
	}
	slices.Sort(lines)
	for _, l := range lines {
		if _, err := fmt.Fprintln(w, l); err != nil {
			return len(lines), err
		}
	}
	return len(lines), nil
}

func state(active bool) string {
	if active {
		return "active"
	}
	return "inactive"
}

func sortedPairs(m map[[2]string]Membership) [][2]string {
	keys := make([][2]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, func(a, b [2]string) int {
		if c := strings.Compare(a[0], b[0]); c != 0 {
			return c
		}
		return strings.Compare(a[1], b[1])
	})
	return keys
}

// Position reads the stored position (empty before the first pass).
func (r *Reconciler) Position(ctx context.Context) (Position, error) {
	return ReadPosition(ctx, r.kv)
}

// ReadPosition reads a reconciler's position from its KV bucket.
func ReadPosition(ctx context.Context, kv jetstream.KeyValue) (Position, error) {
	pos := Position{Tables: map[string]TableState{}}
	if e, err := kv.Get(ctx, "last"); err == nil {
		var last Position
		if err := json.Unmarshal(e.Value(), &last); err != nil {
			return pos, fmt.Errorf("read position: %w", err)
		}
		pos.LastSuccess, pos.Corrections = last.LastSuccess, last.Corrections
	} else if !errors.Is(err, jetstream.ErrKeyNotFound) {
		return pos, fmt.Errorf("read position: %w", err)
	}
	for _, k := range []Kind{KindMember, KindMembership} {
		e, err := kv.Get(ctx, "table."+k.String())
		if errors.Is(err, jetstream.ErrKeyNotFound) {
			continue
		}
		if err != nil {
			return pos, fmt.Errorf("read position of %s: %w", k, err)
		}
		var st TableState
		if err := json.Unmarshal(e.Value(), &st); err != nil {
			return pos, fmt.Errorf("read position of %s: %w", k, err)
		}
		pos.Tables[k.String()] = st
	}
	return pos, nil
}

func (r *Reconciler) put(ctx context.Context, key string, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	if _, err := r.kv.Put(ctx, key, b); err != nil {
		return fmt.Errorf("store %s: %w", key, err)
	}
	return nil
}

// publisher publishes events asynchronously, at most window awaiting
// their acknowledgement.
type publisher struct {
	js        jetstream.JetStream
	window    int
	stream    string
	now       time.Time
	pending   []jetstream.PubAckFuture
	published int
}

func (p *publisher) publish(ctx context.Context, re rowEvent) error {
	ev, body := re.ev, re.body
	if body == nil { // a deletion: stamped with the pass's time
		ev.OccurredAt = p.now
		var err error
		if body, _, err = dvmap.Encode(ev); err != nil {
			return fmt.Errorf("event %s: %w", ev.ID, err)
		}
	}
	msg := nats.NewMsg(event.Subject(ev.Member.ID))
	msg.Data = body
	msg.Header.Set(jetstream.MsgIDHeader, ev.ID)
	msg.Header.Set(stream.HeaderEventType, string(ev.Type))
	msg.Header.Set(stream.HeaderMemberID, ev.Member.ID)
	msg.Header.Set(stream.HeaderReceivedAt, p.now.Format(time.RFC3339Nano))
	msg.Header.Set(stream.HeaderSource, stream.SourceReconciliation)
	f, err := p.js.PublishMsgAsync(msg, jetstream.WithExpectStream(p.stream))
	if err != nil {
		return fmt.Errorf("publish %s: %w", ev.ID, err)
	}
	p.pending = append(p.pending, f)
	p.published++
	if len(p.pending) >= p.window {
		return p.flush(ctx)
	}
	return nil
}

func (p *publisher) flush(ctx context.Context) error {
	for _, f := range p.pending {
		select {
		case <-f.Ok():
		case err := <-f.Err():
			p.pending = nil
			return fmt.Errorf("publish %s: %w", f.Msg().Header.Get(jetstream.MsgIDHeader), err)
		case <-ctx.Done():
			p.pending = nil
			return ctx.Err()
		}
	}
	p.pending = p.pending[:0]
	return nil
}
