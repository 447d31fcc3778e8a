package handlers_test

import (
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/tokenwarm/tokenwarm/clock"
	"github.com/tokenwarm/tokenwarm/devices"
	"github.com/tokenwarm/tokenwarm/handlers"
	"github.com/tokenwarm/tokenwarm/internal/testkit"
	"github.com/tokenwarm/tokenwarm/models"
	"github.com/tokenwarm/tokenwarm/pkce"
	"github.com/tokenwarm/tokenwarm/vault"
)

// limited serves the world's API with rate limits (on their own clock)
// and trusted proxies, on a port of its own; it returns its base URL.
func (w *world) limited(limits handlers.RateLimits, proxies ...string) (string, *clock.Fake) {
	w.t.Helper()
	clk := clock.NewFake(time.Date(2026, 3, 1, 9, 0, 0, 0, time.UTC))
	limits.Now = clk.Now
	var trusted []netip.Prefix
	for _, p := range proxies {
		trusted = append(trusted, netip.MustParsePrefix(p))
	}
	srv := httptest.NewServer(handlers.New(handlers.Deps{Log: slog.New(slog.DiscardHandler), Ready: readyAlways{}, API: w.api,
		RateLimits: limits, TrustedProxies: trusted}))
	w.t.Cleanup(srv.Close)
	// Its answers, 429s included, are checked against openapi.yaml too.
	w.http.Transport = &onlyHost{host: strings.TrimPrefix(srv.URL, "http://"), validated: w.validator.Transport(w.t, http.DefaultTransport), plain: w.http.Transport}
	return srv.URL, clk
}

// rateLimitedBody is every member a 429 may carry.
type rateLimitedBody struct {
	Type             string `json:"type"`
	Title            string `json:"title"`
	Status           int    `json:"status"`
	Code             string `json:"code"`
	Detail           string `json:"detail"`
	Instance         string `json:"instance"`
	RetryAfter       int    `json:"retry_after"`
	Error            string `json:"error"`
	ErrorDescription string `json:"error_description"`
}

// want429 checks a 429's headers and body; oauth says whether the OAuth
// error members must be there (and otherwise must not).
func want429(t *testing.T, what string, resp *http.Response, body []byte, retryAfter string, oauth bool) {
	t.Helper()
	if resp.StatusCode != http.StatusTooManyRequests {
		t.Fatalf("%s: %d %s, want 429", what, resp.StatusCode, body)
	}
	if got := resp.Header.Get("Retry-After"); got != retryAfter {
		t.Errorf("%s: Retry-After %q, want %q", what, got, retryAfter)
	}
	if ct := resp.Header.Get("Content-Type"); ct != "application/problem+json" {
		t.Errorf("%s: Content-Type %q", what, ct)
	}
	p := decode[rateLimitedBody](t, body)
	if p.Status != 429 || p.Code != "rate_limited" || p.Type != "https://tokenwarm.dev/problems/rate_limited" || p.Title != "Too Many Requests" ||
		p.Detail == "" || p.Instance == "" || strconv.Itoa(p.RetryAfter) != retryAfter {
		t.Errorf("%s: body %s", what, body)
	}
	if oauth != (p.Error == "rate_limited" && p.ErrorDescription != "") || (!oauth && (p.Error != "" || p.ErrorDescription != "")) {
		t.Errorf("%s: OAuth members (oauth endpoint %v) in %s", what, oauth, body)
	}
}

