package e2e

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/stretchr/testify/require"

	"github.com/likeperson/portalsync/console/ui"
	"github.com/likeperson/portalsync/testkit/browser"
	"github.com/likeperson/portalsync/testkit/servicetest"
	"github.com/likeperson/portalsync/testkit/supabasetest"
)

// startConsole runs the screen in-process against the system's Supabase
// Auth and database, connected as a login role that is only a member of
// portalsync_console (as docs/ACCESS.md tells an administrator to make
// it), and returns its base URL.
func (s *supa) startConsole(t *testing.T) string {
	t.Helper()
	ctx := context.Background()
	b := make([]byte, 5)
	_, _ = rand.Read(b)
	role := "ps_screen_" + hex.EncodeToString(b)
	_, err := s.pool.Exec(ctx, fmt.Sprintf("CREATE ROLE %s LOGIN NOINHERIT IN ROLE portalsync_console", role))
	require.NoError(t, err)
	t.Cleanup(func() {
		_, _ = s.pool.Exec(context.Background(), fmt.Sprintf(
			"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = '%s'", role))
		_, _ = s.pool.Exec(context.Background(), "DROP ROLE IF EXISTS "+role)
	})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	hln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	cctx, cancel := context.WithCancel(ctx)
	runUntilCleanup(t, "the console", cancel, func() error {
		return ui.Run(cctx, ui.Config{Listener: ln, HealthListener: hln, DatabaseURL: s.db.URL(role),
			AuthURL: s.auth.URL, JWTSecret: supabasetest.JWTSecret}, s.logger(t, "console"))
	})
	servicetest.WaitReady(t, "http://"+hln.Addr().String(), nil)
	return "http://" + ln.Addr().String()
}

// person is a member with a portal record and an app account.
type person struct{ member, first, last string }

func (p person) email() string { return p.member + "@example.invalid" }
func (p person) name() string  { return p.first + " " + p.last }

// accessTokens signs each person up and in, and returns their access
// tokens by member.
func (s *supa) accessTokens(t *testing.T, people ...person) map[string]string {
	t.Helper()
	tokens := map[string]string{}
	for _, p := range people {
		require.True(t, s.signUp(t, p.email()).OK(), p.member)
		tokens[p.member] = s.signIn(t, p.email()).Session.AccessToken
	}
	return tokens
}

// join sends the portal's membership-created for p in org with role, and
// waits for it to be applied.
func (s *supa) join(t *testing.T, p person, org, role string, at time.Time) evt {
	t.Helper()
	e := s.event("membership-created", p.member, org, role, at)
	e.Member["first_name"], e.Member["last_name"] = p.first, p.last
	s.send(t, e)
	require.Equal(t, "success", s.waitLogged(t, e.ID))
	return e
}

// page is one browser session (one person's browser) on the screen.
type page struct {
	t    *testing.T
	ctx  context.Context
	base string
}

func (p *page) open(path string) {
	p.t.Helper()
	browser.Do(p.t, p.ctx, chromedp.Navigate(p.base+path), chromedp.WaitReady(chromedp.CSS("main h1")))
}

func (p *page) text() string {
	p.t.Helper()
	return browser.Get(p.t, p.ctx, chromedp.Text(chromedp.CSS("body")))
}

func (p *page) location() string {
	p.t.Helper()
	return browser.Get(p.t, p.ctx, chromedp.Location())
}

func (p *page) eval(js string) string {
	p.t.Helper()
	return browser.Get(p.t, p.ctx, chromedp.Evaluate[string](js, chromedp.EvalAwaitPromise))
}

func (p *page) signIn(who person) {
	p.t.Helper()
	p.open("/login")
	browser.Do(p.t, p.ctx,
		chromedp.SendKeys(chromedp.CSS("#email"), who.email()),
		chromedp.SendKeys(chromedp.CSS("#password"), password),
		chromedp.Click(chromedp.CSS("form.login button")),
	)
	p.waitFor(func() bool { return !strings.Contains(p.location(), "/login") }, 10*time.Second)
	require.NotContains(p.t, p.location(), "/login", "%s signed in: %s", who.member, p.text())
}

