package ui

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/golang-jwt/jwt/v5"
	"github.com/jackc/pgx/v5"
	"go.uber.org/zap"
)

// caller is the signed-in person of a request.
type caller struct {
	claims *claims
	sess   session
}

type callerKey struct{}

func callerFrom(ctx context.Context) *caller { return ctx.Value(callerKey{}).(*caller) }

// signedIn runs h for a signed-in caller whose session Supabase Auth
// still accepts; anyone else goes to the sign-in page (a JSON request gets
// 401). Per request: the access token is verified as Supabase does; an
// expired one is refreshed through Supabase Auth; and Supabase Auth is
// asked whether the session still lives, so a member deactivated in the
// portal (whose sessions the sync deletes) or banned is signed out on the
// next request.
func (s *server) signedIn(h http.HandlerFunc) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		sess, err := s.sessions.load(r)
		if err != nil {
			s.toLogin(w, r, "")
			return
		}
		c, err := s.verify.verify(sess.Access)
		if errors.Is(err, jwt.ErrTokenExpired) || err == nil && c.ExpiresAt != nil && time.Until(c.ExpiresAt.Time) < 30*time.Second {
			var t tokens
			t, err = s.auth.refresh(r.Context(), sess.Refresh)
			if err == nil {
				sess.Access, sess.Refresh = t.Access, t.Refresh
				if c, err = s.verify.verify(sess.Access); err == nil {
					err = s.sessions.save(w, sess)
				}
			}
		} else if err == nil {
			err = s.auth.check(r.Context(), sess.Access)
		}
		switch {
		case errors.Is(err, errSessionEnded):
			s.sessions.clear(w)
			s.toLogin(w, r, "ended")
			return
		case err != nil && isAuthUnavailable(err):
			s.log.Warn("supabase auth unavailable", zap.Error(err))
			http.Error(w, "Supabase Auth is unavailable", http.StatusServiceUnavailable)
			return
		case err != nil:
			// A token that does not verify: a stale key, or tampering.
			s.log.Info("session refused", zap.String("reason", err.Error()))
			s.sessions.clear(w)
			s.toLogin(w, r, "ended")
			return
		}
		if r.Method == http.MethodPost && !s.sessions.csrfValid(sess.Nonce, r.PostFormValue("csrf")) {
			http.Error(w, "invalid form token", http.StatusForbidden)
			return
		}
		h(w, r.WithContext(context.WithValue(r.Context(), callerKey{}, &caller{claims: c, sess: sess})))
	})
}

func isAuthUnavailable(err error) bool {
	return errors.Is(err, errAuthUnavailable)
}

func (s *server) toLogin(w http.ResponseWriter, r *http.Request, reason string) {
	if strings.HasSuffix(r.URL.Path, "/updates") {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusUnauthorized)
		_, _ = w.Write([]byte(`{"signed_out":true,"location":"/login?m=` + reason + `"}`))
		return
	}
	loc := "/login"
	if reason != "" {
		loc += "?m=" + reason
	}
	http.Redirect(w, r, loc, http.StatusSeeOther)
}

// page is what every template gets.
type page struct {
	Lang, Title, Page, CSRF string
	Signed, CanLog          bool
	CanMembers              bool
	Org                     string
	Orgs                    []orgRole
	Message, Error, Email   string
	Health                  *healthRow
}

