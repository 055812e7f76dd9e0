package ui

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/MicahParks/keyfunc/v3"
	"github.com/golang-jwt/jwt/v5"
)

// errSessionEnded means Supabase Auth no longer accepts the session: the
// member was deactivated (the sync deleted their sessions and banned the
// account), banned, deleted, or signed out elsewhere.
var errSessionEnded = errors.New("session ended")

// errAuthUnavailable wraps every failure to reach Supabase Auth or to get
// an answer it should give (a 5xx, a session without tokens): the screen
// answers 503 for it rather than signing the caller out. Its text is the
// prefix of those errors' messages.
var errAuthUnavailable = errors.New("supabase auth")

// errBadCredentials is a refused e-mail and password.
var errBadCredentials = errors.New("wrong e-mail or password")

// tokens are what Supabase Auth hands out at sign-in and refresh.
type tokens struct {
	Access  string `json:"access_token"`
	Refresh string `json:"refresh_token"`
}

// gotrue talks to Supabase Auth (GoTrue) over its HTTP API.
type gotrue struct {
	base    string
	anonKey string
	client  *http.Client
}

func (g *gotrue) do(ctx context.Context, method, path, bearer string, body any) (int, []byte, error) {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return 0, nil, err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, strings.TrimSuffix(g.base, "/")+path, rd)
	if err != nil {
		return 0, nil, err
	}
	req.Header.Set("Content-Type", "application/json")
	if g.anonKey != "" {
		req.Header.Set("apikey", g.anonKey)
	}
	if bearer != "" {
		req.Header.Set("Authorization", "Bearer "+bearer)
	}
	resp, err := g.client.Do(req)
	if err != nil {
		return 0, nil, fmt.Errorf("%w %s %s: %w", errAuthUnavailable, method, path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return 0, nil, fmt.Errorf("%w %s %s: %w", errAuthUnavailable, method, path, err)
	}
	return resp.StatusCode, b, nil
}

// signIn exchanges an e-mail and password for tokens.
func (g *gotrue) signIn(ctx context.Context, email, password string) (tokens, error) {
	status, b, err := g.do(ctx, http.MethodPost, "/token?grant_type=password", "", map[string]string{"email": email, "password": password})
	if err != nil {
		return tokens{}, err
	}
	return g.session(status, b, errBadCredentials)
}

// refresh exchanges a refresh token for new tokens; a refused one ends
// the session.
func (g *gotrue) refresh(ctx context.Context, refreshToken string) (tokens, error) {
	status, b, err := g.do(ctx, http.MethodPost, "/token?grant_type=refresh_token", "", map[string]string{"refresh_token": refreshToken})
	if err != nil {
		return tokens{}, err
	}
	return g.session(status, b, errSessionEnded)
}

func (g *gotrue) session(status int, b []byte, refused error) (tokens, error) {
	switch {
	case status == http.StatusOK:
		var t tokens
		if err := json.Unmarshal(b, &t); err != nil || t.Access == "" || t.Refresh == "" {
			return tokens{}, fmt.Errorf("%w: a session without tokens", errAuthUnavailable)
		}
		return t, nil
	case status >= 400 && status < 500:
		// 400 invalid_grant, 403 user_banned, 403 from the access-token
		// hook (an inactive member gets no token).
		return tokens{}, refused
	default:
		return tokens{}, fmt.Errorf("%w answered %d", errAuthUnavailable, status)
	}
}

// check asks Supabase Auth whether the session of the access token is
// still alive: it answers 403 for a deleted session (the sync deletes a
// deactivated member's sessions) or a banned user.
func (g *gotrue) check(ctx context.Context, accessToken string) error {
	status, _, err := g.do(ctx, http.MethodGet, "/user", accessToken, nil)
	switch {
	case err != nil:
		return err
	case status == http.StatusOK:
		return nil
	case status == http.StatusUnauthorized || status == http.StatusForbidden || status == http.StatusNotFound:
		return errSessionEnded
	default:
		return fmt.Errorf("%w answered %d", errAuthUnavailable, status)
	}
}

// signOut ends the session at Supabase Auth (its refresh tokens too).
func (g *gotrue) signOut(ctx context.Context, accessToken string) error {
	_, _, err := g.do(ctx, http.MethodPost, "/logout?scope=local", accessToken, nil)
	return err
}

func (g *gotrue) health(ctx context.Context) error {
	status, _, err := g.do(ctx, http.MethodGet, "/health", "", nil)
	if err != nil {
		return err
	}
	if status != http.StatusOK {
		return fmt.Errorf("%w /health answered %d", errAuthUnavailable, status)
	}
	return nil
}

// orgRole is one entry of the org_roles claim that the project's
// access-token hook adds (migration 00004).
type orgRole struct {
	OrganizationID string `json:"organization_id"`
	PortalOrgID    string `json:"portal_org_id"`
	Role           string `json:"role"`
}

// claims are an access token's verified claims: the raw set, handed to
// the database as request.jwt.claims, and what the screen reads of it.
type claims struct {
	jwt.RegisteredClaims
	Role     string    `json:"role"`
	OrgRoles []orgRole `json:"org_roles"`
	raw      []byte
}

// orgs returns the organization ids where the caller holds one of roles.
func (c *claims) orgs(roles ...string) []orgRole {
	var out []orgRole
	for _, r := range c.OrgRoles {
		for _, want := range roles {
			if r.Role == want {
				out = append(out, r)
				break
			}
		}
	}
	return out
}

// verifier checks access tokens as Supabase's API does: HS256 with the
// project's JWT secret, or the asymmetric keys of its JWKS.
type verifier struct {
	secret   []byte
	jwks     keyfunc.Keyfunc
	audience string
}

func newVerifier(ctx context.Context, secret, jwksURL, audience string) (*verifier, error) {
	v := &verifier{audience: audience}
	if secret != "" {
		v.secret = []byte(secret)
	}
	if jwksURL != "" {
		k, err := keyfunc.NewDefaultCtx(ctx, []string{jwksURL})
		if err != nil {
			return nil, fmt.Errorf("SUPABASE_JWKS_URL: %w", err)
		}
		v.jwks = k
	}
	return v, nil
}

func (v *verifier) key(t *jwt.Token) (any, error) {
	if _, ok := t.Method.(*jwt.SigningMethodHMAC); ok {
		if v.secret == nil {
			return nil, errors.New("HS256 token but no JWT secret configured")
		}
		return v.secret, nil
	}
	if v.jwks == nil {
		return nil, fmt.Errorf("%s token but no JWKS configured", t.Method.Alg())
	}
	return v.jwks.Keyfunc(t)
}

// verify checks the token's signature, expiry and audience and returns its
// claims. An expired token gives jwt.ErrTokenExpired.
func (v *verifier) verify(token string) (*claims, error) {
	c := &claims{}
	_, err := jwt.ParseWithClaims(token, c, v.key,
		jwt.WithValidMethods([]string{"HS256", "RS256", "ES256", "EdDSA"}),
		jwt.WithAudience(v.audience), jwt.WithExpirationRequired(), jwt.WithLeeway(5*time.Second))
	if err != nil {
		return nil, err
	}
	if c.Subject == "" || c.Role != "authenticated" {
		return nil, errors.New("access token: not an authenticated user's")
	}
	// The payload as signed, for request.jwt.claims.
	parts := strings.Split(token, ".")
	raw, err := jwt.NewParser().DecodeSegment(parts[1])
	if err != nil {
		return nil, err
	}
	c.raw = raw
	return c, nil
}
