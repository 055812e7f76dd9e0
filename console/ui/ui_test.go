package ui

import (
	"context"
	"encoding/base64"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/stretchr/testify/require"
	"go.uber.org/zap/zaptest"

	"github.com/likeperson/portalsync/testkit/pgtest"
)

const testSecret = "a-test-jwt-secret-of-at-least-32-characters"

func setup(t *testing.T) *server {
	t.Helper()
	cfg, err := (&Config{DatabaseURL: "postgres://x", AuthURL: "http://127.0.0.1:1", JWTSecret: testSecret}).withDefaults()
	require.NoError(t, err)
	s := &server{cfg: cfg, log: zaptest.NewLogger(t), auth: &gotrue{base: cfg.AuthURL, client: http.DefaultClient}}
	s.locales, err = loadLocales()
	require.NoError(t, err)
	require.NoError(t, s.parseTemplates())
	s.sessions, err = newSessions(cfg.SessionKey, true)
	require.NoError(t, err)
	s.verify, err = newVerifier(context.Background(), testSecret, "", "authenticated")
	require.NoError(t, err)
	return s
}

func TestCatalogsHaveTheSameKeys(t *testing.T) {
	t.Parallel()
	l, err := loadLocales()
	require.NoError(t, err)
	en, nb := l.catalogs[0], l.catalogs[1]
	require.Equal(t, "en", en.lang)
	require.Equal(t, "nb", nb.lang)
	for k := range en.messages {
		require.Contains(t, nb.messages, k)
	}
	for k := range nb.messages {
		require.Contains(t, en.messages, k)
	}
}

func TestLanguageByAcceptLanguage(t *testing.T) {
	t.Parallel()
	l, err := loadLocales()
	require.NoError(t, err)
	for header, want := range map[string]string{
		"": "en", "en-GB,en;q=0.9": "en", "nb-NO,nb;q=0.9,en;q=0.5": "nb", "no": "nb", "nn-NO": "nb",
		"de-DE": "en", "sv,nb;q=0.8": "nb", "garbage;;;": "en",
	} {
		r := httptest.NewRequest(http.MethodGet, "/", nil)
		r.Header.Set("Accept-Language", header)
		require.Equal(t, want, l.forRequest(r).lang, header)
	}
}

func TestSessionCookieIsSealed(t *testing.T) {
	t.Parallel()
	s := setup(t)
	w := httptest.NewRecorder()
	sess := session{Access: "access-token-value", Refresh: "refresh-token-value", Nonce: "n"}
	require.NoError(t, s.sessions.save(w, sess))
	c := w.Result().Cookies()[0]
	require.Equal(t, "__Host-portalsync-session", c.Name)
	require.True(t, c.Secure)
	require.True(t, c.HttpOnly)
	require.Equal(t, http.SameSiteLaxMode, c.SameSite)
	require.Equal(t, "/", c.Path)
	raw, err := base64.RawURLEncoding.DecodeString(c.Value)
	require.NoError(t, err)
	require.NotContains(t, string(raw), "access-token-value", "sealed")

	r := httptest.NewRequest(http.MethodGet, "/", nil)
	r.AddCookie(c)
	got, err := s.sessions.load(r)
	require.NoError(t, err)
	require.Equal(t, sess, got)

	tampered := *c
	tampered.Value = c.Value[:len(c.Value)-2] + "AA"
	r = httptest.NewRequest(http.MethodGet, "/", nil)
	r.AddCookie(&tampered)
	_, err = s.sessions.load(r)
	require.ErrorIs(t, err, errNoSession)
}

func token(t *testing.T, secret string, claims jwt.MapClaims, method jwt.SigningMethod) string {
	t.Helper()
	var key any = []byte(secret)
	if method == jwt.SigningMethodNone {
		key = jwt.UnsafeAllowNoneSignatureType
	}
	s, err := jwt.NewWithClaims(method, claims).SignedString(key)
	require.NoError(t, err)
	return s
}