// submit clicks a form's button and waits for the page it leads to.
func (p *page) submit(button string) {
	p.t.Helper()
	p.eval(`document.body.dataset.before = 'yes'; 'ok'`)
	browser.Do(p.t, p.ctx, chromedp.Click(chromedp.CSS(button)))
	p.waitFor(func() bool { return p.eval(`String((document.body && document.body.dataset.before) || '')`) == "" }, 10*time.Second)
	browser.Do(p.t, p.ctx, chromedp.WaitReady(chromedp.CSS("main h1")))
}

// waitFor waits until cond holds, at most d, and reports whether it did.
func (p *page) waitFor(cond func() bool, d time.Duration) bool {
	p.t.Helper()
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		if cond() {
			return true
		}
		time.Sleep(50 * time.Millisecond)
	}
	return false
}

// waitText waits until the page's text holds want, at most d.
func (p *page) waitText(want string, d time.Duration) bool {
	p.t.Helper()
	return p.waitFor(func() bool { return strings.Contains(p.text(), want) }, d)
}

// The integration screen in a real headless Chromium, against Supabase
// Auth, the real ingress and syncer: what an org admin, a coordinator and a
// peer mentor of organization A see, and never see of B; live rows; the
// sign-out of a deactivated admin; axe-core on every page. Screenshots go
// to .data/screenshots/TestConsoleInBrowser (or PORTALSYNC_ARTIFACTS).
func TestConsoleInBrowser(t *testing.T) {
	s := startSupabase(t)
	br := browser.Start(t)
	ctx := context.Background()

	adminA := person{"kb-admin-a", "Anne", "Adminsen"}
	adminA2 := person{"kb-admin-2", "Arne", "Andresen"}
	coord := person{"kb-coord", "Kine", "Koordinator"}
	mentor := person{"kb-mentor", "Lise", "Likeperson"}
	adminB := person{"kb-admin-b", "Bjørn", "Bsjef"}
	onlyB := person{"kb-bonly", "Berit", "Bsiden"}
	both := person{"kb-both", "Xena", "Tosteder"}
	s.join(t, adminA, "org-a", "org_admin", base)
	s.join(t, adminA2, "org-a", "org_admin", base)
	s.join(t, coord, "org-a", "coordinator", base)
	s.join(t, mentor, "org-a", "peer_mentor", base)
	s.join(t, adminB, "org-b", "org_admin", base)
	bRow := s.join(t, onlyB, "org-b", "peer_mentor", base)
	s.join(t, both, "org-a", "peer_mentor", base)
	s.join(t, both, "org-b", "peer_mentor", base)
	e := s.event("membership-deactivated", both.member, "org-a", "", base.Add(time.Minute))
	s.send(t, e)
	require.Equal(t, "success", s.waitLogged(t, e.ID))
	for _, p := range []person{adminA, adminA2, coord, mentor, adminB} {
		require.True(t, s.signUp(t, p.email()).OK(), p.member)
	}
	orgB := orgIDOn(t, s, "org-b")
	var bRowID int64
	require.NoError(t, s.pool.QueryRow(ctx, `SELECT id FROM portal_sync_log WHERE event_id = $1`, bRow.ID).Scan(&bRowID))
	bSecrets := []string{onlyB.first, onlyB.last, adminB.last, "HLF org-b", "kb-bonly"}
	noB := func(p *page, where string) {
		t.Helper()
		text := p.text()
		for _, x := range bSecrets {
			require.NotContains(t, text, x, "B's data on %s", where)
		}
	}

	consoleURL := s.startConsole(t)
	admin := &page{t: t, ctx: br.Session(t), base: consoleURL}

	t.Run("SignInPage", func(t *testing.T) {
		admin.open("/login")
		browser.Screenshot(t, admin.ctx, "01-sign-in")
		browser.RequireAccessible(t, admin.ctx, "sign-in")
	})

	t.Run("OrgAdminSeesTheLog", func(t *testing.T) {
		admin.signIn(adminA)
		require.Contains(t, admin.location(), "/log")
		text := admin.text()
		require.Contains(t, text, "Sync status")
		require.Contains(t, text, adminA2.name(), "names, not ids")
		require.NotContains(t, text, adminA2.member)
		noB(admin, "the log")
		browser.Screenshot(t, admin.ctx, "02-log")
		browser.RequireAccessible(t, admin.ctx, "log")
	})

	newbie := person{"kb-new", "Kari", "Nordmannsen"}
	t.Run("NewMemberAppearsLiveWithinTwoSeconds", func(t *testing.T) {
		admin.eval(`window.samePage = 'yes'; 'ok'`)
		e := s.event("membership-created", newbie.member, "org-a", "peer_mentor", time.Now().UTC())
		e.Member["first_name"], e.Member["last_name"] = newbie.first, newbie.last
		sent := time.Now()
		s.send(t, e)
		require.True(t, admin.waitText(newbie.name(), 2*time.Second), "the new row within 2 s of sending: %s", admin.text())
		t.Logf("row shown %s after the portal's webhook was accepted", time.Since(sent).Round(10*time.Millisecond))
		require.Equal(t, "yes", admin.eval(`window.samePage`), "no reload")
		row := admin.eval(`document.querySelector('#log tbody tr').innerText`)
		require.Contains(t, row, newbie.name())
		require.Contains(t, row, "created")
		require.Contains(t, row, "success")
		browser.Screenshot(t, admin.ctx, "03-live-row")
	})

	t.Run("SearchBySurname", func(t *testing.T) {
		admin.open("/log")
		browser.Do(t, admin.ctx, chromedp.SendKeys(chromedp.CSS("#q"), "nordmannsen"))
		admin.submit("form.filters button")
		require.Contains(t, admin.location(), "q=nordmannsen")
		rows := admin.eval(`Array.from(document.querySelectorAll('#log tbody tr')).map(r => r.innerText).join('\n')`)
		require.Contains(t, rows, newbie.name())
		require.NotContains(t, rows, adminA2.name(), "only the member searched for")
		browser.Screenshot(t, admin.ctx, "04-search")
		browser.RequireAccessible(t, admin.ctx, "log, searched")
	})

	t.Run("DetailView", func(t *testing.T) {
		admin.submit("#log tbody tr a")
		text := admin.text()
		require.Contains(t, text, newbie.name())
		require.Contains(t, text, "HLF org-a")
		require.Contains(t, text, "New member")
		browser.Screenshot(t, admin.ctx, "05-detail")
		browser.RequireAccessible(t, admin.ctx, "detail")
	})

	t.Run("NeverBsRowsOrMembers", func(t *testing.T) {
		admin.open("/log?org=" + orgB)
		require.Contains(t, admin.text(), "You have no access to this organization.")
		require.Equal(t, "0", admin.eval(`String(document.querySelectorAll('#log tbody tr').length)`), "no rows")
		noB(admin, "/log?org=B")
		browser.Screenshot(t, admin.ctx, "06-url-names-b")
		admin.open("/members?org=" + orgB)
		noB(admin, "/members?org=B")
		require.Equal(t, "0", admin.eval(`String(document.querySelectorAll('#members tbody tr').length)`))
		admin.open(fmt.Sprintf("/log/%d?org=%s", bRowID, orgB))
		require.Contains(t, admin.text(), "No such entry")
		noB(admin, "B's entry")
		require.Equal(t, "0", admin.eval(`fetch('/log/updates?org=`+orgB+`').then(r => r.json()).then(j => String(j.rows.length))`))
		// The filter form edited to name B.
		admin.open("/log")
		browser.Do(t, admin.ctx, chromedp.Evaluate[chromedp.Void](`document.querySelector('form.filters input[name=org]').value = '`+orgB+`'`))
		admin.submit("form.filters button")
		require.Contains(t, admin.location(), orgB)
		noB(admin, "the form naming B")
		// And B's member's name searched for in A's log.
		admin.open("/log?q=" + onlyB.last)
		noB(admin, "a search for B's member")
	})

	t.Run("CoordinatorSeesInactiveMember", func(t *testing.T) {
		p := &page{t: t, ctx: br.Session(t), base: consoleURL}
		p.signIn(coord)
		require.Contains(t, p.location(), "/members")
		row := p.eval(`(() => { const r = document.querySelector('#members tr[data-member="` + both.member + `"]');
			return r ? r.className + ' | ' + r.innerText : 'missing'; })()`)
		require.Contains(t, row, "inactive")
		require.Contains(t, row, "Inactive")
		require.Contains(t, row, both.name())
		var inB, profile string
		require.NoError(t, s.pool.QueryRow(ctx, `SELECT m.status, p.status FROM organization_memberships m JOIN profiles p ON p.id = m.profile_id
			JOIN organizations o ON o.id = m.organization_id WHERE p.portal_member_id = $1 AND o.portal_org_id = 'org-b'`, both.member).Scan(&inB, &profile))
		require.Equal(t, []string{"active", "active"}, []string{inB, profile}, "active in B, and so in profiles")
		noB(p, "the coordinator's members")
		browser.Screenshot(t, p.ctx, "07-coordinator-members")
		browser.RequireAccessible(t, p.ctx, "members")
		p.open("/log")
		require.Equal(t, "0", p.eval(`String(document.querySelectorAll('#log tbody tr').length)`), "no log for a coordinator")
	})

	t.Run("PeerMentorSeesNoLog", func(t *testing.T) {
		p := &page{t: t, ctx: br.Session(t), base: consoleURL}
		p.signIn(mentor)
		require.Contains(t, p.text(), "nothing to show")
		browser.Screenshot(t, p.ctx, "08-peer-mentor")
		browser.RequireAccessible(t, p.ctx, "peer mentor's page")
		p.open("/log")
		require.Equal(t, "0", p.eval(`String(document.querySelectorAll('#log tbody tr').length)`))
		require.NotContains(t, p.text(), newbie.name())
	})

	t.Run("DeactivatedAdminIsSignedOutOnTheNextRequest", func(t *testing.T) {
		p := &page{t: t, ctx: br.Session(t), base: consoleURL}
		p.signIn(adminA2)
		require.Contains(t, p.location(), "/log")
		e := s.event("membership-deactivated", adminA2.member, "org-a", "", time.Now().UTC())
		s.send(t, e)
		require.Equal(t, "success", s.waitLogged(t, e.ID))
		p.open("/log")
		require.Contains(t, p.location(), "/login?m=ended")
		require.Contains(t, p.text(), "You were signed out")
		browser.Screenshot(t, p.ctx, "09-signed-out")
		browser.RequireAccessible(t, p.ctx, "signed out")
	})

	t.Run("RoleChangeShowsOldAndNew", func(t *testing.T) {
		e := s.event("role-updated", mentor.member, "org-a", "coordinator", time.Now().UTC())
		s.send(t, e)
		require.Equal(t, "success", s.waitLogged(t, e.ID))
		admin.open("/log")
		require.True(t, admin.waitText("peer mentor → coordinator", 2*time.Second), admin.text())
	})
}

func orgIDOn(t *testing.T, s *supa, portalOrg string) string {
	t.Helper()
	var id string
	require.NoError(t, s.pool.QueryRow(context.Background(), `SELECT id::text FROM organizations WHERE portal_org_id = $1`, portalOrg).Scan(&id))
	return id
}
