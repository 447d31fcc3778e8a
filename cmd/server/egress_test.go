package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/tokenwarm/tokenwarm/emulator"
	"github.com/tokenwarm/tokenwarm/internal/pgtest"
	"github.com/tokenwarm/tokenwarm/internal/testkit"
	"github.com/tokenwarm/tokenwarm/models"
	"github.com/tokenwarm/tokenwarm/seal"
)

// egressSource is the one address the emulated org's Refresh Token IP
// Allowlist accepts; the test's egress proxy dials out from it.
const egressSource = "127.0.0.2"

// sourceLog records, for every call to the emulator, its path and the
// source address of the TCP connection it came on.
type sourceLog struct {
	mu    sync.Mutex
	calls []sourceCall
}

type sourceCall struct{ path, source string }

func (l *sourceLog) wrap(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		host, _, _ := net.SplitHostPort(r.RemoteAddr)
		l.mu.Lock()
		l.calls = append(l.calls, sourceCall{path: r.URL.Path, source: host})
		l.mu.Unlock()
		next.ServeHTTP(w, r)
	})
}

// take returns the calls so far and forgets them.
func (l *sourceLog) take() []sourceCall {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := l.calls
	l.calls = nil
	return out
}

// requireLoopbackSource makes sure 127.0.0.2 can be a source address (all
// of 127.0.0.0/8 is loopback on Linux; macOS has only 127.0.0.1).
func requireLoopbackSource(t *testing.T) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err == nil {
		defer ln.Close()
		d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(egressSource)}, Timeout: 2 * time.Second}
		var c net.Conn
		if c, err = d.Dial("tcp", ln.Addr().String()); err == nil {
			c.Close()
			return
		}
	}
	if runtime.GOOS != "linux" {
		t.Skipf("%s is not usable as a source address on %s: %v", egressSource, runtime.GOOS, err)
	}
	t.Fatalf("%s is not usable as a source address: %v", egressSource, err)
}

// emulatedLoginHost serves the built-in emulator over HTTPS, with a
// certificate of the test CA, accepting the token endpoint (code exchange
// and refresh), revoke and introspection only from egressSource.
func emulatedLoginHost(t *testing.T, ca *testCA) (*emulator.Server, *httptest.Server, *sourceLog) {
	t.Helper()
	emu := emulator.New(emulator.Config{ClientID: testkit.ClientID, ClientSecret: testkit.ClientSecret, AutoApprove: true})
	if err := emu.SetAllowedIPs([]string{egressSource}); err != nil {
		t.Fatal(err)
	}
	emu.RestrictRevokeAndIntrospect(true)
	log := &sourceLog{}
	srv := httptest.NewUnstartedServer(log.wrap(emu))
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{ca.server}, MinVersion: tls.VersionTLS12}
	srv.StartTLS()
	t.Cleanup(srv.Close)
	return emu, srv, log
}

// pullCode is a pull that reports the problem code of a refusal.
func pullCode(t *testing.T, base, device, connID, rejected string) (status int, token, code string) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, base+"/v1/connections/"+connID+"/access-token?rejected_token="+url.QueryEscape(rejected), nil)
	req.Header.Set("Authorization", "Bearer "+device)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var body struct {
		AccessToken string `json:"access_token"`
		Code        string `json:"code"`
	}
	b, _ := io.ReadAll(resp.Body)
	_ = json.Unmarshal(b, &body)
	return resp.StatusCode, body.AccessToken, body.Code
}

// adminCall sends an admin API request and decodes its JSON answer.
func adminCall(t *testing.T, method, base, key, path string, out any) int {
	t.Helper()
	req, _ := http.NewRequest(method, base+path, nil)
	req.Header.Set("Authorization", "Bearer "+key)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if out != nil && resp.StatusCode == http.StatusOK {
		if err := json.Unmarshal(b, out); err != nil {
			t.Fatalf("%s %s: %v", method, path, err)
		}
	}
	return resp.StatusCode
}

