// Package emulator is a strict fake of Salesforce's OAuth 2.0 endpoints.
//
// It exists so tests and the demo can rehearse what hurts in production:
// PKCE is checked, refresh tokens always rotate, presenting a rotated token
// revokes the whole token family ("chain"), idle chains expire on a
// controllable clock, the token endpoint can sit behind an IP allowlist, and
// latency, failures and dropped responses can be injected. Counters let a
// test prove that a client never presented a token twice.
//
// Where Salesforce is vague, the emulator takes the harsher reading, so code
// that passes against it is safe against the real thing.
package emulator

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/tokenwarm/tokenwarm/clock"
)

const (
	defaultSessionTimeout = 2 * time.Hour
	defaultIdleTTL        = 30 * 24 * time.Hour
	codeTTL               = 15 * time.Minute
	defaultUsername       = "demo@example.com"
)

// Config sets up a Server. The zero value works except for ClientID, which
// tests should always set.
type Config struct {
	// ClientID is the connected app's consumer key. Empty accepts any
	// non-empty client_id, which suits an ad-hoc demo.
	ClientID string
	// ClientSecret, when non-empty, must accompany every token and
	// introspection call, as a body parameter or HTTP Basic credentials.
	ClientSecret string
	// Clock drives code, session and idle expiry. Nil means the wall clock.
	Clock clock.Clock
	// SessionTimeout is the access-token lifetime (default 2h).
	SessionTimeout time.Duration
	// IdleTTL is how long a refresh token may go unused before its chain dies
	// (default 30 days). Every successful refresh restarts it.
	IdleTTL time.Duration
	// AutoApprove makes GET authorize redirect with a code at once instead of
	// rendering a consent form.
	AutoApprove bool
	// DefaultOrgID is the org every user belongs to; generated when empty.
	DefaultOrgID string
	// OrgName is that org's name (SELECT Name FROM Organization); "Emulated
	// Org" when empty.
	OrgName string
}

// Server is the emulator. It is an http.Handler and may be mounted under a
// path prefix with http.StripPrefix. All methods are safe for concurrent use.
type Server struct {
	cfg Config
	mux *http.ServeMux

	// mu guards everything below. One lock keeps the token state machine
	// simple to reason about; the emulator never needs to be fast.
	mu         sync.Mutex
	base       string
	users      map[string]*user // by lower-case username
	codes      map[string]*authCode
	refresh    map[string]*refreshToken // every refresh token ever issued
	access     map[string]*accessToken
	presenting map[string]int // refresh token -> requests presenting it right now
	issued     []string
	rotations  []Rotation // every successful refresh grant, oldest first
	ctl        controls
	stats      Stats
}

// New returns a Server with defaults filled in.
func New(cfg Config) *Server {
	if cfg.Clock == nil {
		cfg.Clock = clock.System{}
	}
	if cfg.SessionTimeout <= 0 {
		cfg.SessionTimeout = defaultSessionTimeout
	}
	if cfg.IdleTTL <= 0 {
		cfg.IdleTTL = defaultIdleTTL
	}
	if cfg.DefaultOrgID == "" {
		cfg.DefaultOrgID = newOrgID()
	}
	s := &Server{
		cfg:        cfg,
		users:      make(map[string]*user),
		codes:      make(map[string]*authCode),
		refresh:    make(map[string]*refreshToken),
		access:     make(map[string]*accessToken),
		presenting: make(map[string]int),
		ctl:        newControls(),
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /services/oauth2/authorize", s.authorizePage)
	mux.HandleFunc("POST /services/oauth2/authorize", s.authorizeDecision)
	mux.HandleFunc("POST /services/oauth2/token", s.token)
	mux.HandleFunc("GET /services/oauth2/revoke", s.revoke)
	mux.HandleFunc("POST /services/oauth2/revoke", s.revoke)
	mux.HandleFunc("POST /services/oauth2/introspect", s.introspect)
	mux.HandleFunc("GET /services/oauth2/userinfo", s.userinfo)
	mux.HandleFunc("POST /services/oauth2/userinfo", s.userinfo)
	mux.HandleFunc("GET /id/{org}/{user}", s.identity)
	mux.HandleFunc("GET "+apiPath+"{$}", s.apiRoot)
	mux.HandleFunc("GET "+apiPath+"query", s.query)
	s.mux = mux
	return s
}

// ServeHTTP serves the emulated endpoints.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s.mux.ServeHTTP(w, r)
}