// Past the per-IP limit the token, revoke, authorize and pull endpoints
// answer 429 with Retry-After until the bucket refills; the OAuth
// endpoints add error and error_description.
func TestRateLimitPerIPAnswers429(t *testing.T) {
	w := newWorld(t, models.SQLite)
	code, verifier := w.connectApp("ip@example.com", nil)
	dev := w.session(code, verifier)
	base, clk := w.limited(handlers.RateLimits{IPRPS: 0.5, IPBurst: 4})
	garbage := url.Values{"grant_type": {"refresh_token"}, "refresh_token": {"twr_unknown"}}
	for i := range 4 {
		if resp, body := w.postForm(base+"/v1/device/token", garbage); resp.StatusCode != http.StatusBadRequest {
			t.Fatalf("request %d under the limit: %d %s", i, resp.StatusCode, body)
		}
	}
	resp, body := w.postForm(base+"/v1/device/token", garbage)
	want429(t, "token", resp, body, "2", true)
	resp, body = w.postForm(base+"/v1/device/revoke", url.Values{"token": {"twr_unknown"}})
	want429(t, "revoke", resp, body, "2", true)
	resp, body = w.get(base+"/v1/oauth/authorize?app_redirect_uri="+url.QueryEscape(appRedirect), "")
	want429(t, "authorize", resp, body, "2", true)
	resp, body = w.pull(dev.ConnectionIDs[0], dev.AccessToken, "")
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("pull on the unlimited router: %d %s", resp.StatusCode, body)
	}
	resp, body = w.get(base+"/v1/connections/"+dev.ConnectionIDs[0]+"/access-token", dev.AccessToken)
	want429(t, "pull", resp, body, "2", false)
	// The list is limited per session only.
	if resp, body := w.get(base+"/v1/connections", dev.AccessToken); resp.StatusCode != http.StatusOK {
		t.Fatalf("list: %d %s", resp.StatusCode, body)
	}
	// Whole seconds, rounded up: 0.25 of a token after 0.5 s is 1.5 s short.
	clk.Advance(500 * time.Millisecond)
	resp, body = w.postForm(base+"/v1/device/token", garbage)
	want429(t, "token after 0.5 s", resp, body, "2", true)
	clk.Advance(time.Second)
	resp, body = w.postForm(base+"/v1/device/token", garbage)
	want429(t, "token after 1.5 s", resp, body, "1", true)
	clk.Advance(500 * time.Millisecond)
	if resp, body := w.get(base+"/v1/connections/"+dev.ConnectionIDs[0]+"/access-token", dev.AccessToken); resp.StatusCode != http.StatusOK {
		t.Fatalf("pull once the bucket refilled: %d %s", resp.StatusCode, body)
	}
}

// Past the per-session limit a session's pulls and reads answer 429, and
// another session's do not; on the token endpoint the limit holds per
// presented refresh token.
func TestRateLimitPerSessionAnswers429(t *testing.T) {
	w := newWorld(t, models.SQLite)
	code, verifier := w.connectApp("session@example.com", nil)
	a := w.session(code, verifier)
	code, verifier = w.connectApp("session2@example.com", nil)
	b := w.session(code, verifier)
	base, clk := w.limited(handlers.RateLimits{SessionRPS: 1, SessionBurst: 3})
	pull := func(d deviceToken) (*http.Response, []byte) {
		return w.get(base+"/v1/connections/"+d.ConnectionIDs[0]+"/access-token", d.AccessToken)
	}
	for i := range 2 {
		if resp, body := pull(a); resp.StatusCode != http.StatusOK {
			t.Fatalf("pull %d: %d %s", i, resp.StatusCode, body)
		}
	}
	if resp, body := w.get(base+"/v1/connections/"+a.ConnectionIDs[0], a.AccessToken); resp.StatusCode != http.StatusOK {
		t.Fatalf("read: %d %s", resp.StatusCode, body)
	}
	resp, body := pull(a)
	want429(t, "pull", resp, body, "1", false)
	resp, body = w.get(base+"/v1/connections", a.AccessToken)
	want429(t, "list", resp, body, "1", false)
	if resp, body := pull(b); resp.StatusCode != http.StatusOK {
		t.Fatalf("another session: %d %s", resp.StatusCode, body)
	}
	clk.Advance(time.Second)
	if resp, body := pull(a); resp.StatusCode != http.StatusOK {
		t.Fatalf("pull a second later: %d %s", resp.StatusCode, body)
	}

	garbage := func(tok string) (*http.Response, []byte) {
		return w.postForm(base+"/v1/device/token", url.Values{"grant_type": {"refresh_token"}, "refresh_token": {tok}})
	}
	for range 3 {
		if resp, body := garbage("twr_one"); resp.StatusCode != http.StatusBadRequest {
			t.Fatalf("refresh under the limit: %d %s", resp.StatusCode, body)
		}
	}
	resp, body = garbage("twr_one")
	want429(t, "refresh", resp, body, "1", true)
	if resp, body := garbage("twr_two"); resp.StatusCode != http.StatusBadRequest {
		t.Fatalf("another refresh token: %d %s", resp.StatusCode, body)
	}
	// The form read ahead of the handler reaches it intact.
	if resp, body := w.postForm(base+"/v1/device/token", url.Values{"grant_type": {"refresh_token"}, "refresh_token": {b.RefreshToken}}); resp.StatusCode != http.StatusOK {
		t.Fatalf("a real refresh through the limit: %d %s", resp.StatusCode, body)
	}
}

