package ui

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"net/http"
)

// session is what the session cookie holds: the Supabase Auth tokens, and
// the nonce the CSRF tokens of the session's forms derive from.
type session struct {
	Access  string `json:"a"`
	Refresh string `json:"r"`
	Nonce   string `json:"n"`
}

// sessions seals sessions into a cookie (AES-256-GCM: the browser can
// neither read nor change them) that is HttpOnly, SameSite=Lax and, by
// default, Secure with the __Host- prefix.
type sessions struct {
	aead   cipher.AEAD
	key    []byte
	secure bool
}

func newSessions(key []byte, secure bool) (*sessions, error) {
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return nil, err
	}
	return &sessions{aead: aead, key: key, secure: secure}, nil
}

func (s *sessions) name() string {
	if s.secure {
		return "__Host-portalsync-session"
	}
	return "portalsync-session"
}

func (s *sessions) preName() string {
	if s.secure {
		return "__Host-portalsync-csrf"
	}
	return "portalsync-csrf"
}

func (s *sessions) cookie(name, value string, maxAge int) *http.Cookie {
	return &http.Cookie{Name: name, Value: value, Path: "/", MaxAge: maxAge, HttpOnly: true,
		Secure: s.secure, SameSite: http.SameSiteLaxMode}
}

// save writes sess into the response's cookie.
func (s *sessions) save(w http.ResponseWriter, sess session) error {
	b, err := json.Marshal(sess)
	if err != nil {
		return err
	}
	nonce := make([]byte, s.aead.NonceSize())
	_, _ = rand.Read(nonce)
	sealed := s.aead.Seal(nonce, nonce, b, []byte(s.name()))
	http.SetCookie(w, s.cookie(s.name(), base64.RawURLEncoding.EncodeToString(sealed), 0))
	return nil
}

var errNoSession = errors.New("no session")

// load reads the request's session.
func (s *sessions) load(r *http.Request) (session, error) {
	c, err := r.Cookie(s.name())
	if err != nil {
		return session{}, errNoSession
	}
	b, err := base64.RawURLEncoding.DecodeString(c.Value)
	if err != nil || len(b) < s.aead.NonceSize() {
		return session{}, errNoSession
	}
	plain, err := s.aead.Open(nil, b[:s.aead.NonceSize()], b[s.aead.NonceSize():], []byte(s.name()))
	if err != nil {
		return session{}, errNoSession
	}
	var sess session
	if err := json.Unmarshal(plain, &sess); err != nil || sess.Access == "" {
		return session{}, errNoSession
	}
	return sess, nil
}

// clear removes the session cookie.
func (s *sessions) clear(w http.ResponseWriter) {
	http.SetCookie(w, s.cookie(s.name(), "", -1))
}

// CSRF tokens are an HMAC of a per-browser nonce: the session's, or before
// sign-in a nonce cookie of its own. A form's token must match the
// browser's; with SameSite cookies and Go's cross-origin protection
// (Sec-Fetch-Site, Origin) around every unsafe request, that is two
// guards.
func (s *sessions) csrfToken(nonce string) string {
	m := hmac.New(sha256.New, s.key)
	m.Write([]byte("csrf:" + nonce))
	return base64.RawURLEncoding.EncodeToString(m.Sum(nil))
}

func (s *sessions) csrfValid(nonce, token string) bool {
	return nonce != "" && hmac.Equal([]byte(s.csrfToken(nonce)), []byte(token))
}

// preNonce returns the pre-sign-in nonce of the browser, setting one when
// it has none.
func (s *sessions) preNonce(w http.ResponseWriter, r *http.Request) string {
	if c, err := r.Cookie(s.preName()); err == nil && len(c.Value) >= 16 {
		return c.Value
	}
	n := randomToken()
	http.SetCookie(w, s.cookie(s.preName(), n, 0))
	return n
}

func randomToken() string {
	b := make([]byte, 18)
	_, _ = rand.Read(b)
	return base64.RawURLEncoding.EncodeToString(b)
}
