package supabasetest

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"sync"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// Session is what GoTrue answers a sign-up, sign-in or refresh with.
type Session struct {
	AccessToken  string `json:"access_token"`
	RefreshToken string `json:"refresh_token"`
	User         struct {
		ID string `json:"id"`
	} `json:"user"`
}

// Reply is a GoTrue answer: its status, and the session or the error code.
type Reply struct {
	Status  int
	Session Session
	// ErrorCode is GoTrue's error_code ("user_banned",
	// "refresh_token_not_found", …) when Status is not 2xx.
	ErrorCode string
	Body      string
}

// OK reports a 2xx answer.
func (r Reply) OK() bool { return r.Status >= 200 && r.Status < 300 }

var httpClient = &http.Client{Timeout: 30 * time.Second}

func (a *Auth) call(ctx context.Context, method, path, bearer string, body any) (Reply, error) {
	b, err := json.Marshal(body)
	if err != nil {
		return Reply{}, err
	}
	req, err := http.NewRequestWithContext(ctx, method, a.URL+path, bytes.NewReader(b))
	if err != nil {
		return Reply{}, err
	}
	req.Header.Set("Content-Type", "application/json")
	if bearer != "" {
		req.Header.Set("Authorization", "Bearer "+bearer)
	}
	resp, err := httpClient.Do(req)
	if err != nil {
		return Reply{}, fmt.Errorf("%s %s: %w", method, path, err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		return Reply{}, fmt.Errorf("%s %s: %w", method, path, err)
	}
	r := Reply{Status: resp.StatusCode, Body: string(raw)}
	if r.OK() {
		_ = json.Unmarshal(raw, &r.Session)
		if r.Session.User.ID == "" { // admin calls answer the user itself
			var u struct {
				ID string `json:"id"`
			}
			_ = json.Unmarshal(raw, &u)
			r.Session.User.ID = u.ID
		}
	} else {
		var e struct {
			ErrorCode string `json:"error_code"`
			Error     string `json:"error"`
		}
		_ = json.Unmarshal(raw, &e)
		r.ErrorCode = e.ErrorCode
		if r.ErrorCode == "" {
			r.ErrorCode = e.Error
		}
	}
	return r, nil
}

// SignUp signs a new user up with e-mail and password (confirmed at once:
// the test servers autoconfirm).
func (a *Auth) SignUp(ctx context.Context, email, password string) (Reply, error) {
	return a.call(ctx, http.MethodPost, "/signup", "", map[string]string{"email": email, "password": password})
}

// SignIn signs in with e-mail and password.
func (a *Auth) SignIn(ctx context.Context, email, password string) (Reply, error) {
	return a.call(ctx, http.MethodPost, "/token?grant_type=password", "", map[string]string{"email": email, "password": password})
}

// Refresh exchanges a refresh token for a new session.
func (a *Auth) Refresh(ctx context.Context, refreshToken string) (Reply, error) {
	return a.call(ctx, http.MethodPost, "/token?grant_type=refresh_token", "", map[string]string{"refresh_token": refreshToken})
}

// AdminCreateUser creates a user as the service role; confirmed says
// whether its e-mail counts as confirmed.
func (a *Auth) AdminCreateUser(ctx context.Context, email, password string, confirmed bool) (Reply, error) {
	return a.call(ctx, http.MethodPost, "/admin/users", ServiceToken(), map[string]any{"email": email, "password": password, "email_confirm": confirmed})
}

// AdminUpdateUser changes a user as the service role (e.g. {"email": …,
// "email_confirm": true}).
func (a *Auth) AdminUpdateUser(ctx context.Context, id string, fields map[string]any) (Reply, error) {
	return a.call(ctx, http.MethodPut, "/admin/users/"+id, ServiceToken(), fields)
}

// ServiceToken is a service_role JWT for GoTrue's admin API.
func ServiceToken() string {
	tok, err := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{
		"role": "service_role", "exp": time.Now().Add(time.Hour).Unix(),
	}).SignedString([]byte(JWTSecret))
	if err != nil {
		panic(err) // HS256 with a fixed key does not fail
	}
	return tok
}

// Claims verifies an access token GoTrue issued and returns its claims, as
// PostgREST does before it hands them to the database.
func Claims(accessToken string) (map[string]any, error) {
	claims := jwt.MapClaims{}
	_, err := jwt.ParseWithClaims(accessToken, claims, func(*jwt.Token) (any, error) { return []byte(JWTSecret), nil },
		jwt.WithValidMethods([]string{"HS256"}))
	if err != nil {
		return nil, fmt.Errorf("access token: %w", err)
	}
	return claims, nil
}

type syncBuffer struct {
	mu sync.Mutex
	b  *bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

// AdminDeleteUser deletes a user for good as the service role.
func (a *Auth) AdminDeleteUser(ctx context.Context, id string) (Reply, error) {
	return a.call(ctx, http.MethodDelete, "/admin/users/"+id, ServiceToken(), map[string]any{"should_soft_delete": false})
}