func TestVerifyAccessToken(t *testing.T) {
	t.Parallel()
	s := setup(t)
	good := jwt.MapClaims{"sub": "u1", "role": "authenticated", "aud": "authenticated", "exp": time.Now().Add(time.Hour).Unix(),
		"org_roles": []map[string]string{{"organization_id": "o1", "portal_org_id": "org-a", "role": "org_admin"}}}
	c, err := s.verify.verify(token(t, testSecret, good, jwt.SigningMethodHS256))
	require.NoError(t, err)
	require.Equal(t, "u1", c.Subject)
	require.Equal(t, []orgRole{{OrganizationID: "o1", PortalOrgID: "org-a", Role: "org_admin"}}, c.orgs("org_admin"))
	require.Empty(t, c.orgs("coordinator"))
	require.Contains(t, string(c.raw), `"org_roles"`)

	expired := jwt.MapClaims{"sub": "u1", "role": "authenticated", "aud": "authenticated", "exp": time.Now().Add(-time.Hour).Unix()}
	_, err = s.verify.verify(token(t, testSecret, expired, jwt.SigningMethodHS256))
	require.ErrorIs(t, err, jwt.ErrTokenExpired)

	for name, tok := range map[string]string{
		"wrong secret":  token(t, testSecret+"x", good, jwt.SigningMethodHS256),
		"alg none":      token(t, "", good, jwt.SigningMethodNone),
		"anon role":     token(t, testSecret, jwt.MapClaims{"sub": "u1", "role": "anon", "aud": "authenticated", "exp": time.Now().Add(time.Hour).Unix()}, jwt.SigningMethodHS256),
		"other aud":     token(t, testSecret, jwt.MapClaims{"sub": "u1", "role": "authenticated", "aud": "x", "exp": time.Now().Add(time.Hour).Unix()}, jwt.SigningMethodHS256),
		"no expiry":     token(t, testSecret, jwt.MapClaims{"sub": "u1", "role": "authenticated", "aud": "authenticated"}, jwt.SigningMethodHS256),
		"service token": token(t, testSecret, jwt.MapClaims{"role": "service_role", "aud": "authenticated", "exp": time.Now().Add(time.Hour).Unix()}, jwt.SigningMethodHS256),
	} {
		_, err := s.verify.verify(tok)
		require.Error(t, err, name)
	}
}

func TestLoginPageHeadersAndLanguage(t *testing.T) {
	t.Parallel()
	s := setup(t)
	h := s.routes()
	for lang, title := range map[string]string{"nb": "Logg inn", "en": "Sign in"} {
		r := httptest.NewRequest(http.MethodGet, "/login", nil)
		r.Header.Set("Accept-Language", lang)
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		require.Equal(t, http.StatusOK, w.Code)
		body := w.Body.String()
		require.Contains(t, body, `<html lang="`+lang+`">`)
		require.Contains(t, body, "<h1>"+title+"</h1>")
		require.Contains(t, body, `name="csrf"`)
		require.Contains(t, body, `<label for="email">`)
		require.NotRegexp(t, `[a-z]+\.[a-z_]+\.?[a-z_]*</`, strings.ReplaceAll(body, "style.css", ""), "an untranslated key")
		hd := w.Result().Header
		require.Equal(t, contentSecurityPolicy, hd.Get("Content-Security-Policy"))
		require.NotContains(t, contentSecurityPolicy, "unsafe")
		require.Equal(t, "nosniff", hd.Get("X-Content-Type-Options"))
		require.Equal(t, "DENY", hd.Get("X-Frame-Options"))
		require.Equal(t, "no-store", hd.Get("Cache-Control"))
		require.NotContains(t, body, "<script>", "no inline script")
		require.NotContains(t, body, "style=", "no inline style")
		require.NotContains(t, body, "http://")
		require.NotContains(t, body, "https://")
	}
}

func TestFormsRefuseForgedRequests(t *testing.T) {
	t.Parallel()
	s := setup(t)
	h := s.routes()
	post := func(form url.Values, cookie *http.Cookie, origin string) int {
		r := httptest.NewRequest(http.MethodPost, "/login", strings.NewReader(form.Encode()))
		r.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		if origin != "" {
			r.Header.Set("Origin", origin)
			r.Header.Set("Sec-Fetch-Site", "cross-site")
		}
		if cookie != nil {
			r.AddCookie(cookie)
		}
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		return w.Code
	}
	form := url.Values{"email": {"a@example.invalid"}, "password": {"x"}}
	require.Equal(t, http.StatusForbidden, post(form, nil, ""), "no token")
	nonce := &http.Cookie{Name: s.sessions.preName(), Value: "a-nonce-of-some-length"}
	form.Set("csrf", s.sessions.csrfToken("another-nonce-entirely"))
	require.Equal(t, http.StatusForbidden, post(form, nonce, ""), "a token of another browser")
	form.Set("csrf", s.sessions.csrfToken(nonce.Value))
	require.Equal(t, http.StatusForbidden, post(form, nonce, "https://evil.example"), "cross-origin")
	// With the right token the request reaches Supabase Auth (unreachable
	// here): the sign-in fails as a refused one, not as a forgery.
	require.Equal(t, http.StatusUnauthorized, post(form, nonce, ""))
}

