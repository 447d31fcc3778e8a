package emulator

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tokenwarm/tokenwarm/clock"
)

const (
	testClientID = "3MVG9test-client"
	testSecret   = "s3cr3t"
	testRedirect = "https://tokenwarm.example/v1/oauth/callback"
)

var epoch = time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)

type harness struct {
	t      *testing.T
	emu    *Server
	clock  *clock.Fake
	srv    *httptest.Server
	base   string // where the emulator is mounted
	client *http.Client
}

// setup is what options may change before the harness starts.
type setup struct {
	cfg    Config
	prefix string                          // mount the emulator under this path with http.StripPrefix
	wrap   func(http.Handler) http.Handler // middleware around everything
}

type option func(*setup)

func withConsent() option { return func(s *setup) { s.cfg.AutoApprove = false } }

func withPrefix(p string) option { return func(s *setup) { s.prefix = p } }

func withWrap(wrap func(http.Handler) http.Handler) option {
	return func(s *setup) { s.wrap = wrap }
}

func newHarness(t *testing.T, opts ...option) *harness {
	t.Helper()
	clk := clock.NewFake(epoch)
	st := setup{cfg: Config{ClientID: testClientID, ClientSecret: testSecret, Clock: clk, AutoApprove: true}}
	for _, o := range opts {
		o(&st)
	}
	emu := New(st.cfg)
	var handler http.Handler = emu
	if st.prefix != "" {
		mux := http.NewServeMux()
		mux.Handle(st.prefix+"/", http.StripPrefix(st.prefix, emu))
		handler = mux
	}
	if st.wrap != nil {
		handler = st.wrap(handler)
	}
	srv := httptest.NewServer(handler)
	t.Cleanup(srv.Close)
	return &harness{
		t: t, emu: emu, clock: clk, srv: srv, base: srv.URL + st.prefix,
		client: &http.Client{
			Transport:     srv.Client().Transport,
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		},
	}
}

func newPKCE() (verifier, challenge string) {
	verifier = randomString(32)
	sum := sha256.Sum256([]byte(verifier))
	return verifier, base64.RawURLEncoding.EncodeToString(sum[:])
}

func authorizeParams(challenge string) url.Values {
	return url.Values{
		"response_type":         {"code"},
		"client_id":             {testClientID},
		"redirect_uri":          {testRedirect},
		"state":                 {"st4te"},
		"scope":                 {"api refresh_token"},
		"code_challenge":        {challenge},
		"code_challenge_method": {"S256"},
	}
}

// authorize runs GET authorize and returns the response (redirects are not followed).
func (h *harness) authorize(v url.Values) *http.Response {
	h.t.Helper()
	resp, err := h.client.Get(h.base + "/services/oauth2/authorize?" + v.Encode())
	if err != nil {
		h.t.Fatal(err)
	}
	resp.Body.Close()
	return resp
}

// redirectParams checks resp redirects to the test redirect URI and returns its query.
func (h *harness) redirectParams(resp *http.Response) url.Values {
	h.t.Helper()
	if resp.StatusCode != http.StatusFound {
		h.t.Fatalf("status %d, want 302", resp.StatusCode)
	}
	loc, err := url.Parse(resp.Header.Get("Location"))
	if err != nil {
		h.t.Fatal(err)
	}
	if got := loc.Scheme + "://" + loc.Host + loc.Path; got != testRedirect {
		h.t.Fatalf("redirected to %q, want %q", got, testRedirect)
	}
	return loc.Query()
}

// code runs an approved authorization and returns the code and its verifier.
func (h *harness) code() (code, verifier string) {
	h.t.Helper()
	verifier, challenge := newPKCE()
	q := h.redirectParams(h.authorize(authorizeParams(challenge)))
	if q.Get("state") != "st4te" || q.Get("code") == "" {
		h.t.Fatalf("redirect query %v, want code and state", q)
	}
	return q.Get("code"), verifier
}

type answer struct {
	status int
	body   map[string]any
}

func (a answer) str(key string) string { s, _ := a.body[key].(string); return s }

func (h *harness) post(path string, form url.Values) answer {
	h.t.Helper()
	resp, err := h.client.PostForm(h.base+path, form)
	if err != nil {
		h.t.Fatal(err)
	}
	return decode(h.t, resp)
}

func decode(t *testing.T, resp *http.Response) answer {
	t.Helper()
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	a := answer{status: resp.StatusCode, body: map[string]any{}}
	if len(raw) > 0 && raw[0] == '{' {
		if err := json.Unmarshal(raw, &a.body); err != nil {
			t.Fatalf("decode %s: %v", raw, err)
		}
	}
	return a
}

func exchangeForm(code, verifier string) url.Values {
	return url.Values{
		"grant_type":    {"authorization_code"},
		"code":          {code},
		"client_id":     {testClientID},
		"client_secret": {testSecret},
		"redirect_uri":  {testRedirect},
		"code_verifier": {verifier},
	}
}

func refreshForm(rt string) url.Values {
	return url.Values{
		"grant_type":    {"refresh_token"},
		"refresh_token": {rt},
		"client_id":     {testClientID},
		"client_secret": {testSecret},
	}
}

