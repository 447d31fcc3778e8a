package handlers_test

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/tokenwarm/tokenwarm/models"
)

// pgProxy is a TCP proxy in front of Postgres that a test can cut: every
// open connection is dropped and new ones are closed at once, as when the
// database restarts or the network to it fails.
type pgProxy struct {
	ln     net.Listener
	target string
	mu     sync.Mutex
	down   bool
	conns  map[net.Conn]bool
}

func startPGProxy(t testing.TB, target string) *pgProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &pgProxy{ln: ln, target: target, conns: map[net.Conn]bool{}}
	t.Cleanup(func() { ln.Close(); p.cut() })
	go p.serve()
	return p
}

func (p *pgProxy) serve() {
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		p.mu.Lock()
		down := p.down
		p.mu.Unlock()
		if down {
			c.Close()
			continue
		}
		up, err := net.Dial("tcp", p.target)
		if err != nil {
			c.Close()
			continue
		}
		p.mu.Lock()
		p.conns[c], p.conns[up] = true, true
		p.mu.Unlock()
		pipe := func(dst, src net.Conn) {
			_, _ = io.Copy(dst, src)
			dst.Close()
			src.Close()
			p.mu.Lock()
			delete(p.conns, dst)
			delete(p.conns, src)
			p.mu.Unlock()
		}
		go pipe(c, up)
		go pipe(up, c)
	}
}

// cut drops every connection and refuses new ones until restore.
func (p *pgProxy) cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.down = true
	for c := range p.conns {
		c.Close()
	}
}

func (p *pgProxy) restore() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.down = false
}

// viaProxy returns a world builder option that routes the server's
// database connections through a proxy, and the proxy.
func viaProxy(t testing.TB) (func(string) string, **pgProxy) {
	var p *pgProxy
	return func(pgURL string) string {
		u, err := url.Parse(pgURL)
		if err != nil {
			t.Fatal(err)
		}
		p = startPGProxy(t, u.Host)
		u.Host = p.ln.Addr().String()
		return u.String()
	}, &p
}

// assertUnavailable checks a 503 service_unavailable problem with
// Retry-After (the spec check runs in the world's transport).
func assertUnavailable(t *testing.T, what string, resp *http.Response, body []byte) {
	t.Helper()
	p := decode[struct {
		problem
		RetryAfter int `json:"retry_after"`
	}](t, body)
	if resp.StatusCode != http.StatusServiceUnavailable || p.Code != "service_unavailable" || p.RetryAfter != 1 ||
		resp.Header.Get("Retry-After") != "1" || resp.Header.Get("Content-Type") != "application/problem+json" ||
		resp.Header.Get("WWW-Authenticate") != "" {
		t.Fatalf("%s with the database down: %d %v %s, want 503 service_unavailable with Retry-After 1", what, resp.StatusCode, resp.Header, body)
	}
}

// forge breaks a JWT's signature, keeping it well-formed.
func forge(jwt string) string {
	i := strings.LastIndexByte(jwt, '.') + 5
	c := byte('A')
	if jwt[i] == 'A' {
		c = 'B'
	}
	return jwt[:i] + string(c) + jwt[i+1:]
}

