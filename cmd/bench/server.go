package main

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// server is the one tokenwarm process under test (started the way
// cmd/chaos starts its replicas: its own process group, killed with us).
type server struct {
	addr    string
	env     []string
	logPath string
	cmd     *exec.Cmd
	done    chan struct{}
}

func (s *server) url() string { return "http://" + s.addr }

func (s *server) start(bin string) error {
	logf, err := os.OpenFile(s.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	cmd := exec.Command(bin, "serve")
	cmd.Env = s.env
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		logf.Close()
		return err
	}
	s.cmd, s.done = cmd, make(chan struct{})
	go func() {
		_ = cmd.Wait()
		logf.Close()
		close(s.done)
	}()
	return nil
}

func (s *server) pid() int { return s.cmd.Process.Pid }

func (s *server) exited() bool {
	select {
	case <-s.done:
		return true
	default:
		return false
	}
}

// stop sends SIGTERM and waits (SIGKILL after grace).
func (s *server) stop(grace time.Duration) {
	if s.cmd == nil {
		return
	}
	_ = s.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-s.done:
	case <-time.After(grace):
		_ = s.cmd.Process.Kill()
		<-s.done
	}
}

func (s *server) waitReady(ctx context.Context, max time.Duration) error {
	deadline := time.Now().Add(max)
	c := &http.Client{Timeout: 2 * time.Second}
	for {
		if s.exited() {
			return fmt.Errorf("tokenwarm exited during start-up (log %s)", s.logPath)
		}
		resp, err := c.Get(s.url() + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("tokenwarm not ready after %s (log %s)", max, s.logPath)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func freeAddr() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer l.Close()
	return l.Addr().String(), nil
}

// appUser is one app install: one Salesforce user, one connection, one
// device session. Its tokens are never printed.
type appUser struct {
	name   string
	jwt    string
	jwtExp time.Time
	rt     string
	connID string
	// token is the access token last handed out for the connection (the
	// refresh phase sends it back as rejected).
	token atomic.Pointer[string]
}

func (u *appUser) lastToken() string {
	if p := u.token.Load(); p != nil {
		return *p
	}
	return ""
}

type session struct {
	AccessToken   string   `json:"access_token"`
	ExpiresIn     int      `json:"expires_in"`
	RefreshToken  string   `json:"refresh_token"`
	ConnectionIDs []string `json:"connection_ids"`
}

func (u *appUser) setSession(s session, at time.Time) error {
	if len(s.ConnectionIDs) != 1 {
		return fmt.Errorf("device session of %s lists %d connections, want 1", u.name, len(s.ConnectionIDs))
	}
	u.jwt, u.rt, u.connID = s.AccessToken, s.RefreshToken, s.ConnectionIDs[0]
	u.jwtExp = at.Add(time.Duration(s.ExpiresIn) * time.Second)
	return nil
}

// client drives tokenwarm the way mobile apps do.
type client struct {
	base        string
	appRedirect string
	http        *http.Client
}

// do sends one request. Errors never carry the URL (its query may hold a
// token): only the underlying cause.
func (c *client) do(ctx context.Context, method, u string, form url.Values, bearer string) (int, []byte, http.Header, error) {
	var body io.Reader
	if form != nil {
		body = strings.NewReader(form.Encode())
	}
	req, err := http.NewRequestWithContext(ctx, method, u, body)
	if err != nil {
		return 0, nil, nil, errors.New("bad request")
	}
	if form != nil {
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	if bearer != "" {
		req.Header.Set("Authorization", "Bearer "+bearer)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return 0, nil, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return 0, nil, nil, err
	}
	return resp.StatusCode, b, resp.Header, nil
}

func pkcePair() (verifier, challenge string) {
	b := make([]byte, 32)
	_, _ = rand.Read(b)
	verifier = base64.RawURLEncoding.EncodeToString(b)
	sum := sha256.Sum256([]byte(verifier))
	return verifier, base64.RawURLEncoding.EncodeToString(sum[:])
}

// connect runs the mobile connect flow: authorize -> emulator (auto
// approve) -> callback -> app redirect with a handoff code -> device token.
func (c *client) connect(ctx context.Context, u *appUser) error {
	verifier, challenge := pkcePair()
	q := url.Values{
		"app_redirect_uri": {c.appRedirect}, "code_challenge": {challenge}, "code_challenge_method": {"S256"},
		"login_hint": {u.name}, "state": {"bench"},
	}
	next := c.base + "/v1/oauth/authorize?" + q.Encode()
	for hop := 0; hop < 5 && !strings.HasPrefix(next, c.appRedirect); hop++ {
		status, _, h, err := c.do(ctx, http.MethodGet, next, nil, "")
		if err != nil {
			return fmt.Errorf("connect %s: hop %d: %w", u.name, hop, err)
		}
		if status != http.StatusFound {
			return fmt.Errorf("connect %s: hop %d: status %d", u.name, hop, status)
		}
		next = h.Get("Location")
	}
	loc, err := url.Parse(next)
	if err != nil || !strings.HasPrefix(next, c.appRedirect) {
		return fmt.Errorf("connect %s: the flow did not end at the app", u.name)
	}
	if e := loc.Query().Get("error"); e != "" {
		return fmt.Errorf("connect %s: the flow ended with error %s", u.name, e)
	}
	status, body, _, err := c.do(ctx, http.MethodPost, c.base+"/v1/device/token",
		url.Values{"grant_type": {"handoff_code"}, "code": {loc.Query().Get("code")}, "code_verifier": {verifier}}, "")
	if err != nil {
		return fmt.Errorf("connect %s: handoff: %w", u.name, err)
	}
	if status != http.StatusOK {
		return fmt.Errorf("connect %s: handoff: status %d", u.name, status)
	}
	var s session
	if err := json.Unmarshal(body, &s); err != nil {
		return fmt.Errorf("connect %s: handoff: unreadable answer", u.name)
	}
	return u.setSession(s, time.Now())
}

// refreshDevice rotates the device session (grant_type=refresh_token).
func (c *client) refreshDevice(ctx context.Context, u *appUser) error {
	status, body, _, err := c.do(ctx, http.MethodPost, c.base+"/v1/device/token",
		url.Values{"grant_type": {"refresh_token"}, "refresh_token": {u.rt}}, "")
	if err != nil {
		return fmt.Errorf("device refresh of %s: %w", u.name, err)
	}
	if status != http.StatusOK {
		return fmt.Errorf("device refresh of %s: status %d", u.name, status)
	}
	var s session
	if err := json.Unmarshal(body, &s); err != nil {
		return fmt.Errorf("device refresh of %s: unreadable answer", u.name)
	}
	return u.setSession(s, time.Now())
}

// connectAll connects every user, a few at a time.
func (c *client) connectAll(ctx context.Context, users []*appUser) error {
	sem := make(chan struct{}, 4)
	var wg sync.WaitGroup
	var mu sync.Mutex
	var first error
	for _, u := range users {
		wg.Go(func() {
			sem <- struct{}{}
			defer func() { <-sem }()
			if err := c.connect(ctx, u); err != nil {
				mu.Lock()
				first = cmpErr(first, err)
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	return first
}

func cmpErr(a, b error) error {
	if a != nil {
		return a
	}
	return b
}

type problem struct {
	Code string `json:"code"`
}

// pull asks for the connection's access token; outcome is "" for a 200
// with a token, else a short label (status and problem code, or the
// transport error), never anything from the token.
func (c *client) pull(ctx context.Context, u *appUser, rejected string) (token, outcome string) {
	target := c.base + "/v1/connections/" + u.connID + "/access-token"
	if rejected != "" {
		target += "?" + url.Values{"rejected_token": {rejected}}.Encode()
	}
	status, body, _, err := c.do(ctx, http.MethodGet, target, nil, u.jwt)
	if err != nil {
		if ctx.Err() != nil {
			return "", "cancelled"
		}
		return "", "transport: " + err.Error()
	}
	if status != http.StatusOK {
		var p problem
		_ = json.Unmarshal(body, &p)
		return "", fmt.Sprintf("%d %s", status, p.Code)
	}
	var a struct {
		AccessToken string `json:"access_token"`
	}
	if err := json.Unmarshal(body, &a); err != nil || a.AccessToken == "" {
		return "", "200 without a token"
	}
	return a.AccessToken, ""
}