func (h *harness) exchange(code, verifier string) answer {
	h.t.Helper()
	return h.post("/services/oauth2/token", exchangeForm(code, verifier))
}

func (h *harness) refresh(rt string) answer {
	h.t.Helper()
	return h.post("/services/oauth2/token", refreshForm(rt))
}

// login runs the whole code flow and returns the token answer.
func (h *harness) login() answer {
	h.t.Helper()
	a := h.exchange(h.code())
	if a.status != http.StatusOK {
		h.t.Fatalf("exchange: %d %v", a.status, a.body)
	}
	return a
}

func (h *harness) mustRefresh(rt string) answer {
	h.t.Helper()
	a := h.refresh(rt)
	if a.status != http.StatusOK {
		h.t.Fatalf("refresh: %d %v", a.status, a.body)
	}
	if a.str("refresh_token") == "" || a.str("refresh_token") == rt {
		h.t.Fatalf("refresh did not rotate: %v", a.body)
	}
	return a
}

func (h *harness) get(path, accessToken string) answer {
	h.t.Helper()
	req, err := http.NewRequest(http.MethodGet, path, nil)
	if err != nil {
		h.t.Fatal(err)
	}
	if accessToken != "" {
		req.Header.Set("Authorization", "Bearer "+accessToken)
	}
	resp, err := h.client.Do(req)
	if err != nil {
		h.t.Fatal(err)
	}
	return decode(h.t, resp)
}

func wantError(t *testing.T, a answer, status int, code, description string) {
	t.Helper()
	if a.status != status || a.str("error") != code || (description != "" && a.str("error_description") != description) {
		t.Fatalf("got %d %v, want %d %s %q", a.status, a.body, status, code, description)
	}
}

// userOf splits an identity URL into org and user IDs.
func userOf(t *testing.T, idURL string) (org, user string) {
	t.Helper()
	parts := strings.Split(idURL, "/")
	if len(parts) < 2 {
		t.Fatalf("identity URL %q", idURL)
	}
	return parts[len(parts)-2], parts[len(parts)-1]
}

func TestCodeFlowWithPKCE(t *testing.T) {
	h := newHarness(t)
	a := h.login()

	at, rt := a.str("access_token"), a.str("refresh_token")
	org := h.emu.OrgID()
	if !strings.HasPrefix(at, org[:15]+"!") || len(at) < 40 {
		t.Errorf("access token %q does not look like Salesforce's", at)
	}
	if !strings.HasPrefix(rt, "5Aep861") || len(rt) < 40 {
		t.Errorf("refresh token %q does not look like Salesforce's", rt)
	}
	if _, ok := a.body["expires_in"]; ok {
		t.Error("token response has expires_in; Salesforce never sends it")
	}
	if a.str("token_type") != "Bearer" || a.str("instance_url") != h.base || a.str("scope") != "api refresh_token" {
		t.Errorf("unexpected token response %v", a.body)
	}
	if a.str("issued_at") != strconv.FormatInt(epoch.UnixMilli(), 10) {
		t.Errorf("issued_at = %q, want ms since epoch of the emulator clock", a.str("issued_at"))
	}
	gotOrg, user := userOf(t, a.str("id"))
	if a.str("id") != h.base+"/id/"+org+"/"+user || gotOrg != org || !strings.HasPrefix(user, "005") || len(user) != 18 {
		t.Errorf("identity URL %q", a.str("id"))
	}
	mac := hmac.New(sha256.New, []byte(testSecret))
	mac.Write([]byte(a.str("id") + a.str("issued_at")))
	if a.str("signature") != base64.StdEncoding.EncodeToString(mac.Sum(nil)) {
		t.Error("signature is not HMAC-SHA256(id+issued_at) under the client secret")
	}
	if cur, ok := h.emu.CurrentRefreshToken(org, user); !ok || cur != rt {
		t.Errorf("CurrentRefreshToken = %q, %v", cur, ok)
	}

	info := h.get(h.base+"/services/oauth2/userinfo", at)
	if info.status != http.StatusOK || info.str("user_id") != user || info.str("organization_id") != org ||
		info.str("preferred_username") != defaultUsername || info.str("sub") != a.str("id") {
		t.Errorf("userinfo: %d %v", info.status, info.body)
	}
	id := h.get(a.str("id"), at)
	if id.status != http.StatusOK || id.str("user_id") != user || id.str("username") != defaultUsername {
		t.Errorf("identity: %d %v", id.status, id.body)
	}
	if st := h.emu.Stats(); st.Exchanges != 1 {
		t.Errorf("Exchanges = %d, want 1", st.Exchanges)
	}
}

func TestScopeWithoutRefreshTokenGetsNone(t *testing.T) {
	h := newHarness(t)
	verifier, challenge := newPKCE()
	v := authorizeParams(challenge)
	v.Set("scope", "api")
	q := h.redirectParams(h.authorize(v))
	a := h.exchange(q.Get("code"), verifier)
	if a.status != http.StatusOK || a.str("access_token") == "" {
		t.Fatalf("exchange: %d %v", a.status, a.body)
	}
	if _, ok := a.body["refresh_token"]; ok {
		t.Error("refresh token issued without refresh_token or offline_access scope")
	}
}

