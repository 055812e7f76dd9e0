package e2e

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/url"
	"os"
	"os/exec"
	"reflect"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/likeperson/portalsync/pkg/event"
	"github.com/likeperson/portalsync/syncer/consumer"
	"github.com/likeperson/portalsync/syncer/service"
	"github.com/likeperson/portalsync/testkit/eventmodel"
	"github.com/likeperson/portalsync/testkit/servicetest"
)

// syncerProcess is a real `syncer run` subprocess.
type syncerProcess struct {
	t      *testing.T
	env    []string
	cmd    *exec.Cmd
	done   chan error
	output *lockedBuffer
}

type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// syncerProcess prepares a `syncer run` subprocess against dbURL with the
// harness's consumer configuration, changed by mod when not nil; extraEnv
// adds settings beyond the consumer's (LOG_LEVEL=debug).
func (s *system) syncerProcess(t *testing.T, dbURL string, mod func(*consumer.Config), extraEnv ...string) *syncerProcess {
	t.Helper()
	c := harnessConsumer()
	if mod != nil {
		mod(&c)
	}
	env := append(os.Environ(),
		"DATABASE_URL="+dbURL,
		"NATS_URL="+s.natsURL,
		"STREAM_NAME="+s.stream.Name,
		fmt.Sprintf("STREAM_REPLICAS=%d", s.stream.Replicas),
		"SYNCER_HTTP_ADDR=127.0.0.1:0",
		"LOG_LEVEL=info",
	)
	env = append(env, consumerEnv(t, c)...)
	p := &syncerProcess{t: t, env: append(env, extraEnv...), output: s.output()}
	t.Cleanup(func() {
		if p.cmd != nil {
			_ = p.cmd.Process.Kill()
			<-p.done
		}
	})
	return p
}

// consumerEnvNames are the environment variables of `syncer run` (its
// flags in syncer/main.go) that set each consumer.Config field.
var consumerEnvNames = map[string]string{
	"Durable":         "SYNCER_CONSUMER",
	"AckWait":         "SYNCER_ACK_WAIT",
	"MaxDeliver":      "SYNCER_MAX_DELIVER",
	"BackOff":         "SYNCER_BACKOFF",
	"Workers":         "SYNCER_CONCURRENCY",
	"BatchSize":       "SYNCER_BATCH_SIZE",
	"MaxAckPending":   "SYNCER_MAX_ACK_PENDING",
	"ShutdownTimeout": "SYNCER_SHUTDOWN_TIMEOUT",
	"ApplyTimeout":    "SYNCER_APPLY_TIMEOUT",
	"PullExpiry":      "SYNCER_PULL_EXPIRY",
	"ProbeMax":        "SYNCER_PROBE_MAX",
}

// consumerEnv renders the set fields of c as the environment of `syncer
// run`, so that a subprocess runs with the configuration an in-process
// syncer is given. A set field without a variable fails the test rather
// than being left out.
func consumerEnv(t *testing.T, c consumer.Config) []string {
	t.Helper()
	var env []string
	v := reflect.ValueOf(c)
	for i := range v.NumField() {
		field, value := v.Type().Field(i), v.Field(i)
		if value.IsZero() {
			continue
		}
		name, ok := consumerEnvNames[field.Name]
		require.True(t, ok, "consumer.Config.%s has no environment variable in consumerEnvNames", field.Name)
		var s string
		switch x := value.Interface().(type) {
		case []time.Duration:
			parts := make([]string, len(x))
			for j, d := range x {
				parts[j] = d.String()
			}
			s = strings.Join(parts, ",")
		default:
			s = fmt.Sprint(x) // time.Duration prints as the syncer parses it
		}
		env = append(env, name+"="+s)
	}
	return env
}

func (p *syncerProcess) Start() {
	p.t.Helper()
	require.Nil(p.t, p.cmd, "already running")
	cmd := exec.Command(syncerBin, "run")
	cmd.Env = p.env
	cmd.Stdout, cmd.Stderr = p.output, p.output
	require.NoError(p.t, cmd.Start())
	p.cmd, p.done = cmd, make(chan error, 1)
	go func() { p.done <- cmd.Wait() }()
}

// Kill ends the process with SIGKILL: no cleanup of any kind.
func (p *syncerProcess) Kill() {
	p.t.Helper()
	require.NoError(p.t, p.cmd.Process.Signal(syscall.SIGKILL))
	<-p.done
	p.cmd = nil
}

// Stop sends SIGTERM and returns how long the process took to exit and its
// error.
func (p *syncerProcess) Stop() (time.Duration, error) {
	p.t.Helper()
	start := time.Now()
	require.NoError(p.t, p.cmd.Process.Signal(syscall.SIGTERM))
	var err error
	select {
	case err = <-p.done:
	case <-time.After(30 * time.Second):
		p.t.Fatal("syncer did not exit within 30s of SIGTERM")
	}
	p.cmd = nil
	return time.Since(start), err
}