// The client IP is the socket's address unless the peer is a trusted
// proxy: then the right-most X-Forwarded-For address that is not one.
func TestRateLimitClientIPBehindTrustedProxiesOnly(t *testing.T) {
	w := newWorld(t, models.SQLite)
	revokeFrom := func(base, xff string) int {
		req, _ := http.NewRequest(http.MethodPost, base+"/v1/device/revoke", strings.NewReader("token=twr_x"))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		if xff != "" {
			req.Header.Set("X-Forwarded-For", xff)
		}
		resp, _ := w.do(req)
		return resp.StatusCode
	}
	limits := handlers.RateLimits{IPRPS: 1, IPBurst: 1}

	// The test's socket peer (127.0.0.1) is not trusted (no proxies, or
	// others): a spoofed header changes nothing.
	for _, proxies := range [][]string{nil, {"10.0.0.0/8"}} {
		base, _ := w.limited(limits, proxies...)
		if st := revokeFrom(base, "203.0.113.1"); st != http.StatusOK {
			t.Fatalf("first: %d", st)
		}
		if st := revokeFrom(base, "203.0.113.2"); st != http.StatusTooManyRequests {
			t.Fatalf("proxies %v: a spoofed X-Forwarded-For from an untrusted peer changed the key: %d", proxies, st)
		}
		if st := revokeFrom(base, ""); st != http.StatusTooManyRequests {
			t.Fatalf("no header: %d", st)
		}
	}

	// Behind a trusted proxy (the loopback peer) the header names the client.
	base, _ := w.limited(limits, "127.0.0.0/8", "10.0.0.0/8")
	for _, c := range []struct {
		xff  string
		want int
	}{
		{"203.0.113.1", http.StatusOK},
		{"203.0.113.1", http.StatusTooManyRequests},
		{"203.0.113.2", http.StatusOK},
		// A client prepending a forged address: the right-most untrusted
		// one is still the real client.
		{"198.51.100.9, 203.0.113.1", http.StatusTooManyRequests},
		// Through two trusted hops.
		{"203.0.113.3, 10.1.2.3", http.StatusOK},
		{"203.0.113.3", http.StatusTooManyRequests},
		// No header: the proxy itself.
		{"", http.StatusOK},
	} {
		if st := revokeFrom(base, c.xff); st != c.want {
			t.Fatalf("X-Forwarded-For %q: %d, want %d", c.xff, st, c.want)
		}
	}
}

// A zero rate turns a limit off, whatever its burst.
func TestRateLimitZeroDisables(t *testing.T) {
	w := newWorld(t, models.SQLite)
	code, verifier := w.connectApp("off@example.com", nil)
	dev := w.session(code, verifier)
	base, _ := w.limited(handlers.RateLimits{SessionBurst: 1, IPBurst: 1})
	for i := range 30 {
		resp, body := w.get(base+"/v1/connections/"+dev.ConnectionIDs[0]+"/access-token", dev.AccessToken)
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("pull %d: %d %s", i, resp.StatusCode, body)
		}
		if resp, body := w.postForm(base+"/v1/device/token", url.Values{"grant_type": {"refresh_token"}, "refresh_token": {"twr_x"}}); resp.StatusCode != http.StatusBadRequest {
			t.Fatalf("token %d: %d %s", i, resp.StatusCode, body)
		}
	}
}

// An app following mobile-sdk-spec never meets the default limits: at
// every launch it lists its connections and pulls each, then pulls one
// every 20 s with its cache, refreshes its device session every 15
// minutes, and relaunches every hour, for four hours.
func TestRateLimitDefaultsNeverHitAWellBehavedApp(t *testing.T) {
	w := newWorld(t, models.SQLite)
	var ids []string
	code, verifier := w.connectApp("sdk@example.com", nil)
	dev := w.session(code, verifier)
	for i := range 2 {
		code, verifier = w.connectApp("sdk@example.com", url.Values{"login_hint": {"sdk" + strconv.Itoa(i) + "@example.com"}})
		w.session(code, verifier)
	}
	base, clk := w.limited(handlers.DefaultRateLimits())
	ok := func(what string, resp *http.Response, body []byte) {
		t.Helper()
		if resp.StatusCode == http.StatusTooManyRequests || resp.StatusCode >= 400 {
			t.Fatalf("%s at %s: %d %s", what, clk.Now().Format(time.TimeOnly), resp.StatusCode, body)
		}
	}
	refresh := func() {
		resp, body := w.postForm(base+"/v1/device/token", url.Values{"grant_type": {"refresh_token"}, "refresh_token": {dev.RefreshToken}})
		ok("refresh", resp, body)
		dev = decode[deviceToken](t, body)
	}
	launch := func() {
		resp, body := w.get(base+"/v1/connections", dev.AccessToken)
		ok("list", resp, body)
		list := decode[struct {
			Connections []struct {
				ID string `json:"id"`
			} `json:"connections"`
		}](t, body)
		ids = ids[:0]
		for _, c := range list.Connections {
			ids = append(ids, c.ID)
		}
		for _, id := range ids {
			resp, body := w.get(base+"/v1/connections/"+id+"/access-token?min_validity=300", dev.AccessToken)
			ok("launch pull", resp, body)
		}
	}
	launch()
	if len(ids) == 0 {
		t.Fatal("no connections listed")
	}
	for step := 1; step <= 4*60*3; step++ { // every 20 s for 4 h
		clk.Advance(20 * time.Second)
		w.devClock.Advance(20 * time.Second)
		if step%45 == 0 { // every 15 minutes
			refresh()
		}
		if step%180 == 0 { // an hourly relaunch
			refresh()
			launch()
		}
		resp, body := w.get(base+"/v1/connections/"+ids[step%len(ids)]+"/access-token?min_validity=300", dev.AccessToken)
		ok("pull", resp, body)
	}
}