func TestExchangeVerifierChecks(t *testing.T) {
	h := newHarness(t)

	code, _ := h.code()
	other, _ := newPKCE()
	wantError(t, h.exchange(code, other), http.StatusBadRequest, "invalid_request", "invalid code verifier")

	code, _ = h.code()
	wantError(t, h.exchange(code, "too-short"), http.StatusBadRequest, "invalid_request", "invalid code verifier")

	code, _ = h.code()
	wantError(t, h.exchange(code, ""), http.StatusBadRequest, "invalid_grant", "")

	code, verifier := h.code()
	form := exchangeForm(code, verifier)
	form.Set("redirect_uri", "https://evil.example/cb")
	if a := h.post("/services/oauth2/token", form); a.status != http.StatusBadRequest {
		t.Errorf("mismatched redirect_uri: %d %v", a.status, a.body)
	}
	if st := h.emu.Stats(); st.Exchanges != 0 {
		t.Errorf("Exchanges = %d after only failed exchanges", st.Exchanges)
	}
}

func TestAuthorizeRequiresS256(t *testing.T) {
	h := newHarness(t)
	_, challenge := newPKCE()

	for name, mutate := range map[string]func(url.Values){
		"plain":             func(v url.Values) { v.Set("code_challenge_method", "plain") },
		"no method":         func(v url.Values) { v.Del("code_challenge_method") },
		"no challenge":      func(v url.Values) { v.Del("code_challenge") },
		"garbage challenge": func(v url.Values) { v.Set("code_challenge", "abc") },
	} {
		t.Run(name, func(t *testing.T) {
			v := authorizeParams(challenge)
			mutate(v)
			q := h.redirectParams(h.authorize(v))
			if q.Get("error") != "invalid_request" || q.Get("state") != "st4te" || q.Get("code") != "" {
				t.Errorf("redirect query %v, want error=invalid_request with state and no code", q)
			}
		})
	}

	t.Run("unknown client gets a page, not a redirect", func(t *testing.T) {
		v := authorizeParams(challenge)
		v.Set("client_id", "someone-else")
		resp := h.authorize(v)
		if resp.StatusCode != http.StatusBadRequest || resp.Header.Get("Location") != "" {
			t.Errorf("status %d, Location %q", resp.StatusCode, resp.Header.Get("Location"))
		}
	})
}

func TestCodeIsSingleUseAndExpires(t *testing.T) {
	h := newHarness(t)
	code, verifier := h.code()
	if a := h.exchange(code, verifier); a.status != http.StatusOK {
		t.Fatalf("first exchange: %d %v", a.status, a.body)
	}
	wantError(t, h.exchange(code, verifier), http.StatusBadRequest, "invalid_grant", "expired authorization code")

	code, verifier = h.code()
	h.clock.Advance(codeTTL + time.Second)
	wantError(t, h.exchange(code, verifier), http.StatusBadRequest, "invalid_grant", "expired authorization code")
}

func TestRefreshRotates(t *testing.T) {
	h := newHarness(t)
	login := h.login()
	org, user := userOf(t, login.str("id"))
	rt1 := login.str("refresh_token")

	h.clock.Advance(time.Minute)
	r2 := h.mustRefresh(rt1)
	rt2 := r2.str("refresh_token")
	if r2.str("access_token") == login.str("access_token") || r2.str("issued_at") != strconv.FormatInt(epoch.Add(time.Minute).UnixMilli(), 10) {
		t.Errorf("refresh answer %v", r2.body)
	}
	if cur, _ := h.emu.CurrentRefreshToken(org, user); cur != rt2 {
		t.Error("the new refresh token is not current")
	}
	// The old token is dead: introspection (which presents nothing) says so.
	if a := h.post("/services/oauth2/introspect", introspectForm(rt1)); a.body["active"] != false {
		t.Errorf("rotated token still active: %v", a.body)
	}
	r3 := h.mustRefresh(rt2)
	if st := h.emu.Stats(); st.Refreshes != 2 || st.StalePresentations != 0 || st.MaxConcurrentPresentations != 1 {
		t.Errorf("stats %+v", st)
	}
	if !h.emu.ChainAlive(r3.str("refresh_token")) {
		t.Error("chain died during normal rotation")
	}
}

func TestStalePresentationRevokesChain(t *testing.T) {
	h := newHarness(t)
	rt1 := h.login().str("refresh_token")
	r2 := h.mustRefresh(rt1)
	rt2, at2 := r2.str("refresh_token"), r2.str("access_token")

	wantError(t, h.refresh(rt1), http.StatusBadRequest, "invalid_grant", "expired access/refresh token")
	if h.emu.ChainAlive(rt2) {
		t.Error("chain survived a stale presentation")
	}
	if a := h.get(h.base+"/services/oauth2/userinfo", at2); a.status != http.StatusUnauthorized {
		t.Errorf("access token of the revoked chain still works: %d", a.status)
	}
	wantError(t, h.refresh(rt2), http.StatusBadRequest, "invalid_grant", "expired access/refresh token")

	st := h.emu.Stats()
	if st.StalePresentations != 1 || st.ChainsRevoked != 1 || st.CallsAfterDead != 1 || st.Refreshes != 1 {
		t.Errorf("stats %+v", st)
	}
}