func scrapeMetric(t *testing.T, base, name string) string {
	t.Helper()
	resp, err := http.Get(base + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, name+" "); ok {
			return v
		}
	}
	t.Fatalf("/metrics has no %s", name)
	return ""
}

type adminConn struct {
	Status              string `json:"status"`
	ConsecutiveFailures int    `json:"consecutive_failures"`
	LastErrorCode       string `json:"last_error_code"`
}

// Issue 12, acceptance a: the refresh-token IP allowlist, end to end with
// real sockets on loopback. The emulated login host speaks HTTPS with a
// certificate of a test CA (Go's transport tunnels only https targets
// through a proxy) and takes the code exchange, refresh, revoke and
// introspection only from 127.0.0.2, refusing other sources as Salesforce
// does. A real tokenwarm process, trusting the CA through
// SALESFORCE_CA_FILE, sends its calls through SALESFORCE_PROXY_URL, a
// CONNECT proxy that dials out from 127.0.0.2: connect, refresh, revoke and
// introspect all pass, and the proxy tunnelled them. Restarted without the
// proxy (on Postgres as two replicas), its calls leave from 127.0.0.1 and
// are refused: the first refused connection only backs off, the third
// distinct one pauses the app with one alert (the corroboration rule), and
// nobody is marked needs_reauth.
func TestRefreshTokenIPAllowlistThroughTheEgressProxy(t *testing.T) {
	if testing.Short() {
		t.Skip("starts server processes")
	}
	requireLoopbackSource(t)
	testkit.Dialects(t, testRefreshTokenIPAllowlist)
}

