package ui

import (
	"context"
	"embed"
	"errors"
	"fmt"
	"html/template"
	"io/fs"
	"net"
	"net/http"
	"strings"
	"time"
	_ "time/tzdata" // Europe/Oslo in a distroless image

	"go.uber.org/zap"
)

//go:embed templates/*.html
var templateFiles embed.FS

//go:embed static
var staticFiles embed.FS

// oslo is the time zone times are shown in: the members and admins are in
// Norway.
var oslo = func() *time.Location {
	l, err := time.LoadLocation("Europe/Oslo")
	if err != nil {
		return time.UTC
	}
	return l
}()

// server is the screen's HTTP handlers and what they share.
type server struct {
	cfg      Config
	log      *zap.Logger
	db       *db
	auth     *gotrue
	verify   *verifier
	sessions *sessions
	locales  *locales
	// pages[lang][page] is the page's template, with the functions bound
	// to the language's catalog.
	pages map[string]map[string]*template.Template
}

// Run serves the screen until ctx ends, then shuts down within
// cfg.ShutdownTimeout: the public listener stops taking requests and
// in-flight ones finish, then the health listener and the pool close.
func Run(ctx context.Context, cfg Config, log *zap.Logger) error {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return err
	}
	s := &server{cfg: cfg, log: log,
		auth: &gotrue{base: cfg.AuthURL, anonKey: cfg.AnonKey, client: &http.Client{Timeout: cfg.AuthTimeout}}}
	if s.locales, err = loadLocales(); err != nil {
		return err
	}
	if err := s.parseTemplates(); err != nil {
		return err
	}
	if s.sessions, err = newSessions(cfg.SessionKey, *cfg.CookieSecure); err != nil {
		return err
	}
	if s.verify, err = newVerifier(ctx, cfg.JWTSecret, cfg.JWKSURL, cfg.Audience); err != nil {
		return err
	}
	if s.db, err = openDB(ctx, cfg.DatabaseURL); err != nil {
		return err
	}
	defer s.db.pool.Close()

	ln, hln := cfg.Listener, cfg.HealthListener
	if ln == nil {
		if ln, err = net.Listen("tcp", cfg.Addr); err != nil {
			return fmt.Errorf("CONSOLE_ADDR: %w", err)
		}
	}
	if hln == nil {
		if hln, err = net.Listen("tcp", cfg.HealthAddr); err != nil {
			ln.Close()
			return fmt.Errorf("CONSOLE_HEALTH_ADDR: %w", err)
		}
	}
	public := &http.Server{Handler: s.routes(), ReadHeaderTimeout: 5 * time.Second, ReadTimeout: 30 * time.Second,
		WriteTimeout: 60 * time.Second, IdleTimeout: 120 * time.Second, MaxHeaderBytes: 32 << 10,
		BaseContext: func(net.Listener) context.Context { return context.WithoutCancel(ctx) }}
	health := &http.Server{Handler: s.healthRoutes(), ReadHeaderTimeout: 5 * time.Second}
	errc := make(chan error, 2)
	go func() { errc <- serve(public, ln) }()
	go func() { errc <- serve(health, hln) }()
	log.Info("console listening", zap.String("addr", ln.Addr().String()), zap.String("health_addr", hln.Addr().String()))

	var runErr error
	select {
	case <-ctx.Done():
	case runErr = <-errc:
	}
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), cfg.ShutdownTimeout)
	defer cancel()
	err = errors.Join(runErr, public.Shutdown(sctx), health.Shutdown(sctx))
	log.Info("console stopped")
	return err
}