func TestIdleTTL(t *testing.T) {
	h := newHarness(t)
	rt := h.login().str("refresh_token")

	// Every refresh restarts the window.
	for range 3 {
		h.clock.Advance(defaultIdleTTL - time.Minute)
		rt = h.mustRefresh(rt).str("refresh_token")
	}
	h.clock.Advance(defaultIdleTTL + time.Second)
	if h.emu.ChainAlive(rt) {
		t.Error("ChainAlive true past the idle TTL")
	}
	wantError(t, h.refresh(rt), http.StatusBadRequest, "invalid_grant", "token validity expired")
	wantError(t, h.refresh(rt), http.StatusBadRequest, "invalid_grant", "expired access/refresh token")
	if st := h.emu.Stats(); st.IdleExpiries != 1 || st.Refreshes != 3 || st.CallsAfterDead != 1 {
		t.Errorf("stats %+v", st)
	}
}

func TestExpireChainOf(t *testing.T) {
	h := newHarness(t)
	rt := h.login().str("refresh_token")
	if !h.emu.ExpireChainOf(rt) || h.emu.ExpireChainOf("nope") {
		t.Fatal("ExpireChainOf did not report which tokens it knows")
	}
	wantError(t, h.refresh(rt), http.StatusBadRequest, "invalid_grant", "token validity expired")
}

func TestIPAllowlistLeavesChainIntact(t *testing.T) {
	h := newHarness(t)
	login := h.login()
	org, user := userOf(t, login.str("id"))
	rt := login.str("refresh_token")

	if err := h.emu.SetAllowedIPs([]string{"not-an-ip"}); err == nil {
		t.Error("SetAllowedIPs accepted garbage")
	}
	if err := h.emu.SetAllowedIPs([]string{"203.0.113.0/24", "2001:db8::1"}); err != nil {
		t.Fatal(err)
	}
	wantError(t, h.refresh(rt), http.StatusBadRequest, "invalid_grant", "ip restricted or invalid login hours")
	wantError(t, h.exchange(h.code()), http.StatusBadRequest, "invalid_grant", "ip restricted or invalid login hours")
	if cur, ok := h.emu.CurrentRefreshToken(org, user); !ok || cur != rt {
		t.Fatal("IP rejection touched the chain")
	}

	if err := h.emu.SetAllowedIPs([]string{"127.0.0.1", "::1"}); err != nil {
		t.Fatal(err)
	}
	h.mustRefresh(rt)
	if st := h.emu.Stats(); st.IPRejections != 2 || st.Refreshes != 1 || st.StalePresentations != 0 {
		t.Errorf("stats %+v", st)
	}
}

// The allowlist covers the code exchange and the refresh grant; with
// RestrictRevokeAndIntrospect it refuses revoke and introspection from
// other sources the same way, and neither refusal touches the token.
func TestIPAllowlistOnRevokeAndIntrospect(t *testing.T) {
	h := newHarness(t)
	org, user := userOf(t, h.login().str("id"))
	rt, _ := h.emu.CurrentRefreshToken(org, user)
	if err := h.emu.SetAllowedIPs([]string{"203.0.113.7"}); err != nil {
		t.Fatal(err)
	}
	if a := h.post("/services/oauth2/introspect", introspectForm(rt)); a.status != http.StatusOK || a.body["active"] != true {
		t.Fatalf("introspection outside the documented scope: %d %v", a.status, a.body)
	}
	h.emu.RestrictRevokeAndIntrospect(true)
	wantError(t, h.post("/services/oauth2/introspect", introspectForm(rt)), http.StatusBadRequest, "invalid_grant", "ip restricted or invalid login hours")
	wantError(t, h.post("/services/oauth2/revoke", url.Values{"token": {rt}}), http.StatusBadRequest, "invalid_grant", "ip restricted or invalid login hours")
	if cur, ok := h.emu.CurrentRefreshToken(org, user); !ok || cur != rt {
		t.Fatal("a refused revoke touched the chain")
	}
	if err := h.emu.SetAllowedIPs([]string{"127.0.0.1", "::1"}); err != nil {
		t.Fatal(err)
	}
	if a := h.post("/services/oauth2/revoke", url.Values{"token": {rt}}); a.status != http.StatusOK {
		t.Fatalf("revoke from an allowed source: %d %v", a.status, a.body)
	}
	if st := h.emu.Stats(); st.IPRejections != 2 || st.Revocations != 1 {
		t.Fatalf("stats %+v", st)
	}
}