// A device whose database is unreachable is not logged out: a valid device
// token gets 503 with Retry-After (never the 401 that makes an SDK sign
// out), the token endpoint answers temporarily_unavailable (never the
// invalid_grant that makes it drop the session) and revoke fails with 503
// (never a silent 200). A token that is really bad is still 401, decided
// without the database. Once the database is back the same token and
// refresh token work, and no token is logged.
func TestDatabaseDownIsNotTheDevicesFault(t *testing.T) {
	via, proxy := viaProxy(t)
	w := newWorldVia(t, models.Postgres, via)
	code, verifier := w.connectApp("down@example.com", nil)
	dt := w.session(code, verifier)
	id := dt.ConnectionIDs[0]
	if resp, body := w.get("/v1/connections", dt.AccessToken); resp.StatusCode != 200 {
		t.Fatalf("list: %d %s", resp.StatusCode, body)
	}

	(*proxy).cut()
	for _, path := range []string{"/v1/connections", "/v1/connections/" + id, "/v1/connections/" + id + "/access-token"} {
		resp, body := w.get(path, dt.AccessToken)
		assertUnavailable(t, "GET "+path, resp, body)
	}
	// Refused before the database is asked: still 401.
	for name, bad := range map[string]string{"forged signature": forge(dt.AccessToken), "malformed": "not-a-jwt"} {
		resp, body := w.get("/v1/connections", bad)
		if resp.StatusCode != http.StatusUnauthorized || decode[problem](t, body).Code != "unauthorized" {
			t.Fatalf("%s token with the database down: %d %s, want 401", name, resp.StatusCode, body)
		}
	}
	resp, body := w.postForm("/v1/device/token", url.Values{"grant_type": {"refresh_token"}, "refresh_token": {dt.RefreshToken}})
	if e := decode[oauthErr](t, body); resp.StatusCode != http.StatusServiceUnavailable || e.Error != "temporarily_unavailable" ||
		resp.Header.Get("Retry-After") != "1" {
		t.Fatalf("refresh with the database down: %d %v %s, want 503 temporarily_unavailable", resp.StatusCode, resp.Header, body)
	}
	code2, verifier2 := "twh_"+strings.Repeat("A", 43), strings.Repeat("v", 43)
	resp, body = w.postForm("/v1/device/token", url.Values{"grant_type": {"handoff_code"}, "code": {code2}, "code_verifier": {verifier2}})
	if e := decode[oauthErr](t, body); resp.StatusCode != http.StatusServiceUnavailable || e.Error != "temporarily_unavailable" {
		t.Fatalf("handoff with the database down: %d %s, want 503 temporarily_unavailable", resp.StatusCode, body)
	}
	resp, body = w.postForm("/v1/device/revoke", url.Values{"token": {dt.RefreshToken}})
	if e := decode[oauthErr](t, body); resp.StatusCode != http.StatusServiceUnavailable || e.Error != "temporarily_unavailable" {
		t.Fatalf("revoke with the database down: %d %s, want 503 temporarily_unavailable", resp.StatusCode, body)
	}

	(*proxy).restore()
	if resp, body := w.get("/v1/connections", dt.AccessToken); resp.StatusCode != 200 {
		t.Fatalf("list after the database came back: %d %s", resp.StatusCode, body)
	}
	resp, body = w.postForm("/v1/device/token", url.Values{"grant_type": {"refresh_token"}, "refresh_token": {dt.RefreshToken}})
	if resp.StatusCode != 200 {
		t.Fatalf("the refresh token was lost while the database was down: %d %s", resp.StatusCode, body)
	}
	next := decode[deviceToken](t, body)
	logs := w.logs.String()
	if !strings.Contains(logs, "service unavailable") && !strings.Contains(logs, "database unavailable") {
		t.Errorf("the failures were not logged:\n%s", logs)
	}
	for _, tok := range []string{dt.AccessToken, dt.RefreshToken, next.AccessToken, next.RefreshToken, code, verifier} {
		if strings.Contains(logs, tok) {
			t.Fatalf("a device token or code appears in the logs:\n%s", logs)
		}
	}
}

