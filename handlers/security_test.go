package handlers_test

import (
	"encoding/base64"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/tokenwarm/tokenwarm/models"
	"github.com/tokenwarm/tokenwarm/pkce"
)

// Each attack gets its exact status and code.
func TestFlowAndDeviceAttacks(t *testing.T) {
	w := newWorld(t, models.Postgres)

	t.Run("redirect URI not on the allowlist", func(t *testing.T) {
		for _, uri := range []string{"https://evil.example/cb", appRedirect + "x", appRedirect + "?next=https://evil.example", "com.acme.app:/OAUTH/done"} {
			q := url.Values{"app_redirect_uri": {uri}, "code_challenge": {pkce.S256(pkce.NewVerifier())}, "code_challenge_method": {"S256"}}
			resp, body := w.get("/v1/oauth/authorize?"+q.Encode(), "")
			if resp.StatusCode != 400 || decode[problem](t, body).Code != "redirect_uri_not_allowed" || resp.Header.Get("Location") != "" {
				t.Fatalf("%s: %d %s", uri, resp.StatusCode, body)
			}
		}
	})
	t.Run("login_host", func(t *testing.T) {
		for host, want := range map[string]string{
			"":                                 w.emuSrv.URL,
			"production":                       "https://login.salesforce.com",
			"sandbox":                          "https://test.salesforce.com",
			"https://acme.my.salesforce.com":   "https://acme.my.salesforce.com",
			"https://acme.my.salesforce.com/":  "https://acme.my.salesforce.com",
			w.emuSrv.URL:                       w.emuSrv.URL, // the configured one
			"http://acme.my.salesforce.com":    "",
			"https://evil.example":             "",
			"https://acme.salesforce.com.evil": "",
			"https://acme.my.salesforce.com/x": "",
			"http://127.0.0.1:1":               "",
			"javascript:alert(1)":              "",
		} {
			q := url.Values{"app_redirect_uri": {appRedirect}, "code_challenge": {pkce.S256(pkce.NewVerifier())}, "code_challenge_method": {"S256"}}
			if host != "" {
				q.Set("login_host", host)
			}
			rec := httptest.NewRecorder()
			w.strict.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/v1/oauth/authorize?"+q.Encode(), nil))
			if want == "" {
				if rec.Code != 400 || decode[problem](t, rec.Body.Bytes()).Code != "invalid_login_host" || rec.Header().Get("Location") != "" {
					t.Errorf("login_host %q: %d %s", host, rec.Code, rec.Body)
				}
				continue
			}
			if loc := rec.Header().Get("Location"); rec.Code != http.StatusFound || !strings.HasPrefix(loc, want+"/services/oauth2/authorize?") {
				t.Errorf("login_host %q: %d to %q, want %s", host, rec.Code, loc, want)
			}
		}
	})
	t.Run("plain challenge method", func(t *testing.T) {
		v := pkce.NewVerifier()
		q := url.Values{"app_redirect_uri": {appRedirect}, "code_challenge": {v}, "code_challenge_method": {"plain"}}
		resp, body := w.get("/v1/oauth/authorize?"+q.Encode(), "")
		if resp.StatusCode != 400 || decode[problem](t, body).Code != "unsupported_challenge_method" {
			t.Fatalf("%d %s", resp.StatusCode, body)
		}
	})
	t.Run("replayed and unknown state", func(t *testing.T) {
		v := pkce.NewVerifier()
		q := url.Values{"app_redirect_uri": {appRedirect}, "code_challenge": {pkce.S256(v)}, "code_challenge_method": {"S256"}, "login_hint": {"replay@example.com"}}
		resp, _ := w.get("/v1/oauth/authorize?"+q.Encode(), "")
		resp, _ = w.get(resp.Header.Get("Location"), "")
		callback := resp.Header.Get("Location")
		if resp, body := w.get(callback, ""); resp.StatusCode != http.StatusFound {
			t.Fatalf("first callback: %d %s", resp.StatusCode, body)
		}
		resp, body := w.get(callback, "")
		if resp.StatusCode != 400 || decode[problem](t, body).Code != "invalid_state" {
			t.Fatalf("replayed callback: %d %s", resp.StatusCode, body)
		}
		resp, body = w.get("/v1/oauth/callback?state=forged&code=x", "")
		if resp.StatusCode != 400 || decode[problem](t, body).Code != "invalid_state" {
			t.Fatalf("forged state: %d %s", resp.StatusCode, body)
		}
	})
	t.Run("expired state", func(t *testing.T) {
		v := pkce.NewVerifier()
		q := url.Values{"app_redirect_uri": {appRedirect}, "code_challenge": {pkce.S256(v)}, "code_challenge_method": {"S256"}, "login_hint": {"slow@example.com"}}
		resp, _ := w.get("/v1/oauth/authorize?"+q.Encode(), "")
		resp, _ = w.get(resp.Header.Get("Location"), "")
		w.sfClock.Advance(11 * time.Minute)
		resp, body := w.get(resp.Header.Get("Location"), "")
		if resp.StatusCode != 400 || decode[problem](t, body).Code != "invalid_state" {
			t.Fatalf("expired state: %d %s", resp.StatusCode, body)
		}
	})
	t.Run("salesforce error is passed to the app", func(t *testing.T) {
		v := pkce.NewVerifier()
		q := url.Values{"app_redirect_uri": {appRedirect}, "code_challenge": {pkce.S256(v)}, "code_challenge_method": {"S256"}, "state": {"s1"}}
		resp, _ := w.get("/v1/oauth/authorize?"+q.Encode(), "")
		sfURL, _ := url.Parse(resp.Header.Get("Location"))
		cb := "/v1/oauth/callback?" + url.Values{"state": {sfURL.Query().Get("state")}, "error": {"access_denied"}, "error_description": {"end-user denied authorization"}}.Encode()
		resp, body := w.get(cb, "")
		loc, _ := url.Parse(resp.Header.Get("Location"))
		if resp.StatusCode != 302 || !strings.HasPrefix(loc.String(), appRedirect) || loc.Query().Get("error") != "access_denied" || loc.Query().Get("state") != "s1" {
			t.Fatalf("denied: %d %s %s", resp.StatusCode, resp.Header.Get("Location"), body)
		}
	})
	t.Run("handoff replay and wrong verifier", func(t *testing.T) {
		code, verifier := w.connectApp("handoff@example.com", nil)
		w.session(code, verifier)
		resp, body := w.postForm("/v1/device/token", url.Values{"grant_type": {"handoff_code"}, "code": {code}, "code_verifier": {verifier}})
		if resp.StatusCode != 400 || decode[oauthErr](t, body).Error != "invalid_grant" {
			t.Fatalf("replayed handoff: %d %s", resp.StatusCode, body)
		}
		code, _ = w.connectApp("handoff@example.com", nil)
		resp, body = w.postForm("/v1/device/token", url.Values{"grant_type": {"handoff_code"}, "code": {code}, "code_verifier": {pkce.NewVerifier()}})
		if resp.StatusCode != 400 || decode[oauthErr](t, body).Error != "invalid_grant" {
			t.Fatalf("wrong verifier: %d %s", resp.StatusCode, body)
		}
	})
	t.Run("reused device refresh token revokes the family", func(t *testing.T) {
		code, verifier := w.connectApp("family@example.com", nil)
		dt := w.session(code, verifier)
		_, body := w.postForm("/v1/device/token", url.Values{"grant_type": {"refresh_token"}, "refresh_token": {dt.RefreshToken}})
		next := decode[deviceToken](t, body)
		resp, body := w.postForm("/v1/device/token", url.Values{"grant_type": {"refresh_token"}, "refresh_token": {dt.RefreshToken}})
		if resp.StatusCode != 400 || decode[oauthErr](t, body).Error != "invalid_grant" {
			t.Fatalf("reuse: %d %s", resp.StatusCode, body)
		}
		resp, body = w.postForm("/v1/device/token", url.Values{"grant_type": {"refresh_token"}, "refresh_token": {next.RefreshToken}})
		if resp.StatusCode != 400 || decode[oauthErr](t, body).Error != "invalid_grant" {
			t.Fatalf("family member after reuse: %d %s", resp.StatusCode, body)
		}
		if resp, _ := w.get("/v1/connections", next.AccessToken); resp.StatusCode != 401 {
			t.Fatalf("JWT of a revoked family: %d", resp.StatusCode)
		}
	})
	t.Run("another user's connection is 404", func(t *testing.T) {
		codeA, vA := w.connectApp("alice@example.com", nil)
		a := w.session(codeA, vA)
		codeB, vB := w.connectApp("bob@example.com", nil)
		b := w.session(codeB, vB)
		for _, path := range []string{"/v1/connections/" + b.ConnectionIDs[0], "/v1/connections/" + b.ConnectionIDs[0] + "/access-token", "/v1/connections/not-a-uuid"} {
			resp, body := w.get(path, a.AccessToken)
			if resp.StatusCode != 404 || decode[problem](t, body).Code != "not_found" {
				t.Fatalf("%s: %d %s", path, resp.StatusCode, body)
			}
		}
	})
	t.Run("bad bearer tokens", func(t *testing.T) {
		code, verifier := w.connectApp("jwt@example.com", nil)
		dt := w.session(code, verifier)
		parts := strings.Split(dt.AccessToken, ".")
		tampered := parts[0] + "." + parts[1] + "x." + parts[2]
		// HMAC confusion: an HS256 token keyed with our published public key.
		_, body := w.get("/.well-known/jwks.json", "")
		jwks := decode[struct {
			Keys []struct{ Kid, X string }
		}](t, body)
		pub, _ := base64.RawURLEncoding.DecodeString(jwks.Keys[0].X)
		payload, _ := base64.RawURLEncoding.DecodeString(parts[1])
		var claims jwt.MapClaims
		_ = json.Unmarshal(payload, &claims)
		hs := jwt.NewWithClaims(jwt.SigningMethodHS256, claims)
		hs.Header["kid"] = jwks.Keys[0].Kid
		confused, err := hs.SignedString(pub)
		if err != nil {
			t.Fatal(err)
		}
		bad := map[string]string{"none": "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0." + parts[1] + ".", "tampered": tampered,
			"HS256 keyed with the public key": confused, "garbage": "abc", "empty": ""}
		for name, bearer := range bad {
			resp, body := w.get("/v1/connections", bearer)
			if resp.StatusCode != 401 || decode[problem](t, body).Code != "unauthorized" {
				t.Fatalf("%s: %d %s", name, resp.StatusCode, body)
			}
			if resp.Header.Get("Cache-Control") != "no-store" || resp.Header.Get("X-Content-Type-Options") != "nosniff" {
				t.Fatalf("%s: an error answer may be cached or sniffed: %v", name, resp.Header)
			}
		}
		if resp, _ := w.get("/v1/connections", dt.AccessToken); resp.StatusCode != 200 {
			t.Fatalf("the untouched token: %d", resp.StatusCode)
		}
		w.devClock.Advance(16 * time.Minute)
		if resp, body := w.get("/v1/connections", dt.AccessToken); resp.StatusCode != 401 || decode[problem](t, body).Code != "unauthorized" {
			t.Fatalf("expired JWT: %d %s", resp.StatusCode, body)
		}
	})
	t.Run("malformed and oversized bodies", func(t *testing.T) {
		resp, body := w.postForm("/v1/device/token", url.Values{"grant_type": {"password"}})
		if resp.StatusCode != 400 || decode[oauthErr](t, body).Error != "unsupported_grant_type" {
			t.Fatalf("grant type: %d %s", resp.StatusCode, body)
		}
		resp, body = w.postForm("/v1/device/token", url.Values{"grant_type": {"handoff_code"}})
		if resp.StatusCode != 400 || decode[oauthErr](t, body).Error != "invalid_request" {
			t.Fatalf("missing code: %d %s", resp.StatusCode, body)
		}
		req, _ := http.NewRequest(http.MethodPost, w.srv.URL+"/v1/device/token", strings.NewReader(`{"grant_type":"refresh_token"}`))
		req.Header.Set("Content-Type", "application/json")
		resp, body = w.do(req)
		if resp.StatusCode != 400 || decode[oauthErr](t, body).Error != "invalid_request" {
			t.Fatalf("JSON body: %d %s", resp.StatusCode, body)
		}
		big := url.Values{"grant_type": {"refresh_token"}, "refresh_token": {strings.Repeat("a", 100<<10)}}
		resp, body = w.postForm("/v1/device/token", big)
		if resp.StatusCode != 413 || decode[problem](t, body).Code != "body_too_large" {
			t.Fatalf("oversized: %d %s", resp.StatusCode, body)
		}
		code, verifier := w.connectApp("params@example.com", nil)
		dt := w.session(code, verifier)
		resp, body = w.pull(dt.ConnectionIDs[0], dt.AccessToken, "?min_validity=99999")
		if resp.StatusCode != 400 || decode[problem](t, body).Code != "invalid_parameter" {
			t.Fatalf("min_validity: %d %s", resp.StatusCode, body)
		}
	})
}