func TestClientChecks(t *testing.T) {
	h := newHarness(t)
	rt := h.login().str("refresh_token")

	form := refreshForm(rt)
	form.Set("client_id", "unknown")
	wantError(t, h.post("/services/oauth2/token", form), http.StatusBadRequest, "invalid_client_id", "client identifier invalid")

	form = refreshForm(rt)
	form.Del("client_secret")
	wantError(t, h.post("/services/oauth2/token", form), http.StatusBadRequest, "invalid_client", "invalid client credentials")

	form = refreshForm(rt)
	form.Set("grant_type", "password")
	wantError(t, h.post("/services/oauth2/token", form), http.StatusBadRequest, "unsupported_grant_type", "")

	// HTTP Basic works instead of body credentials, and the token survived the failures.
	form = url.Values{"grant_type": {"refresh_token"}, "refresh_token": {rt}}
	req, _ := http.NewRequest(http.MethodPost, h.base+"/services/oauth2/token", strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.SetBasicAuth(testClientID, testSecret)
	resp, err := h.client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	if a := decode(t, resp); a.status != http.StatusOK {
		t.Errorf("refresh with Basic credentials: %d %v", a.status, a.body)
	}
	if st := h.emu.Stats(); st.ClientErrors != 2 || st.Refreshes != 1 {
		t.Errorf("stats %+v", st)
	}
}

func TestFailNext(t *testing.T) {
	h := newHarness(t)
	rt := h.login().str("refresh_token")
	h.emu.FailNext(2, http.StatusServiceUnavailable)
	for range 2 {
		wantError(t, h.refresh(rt), http.StatusServiceUnavailable, "service_unavailable", "")
	}
	h.mustRefresh(rt) // the failures did not process the token
	if st := h.emu.Stats(); st.InjectedFailures != 2 || st.Refreshes != 1 {
		t.Errorf("stats %+v", st)
	}
}

func TestFailureRate(t *testing.T) {
	h := newHarness(t)
	rt := h.login().str("refresh_token")
	h.emu.SetRand(rand.New(rand.NewPCG(1, 2)))
	h.emu.SetFailureRate(1, http.StatusTooManyRequests)
	wantError(t, h.refresh(rt), http.StatusTooManyRequests, "rate_limit_exceeded", "")
	h.emu.SetFailureRate(0, 0)
	h.mustRefresh(rt)
}

func TestDropAfterRotate(t *testing.T) {
	h := newHarness(t)
	login := h.login()
	org, user := userOf(t, login.str("id"))
	rt1 := login.str("refresh_token")

	h.emu.DropAfterRotateNext(1)
	if resp, err := h.client.PostForm(h.base+"/services/oauth2/token", refreshForm(rt1)); err == nil {
		resp.Body.Close()
		t.Fatalf("got a response (%d), want a dropped connection", resp.StatusCode)
	}
	rt2, ok := h.emu.CurrentRefreshToken(org, user)
	if !ok || rt2 == rt1 {
		t.Fatal("the chain did not rotate before the drop")
	}
	if st := h.emu.Stats(); st.Refreshes != 1 {
		t.Errorf("Refreshes = %d, want 1", st.Refreshes)
	}
	// The client never saw rt2; retrying with rt1 is a stale presentation.
	wantError(t, h.refresh(rt1), http.StatusBadRequest, "invalid_grant", "expired access/refresh token")
	if h.emu.ChainAlive(rt2) {
		t.Error("chain alive after the stale retry")
	}
}

func TestConcurrentPresentation(t *testing.T) {
	// The first request waits in its latency until the second has arrived,
	// so the two are certainly in flight together. Then either one may be
	// processed first; the outcome must not depend on it.
	for name, secondLatency := range map[string]time.Duration{
		"second answered first": 0,
		"first processed first": 200 * time.Millisecond,
	} {
		t.Run(name, func(t *testing.T) {
			h := newHarness(t)
			rt := h.login().str("refresh_token")
			var calls atomic.Int32
			arrived := make(chan struct{})
			h.emu.SetLatency(func() time.Duration {
				if calls.Add(1) == 2 {
					close(arrived)
					return secondLatency
				}
				select {
				case <-arrived:
				case <-time.After(5 * time.Second):
				}
				return 0
			})

			answers := make([]answer, 2)
			var wg sync.WaitGroup
			for i := range answers {
				wg.Go(func() {
					resp, err := h.client.PostForm(h.base+"/services/oauth2/token", refreshForm(rt))
					if err != nil {
						answers[i] = answer{status: -1, body: map[string]any{"err": err.Error()}}
						return
					}
					answers[i] = decode(t, resp)
				})
			}
			wg.Wait()

			var ok, inFlight answer
			for _, a := range answers {
				switch {
				case a.status == http.StatusOK:
					ok = a
				case a.str("error_description") == "token request is already being processed":
					inFlight = a
				}
			}
			if ok.status != http.StatusOK || inFlight.status != http.StatusBadRequest || inFlight.str("error") != "invalid_grant" {
				t.Fatalf("answers %+v, want one success and one in-flight rejection", answers)
			}
			// Salesforce may invalidate the chain; the emulator always does.
			if h.emu.ChainAlive(ok.str("refresh_token")) {
				t.Error("chain survived a concurrent presentation")
			}
			st := h.emu.Stats()
			if st.MaxConcurrentPresentations != 2 || st.ConcurrentPresentations != 1 || st.ChainsRevoked != 1 || st.Refreshes != 1 || st.StalePresentations != 0 {
				t.Errorf("stats %+v", st)
			}
		})
	}
}

func TestClientGoneDuringLatencyIsNotProcessed(t *testing.T) {
	// done tells when a token call has returned, so the test does not race
	// the server.
	done := make(chan struct{}, 1)
	h := newHarness(t, withWrap(func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			next.ServeHTTP(w, r)
			if r.URL.Path == "/services/oauth2/token" {
				done <- struct{}{}
			}
		})
	}))
	login := h.login()
	<-done
	org, user := userOf(t, login.str("id"))
	rt := login.str("refresh_token")

	h.emu.SetLatency(func() time.Duration { return time.Minute })
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, h.base+"/services/oauth2/token", strings.NewReader(refreshForm(rt).Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	if resp, err := h.client.Do(req); err == nil {
		resp.Body.Close()
		t.Fatal("got a response, want the client to give up")
	}
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("handler did not notice the client went away")
	}
	if cur, _ := h.emu.CurrentRefreshToken(org, user); cur != rt || h.emu.Stats().Refreshes != 0 {
		t.Fatal("a request abandoned during latency rotated the chain")
	}
	h.emu.SetLatency(nil)
	h.mustRefresh(rt)
}