// tcpProxy forwards connections to a target and can cut them all, to
// simulate the database becoming unreachable.
type tcpProxy struct {
	ln     net.Listener
	target string
	mu     sync.Mutex
	cut    bool
	conns  map[net.Conn]struct{}
}

func newTCPProxy(t *testing.T, target string) *tcpProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	p := &tcpProxy{ln: ln, target: target, conns: map[net.Conn]struct{}{}}
	go p.serve()
	t.Cleanup(func() { _ = ln.Close(); p.Cut() })
	return p
}

func (p *tcpProxy) Addr() string { return p.ln.Addr().String() }

func (p *tcpProxy) serve() {
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		p.mu.Lock()
		cut := p.cut
		p.mu.Unlock()
		if cut {
			_ = c.Close()
			continue
		}
		up, err := net.DialTimeout("tcp", p.target, 5*time.Second)
		if err != nil {
			_ = c.Close()
			continue
		}
		p.mu.Lock()
		p.conns[c], p.conns[up] = struct{}{}, struct{}{}
		p.mu.Unlock()
		pipe := func(dst, src net.Conn) {
			_, _ = io.Copy(dst, src)
			_ = dst.Close()
			_ = src.Close()
			p.mu.Lock()
			delete(p.conns, dst)
			delete(p.conns, src)
			p.mu.Unlock()
		}
		go pipe(c, up)
		go pipe(up, c)
	}
}

// Cut closes every connection and refuses new ones until Restore.
func (p *tcpProxy) Cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.cut = true
	for c := range p.conns {
		_ = c.Close()
	}
}

func (p *tcpProxy) Restore() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.cut = false
}

// viaProxy rewrites a database URL to connect through the proxy.
func viaProxy(t *testing.T, dbURL string, p *tcpProxy) string {
	t.Helper()
	u, err := url.Parse(dbURL)
	require.NoError(t, err)
	u.Host = p.Addr()
	return u.String()
}

// startBehindProxy starts a system without a syncer and runs one (mod as
// in runSyncer) whose database connections go through a proxy the test
// can cut. It returns the proxy and the syncer's health URL once it is
// ready.
func startBehindProxy(t *testing.T, mod func(*service.Config)) (*system, *tcpProxy, string) {
	t.Helper()
	sys := start(t, withoutSyncer())
	proxy := newTCPProxy(t, hostOf(t, sys.dbURL))
	health := sys.runSyncer(t, viaProxy(t, sys.dbURL, proxy), mod)
	servicetest.WaitReady(t, health, nil)
	return sys, proxy, health
}

// beforeProfileInsert creates a trigger, named name, that runs action (a
// PL/pgSQL statement) before the profile of member is inserted: a fault in
// the database the syncer cannot see coming.
func (s *system) beforeProfileInsert(t *testing.T, name, member, action string) {
	t.Helper()
	_, err := s.pool.Exec(context.Background(), fmt.Sprintf(`
		CREATE FUNCTION %[1]s() RETURNS trigger LANGUAGE plpgsql AS $$
		BEGIN
		  IF NEW.portal_member_id = '%[2]s' THEN %[3]s; END IF;
		  RETURN NEW;
		END $$;
		CREATE TRIGGER %[1]s BEFORE INSERT ON profiles FOR EACH ROW EXECUTE FUNCTION %[1]s();`,
		name, strings.ReplaceAll(member, "'", "''"), action))
	require.NoError(t, err)
}

// rejectMember, as the action of beforeProfileInsert, refuses the insert
// as a constraint of the database would.
const rejectMember = `RAISE EXCEPTION 'member blocked by test' USING ERRCODE = 'check_violation'`

// workload makes random events for members m0..m(members-1) in three
// organizations, with colliding portal times.
func workload(seed uint64, prefix string, members, count int) []event.Event {
	rng := rand.New(rand.NewPCG(seed, 99))
	types := []event.Type{event.MembershipCreated, event.MembershipCreated, event.MembershipUpdated, event.RoleUpdated, event.MembershipDeactivated, event.MembershipReactivated}
	roles := []event.Role{event.RolePeerMentor, event.RoleCoordinator, event.RoleOrgAdmin}
	out := make([]event.Event, count)
	for i := range out {
		typ := types[rng.IntN(len(types))]
		role := event.Role("")
		if typ.RequiresRole() || (typ == event.MembershipUpdated && rng.IntN(3) == 0) {
			role = roles[rng.IntN(len(roles))]
		}
		member := fmt.Sprintf("%s-m%d", prefix, rng.IntN(members))
		org := fmt.Sprintf("%s-o%d", prefix, rng.IntN(3))
		out[i] = event.Event{
			ID: fmt.Sprintf("%s-e%06d", prefix, i), Type: typ,
			OccurredAt:   base.Add(time.Duration(rng.IntN(count/4+1)) * time.Second),
			Organization: event.Organization{ID: org, Name: "HLF " + org},
			Member: event.Member{ID: member, Email: member + "@example.invalid", FirstName: "Fornavn-" + fmt.Sprint(i),
				LastName: "Etternavn", Phone: fmt.Sprintf("+47 9%07d", i)},
			Role: role,
		}
	}
	return out
}

