package main

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"os/signal"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/tokenwarm/tokenwarm/emulator"
	"github.com/tokenwarm/tokenwarm/internal/testkit"
)

// TestHelperServerProcess is not a test: it is the server process that the
// process-level tests start and signal (the test binary, re-executed).
func TestHelperServerProcess(t *testing.T) {
	if os.Getenv("TW_SERVER_PROCESS") != "1" {
		t.Skip("helper process only")
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	// TW_SERVER_ARGS runs a subcommand instead (e.g. "restore").
	if err := run(ctx, strings.Fields(os.Getenv("TW_SERVER_ARGS")), os.Getenv, os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "tokenwarm:", err)
		os.Exit(1)
	}
	os.Exit(0)
}

// signalledServer is a real tokenwarm process.
type signalledServer struct {
	cmd  *exec.Cmd
	base string
	logs *testkit.SyncBuffer
	done chan error
}

func startServerProcess(t *testing.T, env map[string]string) *signalledServer {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^TestHelperServerProcess$", "-test.count=1")
	cmd.Env = append(os.Environ(), "TW_SERVER_PROCESS=1")
	for k, v := range env {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	p := &signalledServer{cmd: cmd, logs: &testkit.SyncBuffer{}, done: make(chan error, 1)}
	cmd.Stderr = p.logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-p.done
	})
	urls := make(chan string, 1)
	go func() {
		re := regexp.MustCompile(`listening on (http://\S+)`)
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			if m := re.FindStringSubmatch(sc.Text()); m != nil {
				select {
				case urls <- m[1]:
				default:
				}
			}
		}
		p.done <- cmd.Wait()
	}()
	select {
	case p.base = <-urls:
	case <-time.After(60 * time.Second):
		t.Fatalf("server printed no URL; logs:\n%s", p.logs.String())
	}
	return p
}

// appConnect runs the connect flow as a mobile app does and returns the
// device access token and the connection ID.
func appConnect(t *testing.T, base, appRedirect, username string) (device, connID string) {
	t.Helper()
	return appConnectVia(t, nil, base, appRedirect, username)
}