func TestSignedInPagesNeedASession(t *testing.T) {
	t.Parallel()
	s := setup(t)
	h := s.routes()
	for _, path := range []string{"/", "/log", "/members", "/log/1"} {
		w := httptest.NewRecorder()
		h.ServeHTTP(w, httptest.NewRequest(http.MethodGet, path, nil))
		require.Equal(t, http.StatusSeeOther, w.Code, path)
		require.Equal(t, "/login", w.Header().Get("Location"))
	}
	w := httptest.NewRecorder()
	h.ServeHTTP(w, httptest.NewRequest(http.MethodGet, "/log/updates?org=x", nil))
	require.Equal(t, http.StatusUnauthorized, w.Code)
	require.Contains(t, w.Body.String(), `"signed_out":true`)
}

// An unreachable or failing Supabase Auth is unavailable (503, the
// caller stays signed in); a refused session is not.
func TestAuthFailuresAreUnavailable(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	down := &gotrue{base: "http://127.0.0.1:1", client: http.DefaultClient}
	require.True(t, isAuthUnavailable(down.check(ctx, "token")))
	answering := func(status int) *gotrue {
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(status) }))
		t.Cleanup(srv.Close)
		return &gotrue{base: srv.URL, client: srv.Client()}
	}
	failing := answering(http.StatusBadGateway)
	require.True(t, isAuthUnavailable(failing.check(ctx, "token")))
	require.True(t, isAuthUnavailable(failing.health(ctx)))
	err := answering(http.StatusForbidden).check(ctx, "token")
	require.ErrorIs(t, err, errSessionEnded)
	require.False(t, isAuthUnavailable(err))
}

// Query strings the forms never send: bytes that are not UTF-8 or a NUL
// (PostgreSQL refuses both as text) are left out like any value that does
// not parse, and a long search is cut on a letter's boundary, never in the
// middle of one (found by attack: each was a 500 page and an error log).
func TestFiltersTakeOnlyText(t *testing.T) {
	t.Parallel()
	s := setup(t)
	for raw, want := range map[string]string{
		"q=%FF":                              "",
		"q=%00":                              "",
		"q=kari%00nordmann":                  "",
		"q=a" + strings.Repeat("%C3%A6", 60): "a" + strings.Repeat("æ", 49),
		"q=" + strings.Repeat("x", 150):      strings.Repeat("x", 100),
		"q=%C3%86rlig":                       "Ærlig",
	} {
		q, err := url.ParseQuery(raw)
		require.NoError(t, err)
		f, _, _ := s.logFilterFrom(q, "")
		require.Equal(t, want, f.Search, raw)
		require.LessOrEqual(t, len(f.Search), 100, raw)
	}
	const id = "00000000-0000-0000-0000-000000000001"
	for raw, want := range map[string]memberFilter{
		"after_last=%FF&after_first=x&after_id=" + id:        {},
		"after_last=x&after_first=%00&after_id=" + id:        {},
		"after_last=%C3%98st&after_first=Per&after_id=" + id: {AfterLast: "Øst", AfterFirst: "Per", AfterID: id},
		"after_last=x&after_first=y&after_id=nope":           {},
	} {
		q, err := url.ParseQuery(raw)
		require.NoError(t, err)
		want.PageSize = s.cfg.PageSize
		require.Equal(t, want, memberFilterFrom(q, "", s.cfg.PageSize), raw)
	}
}

// /readyz answers 200 only while both the database and Supabase Auth
// answer, and says which one does not.
func TestReadyAsksDatabaseAndAuth(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	authStatus := http.StatusOK
	var mu sync.Mutex
	auth := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		defer mu.Unlock()
		require.Equal(t, "/health", r.URL.Path)
		w.WriteHeader(authStatus)
	}))
	t.Cleanup(auth.Close)
	s := setup(t)
	s.auth = &gotrue{base: auth.URL, client: auth.Client()}
	ready := func() (int, string) {
		w := httptest.NewRecorder()
		s.healthRoutes().ServeHTTP(w, httptest.NewRequest(http.MethodGet, "/readyz", nil))
		return w.Code, w.Body.String()
	}
	var err error
	s.db, err = openDB(ctx, "postgres://postgres@127.0.0.1:1/postgres?sslmode=disable&connect_timeout=2")
	require.NoError(t, err)
	t.Cleanup(s.db.pool.Close)
	code, body := ready()
	require.Equal(t, http.StatusServiceUnavailable, code)
	require.Contains(t, body, "database unavailable")

	up, err := openDB(ctx, pgtest.New(t, pgtest.Template{Name: "empty", Fingerprint: "v1"}).URL)
	require.NoError(t, err)
	t.Cleanup(up.pool.Close)
	s.db = up
	code, body = ready()
	require.Equal(t, http.StatusOK, code, body)

	mu.Lock()
	authStatus = http.StatusBadGateway
	mu.Unlock()
	code, body = ready()
	require.Equal(t, http.StatusServiceUnavailable, code)
	require.Contains(t, body, "supabase auth unavailable")
}
