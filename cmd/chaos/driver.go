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
	mrand "math/rand/v2"
	"net/http"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// counters counts outcomes by name. Names starting with "FAIL " are
// failures.
type counters struct {
	mu sync.Mutex
	m  map[string]int
}

func newCounters() *counters { return &counters{m: map[string]int{}} }

func (c *counters) add(name string, n int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.m[name] += n
}

func (c *counters) inc(name string) { c.add(name, 1) }

func (c *counters) snapshot() map[string]int {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make(map[string]int, len(c.m))
	for k, v := range c.m {
		out[k] = v
	}
	return out
}

func (c *counters) failures() int {
	n := 0
	for k, v := range c.snapshot() {
		if strings.HasPrefix(k, "FAIL ") {
			n += v
		}
	}
	return n
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// appUser is one mobile app install: one Salesforce user, one connection,
// one device session. Pulls hold mu for reading, so a device refresh or a
// reconnection (which may revoke the old session) never races a pull.
type appUser struct {
	name string

	mu        sync.RWMutex
	jwt       string
	jwtExp    time.Time
	rt        string
	connID    string
	lastToken atomic.Pointer[string]

	dead      atomic.Bool // the connection answered reauth_required; a reauthorization is under way or failed
	epMu      sync.Mutex
	episodes  []string // reauth reasons, one per needs_reauth period
	connected atomic.Bool
}

func (u *appUser) addEpisode(reason string) {
	u.epMu.Lock()
	defer u.epMu.Unlock()
	u.episodes = append(u.episodes, reason)
}

func (u *appUser) getEpisodes() []string {
	u.epMu.Lock()
	defer u.epMu.Unlock()
	return append([]string(nil), u.episodes...)
}

func (u *appUser) last() string {
	if p := u.lastToken.Load(); p != nil {
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
	if u.connID != "" && u.connID != s.ConnectionIDs[0] {
		return fmt.Errorf("connection of %s changed ID", u.name)
	}
	u.jwt, u.rt, u.connID = s.AccessToken, s.RefreshToken, s.ConnectionIDs[0]
	u.jwtExp = at.Add(time.Duration(s.ExpiresIn) * time.Second)
	u.connected.Store(true)
	return nil
}

type driver struct {
	replicas    []*replica
	emuURL      string // emulator listener the driver uses itself
	appRedirect string
	client      *http.Client
	c           *counters
	users       []*appUser
	reauths     sync.WaitGroup
	logged401   atomic.Int32
	reauthCtx   context.Context
}

func (d *driver) pick() *replica {
	up := make([]*replica, 0, len(d.replicas))
	for _, r := range d.replicas {
		if r.isUp() {
			up = append(up, r)
		}
	}
	if len(up) == 0 {
		return d.replicas[mrand.IntN(len(d.replicas))]
	}
	return up[mrand.IntN(len(up))]
}

func (d *driver) do(ctx context.Context, method, u string, form url.Values, bearer string) (int, []byte, http.Header, error) {
	var body io.Reader
	if form != nil {
		body = strings.NewReader(form.Encode())
	}
	req, err := http.NewRequestWithContext(ctx, method, u, body)
	if err != nil {
		return 0, nil, nil, err
	}
	if form != nil {
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	if bearer != "" {
		req.Header.Set("Authorization", "Bearer "+bearer)
	}
	resp, err := d.client.Do(req)
	if err != nil {
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

// flowOnce runs the mobile connect flow once, the way an app does.
func (d *driver) flowOnce(ctx context.Context, username string) (session, error) {
	verifier, challenge := pkcePair()
	rep := d.pick()
	q := url.Values{
		"app_redirect_uri": {d.appRedirect}, "code_challenge": {challenge}, "code_challenge_method": {"S256"},
		"login_hint": {username}, "state": {"chaos"},
	}
	next := rep.url() + "/v1/oauth/authorize?" + q.Encode()
	// tokenwarm -> emulator authorize (auto-approve) -> tokenwarm callback -> app.
	for hop := 0; hop < 5; hop++ {
		if strings.HasPrefix(next, d.appRedirect) {
			break
		}
		status, body, h, err := d.do(ctx, http.MethodGet, next, nil, "")
		if err != nil {
			return session{}, fmt.Errorf("hop %d: %w", hop, err)
		}
		if status != http.StatusFound {
			return session{}, fmt.Errorf("hop %d: status %d: %.200s", hop, status, body)
		}
		next = h.Get("Location")
	}
	loc, err := url.Parse(next)
	if err != nil || !strings.HasPrefix(next, d.appRedirect) {
		return session{}, fmt.Errorf("flow did not end at the app: %.200q", next)
	}
	if e := loc.Query().Get("error"); e != "" {
		return session{}, fmt.Errorf("flow ended with error %s: %s", e, loc.Query().Get("error_description"))
	}
	code := loc.Query().Get("code")
	var s session
	for attempt := 0; attempt < 5; attempt++ {
		status, body, _, err := d.do(ctx, http.MethodPost, d.pick().url()+"/v1/device/token",
			url.Values{"grant_type": {"handoff_code"}, "code": {code}, "code_verifier": {verifier}}, "")
		if err != nil || status == http.StatusServiceUnavailable {
			// A handoff code is single use: if the answer was lost it may
			// be spent; the caller starts the flow over then.
			time.Sleep(200 * time.Millisecond)
			continue
		}
		if status >= 500 {
			d.c.inc(fmt.Sprintf("FAIL handoff %d", status))
		}
		if status != http.StatusOK {
			return session{}, fmt.Errorf("handoff: %d %.200s", status, body)
		}
		if err := json.Unmarshal(body, &s); err != nil {
			return session{}, err
		}
		return s, nil
	}
	return session{}, errors.New("handoff: no answer")
}

// connect runs the flow until it works or max passes.
func (d *driver) connect(ctx context.Context, u *appUser, max time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, max)
	defer cancel()
	var last error
	for ctx.Err() == nil {
		s, err := d.flowOnce(ctx, u.name)
		if err == nil {
			d.c.inc("flow ok")
			return u.setSession(s, time.Now())
		}
		last = err
		d.c.inc("flow retried")
		sleepCtx(ctx, time.Duration(200+mrand.IntN(300))*time.Millisecond)
	}
	return fmt.Errorf("connect %s: %v", u.name, last)
}

func sleepCtx(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// refreshDevice rotates the device session; u.mu must be held for writing.
// A refresh whose answer was lost (connection error after sending) and is
// then refused as invalid_grant lost the session: the device reconnects.
func (d *driver) refreshDevice(ctx context.Context, u *appUser) {
	uncertain := false
	deadline := time.Now().Add(30 * time.Second)
	for ctx.Err() == nil && time.Now().Before(deadline) {
		status, body, _, err := d.do(ctx, http.MethodPost, d.pick().url()+"/v1/device/token",
			url.Values{"grant_type": {"refresh_token"}, "refresh_token": {u.rt}}, "")
		switch {
		case err != nil:
			if ctx.Err() != nil {
				return
			}
			if !errors.Is(err, syscall.ECONNREFUSED) {
				uncertain = true
			}
			d.c.inc("device refresh: connection error")
		case status == http.StatusOK:
			var s session
			if err := json.Unmarshal(body, &s); err != nil {
				d.c.inc("FAIL device refresh: bad body")
				return
			}
			if err := u.setSession(s, time.Now()); err != nil {
				d.c.inc("FAIL device refresh: " + err.Error())
			}
			d.c.inc("device refresh: 200")
			return
		case status == http.StatusServiceUnavailable:
			d.c.inc("device refresh: 503")
		case status == http.StatusBadRequest && strings.Contains(string(body), "invalid_grant"):
			if uncertain {
				// Our earlier attempt may have rotated it: the session is
				// lost through no fault of the server's.
				d.c.inc("device_sessions_lost")
			} else {
				d.c.inc("FAIL device refresh: " + oauthSummary(status, body) + " (to a session we hold)")
			}
			// Either way the app signs in again.
			if err := d.connect(ctx, u, 90*time.Second); err != nil && ctx.Err() == nil {
				d.c.inc("FAIL reconnect after a lost device session")
			}
			return
		case status >= 500:
			d.c.inc("FAIL device refresh: " + oauthSummary(status, body))
		default:
			d.c.inc("FAIL device refresh: " + oauthSummary(status, body))
			return
		}
		sleepCtx(ctx, 100*time.Millisecond)
	}
}

// oauthSummary names an OAuth error answer without echoing anything else.
func oauthSummary(status int, body []byte) string {
	var e struct {
		Error string `json:"error"`
		Desc  string `json:"error_description"`
	}
	_ = json.Unmarshal(body, &e)
	return fmt.Sprintf("%d %s: %.60s", status, e.Error, e.Desc)
}

// recoverDevice runs after a 401 to a session we hold: refresh it (a
// refused refresh makes the app sign in again).
func (d *driver) recoverDevice(ctx context.Context, u *appUser, rejectedJWT string) {
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.jwt == rejectedJWT { // nobody recovered it meanwhile
		d.refreshDevice(ctx, u)
	}
}

// ensureDevice refreshes the device session when its JWT nears expiry, or
// at random.
func (d *driver) ensureDevice(ctx context.Context, u *appUser, randomly bool) {
	u.mu.RLock()
	need := time.Until(u.jwtExp) < 20*time.Second
	u.mu.RUnlock()
	if !need && !randomly {
		return
	}
	u.mu.Lock()
	defer u.mu.Unlock()
	if randomly || time.Until(u.jwtExp) < 20*time.Second {
		d.refreshDevice(ctx, u)
	}
}

// jwtClaims returns a device JWT's header and claims (no signature: without
// it the text authenticates nothing) for diagnostics.
func jwtClaims(jwt string) string {
	parts := strings.Split(jwt, ".")
	if len(parts) != 3 {
		return "(malformed)"
	}
	h, _ := base64.RawURLEncoding.DecodeString(parts[0])
	c, _ := base64.RawURLEncoding.DecodeString(parts[1])
	return string(h) + " " + string(c)
}

type problem struct {
	Code   string `json:"code"`
	Detail string `json:"detail"`
	Reason string `json:"reason"`
}

// pullResult is what one pull came to.
type pullResult struct {
	token        string
	reauth       string // reauth_required's reason
	retry        bool   // transient: try again
	unauthorized string // the device JWT a 401 refused
}

type accessAnswer struct {
	AccessToken string    `json:"access_token"`
	ExpiresAt   time.Time `json:"expires_at"`
}

// pull asks a random replica for the connection's access token and
// classifies the answer.
func (d *driver) pull(ctx context.Context, u *appUser, q url.Values) pullResult {
	u.mu.RLock()
	defer u.mu.RUnlock()
	jwt, exp, id := u.jwt, u.jwtExp, u.connID
	rep := d.pick()
	status, body, _, err := d.do(ctx, http.MethodGet, rep.url()+"/v1/connections/"+id+"/access-token?"+q.Encode(), nil, jwt)
	var p problem
	if status != http.StatusOK {
		_ = json.Unmarshal(body, &p)
	}
	switch {
	case err != nil:
		if ctx.Err() == nil {
			d.c.inc("pull: connection error")
		}
		return pullResult{retry: true}
	case status == http.StatusOK:
		var a accessAnswer
		if err := json.Unmarshal(body, &a); err != nil || a.AccessToken == "" {
			d.c.inc("FAIL pull: 200 without a token")
			return pullResult{}
		}
		d.c.inc("pull: 200")
		u.lastToken.Store(&a.AccessToken)
		return pullResult{token: a.AccessToken}
	case status == http.StatusServiceUnavailable:
		d.c.inc("pull: 503 " + p.Code)
		return pullResult{retry: true}
	case status == http.StatusConflict:
		if p.Code != "reauth_required" {
			d.c.inc("FAIL pull: 409 " + p.Code)
			return pullResult{}
		}
		d.c.inc("pull: 409 reauth_required")
		if p.Reason == "" {
			p.Reason = "(no reason given)"
		}
		return pullResult{reauth: p.Reason}
	case status == http.StatusUnauthorized:
		if time.Now().After(exp) {
			d.c.inc("pull: 401 (device JWT expired on our side)")
		} else {
			d.c.inc(fmt.Sprintf("FAIL pull: 401 to a valid session (%.50s)", p.Detail))
			if n := d.logged401.Add(1); n <= 5 {
				logf("401 to a valid session of %s from %s: JWT claims %s, %s before our expiry", u.name, rep.addr, jwtClaims(jwt), time.Until(exp).Round(time.Millisecond))
			}
		}
		return pullResult{retry: true, unauthorized: jwt}
	default:
		d.c.inc(fmt.Sprintf("FAIL pull: %d %s", status, p.Code))
		return pullResult{retry: status >= 500}
	}
}

// onReauth records a needs_reauth period once and reauthorizes the user in
// the background, as an app sends its user through the flow again.
func (d *driver) onReauth(u *appUser, reason string) {
	if !u.dead.CompareAndSwap(false, true) {
		return
	}
	u.addEpisode(reason)
	d.c.inc("reauth_required: " + shortReason(reason))
	d.reauths.Add(1)
	go func() {
		defer d.reauths.Done()
		u.mu.Lock()
		defer u.mu.Unlock()
		if err := d.connect(d.reauthCtx, u, 90*time.Second); err != nil {
			d.c.inc("reauthorization failed")
			return
		}
		u.lastToken.Store(nil)
		u.dead.Store(false)
		d.c.inc("reauthorized")
	}()
}

func shortReason(r string) string {
	if i := strings.IndexAny(r, ":("); i > 0 {
		return strings.TrimSpace(r[:i])
	}
	return r
}

// caller is one load goroutine.
func (d *driver) caller(ctx context.Context) {
	for ctx.Err() == nil {
		u := d.users[mrand.IntN(len(d.users))]
		if u.dead.Load() || !u.connected.Load() {
			sleepCtx(ctx, 20*time.Millisecond)
			continue
		}
		d.ensureDevice(ctx, u, mrand.Float64() < 0.005)
		q := url.Values{}
		switch r := mrand.Float64(); {
		case r < 0.6:
			if t := u.last(); t != "" {
				q.Set("rejected_token", t)
			}
			q.Set("min_validity", strconv.Itoa(mrand.IntN(11)))
		case r < 0.92:
			q.Set("min_validity", strconv.Itoa(mrand.IntN(11)))
		}
		res := d.pull(ctx, u, q)
		switch {
		case res.reauth != "":
			d.onReauth(u, res.reauth)
		case res.unauthorized != "":
			d.recoverDevice(ctx, u, res.unauthorized)
		case res.token != "" && mrand.Float64() < 0.05:
			d.checkAtEmulator(ctx, u, res.token, false)
		case res.retry:
			sleepCtx(ctx, time.Duration(50+mrand.IntN(100))*time.Millisecond)
		}
		sleepCtx(ctx, time.Duration(mrand.IntN(50))*time.Millisecond)
	}
}

// checkAtEmulator uses an access token at the emulator's userinfo endpoint.
func (d *driver) checkAtEmulator(ctx context.Context, u *appUser, tok string, final bool) bool {
	status, body, _, err := d.do(ctx, http.MethodGet, d.emuURL+"/services/oauth2/userinfo", nil, tok)
	ok := err == nil && status == http.StatusOK
	if ok {
		var info struct {
			PreferredUsername string `json:"preferred_username"`
		}
		ok = json.Unmarshal(body, &info) == nil && info.PreferredUsername == u.name
	}
	switch {
	case final && ok:
		d.c.inc("final: token works at the emulator")
	case final:
		d.c.inc("FAIL final: token refused by the emulator")
	case ok:
		d.c.inc("sample: token works at the emulator")
	default:
		// A token handed out with little validity left may expire on
		// the way; informative only during the run.
		d.c.inc("sample: token refused by the emulator")
	}
	return ok
}