// appConnectVia is appConnect with the browser's transport (nil: the
// default), e.g. one that trusts a test CA.
func appConnectVia(t *testing.T, browser http.RoundTripper, base, appRedirect, username string) (device, connID string) {
	t.Helper()
	back, verifier := authorizeAsApp(t, browser, base, appRedirect, username)
	code := back.Get("code")
	if code == "" {
		t.Fatalf("the flow did not reach the app with a code: %v", back)
	}
	resp, err := http.PostForm(base+"/v1/device/token", url.Values{"grant_type": {"handoff_code"}, "code": {code}, "code_verifier": {verifier}})
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var sess struct {
		AccessToken   string   `json:"access_token"`
		ConnectionIDs []string `json:"connection_ids"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&sess); err != nil || resp.StatusCode != 200 || len(sess.ConnectionIDs) != 1 {
		t.Fatalf("device token: %d %v", resp.StatusCode, err)
	}
	return sess.AccessToken, sess.ConnectionIDs[0]
}

// authorizeAsApp runs the browser's part of the connect flow and returns
// the query the app's redirect URI received, and the PKCE verifier.
func authorizeAsApp(t *testing.T, browser http.RoundTripper, base, appRedirect, username string) (url.Values, string) {
	t.Helper()
	verifier := strings.Repeat("v", 43)
	sum := sha256.Sum256([]byte(verifier))
	q := url.Values{"app_redirect_uri": {appRedirect}, "code_challenge": {base64.RawURLEncoding.EncodeToString(sum[:])},
		"code_challenge_method": {"S256"}, "login_hint": {username}}
	noFollow := &http.Client{Transport: browser, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	next := base + "/v1/oauth/authorize?" + q.Encode()
	for range 10 {
		resp, err := noFollow.Get(next)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		loc, err := resp.Location()
		if err != nil {
			t.Fatalf("%s: %d without a redirect", next, resp.StatusCode)
		}
		if strings.HasPrefix(loc.String(), appRedirect) {
			return loc.Query(), verifier
		}
		next = loc.String()
	}
	t.Fatal("the flow did not reach the app")
	return nil, ""
}

// appFlow is a connect flow started by an app: its PKCE verifier and the
// next URL to visit (the authorize endpoint, or later Salesforce's).
type appFlow struct {
	base, verifier, next string
}

// deviceSession is the device token endpoint's answer.
type deviceSession struct {
	AccessToken   string   `json:"access_token"`
	RefreshToken  string   `json:"refresh_token"`
	ConnectionIDs []string `json:"connection_ids"`
}

var noFollow = &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}

// startFlow starts the legacy connect flow of an app at base.
func startFlow(t *testing.T, base, appRedirect, username string) appFlow {
	t.Helper()
	verifier := strings.Repeat("v", 43)
	sum := sha256.Sum256([]byte(verifier))
	q := url.Values{"app_redirect_uri": {appRedirect}, "code_challenge": {base64.RawURLEncoding.EncodeToString(sum[:])},
		"code_challenge_method": {"S256"}, "login_hint": {username}}
	return appFlow{base: base, verifier: verifier, next: base + "/v1/oauth/authorize?" + q.Encode()}
}

// step follows one redirect of the flow.
func (f *appFlow) step(t *testing.T) {
	t.Helper()
	resp, err := noFollow.Get(f.next)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	loc, err := resp.Location()
	if err != nil {
		t.Fatalf("%s: %d without a redirect", f.next, resp.StatusCode)
	}
	f.next = loc.String()
}

// finishFlow follows the flow's redirects (the emulator approves by
// itself) to the app and trades the code for a device session.
func finishFlow(t *testing.T, f appFlow, appRedirect string) deviceSession {
	t.Helper()
	var code string
	for range 10 {
		if strings.HasPrefix(f.next, appRedirect) {
			u, _ := url.Parse(f.next)
			code = u.Query().Get("code")
			break
		}
		f.step(t)
	}
	if code == "" {
		t.Fatal("the flow did not reach the app with a code")
	}
	resp, err := http.PostForm(f.base+"/v1/device/token", url.Values{"grant_type": {"handoff_code"}, "code": {code}, "code_verifier": {f.verifier}})
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var sess deviceSession
	if err := json.NewDecoder(resp.Body).Decode(&sess); err != nil || resp.StatusCode != 200 || len(sess.ConnectionIDs) != 1 {
		t.Fatalf("device token: %d %v", resp.StatusCode, err)
	}
	return sess
}

// pull asks for a Salesforce access token, reporting rejected as refused.
func pull(base, device, connID, rejected string) (int, string, error) {
	return pullCtx(context.Background(), base, device, connID, rejected)
}

func pullCtx(ctx context.Context, base, device, connID, rejected string) (int, string, error) {
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, base+"/v1/connections/"+connID+"/access-token?rejected_token="+url.QueryEscape(rejected), nil)
	req.Header.Set("Authorization", "Bearer "+device)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	var body struct {
		AccessToken string `json:"access_token"`
	}
	b, _ := io.ReadAll(resp.Body)
	_ = json.Unmarshal(b, &body)
	return resp.StatusCode, body.AccessToken, nil
}

// Acceptance c: a server stopped with SIGTERM while a refresh is in flight
// (presented, Salesforce rotated, answer not yet back, the app that asked
// already gone) waits for it and stores the rotation before it exits; the
// next server process refreshes with the stored token, and Salesforce
// never sees a stale one.
func TestSIGTERMNeverLosesARotation(t *testing.T) {
	emu := emulator.New(emulator.Config{ClientID: testkit.ClientID, ClientSecret: testkit.ClientSecret, AutoApprove: true})
	emuSrv := httptest.NewServer(emu)
	defer emuSrv.Close()
	const app = "com.example.app:/callback"
	// One address for both processes: the device token names its issuer.
	env := map[string]string{"TOKENWARM_DATA_DIR": t.TempDir(), "TOKENWARM_ADDR": freeAddr(t),
		"SALESFORCE_LOGIN_URL": emuSrv.URL, "SALESFORCE_CLIENT_ID": testkit.ClientID, "SALESFORCE_CLIENT_SECRET": testkit.ClientSecret,
		"TOKENWARM_APP_REDIRECT_URIS": app, "SALESFORCE_TIMEOUT": "10s", "TOKENWARM_LOCK_TIMEOUT": "20s",
		"TOKENWARM_COMMIT_RETRY_BUDGET": "5s", "TOKENWARM_SHUTDOWN_TIMEOUT": "40s"}
	srv := startServerProcess(t, env)
	device, id := appConnect(t, srv.base, app, "sigterm@example.com")
	status, first, err := pull(srv.base, device, id, "")
	if err != nil || status != 200 {
		t.Fatalf("first pull: %d %v", status, err)
	}

	emu.ResetStats()
	release := emu.HoldRefreshes()
	defer release()
	// The app gives up waiting; the refresh it started runs on, detached.
	ctx, cancel := context.WithCancel(context.Background())
	gaveUp := make(chan error, 1)
	go func() {
		_, _, err := pullCtx(ctx, srv.base, device, id, first)
		gaveUp <- err
	}()
	waitUntil(t, "the refresh to be presented and rotated", func() bool { return emu.Stats().Held == 1 })
	cancel()
	<-gaveUp
	if err := srv.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	// The answer comes back only once the server is shutting down.
	waitUntil(t, "the server to start shutting down", func() bool { return strings.Contains(srv.logs.String(), "shutting down") })
	release()
	select {
	case err := <-srv.done:
		if err != nil {
			t.Fatalf("server exit: %v\n%s", err, srv.logs.String())
		}
	case <-time.After(60 * time.Second):
		t.Fatal("server did not exit after SIGTERM")
	}
	srv.done <- nil // for the cleanup

	next := startServerProcess(t, env)
	status, second, err := pull(next.base, device, id, "")
	if err != nil || status != 200 || second == first {
		t.Fatalf("the rotation of the detached refresh was not stored: %d %v\n%s", status, err, srv.logs.String())
	}
	status, third, err := pull(next.base, device, id, second)
	if err != nil || status != 200 || third == second {
		t.Fatalf("pull on the next server: %d %v\n%s", status, err, next.logs.String())
	}
	if st := emu.Stats(); st.Refreshes != 2 || st.StalePresentations != 0 || st.ChainsRevoked != 0 {
		t.Fatalf("refreshes %d stale %d revoked %d", st.Refreshes, st.StalePresentations, st.ChainsRevoked)
	}
}

func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// A shutdown timeout shorter than the longest a presented refresh may take
// to store its outcome could abandon a rotation: start-up refuses it.
func TestShutdownTimeoutMustCoverAPresentedRefresh(t *testing.T) {
	_, err := loadConfig(envFrom(map[string]string{"SALESFORCE_TIMEOUT": "15s", "TOKENWARM_COMMIT_RETRY_BUDGET": "20s", "TOKENWARM_SHUTDOWN_TIMEOUT": "30s"}))
	if err == nil || !strings.Contains(err.Error(), "TOKENWARM_SHUTDOWN_TIMEOUT") {
		t.Fatalf("a 30s shutdown timeout with a 55s worst case was accepted: %v", err)
	}
	cfg, err := loadConfig(envFrom(map[string]string{"SALESFORCE_TIMEOUT": "15s", "TOKENWARM_COMMIT_RETRY_BUDGET": "20s", "TOKENWARM_SHUTDOWN_TIMEOUT": "55s"}))
	if err != nil || cfg.AttemptLease() != 40*time.Second || cfg.WorstCaseRefresh() != 55*time.Second {
		t.Fatalf("cfg %+v err %v", cfg, err)
	}
	if cfg, err := loadConfig(envFrom(nil)); err != nil || cfg.ShutdownTimeout < cfg.WorstCaseRefresh() {
		t.Fatalf("the defaults do not hold: %v", err)
	}
}