func TestHoldRefreshes(t *testing.T) {
	h := newHarness(t)
	login := h.login()
	org, user := userOf(t, login.str("id"))
	rt1 := login.str("refresh_token")

	release := h.emu.HoldRefreshes()
	got := make(chan answer, 1)
	go func() {
		resp, err := h.client.PostForm(h.base+"/services/oauth2/token", refreshForm(rt1))
		if err != nil {
			got <- answer{status: -1}
			return
		}
		got <- decode(t, resp)
	}()
	deadline := time.Now().Add(5 * time.Second)
	for h.emu.Stats().Refreshes == 0 {
		if time.Now().After(deadline) {
			t.Fatal("refresh never rotated")
		}
		time.Sleep(5 * time.Millisecond)
	}
	rt2, _ := h.emu.CurrentRefreshToken(org, user)
	if rt2 == rt1 {
		t.Fatal("rotation not visible while held")
	}
	select {
	case a := <-got:
		t.Fatalf("answered while held: %+v", a)
	case <-time.After(50 * time.Millisecond):
	}
	release()
	if a := <-got; a.status != http.StatusOK || a.str("refresh_token") != rt2 {
		t.Fatalf("after release: %+v", a)
	}
}

func introspectForm(tok string) url.Values {
	return url.Values{"token": {tok}, "client_id": {testClientID}, "client_secret": {testSecret}}
}

func TestIntrospect(t *testing.T) {
	h := newHarness(t)
	login := h.login()
	at, rt := login.str("access_token"), login.str("refresh_token")

	a := h.post("/services/oauth2/introspect", introspectForm(at))
	if a.body["active"] != true || a.str("token_type") != "access_token" || a.str("username") != defaultUsername ||
		a.str("client_id") != testClientID || a.str("sub") != login.str("id") || a.str("scope") != "api refresh_token" {
		t.Errorf("access token introspection %v", a.body)
	}
	if exp, iat := a.body["exp"], a.body["iat"]; exp != float64(epoch.Add(defaultSessionTimeout).Unix()) || iat != float64(epoch.Unix()) || a.body["nbf"] != iat {
		t.Errorf("exp %v iat %v nbf %v", exp, iat, a.body["nbf"])
	}

	a = h.post("/services/oauth2/introspect", introspectForm(rt))
	if a.body["active"] != true || a.str("token_type") != "refresh_token" || a.body["exp"] != float64(epoch.Add(defaultIdleTTL).Unix()) {
		t.Errorf("refresh token introspection %v", a.body)
	}

	h.clock.Advance(defaultSessionTimeout)
	if a := h.post("/services/oauth2/introspect", introspectForm(at)); len(a.body) != 1 || a.body["active"] != false {
		t.Errorf("expired access token introspection %v, want only active:false", a.body)
	}
	if a := h.post("/services/oauth2/introspect", introspectForm("unknown")); a.status != http.StatusOK || a.body["active"] != false {
		t.Errorf("unknown token introspection %d %v", a.status, a.body)
	}
	form := introspectForm(rt)
	form.Set("client_secret", "wrong")
	wantError(t, h.post("/services/oauth2/introspect", form), http.StatusBadRequest, "invalid_client", "")
	if st := h.emu.Stats(); st.Introspections != 4 || st.ClientErrors != 1 {
		t.Errorf("stats %+v", st)
	}
}

func TestRESTNeedsLiveAccessToken(t *testing.T) {
	h := newHarness(t)
	at := h.login().str("access_token")
	queryURL := h.base + "/services/data/v62.0/query?q=" + url.QueryEscape("SELECT Id FROM Account")

	a := h.get(queryURL, at)
	if a.status != http.StatusOK || a.body["done"] != true || a.body["totalSize"] != float64(0) {
		t.Errorf("query: %d %v", a.status, a.body)
	}
	if a := h.get(h.base+"/services/data/v62.0/", at); a.status != http.StatusOK || a.str("query") == "" {
		t.Errorf("api root: %d %v", a.status, a.body)
	}

	wantSessionError := func(a answer) {
		t.Helper()
		if a.status != http.StatusUnauthorized {
			t.Errorf("status %d, want 401", a.status)
		}
	}
	wantSessionError(h.get(queryURL, ""))
	wantSessionError(h.get(queryURL, "00Dbogus!token"))

	h.clock.Advance(defaultSessionTimeout)
	req, _ := http.NewRequest(http.MethodGet, queryURL, nil)
	req.Header.Set("Authorization", "Bearer "+at)
	resp, err := h.client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	var errs []restError
	if resp.StatusCode != http.StatusUnauthorized || json.Unmarshal(body, &errs) != nil ||
		len(errs) != 1 || errs[0].ErrorCode != "INVALID_SESSION_ID" || errs[0].Message != "Session expired or invalid" {
		t.Errorf("expired token: %d %s", resp.StatusCode, body)
	}
}