// OrgID returns the org every emulated user belongs to.
func (s *Server) OrgID() string { return s.cfg.DefaultOrgID }

// SetBaseURL fixes the absolute URL the emulator is reachable at (used for
// instance_url, identity URLs and the consent form). Empty derives it from
// each request's Host and mount prefix.
func (s *Server) SetBaseURL(u string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.base = strings.TrimRight(u, "/")
}

// baseURL is the absolute URL of the emulator's root as the client sees it.
func (s *Server) baseURL(r *http.Request) string {
	s.mu.Lock()
	base := s.base
	s.mu.Unlock()
	if base != "" {
		return base
	}
	scheme := "http"
	if r.TLS != nil {
		scheme = "https"
	}
	return scheme + "://" + r.Host + mountPrefix(r)
}

// mountPrefix recovers a prefix removed by http.StripPrefix: it strips
// r.URL.Path but leaves r.RequestURI as the client sent it.
func mountPrefix(r *http.Request) string {
	orig, err := url.ParseRequestURI(r.RequestURI)
	if err != nil {
		return ""
	}
	prefix, ok := strings.CutSuffix(orig.EscapedPath(), r.URL.EscapedPath())
	if !ok {
		return ""
	}
	return prefix
}

func identityURL(base, orgID, userID string) string {
	return base + "/id/" + orgID + "/" + userID
}

// oauthError is an OAuth error answer. Values are never mutated after
// creation, so the shared ones below can be reused.
type oauthError struct {
	status      int
	Code        string `json:"error"`
	Description string `json:"error_description,omitempty"`
}

func (e *oauthError) write(w http.ResponseWriter) { writeJSON(w, e.status, e) }

var (
	errExpiredToken    = &oauthError{http.StatusBadRequest, "invalid_grant", "expired access/refresh token"}
	errIdleExpired     = &oauthError{http.StatusBadRequest, "invalid_grant", "token validity expired"}
	errInFlight        = &oauthError{http.StatusBadRequest, "invalid_grant", "token request is already being processed"}
	errExpiredCode     = &oauthError{http.StatusBadRequest, "invalid_grant", "expired authorization code"}
	errMissingVerifier = &oauthError{http.StatusBadRequest, "invalid_grant", "code verifier required"}
	errBadVerifier     = &oauthError{http.StatusBadRequest, "invalid_request", "invalid code verifier"}
	errRedirectURI     = &oauthError{http.StatusBadRequest, "redirect_uri_mismatch", "redirect_uri must match configuration"}
	errIPRestricted    = &oauthError{http.StatusBadRequest, "invalid_grant", "ip restricted or invalid login hours"}
	errInactiveUser    = &oauthError{http.StatusBadRequest, "inactive_user", "user is not active"}
	errUnknownClient   = &oauthError{http.StatusBadRequest, "invalid_client_id", "client identifier invalid"}
	errBadSecret       = &oauthError{http.StatusBadRequest, "invalid_client", "invalid client credentials"}
	errGrantType       = &oauthError{http.StatusBadRequest, "unsupported_grant_type", "grant type not supported"}
	errMalformedForm   = &oauthError{http.StatusBadRequest, "invalid_request", "malformed request body"}
	errUnknownToken    = &oauthError{http.StatusBadRequest, "unsupported_token_type", "this token type is not supported"}
	errDeadToken       = &oauthError{http.StatusBadRequest, "invalid_token", "invalid token"}
)