// waitApplied waits until every id has a success row, or a skipped one
// (superseded by newer data): until every event was handled.
func (s *system) waitApplied(t *testing.T, ids []string, within time.Duration) {
	t.Helper()
	deadline := time.Now().Add(within)
	var n int
	for time.Now().Before(deadline) {
		require.NoError(t, s.pool.QueryRow(context.Background(),
			`SELECT count(*) FROM portal_sync_log WHERE status IN ('success', 'skipped') AND event_id = ANY($1)`, ids).Scan(&n))
		if n == len(ids) {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("%d of %d events applied within %s", n, len(ids), within)
}

// requireMatchesModel compares every member's database state with the
// reference model of the events.
func (s *system) requireMatchesModel(t *testing.T, events []event.Event) {
	t.Helper()
	ctx := context.Background()
	want := eventmodel.Expect(events)
	for id, m := range want {
		var status, first string
		require.NoError(t, s.pool.QueryRow(ctx, `SELECT status, coalesce(first_name, '') FROM profiles WHERE portal_member_id = $1`, id).Scan(&status, &first), id)
		require.Equal(t, m.Status, status, "member %s", id)
		if m.HasSnapshot {
			require.Equal(t, m.FirstName, first, "member %s", id)
		}
		rows, err := s.pool.Query(ctx, `SELECT o.portal_org_id, m.status, coalesce(r.role, '')
			FROM organization_memberships m JOIN profiles p ON p.id = m.profile_id
			JOIN organizations o ON o.id = m.organization_id
			LEFT JOIN role_assignments r ON r.profile_id = m.profile_id AND r.organization_id = m.organization_id
			WHERE p.portal_member_id = $1`, id)
		require.NoError(t, err)
		got := map[string]eventmodel.Membership{}
		for rows.Next() {
			var org string
			var ms eventmodel.Membership
			require.NoError(t, rows.Scan(&org, &ms.Status, &ms.Role))
			got[org] = ms
		}
		require.NoError(t, rows.Err())
		require.Equal(t, m.Memberships, got, "member %s", id)
	}
	var profiles int
	require.NoError(t, s.pool.QueryRow(ctx, `SELECT count(*) FROM profiles`).Scan(&profiles))
	require.Equal(t, len(want), profiles, "no member beyond the model")
}

// addAccounts creates a confirmed app account with one session for each
// e-mail.
func (s *system) addAccounts(t *testing.T, emails ...string) []eventmodel.Account {
	t.Helper()
	var out []eventmodel.Account
	for _, e := range emails {
		id := s.addAuthUser(t, e)
		_, err := s.pool.Exec(context.Background(), `INSERT INTO auth.sessions (id, user_id) VALUES (gen_random_uuid(), $1)`, id)
		require.NoError(t, err)
		out = append(out, eventmodel.Account{ID: id, Email: e, Confirmed: true})
	}
	return out
}

// requireIdentity compares every member's link, sync ban flag, ban and
// sessions with the reference model.
func (s *system) requireIdentity(t *testing.T, events []event.Event, accounts []eventmodel.Account) {
	t.Helper()
	for id, want := range eventmodel.ExpectIdentity(events, accounts) {
		require.False(t, want.Undecided, "the test's members have e-mails of their own")
		var user string
		var bySync, banned bool
		var sessions int
		require.NoError(t, s.pool.QueryRow(context.Background(), `
			SELECT coalesce(p.auth_user_id::text, ''), p.auth_banned_by_sync, coalesce(u.banned_until > now(), false),
			       (SELECT count(*) FROM auth.sessions x WHERE x.user_id = p.auth_user_id)
			FROM profiles p LEFT JOIN auth.users u ON u.id = p.auth_user_id WHERE p.portal_member_id = $1`, id).
			Scan(&user, &bySync, &banned, &sessions), id)
		require.Equal(t, want.Account, user, "member %s", id)
		require.Equal(t, want.BannedBySync, bySync, "member %s", id)
		if user != "" {
			require.Equal(t, want.Banned, banned, "member %s", id)
			if !want.SessionsEither {
				require.Equal(t, want.SessionsEnded, sessions == 0, "member %s", id)
			}
		}
	}
}

func ids(events []event.Event) []string {
	out := make([]string, len(events))
	for i, e := range events {
		out[i] = e.ID
	}
	return out
}