func TestRevoke(t *testing.T) {
	h := newHarness(t)
	login := h.login()
	at, rt := login.str("access_token"), login.str("refresh_token")

	if a := h.post("/services/oauth2/revoke", url.Values{"token": {rt}}); a.status != http.StatusOK {
		t.Fatalf("revoke refresh token: %d %v", a.status, a.body)
	}
	if h.emu.ChainAlive(rt) {
		t.Error("chain alive after revocation")
	}
	if a := h.get(h.base+"/services/oauth2/userinfo", at); a.status != http.StatusUnauthorized {
		t.Errorf("access token of a revoked chain: %d", a.status)
	}
	wantError(t, h.refresh(rt), http.StatusBadRequest, "invalid_grant", "expired access/refresh token")
	wantError(t, h.post("/services/oauth2/revoke", url.Values{"token": {"never-issued"}}), http.StatusBadRequest, "unsupported_token_type", "")

	// GET with the token in the query, like Salesforce allows; an access
	// token is revoked alone.
	login = h.login()
	at2 := login.str("access_token")
	if a := h.get(h.base+"/services/oauth2/revoke?token="+url.QueryEscape(at2), ""); a.status != http.StatusOK {
		t.Fatalf("GET revoke: %d %v", a.status, a.body)
	}
	if a := h.get(h.base+"/services/oauth2/userinfo", at2); a.status != http.StatusUnauthorized {
		t.Errorf("revoked access token still works: %d", a.status)
	}
	if !h.emu.ChainAlive(login.str("refresh_token")) {
		t.Error("revoking an access token killed its chain")
	}
	if st := h.emu.Stats(); st.Revocations != 2 || st.ChainsRevoked != 1 {
		t.Errorf("stats %+v", st)
	}
}

func TestUserControls(t *testing.T) {
	h := newHarness(t)
	login := h.login()
	rt := login.str("refresh_token")

	h.emu.SetUserActive(defaultUsername, false)
	wantError(t, h.refresh(rt), http.StatusBadRequest, "inactive_user", "")
	if a := h.get(h.base+"/services/oauth2/userinfo", login.str("access_token")); a.status != http.StatusUnauthorized {
		t.Errorf("inactive user's access token works: %d", a.status)
	}
	h.emu.SetUserActive(defaultUsername, true)
	rt = h.mustRefresh(rt).str("refresh_token")

	second := h.login().str("refresh_token")
	h.emu.RevokeUser(defaultUsername)
	if h.emu.ChainAlive(rt) || h.emu.ChainAlive(second) {
		t.Error("RevokeUser left a chain alive")
	}
	if st := h.emu.Stats(); st.ChainsRevoked != 2 {
		t.Errorf("ChainsRevoked = %d, want 2", st.ChainsRevoked)
	}
}

func TestConsentForm(t *testing.T) {
	h := newHarness(t, withConsent())
	verifier, challenge := newPKCE()
	v := authorizeParams(challenge)

	resp, err := h.client.Get(h.base + "/services/oauth2/authorize?" + v.Encode())
	if err != nil {
		t.Fatal(err)
	}
	page, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !bytes.Contains(page, []byte(`name="username"`)) || !bytes.Contains(page, []byte(">Allow<")) {
		t.Fatalf("consent page: %d %s", resp.StatusCode, page)
	}

	v.Set("action", "deny")
	resp, err = h.client.PostForm(h.base+"/services/oauth2/authorize", v)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if q := h.redirectParams(resp); q.Get("error") != "access_denied" || q.Get("error_description") == "" || q.Get("state") != "st4te" {
		t.Errorf("deny redirect %v", q)
	}

	v.Set("action", "allow")
	v.Set("username", "Alice@Example.com")
	resp, err = h.client.PostForm(h.base+"/services/oauth2/authorize", v)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	a := h.exchange(h.redirectParams(resp).Get("code"), verifier)
	if a.status != http.StatusOK {
		t.Fatalf("exchange: %d %v", a.status, a.body)
	}
	info := h.get(h.base+"/services/oauth2/userinfo", a.str("access_token"))
	_, user := userOf(t, a.str("id"))
	if info.str("preferred_username") != "alice@example.com" || user != userIDFor(h.emu.OrgID(), "alice@example.com") {
		t.Errorf("userinfo %v for %s", info.body, user)
	}
}

func TestMountedUnderPrefix(t *testing.T) {
	h := newHarness(t, withPrefix("/salesforce"))
	login := h.login()
	if login.str("instance_url") != h.srv.URL+"/salesforce" {
		t.Errorf("instance_url %q", login.str("instance_url"))
	}
	if !strings.HasPrefix(login.str("id"), h.srv.URL+"/salesforce/id/00D") {
		t.Errorf("id %q", login.str("id"))
	}
	if a := h.get(login.str("id"), login.str("access_token")); a.status != http.StatusOK {
		t.Errorf("identity under prefix: %d %v", a.status, a.body)
	}

	h.emu.SetBaseURL("https://emu.example/")
	if got := h.mustRefresh(login.str("refresh_token")).str("instance_url"); got != "https://emu.example" {
		t.Errorf("instance_url with SetBaseURL = %q", got)
	}
}