func testRefreshTokenIPAllowlist(t *testing.T, dialect models.Dialect) {
	ca := newTestCA(t)
	emu, login, calls := emulatedLoginHost(t, ca)
	proxy := startConnectProxy(t, egressSource)
	const app = "com.example.app:/egress"
	addr := freeAddr(t)
	env := map[string]string{"TOKENWARM_DATA_DIR": t.TempDir(), "TOKENWARM_ADDR": addr, "TOKENWARM_PUBLIC_URL": "http://" + addr,
		"SALESFORCE_LOGIN_URL": login.URL, "SALESFORCE_CLIENT_ID": testkit.ClientID, "SALESFORCE_CLIENT_SECRET": testkit.ClientSecret,
		"SALESFORCE_CA_FILE": ca.file, "SALESFORCE_PROXY_URL": proxy.URL, "SALESFORCE_INTROSPECT": "true",
		"TOKENWARM_APP_REDIRECT_URIS": app, "SALESFORCE_TIMEOUT": "5s", "TOKENWARM_LOCK_TIMEOUT": "20s",
		"TOKENWARM_COMMIT_RETRY_BUDGET": "5s", "TOKENWARM_SHUTDOWN_TIMEOUT": "30s",
		// No warm pass or probe during the test: what reaches Salesforce is
		// what the test asks for.
		"TOKENWARM_WARM_SCHEDULE": "@every 1h"}
	if dialect == models.Postgres {
		key, err := seal.GenerateKey("k1")
		if err != nil {
			t.Fatal(err)
		}
		env["DATABASE_URL"], env["TOKENWARM_SEAL_KEYS"] = pgtest.NewDatabase(t), key
	}
	var created bytes.Buffer
	if err := run(context.Background(), []string{"admin-key", "create", "egress-test"}, envFrom(env), &created, io.Discard); err != nil {
		t.Fatal(err)
	}
	adminKey := strings.TrimSpace(created.String())

	// Through the egress proxy.
	srv := startServerProcess(t, env)
	browser := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: ca.pool}}
	const users = 5
	devices, ids, tokens := make([]string, users), make([]string, users), make([]string, users)
	for i := range users {
		devices[i], ids[i] = appConnectVia(t, browser, srv.base, app, fmt.Sprintf("egress%d@example.com", i))
		status, first, err := pull(srv.base, devices[i], ids[i], "")
		if err != nil || status != http.StatusOK {
			t.Fatalf("first pull of %d: %d %v", i, status, err)
		}
		// The app reports the token refused: a refresh, now.
		status, tokens[i], err = pull(srv.base, devices[i], ids[i], first)
		if err != nil || status != http.StatusOK || tokens[i] == first {
			t.Fatalf("refresh of %d: %d %v\n%s", i, status, err, srv.logs.String())
		}
	}
	var revoked adminConn
	if code := adminCall(t, http.MethodPost, srv.base, adminKey, "/admin/v1/connections/"+ids[users-1]+"/revoke", &revoked); code != http.StatusOK || revoked.Status != "revoked" {
		t.Fatalf("admin revoke: %d %+v\n%s", code, revoked, srv.logs.String())
	}
	st := emu.Stats()
	if st.Exchanges != users || st.Refreshes != users || st.Revocations != 1 || st.Introspections < 2*users || st.IPRejections != 0 {
		t.Fatalf("through the proxy: %+v", st)
	}
	seen := map[string]int{}
	for _, c := range calls.take() {
		if !strings.HasPrefix(c.path, "/services/oauth2/") || c.path == "/services/oauth2/authorize" {
			continue // the browser's leg, from anywhere
		}
		if c.source != egressSource {
			t.Errorf("%s came from %s, want %s", c.path, c.source, egressSource)
		}
		seen[c.path]++
	}
	for _, p := range []string{"token", "introspect", "revoke"} {
		if seen["/services/oauth2/"+p] == 0 {
			t.Errorf("no %s call reached the login host: %v", p, seen)
		}
	}
	tunnels := proxy.Connects()
	loginHost := strings.TrimPrefix(login.URL, "https://")
	for _, target := range tunnels {
		if target != loginHost {
			t.Errorf("the proxy tunnelled to %s, want only %s", target, loginHost)
		}
	}
	if len(tunnels) == 0 {
		t.Fatal("the proxy saw no CONNECT")
	}
	t.Logf("through the proxy: %v in %d CONNECT tunnel(s)", seen, len(tunnels))

	// Without it: the same server restarted with no SALESFORCE_PROXY_URL;
	// on Postgres a second replica next to it.
	if err := srv.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := <-srv.done; err != nil {
		t.Fatalf("server exit: %v\n%s", err, srv.logs.String())
	}
	srv.done <- nil // for the cleanup
	direct := maps.Clone(env)
	delete(direct, "SALESFORCE_PROXY_URL")
	a := startServerProcess(t, direct)
	b := a
	if dialect == models.Postgres {
		second := maps.Clone(direct)
		second["TOKENWARM_ADDR"] = freeAddr(t)
		b = startServerProcess(t, second)
	}
	emu.ResetStats()
	defer func() {
		if n := len(proxy.Connects()); n != len(tunnels) {
			t.Errorf("the proxy saw %d CONNECTs after it was taken out of the configuration", n-len(tunnels))
		}
	}()
	logs := func() string {
		if a == b {
			return a.logs.String()
		}
		return a.logs.String() + b.logs.String()
	}
	alerts := func() int { return strings.Count(logs(), "ALERT: Salesforce refused") }
	paused := func(r *signalledServer) string { return scrapeMetric(t, r.base, "tokenwarm_warm_paused") }

	// One refused connection backs off, on every replica; the app goes on.
	if status, _, code := pullCode(t, a.base, devices[0], ids[0], tokens[0]); status != http.StatusServiceUnavailable || code != "upstream_configuration_error" {
		t.Fatalf("refused refresh: %d %s\n%s", status, code, logs())
	}
	if p := paused(a); p != "0" || alerts() != 0 {
		t.Fatalf("one refused connection paused the app (paused %s, %d alerts)", p, alerts())
	}
	var d0 struct {
		Connection adminConn `json:"connection"`
		Events     []struct {
			Kind string `json:"kind"`
		} `json:"events"`
	}
	adminCall(t, http.MethodGet, a.base, adminKey, "/admin/v1/connections/"+ids[0], &d0)
	if c := d0.Connection; c.Status != "active" || c.ConsecutiveFailures != 1 || c.LastErrorCode != "invalid_grant" ||
		len(d0.Events) == 0 || d0.Events[0].Kind != "restricted" {
		t.Fatalf("refused connection: %+v", d0)
	}
	if status, _, code := pullCode(t, b.base, devices[0], ids[0], tokens[0]); status != http.StatusServiceUnavailable || code != "upstream_unavailable" || emu.Stats().IPRejections != 1 {
		t.Fatalf("the refused connection again: %d %s, %d refusals at the login host (want a backoff, no call)", status, code, emu.Stats().IPRejections)
	}
	// Refusals of three distinct connections corroborate each other, across
	// replicas: the egress address is not on the allowlist. One pause, one
	// alert.
	for i := 1; i <= 2; i++ {
		if status, _, code := pullCode(t, b.base, devices[i], ids[i], tokens[i]); status != http.StatusServiceUnavailable || code != "upstream_configuration_error" {
			t.Fatalf("refused refresh of %d: %d %s", i, status, code)
		}
		if p, want := paused(b), map[bool]string{true: "1", false: "0"}[i == 2]; p != want {
			t.Fatalf("after %d refused connections: paused %s, want %s", i+1, p, want)
		}
	}
	if status, _, code := pullCode(t, b.base, devices[3], ids[3], tokens[3]); status != http.StatusServiceUnavailable || code != "upstream_configuration_error" {
		t.Fatalf("pull while paused: %d %s", status, code)
	}
	if st := emu.Stats(); st.IPRejections != 3 || st.TokenCalls != 3 || st.Refreshes != 0 || st.ChainsRevoked != 0 || st.StalePresentations != 0 {
		t.Fatalf("without the proxy: %+v (want 3 refusals, nothing else)", st)
	}
	// A replica that has not adopted the pause yet (it does at its next
	// warm pass) may meet the refusal once more: still one alert.
	if status, _, code := pullCode(t, a.base, devices[3], ids[3], tokens[3]); status != http.StatusServiceUnavailable || code != "upstream_configuration_error" {
		t.Fatalf("pull on the other replica: %d %s", status, code)
	}
	if n := alerts(); n != 1 {
		t.Fatalf("%d alerts, want 1:\n%s", n, logs())
	}
	// A user connecting now gets an error at the app, and nothing is stored.
	if back, _ := authorizeAsApp(t, browser, a.base, app, "late@example.com"); back.Get("error") != "server_error" || back.Get("code") != "" {
		t.Fatalf("connect without the proxy reached the app with %v", back)
	}
	if st := emu.Stats(); st.Exchanges != 0 || st.Refreshes != 0 || alerts() != 1 {
		t.Fatalf("connect without the proxy: %+v, %d alerts", st, alerts())
	}
	for _, c := range calls.take() {
		if c.path == "/services/oauth2/token" && c.source != "127.0.0.1" {
			t.Errorf("a token call without the proxy came from %s", c.source)
		}
	}
	var sum struct {
		ByStatus map[string]int64 `json:"by_status"`
	}
	if adminCall(t, http.MethodGet, a.base, adminKey, "/admin/v1/summary", &sum); sum.ByStatus["active"] != users-1 || sum.ByStatus["needs_reauth"] != 0 || sum.ByStatus["revoked"] != 1 {
		t.Fatalf("connections by status: %v (want %d active, none needs_reauth)", sum.ByStatus, users-1)
	}
	for _, tok := range emu.IssuedTokens() {
		if len(tok) > 20 && strings.Contains(logs()+srv.logs.String(), tok) {
			t.Fatal("a token appears in a server's log")
		}
	}
}