func (s *server) render(w http.ResponseWriter, r *http.Request, name string, status int, data any) {
	c := s.locales.forRequest(r)
	var buf bytes.Buffer
	if err := s.pages[c.lang][name].ExecuteTemplate(&buf, "layout", data); err != nil {
		s.log.Error("render", zap.String("page", name), zap.Error(err))
		http.Error(w, "internal error", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Content-Language", c.lang)
	w.WriteHeader(status)
	_, _ = w.Write(buf.Bytes())
}

func (s *server) base(r *http.Request, name, titleKey string) page {
	c := s.locales.forRequest(r)
	p := page{Lang: c.lang, Title: c.t(titleKey), Page: name}
	if v := r.Context().Value(callerKey{}); v != nil {
		cl := v.(*caller)
		p.Signed = true
		p.CSRF = s.sessions.csrfToken(cl.sess.Nonce)
		p.CanLog = len(cl.claims.orgs("org_admin")) > 0
		p.CanMembers = len(cl.claims.orgs("coordinator", "org_admin")) > 0
	}
	return p
}

// message renders the message page: its title and message are locale keys.
func (s *server) message(w http.ResponseWriter, r *http.Request, titleKey, messageKey string, status int) {
	p := s.base(r, "message", titleKey)
	p.Message = messageKey
	s.render(w, r, "message", status, p)
}

// orgStatus is the status of a page of the organization pickOrg chose:
// 200, or 403 with the message that the caller has no access to it when
// it is not among the caller's (the database then showed nothing).
func orgStatus(p *page, mine bool) int {
	if mine {
		return http.StatusOK
	}
	p.Message = "org.forbidden"
	return http.StatusForbidden
}

func (s *server) fail(w http.ResponseWriter, r *http.Request, err error) {
	if errors.Is(err, context.Canceled) {
		return
	}
	s.log.Error("request failed", zap.String("path", r.URL.Path), zap.Error(err))
	s.message(w, r, "error.title", "error.body", http.StatusInternalServerError)
}

func (s *server) loginPage(w http.ResponseWriter, r *http.Request) {
	p := s.base(r, "login", "login.title")
	p.CSRF = s.sessions.csrfToken(s.sessions.preNonce(w, r))
	switch r.URL.Query().Get("m") {
	case "ended":
		p.Message = "login.ended"
	case "out":
		p.Message = "login.signedout"
	}
	s.render(w, r, "login", http.StatusOK, p)
}

func (s *server) login(w http.ResponseWriter, r *http.Request) {
	nonce := ""
	if c, err := r.Cookie(s.sessions.preName()); err == nil {
		nonce = c.Value
	}
	if !s.sessions.csrfValid(nonce, r.PostFormValue("csrf")) {
		http.Error(w, "invalid form token", http.StatusForbidden)
		return
	}
	email := strings.TrimSpace(r.PostFormValue("email"))
	t, err := s.auth.signIn(r.Context(), email, r.PostFormValue("password"))
	if err == nil {
		_, err = s.verify.verify(t.Access)
	}
	if err != nil {
		if isAuthUnavailable(err) {
			s.log.Warn("supabase auth unavailable at sign-in", zap.Error(err))
		}
		p := s.base(r, "login", "login.title")
		p.CSRF = s.sessions.csrfToken(s.sessions.preNonce(w, r))
		p.Error, p.Email = "login.failed", email
		s.render(w, r, "login", http.StatusUnauthorized, p)
		return
	}
	// A new nonce: a token seen before sign-in is worth nothing after.
	if err := s.sessions.save(w, session{Access: t.Access, Refresh: t.Refresh, Nonce: randomToken()}); err != nil {
		s.fail(w, r, err)
		return
	}
	http.Redirect(w, r, "/", http.StatusSeeOther)
}

func (s *server) logout(w http.ResponseWriter, r *http.Request) {
	if err := s.auth.signOut(r.Context(), callerFrom(r.Context()).sess.Access); err != nil {
		s.log.Warn("sign-out at supabase auth", zap.Error(err))
	}
	s.sessions.clear(w)
	http.Redirect(w, r, "/login?m=out", http.StatusSeeOther)
}

func (s *server) home(w http.ResponseWriter, r *http.Request) {
	c := callerFrom(r.Context()).claims
	switch {
	case len(c.orgs("org_admin")) > 0:
		http.Redirect(w, r, "/log", http.StatusSeeOther)
	case len(c.orgs("coordinator")) > 0:
		http.Redirect(w, r, "/members", http.StatusSeeOther)
	default:
		s.message(w, r, "app.title", "org.none", http.StatusOK)
	}
}

// pickOrg returns the organization the request names, or the caller's
// first of orgs when it names none (or no uuid). A named organization that is not among orgs is still
// returned: the database then shows nothing (the policies are the gate),
// and the page says the caller has no access to it.
func pickOrg(r *http.Request, orgs []orgRole) (string, bool) {
	want := r.URL.Query().Get("org")
	if !uuidish(want) {
		if len(orgs) == 0 {
			return "", false
		}
		return orgs[0].OrganizationID, true
	}
	for _, o := range orgs {
		if o.OrganizationID == want {
			return want, true
		}
	}
	return want, false
}

// uuidish reports whether s has a uuid's shape, so that a malformed org or
// cursor never reaches the database as a cast error.
func uuidish(s string) bool {
	if len(s) != 36 {
		return false
	}
	for i, c := range s {
		switch {
		case i == 8 || i == 13 || i == 18 || i == 23:
			if c != '-' {
				return false
			}
		case c >= '0' && c <= '9', c >= 'a' && c <= 'f', c >= 'A' && c <= 'F':
		default:
			return false
		}
	}
	return true
}

// logPageData is the log page's template data.
type logPageData struct {
	page
	F                      logFilter
	SinceValue, UntilValue string
	Statuses, Types        []string
	Rows                   []logRow
	Cursor                 bool
	Live                   bool
	NextURL, FirstURL      string
	PollURL                string
	PollMillis             int64
}

var (
	logStatuses = []string{"success", "failed", "skipped"}
	logTypes    = []string{"membership-created", "membership-updated", "role-updated", "membership-deactivated",
		"membership-reactivated", "member-deleted", "account-link"}
)

func oneOf(v string, set []string) string {
	for _, s := range set {
		if s == v {
			return v
		}
	}
	return ""
}

// logFilterFrom reads the log's filters from the query; what does not
// parse is left out.
func (s *server) logFilterFrom(q url.Values, org string) (logFilter, string, string) {
	f := logFilter{Org: org, Status: oneOf(q.Get("status"), logStatuses), Type: oneOf(q.Get("type"), logTypes),
		Search: cut(strings.TrimSpace(textOnly(q.Get("q"))), 100), PageSize: s.cfg.PageSize}
	var since, until string
	if d, err := time.ParseInLocation("2006-01-02", q.Get("since"), oslo); err == nil {
		f.Since, since = &d, q.Get("since")
	}
	if d, err := time.ParseInLocation("2006-01-02", q.Get("until"), oslo); err == nil {
		end := d.AddDate(0, 0, 1) // the whole day
		f.Until, until = &end, q.Get("until")
	}
	if at, err := time.Parse(time.RFC3339Nano, q.Get("before")); err == nil {
		if id, err := strconv.ParseInt(q.Get("before_id"), 10, 64); err == nil && id > 0 {
			f.BeforeAt, f.BeforeID = &at, id
		}
	}
	return f, since, until
}

func filterQuery(f logFilter, since, until string) url.Values {
	v := url.Values{}
	v.Set("org", f.Org)
	for k, x := range map[string]string{"status": f.Status, "type": f.Type, "q": f.Search, "since": since, "until": until} {
		if x != "" {
			v.Set(k, x)
		}
	}
	return v
}

func (s *server) logPage(w http.ResponseWriter, r *http.Request) {
	cl := callerFrom(r.Context())
	admin := cl.claims.orgs("org_admin")
	if len(admin) == 0 {
		s.message(w, r, "log.title", "org.none", http.StatusForbidden)
		return
	}
	org, mine := pickOrg(r, admin)
	f, since, until := s.logFilterFrom(r.URL.Query(), org)
	d := logPageData{page: s.base(r, "log", "log.title"), F: f, SinceValue: since, UntilValue: until,
		Statuses: logStatuses, Types: logTypes, Cursor: f.BeforeAt != nil, PollMillis: s.cfg.PollInterval.Milliseconds()}
	d.Org, d.Orgs = org, admin
	var err error
	d.Health, d.Rows, err = s.db.logPage(r.Context(), cl.claims, f)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	q := filterQuery(f, since, until)
	d.FirstURL = "/log?" + q.Encode()
	if len(d.Rows) == f.PageSize {
		last := d.Rows[len(d.Rows)-1]
		n := filterQuery(f, since, until)
		n.Set("before", last.ProcessedAt.Format(time.RFC3339Nano))
		n.Set("before_id", strconv.FormatInt(last.ID, 10))
		d.NextURL = "/log?" + n.Encode()
	}
	// Only the newest page follows new rows.
	if !d.Cursor {
		d.Live = true
		d.PollURL = "/log/updates?" + q.Encode()
	}
	status := orgStatus(&d.page, mine)
	s.render(w, r, "log", status, d)
}

// logUpdates answers the page's poll: the newest page of rows (the page
// keeps those it does not show yet, by id, so rows committed out of order
// are not missed) rendered as table rows, and the health banner.
func (s *server) logUpdates(w http.ResponseWriter, r *http.Request) {
	cl := callerFrom(r.Context())
	org := r.URL.Query().Get("org")
	if !uuidish(org) {
		http.Error(w, "org required", http.StatusBadRequest)
		return
	}
	f, _, _ := s.logFilterFrom(r.URL.Query(), org)
	f.BeforeAt, f.BeforeID = nil, 0
	health, rows, err := s.db.logPage(r.Context(), cl.claims, f)
	if err != nil {
		s.log.Error("log updates", zap.Error(err))
		http.Error(w, "unavailable", http.StatusServiceUnavailable)
		return
	}
	c := s.locales.forRequest(r)
	tmpl := s.pages[c.lang]["log"]
	type out struct {
		ID   int64  `json:"id"`
		HTML string `json:"html"`
	}
	resp := struct {
		Rows   []out  `json:"rows"`
		Health string `json:"health"`
	}{Rows: []out{}}
	for _, row := range rows {
		var b bytes.Buffer
		if err := tmpl.ExecuteTemplate(&b, "logrow", row); err != nil {
			s.fail(w, r, err)
			return
		}
		resp.Rows = append(resp.Rows, out{ID: row.ID, HTML: b.String()})
	}
	var hb bytes.Buffer
	if err := tmpl.ExecuteTemplate(&hb, "health", page{Health: health}); err != nil {
		s.fail(w, r, err)
		return
	}
	resp.Health = hb.String()
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(resp)
}

type entryData struct {
	page
	Entry *logRow
}

func (s *server) entryPage(w http.ResponseWriter, r *http.Request) {
	cl := callerFrom(r.Context())
	d := entryData{page: s.base(r, "entry", "entry.title")}
	d.Org = r.URL.Query().Get("org")
	id, err := strconv.ParseInt(r.PathValue("id"), 10, 64)
	if err == nil && id > 0 {
		err = s.db.as(r.Context(), cl.claims, func(tx pgx.Tx) error {
			rows, err := syncLog(r.Context(), tx, logFilter{EntryID: id, PageSize: 1})
			if len(rows) == 1 {
				d.Entry = &rows[0]
			}
			return err
		})
		if err != nil {
			s.fail(w, r, err)
			return
		}
	}
	status := http.StatusOK
	if d.Entry == nil {
		status = http.StatusNotFound
	}
	s.render(w, r, "entry", status, d)
}

// memberFilterFrom reads the members page's filter from the query. The
// cursor (after_last, after_first, after_id) is taken whole or not at
// all: a part that does not parse leaves it out.
func memberFilterFrom(q url.Values, org string, pageSize int) memberFilter {
	f := memberFilter{Org: org, InactiveOnly: q.Get("inactive") == "1", PageSize: pageSize}
	last, first, id := q.Get("after_last"), q.Get("after_first"), q.Get("after_id")
	if uuidish(id) && textOnly(last) == last && textOnly(first) == first {
		f.AfterLast, f.AfterFirst, f.AfterID = last, first, id
	}
	return f
}

// textOnly returns v when PostgreSQL takes it as text (UTF-8 without a
// NUL), "" otherwise: a query string may hold any bytes (%FF, %00), and
// the database would refuse them with an error rather than find nothing.
func textOnly(v string) string {
	if !utf8.ValidString(v) || strings.IndexByte(v, 0) >= 0 {
		return ""
	}
	return v
}

// cut shortens the text v to at most n bytes, on a letter's boundary.
func cut(v string, n int) string {
	if len(v) <= n {
		return v
	}
	for n > 0 && !utf8.RuneStart(v[n]) {
		n--
	}
	return v[:n]
}

type membersData struct {
	page
	Members      []memberRow
	InactiveOnly bool
	After        bool
	NextURL      string
}

func (s *server) membersPage(w http.ResponseWriter, r *http.Request) {
	cl := callerFrom(r.Context())
	managed := cl.claims.orgs("coordinator", "org_admin")
	if len(managed) == 0 {
		s.message(w, r, "members.title", "org.none", http.StatusForbidden)
		return
	}
	org, mine := pickOrg(r, managed)
	f := memberFilterFrom(r.URL.Query(), org, s.cfg.PageSize)
	d := membersData{page: s.base(r, "members", "members.title"), InactiveOnly: f.InactiveOnly, After: f.AfterID != ""}
	d.Org, d.Orgs = org, managed
	err := s.db.as(r.Context(), cl.claims, func(tx pgx.Tx) error {
		var err error
		d.Members, err = members(r.Context(), tx, f)
		return err
	})
	if err != nil {
		s.fail(w, r, err)
		return
	}
	if len(d.Members) == f.PageSize {
		last := d.Members[len(d.Members)-1]
		n := url.Values{"org": {org}, "after_id": {last.ProfileID}}
		if last.LastName != nil {
			n.Set("after_last", *last.LastName)
		}
		if last.FirstName != nil {
			n.Set("after_first", *last.FirstName)
		}
		if f.InactiveOnly {
			n.Set("inactive", "1")
		}
		d.NextURL = "/members?" + n.Encode()
	}
	status := orgStatus(&d.page, mine)
	s.render(w, r, "members", status, d)
}