func TestIssuedTokens(t *testing.T) {
	h := newHarness(t)
	code, verifier := h.code()
	login := h.exchange(code, verifier)
	r2 := h.mustRefresh(login.str("refresh_token"))

	issued := h.emu.IssuedTokens()
	want := []string{code, login.str("access_token"), login.str("refresh_token"), r2.str("access_token"), r2.str("refresh_token")}
	for _, w := range want {
		found := false
		for _, tok := range issued {
			found = found || tok == w
		}
		if !found {
			t.Errorf("IssuedTokens misses %.12s…", w)
		}
	}
	for _, tok := range issued {
		if len(tok) < 40 {
			t.Errorf("token %.12s… is only %d characters", tok, len(tok))
		}
	}
	h.emu.ResetStats()
	if h.emu.Stats() != (Stats{}) {
		t.Error("ResetStats left counters")
	}
}

func TestListenAndServe(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()

	var logs syncBuffer
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() {
		served <- ListenAndServe(ctx, addr, Config{ClientID: testClientID, AutoApprove: true}, &logs)
	}()

	base := "http://" + addr
	client := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	verifier, challenge := newPKCE()
	var resp *http.Response
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		resp, err = client.Get(base + "/services/oauth2/authorize?" + authorizeParams(challenge).Encode())
		if err == nil || time.Now().After(deadline) {
			break
		}
	}
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	loc, _ := url.Parse(resp.Header.Get("Location"))
	form := exchangeForm(loc.Query().Get("code"), verifier)
	form.Del("client_secret")
	resp, err = client.PostForm(base+"/services/oauth2/token", form)
	if err != nil {
		t.Fatal(err)
	}
	a := decode(t, resp)
	if a.status != http.StatusOK || a.str("instance_url") != base {
		t.Fatalf("exchange: %d %v", a.status, a.body)
	}

	cancel()
	select {
	case err := <-served:
		if err != nil {
			t.Fatalf("ListenAndServe: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("ListenAndServe did not stop")
	}
	out := logs.String()
	if !strings.Contains(out, "/services/oauth2/token") {
		t.Errorf("requests not logged:\n%s", out)
	}
	for _, secret := range []string{loc.Query().Get("code"), a.str("access_token"), a.str("refresh_token")} {
		if strings.Contains(out, secret) {
			t.Errorf("log leaks a token:\n%s", out)
		}
	}
}

type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// The identity service, userinfo and the REST API tell who a token speaks
// for, with a live bearer token only: the user's display name, username
// and email, and the org's name.
func TestIdentityAndOrgName(t *testing.T) {
	h := newHarness(t)
	a := h.login()
	at := a.str("access_token")
	_, user := userOf(t, a.str("id"))
	id := h.get(a.str("id"), at)
	if id.status != http.StatusOK || id.str("display_name") != "Demo" || id.str("username") != defaultUsername || id.str("email") != defaultUsername {
		t.Errorf("identity: %d %v", id.status, id.body)
	}
	if info := h.get(h.base+"/services/oauth2/userinfo", at); info.str("name") != "Demo" {
		t.Errorf("userinfo: %v", info.body)
	}
	query := func(soql, tok string) answer {
		return h.get(h.base+"/services/data/v62.0/query?q="+url.QueryEscape(soql), tok)
	}
	records := func(a answer) []map[string]any {
		var out []map[string]any
		rs, _ := a.body["records"].([]any)
		for _, r := range rs {
			m, _ := r.(map[string]any)
			out = append(out, m)
		}
		return out
	}
	if r := records(query("SELECT Name FROM Organization", at)); len(r) != 1 || r[0]["Name"] != "Emulated Org" {
		t.Errorf("organization: %v", r)
	}
	if r := records(query("SELECT Name, Username, Email FROM User WHERE Id = '"+user+"'", at)); len(r) != 1 || r[0]["Username"] != defaultUsername || r[0]["Name"] != "Demo" {
		t.Errorf("own user record: %v", r)
	}
	if r := records(query("SELECT Name FROM User WHERE Id = '005000000000000AAA'", at)); len(r) != 0 {
		t.Errorf("another user's record: %v", r)
	}
	for _, tok := range []string{"", "00Dbogus!token"} {
		for _, u := range []string{a.str("id"), h.base + "/services/oauth2/userinfo", h.base + "/services/data/v62.0/query?q=" + url.QueryEscape("SELECT Name FROM Organization")} {
			if got := h.get(u, tok); got.status != http.StatusUnauthorized {
				t.Errorf("%s with token %q: %d", u, tok, got.status)
			}
		}
	}
	if DisplayName("ada.lovelace@example.com") != "Ada Lovelace" || DisplayName("grace_hopper-x@example.com") != "Grace Hopper X" {
		t.Errorf("display names: %q %q", DisplayName("ada.lovelace@example.com"), DisplayName("grace_hopper-x@example.com"))
	}
	named := New(Config{OrgName: "Acme Corporation"})
	if named.orgName() != "Acme Corporation" {
		t.Errorf("OrgName is not used")
	}
}