// 200 devices of one user pulling a just-expired token, then 200 devices
// reporting the same rejected token: one upstream refresh each time.
func TestDeviceHerdsCauseOneRefresh(t *testing.T) {
	w := newWorld(t, models.Postgres)
	code, verifier := w.connectApp("herd@example.com", nil)
	first := w.session(code, verifier)
	id := first.ConnectionIDs[0]
	jwts := []string{first.AccessToken}
	for len(jwts) < 200 {
		resp, body := w.postForm("/v1/device/token", url.Values{"grant_type": {"refresh_token"}, "refresh_token": {first.RefreshToken}})
		if resp.StatusCode != 200 {
			t.Fatalf("%d %s", resp.StatusCode, body)
		}
		dt := decode[deviceToken](t, body)
		first.RefreshToken = dt.RefreshToken
		jwts = append(jwts, dt.AccessToken)
	}
	w.sfClock.Advance(2*time.Hour + time.Second)
	w.emu.ResetStats()
	herd := func(query string) map[string]int {
		var wg sync.WaitGroup
		var mu sync.Mutex
		got := map[string]int{}
		for _, jwt := range jwts {
			wg.Add(1)
			go func() {
				defer wg.Done()
				resp, body := w.pull(id, jwt, query)
				mu.Lock()
				defer mu.Unlock()
				if resp.StatusCode != 200 {
					t.Errorf("pull: %d %s", resp.StatusCode, body)
					return
				}
				got[decode[accessToken](t, body).AccessToken]++
			}()
		}
		wg.Wait()
		return got
	}
	tokens := herd("")
	if len(tokens) != 1 || w.emu.Stats().Refreshes != 1 {
		t.Fatalf("expired herd: %d distinct tokens, %d refreshes", len(tokens), w.emu.Stats().Refreshes)
	}
	var current string
	for tok := range tokens {
		current = tok
	}
	tokens = herd("?" + url.Values{"rejected_token": {current}}.Encode())
	if _, same := tokens[current]; same || len(tokens) != 1 || w.emu.Stats().Refreshes != 2 {
		t.Fatalf("rejected-token herd: %d distinct tokens, %d refreshes", len(tokens), w.emu.Stats().Refreshes)
	}
}