// replicaStack is the API of another replica on the world's database: its
// own pool (Postgres), its own device service with the reuse interval.
func (w *world) replicaStack(reuse time.Duration) string {
	w.t.Helper()
	db := w.db
	if w.pgURL != "" {
		var err error
		if db, err = models.Open(w.pgURL, "", models.Options{}); err != nil {
			w.t.Fatal(err)
		}
		w.t.Cleanup(func() { db.Close() })
	}
	log := slog.New(slog.DiscardHandler)
	dev := devices.New(db, w.ring, w.devClock, devices.Config{Issuer: w.srv.URL, RefreshReuseInterval: reuse})
	v := vault.New(db, w.ring, w.sf, w.sfClock, log, vault.Config{})
	api := handlers.NewAPI(handlers.APIConfig{PublicURL: w.srv.URL, LoginURL: w.emuSrv.URL, ClientID: "cid", AppRedirectURIs: []string{appRedirect},
		AllowAnyLoginHost: true}, log, v, dev, pkce.NewStore(db, w.ring, w.sfClock, 0), w.sf, w.ring, w.sfClock.Now)
	srv := httptest.NewServer(handlers.New(handlers.Deps{Log: log, Ready: readyAlways{}, API: api}))
	w.t.Cleanup(srv.Close)
	return srv.URL
}

// A device refresh whose answer was lost, retried on another replica:
// inside the reuse interval it answers the same refresh token and a
// working access token; outside it, invalid_grant and the session is gone.
func TestDeviceRefreshRetryAcrossReplicas(t *testing.T) {
	testkit.Dialects(t, func(t *testing.T, dialect models.Dialect) {
		w := newWorld(t, dialect)
		a, b := w.replicaStack(30*time.Second), w.replicaStack(30*time.Second)
		refresh := func(base, tok string) (*http.Response, []byte) {
			return w.postForm(base+"/v1/device/token", url.Values{"grant_type": {"refresh_token"}, "refresh_token": {tok}})
		}
		code, verifier := w.connectApp("retry@example.com", nil)
		first := w.session(code, verifier)
		resp, body := refresh(a, first.RefreshToken)
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("refresh: %d %s", resp.StatusCode, body)
		}
		lost := decode[deviceToken](t, body)
		w.devClock.Advance(29 * time.Second)
		resp, body = refresh(b, first.RefreshToken)
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("retry inside the interval: %d %s", resp.StatusCode, body)
		}
		retry := decode[deviceToken](t, body)
		if retry.RefreshToken != lost.RefreshToken || retry.SessionID != first.SessionID || retry.AccessToken == lost.AccessToken ||
			retry.TokenType != "Bearer" || len(retry.ConnectionIDs) != 1 || resp.Header.Get("Cache-Control") != "no-store" {
			t.Fatalf("retry answered %s", body)
		}
		if resp, body := w.get(b+"/v1/connections/"+retry.ConnectionIDs[0]+"/access-token", retry.AccessToken); resp.StatusCode != http.StatusOK {
			t.Fatalf("pull with the retry's access token: %d %s", resp.StatusCode, body)
		}

		// Outside the interval: reuse.
		w.devClock.Advance(time.Second)
		resp, body = refresh(a, first.RefreshToken)
		if resp.StatusCode != http.StatusBadRequest || decode[oauthErr](t, body).Error != "invalid_grant" {
			t.Fatalf("retry outside the interval: %d %s", resp.StatusCode, body)
		}
		if resp, body := refresh(b, retry.RefreshToken); resp.StatusCode != http.StatusBadRequest {
			t.Fatalf("the session survived reuse: %d %s", resp.StatusCode, body)
		}
	})
}