// The same for admin keys: a live key is 503 while the database is down
// (never 401, never 500); the admin UI shows a 503 page instead of
// ending the session; a string that cannot be a key is still 401.
func TestDatabaseDownIsNotTheAdminsFault(t *testing.T) {
	via, proxy := viaProxy(t)
	w := adminWorldOf(t, newWorldVia(t, models.Postgres, via))
	id := w.connect("admin-down@example.com")
	jar := newJar(t)
	ui := &http.Client{Jar: jar, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	loginUI(t, ui, w.srv.URL, w.key)

	(*proxy).cut()
	for _, r := range []struct{ method, path string }{
		{"GET", "/admin/v1/connections"}, {"GET", "/admin/v1/connections/" + id}, {"POST", "/admin/v1/connections/" + id + "/refresh"},
		{"POST", "/admin/v1/connections/" + id + "/reauth-link"}, {"POST", "/admin/v1/connections/" + id + "/revoke"}, {"GET", "/admin/v1/summary"},
	} {
		resp, body := w.admin(r.method, r.path, w.key)
		assertUnavailable(t, r.method+" "+r.path, resp, body)
	}
	if resp, body := w.admin("GET", "/admin/v1/summary", "not-an-admin-key"); resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("a non-key with the database down: %d %s, want 401", resp.StatusCode, body)
	}
	resp, err := ui.Get(w.srv.URL + "/admin/")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Retry-After") != "1" {
		t.Fatalf("admin UI with the database down: %d %v, want 503 (not a redirect to the login page)", resp.StatusCode, resp.Header)
	}
	for _, c := range resp.Cookies() {
		if c.Name == "tokenwarm_admin" {
			t.Fatalf("the admin UI session cookie was cleared while the database was down: %v", c)
		}
	}

	(*proxy).restore()
	if resp, body := w.admin("GET", "/admin/v1/summary", w.key); resp.StatusCode != 200 {
		t.Fatalf("after the database came back: %d %s", resp.StatusCode, body)
	}
	if resp, err := ui.Get(w.srv.URL + "/admin/"); err != nil || resp.StatusCode != 200 {
		t.Fatalf("admin UI after the database came back: %v %v", resp, err)
	}
	if strings.Contains(w.logs.String(), w.key) {
		t.Fatal("the admin key appears in the logs")
	}
}

// loginUI signs in to the admin UI with key.
func loginUI(t *testing.T, cl *http.Client, base, key string) {
	t.Helper()
	resp, err := cl.Get(base + "/admin/login")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	resp, err = cl.PostForm(base+"/admin/login", url.Values{"key": {key}, "csrf": {between(string(b), `name="csrf" value="`, `"`)}})
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("admin UI login: %d", resp.StatusCode)
	}
}

// terminateBackends ends every other session on the database of dbURL,
// from a connection of its own, as a Postgres restart or failover does.
func terminateBackends(t *testing.T, dbURL string) int {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, dbURL)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	var n int
	err = conn.QueryRow(ctx, `SELECT count(*) FROM (SELECT pg_terminate_backend(pid) FROM pg_stat_activity
		WHERE datname = current_database() AND pid <> pg_backend_pid()) x`).Scan(&n)
	if err != nil && !errors.Is(err, pgx.ErrNoRows) {
		t.Fatal(err)
	}
	return n
}

// When Postgres drops every connection between two requests (a restart,
// a failover), the next request of a valid device session or admin key
// still succeeds: the token check's read is retried on a fresh
// connection instead of answering 401 (or 503).
func TestTerminatedConnectionsAreRetried(t *testing.T) {
	w := adminWorldOf(t, newWorld(t, models.Postgres))
	code, verifier := w.connectApp("terminated@example.com", nil)
	dt := w.session(code, verifier)
	for round := range 3 {
		if resp, body := w.get("/v1/connections", dt.AccessToken); resp.StatusCode != 200 {
			t.Fatalf("round %d, before: %d %s", round, resp.StatusCode, body)
		}
		if n := terminateBackends(t, w.pgURL); n == 0 {
			t.Fatal("no backend was terminated: the test proves nothing")
		}
		if resp, body := w.get("/v1/connections", dt.AccessToken); resp.StatusCode != 200 {
			t.Fatalf("round %d: device request after every connection was terminated: %d %s, want 200", round, resp.StatusCode, body)
		}
		if resp, body := w.admin("GET", "/admin/v1/summary", w.key); resp.StatusCode != 200 {
			t.Fatalf("round %d, before: admin %d %s", round, resp.StatusCode, body)
		}
		terminateBackends(t, w.pgURL)
		if resp, body := w.admin("GET", "/admin/v1/summary", w.key); resp.StatusCode != 200 {
			t.Fatalf("round %d: admin request after every connection was terminated: %d %s, want 200", round, resp.StatusCode, body)
		}
	}
}