func serve(srv *http.Server, ln net.Listener) error {
	if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

func (s *server) parseTemplates() error {
	s.pages = map[string]map[string]*template.Template{}
	for _, c := range s.locales.catalogs {
		s.pages[c.lang] = map[string]*template.Template{}
		for _, page := range []string{"login", "message", "log", "entry", "members"} {
			t, err := template.New(page).Funcs(s.funcs(c)).ParseFS(templateFiles, "templates/layout.html", "templates/"+page+".html")
			if err != nil {
				return fmt.Errorf("template %s: %w", page, err)
			}
			s.pages[c.lang][page] = t
		}
	}
	return nil
}

func (s *server) funcs(c *catalog) template.FuncMap {
	deref := func(p any) string {
		switch v := p.(type) {
		case *string:
			if v != nil {
				return *v
			}
		case string:
			return v
		}
		return ""
	}
	return template.FuncMap{
		"t":     c.t,
		"deref": deref,
		"typ": func(typ string) string {
			if m, ok := c.messages["type."+typ]; ok {
				return m
			}
			return typ
		},
		"role": func(r *string) string {
			if r == nil {
				return c.t("role.none")
			}
			return c.t("role." + *r)
		},
		"mstatus": func(st *string) string {
			if st == nil {
				return c.t("change.none")
			}
			return c.t("mstatus." + *st)
		},
		"fields": func(fs []string) string {
			out := make([]string, len(fs))
			for i, f := range fs {
				out[i] = c.t("field." + f)
			}
			return strings.Join(out, ", ")
		},
		"when": func(v any) string {
			var t time.Time
			switch x := v.(type) {
			case time.Time:
				t = x
			case *time.Time:
				if x == nil {
					return ""
				}
				t = *x
			}
			return t.In(oslo).Format("2006-01-02 15:04:05")
		},
		"iso": func(t time.Time) string { return t.UTC().Format(time.RFC3339) },
	}
}

func (s *server) routes() http.Handler {
	mux := http.NewServeMux()
	static, _ := fs.Sub(staticFiles, "static")
	mux.Handle("GET /static/", http.StripPrefix("/static/", cacheStatic(http.FileServerFS(static))))
	mux.HandleFunc("GET /login", s.loginPage)
	mux.HandleFunc("POST /login", s.login)
	mux.Handle("POST /logout", s.signedIn(s.logout))
	mux.Handle("GET /{$}", s.signedIn(s.home))
	mux.Handle("GET /log", s.signedIn(s.logPage))
	mux.Handle("GET /log/updates", s.signedIn(s.logUpdates))
	mux.Handle("GET /log/{id}", s.signedIn(s.entryPage))
	mux.Handle("GET /members", s.signedIn(s.membersPage))
	// Go's cross-origin protection refuses every unsafe request that a
	// browser says came from another origin (Sec-Fetch-Site, Origin); the
	// forms' tokens are checked on top.
	return securityHeaders(s.logRequests(http.NewCrossOriginProtection().Handler(mux)))
}

func (s *server) healthRoutes() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("ok\n")) })
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithTimeout(r.Context(), 3*time.Second)
		defer cancel()
		if err := s.db.pool.Ping(ctx); err != nil {
			http.Error(w, "database unavailable", http.StatusServiceUnavailable)
			return
		}
		if err := s.auth.health(ctx); err != nil {
			http.Error(w, "supabase auth unavailable", http.StatusServiceUnavailable)
			return
		}
		_, _ = w.Write([]byte("ok\n"))
	})
	return mux
}

// contentSecurityPolicy allows the page's own script, style and requests
// only: no inline script or style, no third-party origin, no framing.
const contentSecurityPolicy = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; " +
	"connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"

func securityHeaders(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("Content-Security-Policy", contentSecurityPolicy)
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("X-Frame-Options", "DENY")
		h.Set("Referrer-Policy", "no-referrer")
		h.Set("Cross-Origin-Opener-Policy", "same-origin")
		h.Set("Permissions-Policy", "camera=(), microphone=(), geolocation=()")
		if !strings.HasPrefix(r.URL.Path, "/static/") {
			h.Set("Cache-Control", "no-store")
		}
		next.ServeHTTP(w, r)
	})
}

func cacheStatic(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "public, max-age=300")
		next.ServeHTTP(w, r)
	})
}

type statusWriter struct {
	http.ResponseWriter
	status int
}

func (w *statusWriter) WriteHeader(code int) {
	w.status = code
	w.ResponseWriter.WriteHeader(code)
}

// logRequests logs each request's method, path (never the query: it may
// hold a member's name), status and duration.
func (s *server) logRequests(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		sw := &statusWriter{ResponseWriter: w, status: http.StatusOK}
		next.ServeHTTP(sw, r)
		s.log.Debug("request", zap.String("method", r.Method), zap.String("path", r.URL.Path),
			zap.Int("status", sw.status), zap.Duration("took", time.Since(start)))
	})
}
