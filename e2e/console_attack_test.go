package e2e

import (
	"io"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// client is one browser's worth of the screen over plain HTTP: it keeps
// the cookies itself (the session cookie is Secure and __Host-, which Go's
// cookie jar does not send over http) and never follows redirects.
type client struct {
	t       *testing.T
	base    string
	cookies map[string]*http.Cookie
	hc      *http.Client
}

func newClient(t *testing.T, base string) *client {
	return &client{t: t, base: base, cookies: map[string]*http.Cookie{}, hc: &http.Client{
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}}
}

func (c *client) do(method, path string, form url.Values, header http.Header) (*http.Response, string) {
	c.t.Helper()
	var body io.Reader
	if form != nil {
		body = strings.NewReader(form.Encode())
	}
	req, err := http.NewRequest(method, c.base+path, body)
	require.NoError(c.t, err)
	if form != nil {
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	for k, v := range header {
		req.Header[k] = v
	}
	for _, ck := range c.cookies {
		req.AddCookie(&http.Cookie{Name: ck.Name, Value: ck.Value})
	}
	resp, err := c.hc.Do(req)
	require.NoError(c.t, err)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	require.NoError(c.t, err)
	for _, ck := range resp.Cookies() {
		if ck.MaxAge < 0 {
			delete(c.cookies, ck.Name)
		} else {
			c.cookies[ck.Name] = ck
		}
	}
	return resp, string(b)
}

var csrfField = regexp.MustCompile(`name="csrf" value="([^"]+)"`)

func (c *client) csrf(page string) string {
	c.t.Helper()
	m := csrfField.FindStringSubmatch(page)
	require.NotNil(c.t, m, "a form token on the page")
	return m[1]
}

func (c *client) signIn(who person) {
	c.t.Helper()
	_, page := c.do(http.MethodGet, "/login", nil, nil)
	resp, body := c.do(http.MethodPost, "/login", url.Values{"csrf": {c.csrf(page)}, "email": {who.email()}, "password": {password}}, nil)
	require.Equal(c.t, http.StatusSeeOther, resp.StatusCode, body)
}

// The screen as a hostile org admin drives it by hand: query strings the
// forms never send (bytes that are not UTF-8, a NUL, a search cut in the
// middle of a letter, LIKE wildcards, odd dates and cursors) are left out
// or answered like any other search, never an error page; forms posted
// without their token or from another origin are refused.
func TestConsoleHostileInput(t *testing.T) {
	s := startSupabase(t)
	adminA := person{"ha-admin-a", "Åse", "Ærlig"}
	member := person{"ha-member", "Per", "Percent"}
	onlyB := person{"ha-bonly", "Berit", "Bsiden"}
	s.join(t, adminA, "org-a", "org_admin", base)
	s.join(t, member, "org-a", "peer_mentor", base)
	s.join(t, onlyB, "org-b", "peer_mentor", base)
	require.True(t, s.signUp(t, adminA.email()).OK())
	orgB := orgIDOn(t, s, "org-b")

	c := newClient(t, s.startConsole(t))
	c.signIn(adminA)

	t.Run("QueryStringsThatAreNotText", func(t *testing.T) {
		for _, path := range []string{
			"/log?q=%FF",
			"/log?q=%00",
			"/log?q=a" + strings.Repeat("%C3%A6", 60), // "a" and 60 × "æ": 121 bytes, cut at 100 in an "æ"
			"/log/updates?org=" + orgIDOn(t, s, "org-a") + "&q=%FF",
			"/members?after_last=%FF&after_first=x&after_id=00000000-0000-0000-0000-000000000001",
			"/members?after_last=x&after_first=%00&after_id=00000000-0000-0000-0000-000000000001",
		} {
			resp, body := c.do(http.MethodGet, path, nil, nil)
			assert.Equal(t, http.StatusOK, resp.StatusCode, "%s: %s", path, body[:min(len(body), 80)])
		}
	})

	t.Run("WildcardsAreLetters", func(t *testing.T) {
		for _, q := range []string{"%", "_", "\\", "%%", "p%", "P_r", ".*", "'; SELECT 1; --", strings.Repeat("x", 5000)} {
			resp, body := c.do(http.MethodGet, "/log?q="+url.QueryEscape(q), nil, nil)
			require.Equal(t, http.StatusOK, resp.StatusCode, q)
			require.NotContains(t, body, member.name(), "%q finds nobody", q)
			require.NotContains(t, body, onlyB.last, q)
		}
		_, body := c.do(http.MethodGet, "/log?q=perc", nil, nil)
		require.Contains(t, body, member.name(), "a prefix finds")
	})

	t.Run("OddFiltersAndCursors", func(t *testing.T) {
		for _, q := range []string{
			"since=2024-13-45", "until=9999-12-31", "since=0001-01-01", "status=success'--", "type=%27",
			"before=9999-12-31T23:59:59Z&before_id=9223372036854775807", "before=0001-01-01T00:00:00Z&before_id=1",
			"before=2020-01-01T00:00:00Z&before_id=-5", "before_id=99999999999999999999", "org=" + orgB + "&before=9999-12-31T00:00:00Z&before_id=1",
		} {
			resp, body := c.do(http.MethodGet, "/log?"+q, nil, nil)
			require.Contains(t, []int{http.StatusOK, http.StatusForbidden}, resp.StatusCode, "%s: %s", q, body)
			require.NotContains(t, body, onlyB.last, q)
		}
	})

	t.Run("FormsWithoutTokenOrFromElsewhere", func(t *testing.T) {
		_, page := c.do(http.MethodGet, "/log", nil, nil)
		token := c.csrf(page)
		resp, _ := c.do(http.MethodPost, "/logout", url.Values{}, nil)
		require.Equal(t, http.StatusForbidden, resp.StatusCode, "no token")
		resp, _ = c.do(http.MethodPost, "/logout", url.Values{"csrf": {token + "x"}}, nil)
		require.Equal(t, http.StatusForbidden, resp.StatusCode, "a wrong token")
		resp, _ = c.do(http.MethodPost, "/logout", url.Values{"csrf": {token}},
			http.Header{"Origin": {"https://evil.example"}, "Sec-Fetch-Site": {"cross-site"}})
		require.Equal(t, http.StatusForbidden, resp.StatusCode, "cross-origin")
		resp, _ = c.do(http.MethodGet, "/logout", nil, nil)
		require.Equal(t, http.StatusMethodNotAllowed, resp.StatusCode, "a link cannot sign out")
		resp, _ = c.do(http.MethodGet, "/log", nil, nil)
		require.Equal(t, http.StatusOK, resp.StatusCode, "still signed in")
	})

	t.Run("SignedOutSessionCookieIsDead", func(t *testing.T) {
		stolen := map[string]*http.Cookie{}
		for k, v := range c.cookies {
			stolen[k] = v
		}
		_, page := c.do(http.MethodGet, "/log", nil, nil)
		resp, _ := c.do(http.MethodPost, "/logout", url.Values{"csrf": {c.csrf(page)}}, nil)
		require.Equal(t, http.StatusSeeOther, resp.StatusCode)
		replay := newClient(t, c.base)
		replay.cookies = stolen
		resp, _ = replay.do(http.MethodGet, "/log", nil, nil)
		require.Equal(t, http.StatusSeeOther, resp.StatusCode, "a session cookie kept from before sign-out")
		require.Contains(t, resp.Header.Get("Location"), "/login")
	})
}