// writeJSON answers with v. OAuth answers carry tokens, so nothing may cache them.
func writeJSON(w http.ResponseWriter, status int, v any) {
	h := w.Header()
	h.Set("Content-Type", "application/json;charset=UTF-8")
	h.Set("Cache-Control", "no-store")
	h.Set("Pragma", "no-cache")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v) // the client may be gone; nothing to do about it
}

// ListenAndServe serves a new emulator on addr until ctx is done, logging
// one line per request (method, path and status; never a query string, which
// may hold a token) to logw.
func ListenAndServe(ctx context.Context, addr string, cfg Config, logw io.Writer) error {
	return ListenAndServeWith(ctx, addr, cfg, ServeOptions{}, logw)
}

// ServeOptions are how ListenAndServeWith serves.
type ServeOptions struct {
	// TLS, when set, serves HTTPS with its certificates (e.g. signed by a
	// test CA the client is told to trust), as Salesforce only speaks https.
	TLS *tls.Config
	// AllowedIPs is the IP allowlist from the start (see SetAllowedIPs).
	AllowedIPs []string
	// RestrictAll applies it to revoke and introspection too (see
	// RestrictRevokeAndIntrospect).
	RestrictAll bool
}

// ListenAndServeWith is ListenAndServe with serving options.
func ListenAndServeWith(ctx context.Context, addr string, cfg Config, opts ServeOptions, logw io.Writer) error {
	emu := New(cfg)
	if err := emu.SetAllowedIPs(opts.AllowedIPs); err != nil {
		return err
	}
	emu.RestrictRevokeAndIntrospect(opts.RestrictAll)
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("emulator: %w", err)
	}
	scheme := "http"
	if opts.TLS != nil {
		ln, scheme = tls.NewListener(ln, opts.TLS.Clone()), "https"
	}
	handler := slog.NewTextHandler(logw, nil)
	logger := slog.New(handler).With("component", "emulator")
	srv := &http.Server{
		Handler:           logRequests(logger, emu),
		ReadHeaderTimeout: 10 * time.Second,
		ErrorLog:          slog.NewLogLogger(handler, slog.LevelError),
	}
	logger.Info("salesforce emulator listening", "url", scheme+"://"+ln.Addr().String(), "org_id", emu.OrgID(),
		"allowed_ips", strings.Join(opts.AllowedIPs, ","))

	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	select {
	case err := <-served:
		return fmt.Errorf("emulator: %w", err)
	case <-ctx.Done():
	}
	// Held or slow refreshes must not keep the process alive forever.
	shutdownCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	if err := srv.Shutdown(shutdownCtx); err != nil {
		_ = srv.Close()
	}
	if err := <-served; !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("emulator: %w", err)
	}
	return nil
}

func logRequests(logger *slog.Logger, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		rec := &statusRecorder{ResponseWriter: w}
		next.ServeHTTP(rec, r)
		logger.Info("request", "method", r.Method, "path", r.URL.Path,
			"status", rec.status, "duration", time.Since(start).Round(time.Microsecond))
	})
}

// statusRecorder remembers the status for the log line. Status 0 means no
// response was written (the client went away or the response was dropped).
type statusRecorder struct {
	http.ResponseWriter
	status int
}

func (r *statusRecorder) WriteHeader(status int) {
	if r.status == 0 {
		r.status = status
	}
	r.ResponseWriter.WriteHeader(status)
}

func (r *statusRecorder) Write(b []byte) (int, error) {
	if r.status == 0 {
		r.status = http.StatusOK
	}
	return r.ResponseWriter.Write(b)
}

// Unwrap lets http.ResponseController reach the connection, so dropped
// responses still work behind the logger.
func (r *statusRecorder) Unwrap() http.ResponseWriter { return r.ResponseWriter }
