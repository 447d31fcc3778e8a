package handlers_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/oauth2"

	"github.com/tokenwarm/tokenwarm/handlers"
	"github.com/tokenwarm/tokenwarm/models"
	"github.com/tokenwarm/tokenwarm/pkce"
)

const (
	// appClient is a registered app client (TOKENWARM_APP_CLIENTS) with
	// a custom-scheme, a loopback IP and a localhost redirect URI.
	appClient   = "com.acme.app"
	otherClient = "com.acme.other"
)

func testAppClients(t testing.TB) handlers.AppClients {
	t.Helper()
	clients, err := handlers.ParseAppClients(appClient + "=" + appRedirect + "," + appClient + "=http://127.0.0.1/cb," +
		appClient + "=http://[::1]/cb," + appClient + "=http://localhost:8765/cb," + otherClient + "=com.acme.other:/cb")
	if err != nil {
		t.Fatal(err)
	}
	return clients
}

// tokenRequests records the requests a client sends to the token endpoint.
type tokenRequests struct {
	next  http.RoundTripper
	mu    sync.Mutex
	basic []string // the HTTP Basic user of each, "" for none
}

func (r *tokenRequests) RoundTrip(req *http.Request) (*http.Response, error) {
	if strings.HasSuffix(req.URL.Path, "/v1/device/token") {
		user, _, _ := req.BasicAuth()
		r.mu.Lock()
		r.basic = append(r.basic, user)
		r.mu.Unlock()
	}
	return r.next.RoundTrip(req)
}

// Acceptance a: a client built only from the RFC 8414 metadata document
// and golang.org/x/oauth2 (its PKCE helpers, the default auth-style
// auto-detection, nothing tokenwarm-specific) completes authorization code
// + PKCE through tokenwarm and the Salesforce emulator, with a loopback
// redirect on a port of its own (RFC 8252), refreshes, and revokes.
//
// Every request to tokenwarm and its answer are checked against
// openapi.yaml on the way.
func TestStandardOAuthClient(t *testing.T) {
	for _, dialect := range []models.Dialect{models.Postgres, models.SQLite} {
		t.Run(string(dialect), func(t *testing.T) {
			w := newWorld(t, dialect)
			recorder := &tokenRequests{next: w.http.Transport}
			hc := &http.Client{Transport: recorder, Timeout: 20 * time.Second}
			ctx := context.WithValue(context.Background(), oauth2.HTTPClient, hc)

			resp, err := hc.Get(w.srv.URL + "/.well-known/oauth-authorization-server")
			if err != nil {
				t.Fatal(err)
			}
			var meta struct {
				Issuer                        string   `json:"issuer"`
				AuthorizationEndpoint         string   `json:"authorization_endpoint"`
				TokenEndpoint                 string   `json:"token_endpoint"`
				RevocationEndpoint            string   `json:"revocation_endpoint"`
				CodeChallengeMethodsSupported []string `json:"code_challenge_methods_supported"`
				GrantTypesSupported           []string `json:"grant_types_supported"`
				ScopesSupported               []string `json:"scopes_supported"`
			}
			err = json.NewDecoder(resp.Body).Decode(&meta)
			resp.Body.Close()
			if err != nil || resp.StatusCode != 200 || !slices.Contains(meta.CodeChallengeMethodsSupported, "S256") ||
				!slices.Contains(meta.GrantTypesSupported, "authorization_code") || !slices.Contains(meta.GrantTypesSupported, "refresh_token") {
				t.Fatalf("metadata: %d %+v %v", resp.StatusCode, meta, err)
			}

			// The app's loopback receiver, on whatever port it got.
			got := make(chan url.Values, 1)
			recv := httptest.NewServer(http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
				select {
				case got <- r.URL.Query():
				default:
				}
				io.WriteString(rw, "you may close this window")
			}))
			t.Cleanup(recv.Close)

			conf := &oauth2.Config{
				ClientID:    appClient,
				Endpoint:    oauth2.Endpoint{AuthURL: meta.AuthorizationEndpoint, TokenURL: meta.TokenEndpoint},
				RedirectURL: recv.URL + "/cb",
				Scopes:      meta.ScopesSupported,
			}
			verifier := oauth2.GenerateVerifier()
			state := oauth2.GenerateVerifier()
			// The system browser: follows every redirect, through
			// Salesforce's (the emulator's) consent, to the receiver.
			browser := &http.Client{Timeout: 20 * time.Second}
			resp, err = browser.Get(conf.AuthCodeURL(state, oauth2.S256ChallengeOption(verifier)))
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			var q url.Values
			select {
			case q = <-got:
			default:
				t.Fatalf("the flow ended at %s (%d), not at the app's loopback redirect", resp.Request.URL, resp.StatusCode)
			}
			if q.Get("state") != state || q.Get("iss") != meta.Issuer || q.Get("code") == "" || q.Get("error") != "" {
				t.Fatalf("authorization response %v", q)
			}

			tok, err := conf.Exchange(ctx, q.Get("code"), oauth2.VerifierOption(verifier))
			if err != nil {
				t.Fatalf("code exchange: %v", err)
			}
			if tok.AccessToken == "" || tok.RefreshToken == "" || tok.TokenType != "Bearer" || tok.Extra("scope") != "connections" || tok.Expiry.IsZero() {
				t.Fatalf("token %+v scope %v", tok, tok.Extra("scope"))
			}
			// Auto-detection tried HTTP Basic first, and the first try
			// worked: a retry would have found the code spent.
			if !slices.Equal(recorder.basic, []string{appClient}) {
				t.Fatalf("token requests with Basic users %q, want one as %s", recorder.basic, appClient)
			}
			// The access token is a device session's: it lists the
			// connection and pulls a Salesforce token that works.
			r, body := w.get("/v1/connections", tok.AccessToken)
			list := decode[struct {
				Connections []struct {
					ID string `json:"id"`
				} `json:"connections"`
			}](t, body)
			if r.StatusCode != 200 || len(list.Connections) != 1 {
				t.Fatalf("connections: %d %s", r.StatusCode, body)
			}
			id := list.Connections[0].ID

			// Refresh: a token source holding an expired access token.
			ts := conf.TokenSource(ctx, &oauth2.Token{AccessToken: tok.AccessToken, RefreshToken: tok.RefreshToken, Expiry: time.Now().Add(-time.Minute)})
			refreshed, err := ts.Token()
			if err != nil {
				t.Fatalf("refresh: %v", err)
			}
			if refreshed.RefreshToken == tok.RefreshToken || refreshed.AccessToken == tok.AccessToken {
				t.Fatal("the refresh did not rotate the tokens")
			}
			r, body = w.pull(id, refreshed.AccessToken, "")
			if r.StatusCode != 200 {
				t.Fatalf("pull with the refreshed token: %d %s", r.StatusCode, body)
			}
			at := decode[accessToken](t, body)
			if st := w.salesforceREST(at.AccessToken, at.InstanceURL); st != 200 {
				t.Fatalf("Salesforce REST with the pulled token: %d", st)
			}

			// Revoke (x/oauth2 has no helper: a plain RFC 7009 form POST).
			resp, err = hc.PostForm(meta.RevocationEndpoint, url.Values{"token": {refreshed.RefreshToken},
				"token_type_hint": {"refresh_token"}, "client_id": {appClient}})
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != 200 {
				t.Fatalf("revoke: %d", resp.StatusCode)
			}
			_, err = conf.TokenSource(ctx, &oauth2.Token{RefreshToken: refreshed.RefreshToken, Expiry: time.Now().Add(-time.Minute)}).Token()
			var re *oauth2.RetrieveError
			if !errors.As(err, &re) || re.ErrorCode != "invalid_grant" {
				t.Fatalf("refresh with the revoked token: %v, want invalid_grant", err)
			}
			if r, body := w.pull(id, refreshed.AccessToken, ""); r.StatusCode != 401 {
				t.Fatalf("pull after revocation: %d %s", r.StatusCode, body)
			}
		})
	}
}

// plainForm posts a form around the openapi.yaml validator, optionally
// with HTTP Basic credentials.
func plainForm(t *testing.T, endpoint string, form url.Values, basicUser, basicPass string) (*http.Response, map[string]string) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, endpoint, strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	if basicUser != "" {
		req.SetBasicAuth(basicUser, basicPass)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	out := map[string]string{}
	var raw map[string]any
	_ = json.NewDecoder(resp.Body).Decode(&raw)
	for k, v := range raw {
		if s, ok := v.(string); ok {
			out[k] = s
		}
	}
	return resp, out
}

// clientCode runs the standard authorization request of appClient up to
// the redirect to the app and returns the code and the verifier.
func (w *world) clientCode(clientID, redirect string) (code, verifier string) {
	w.t.Helper()
	verifier = pkce.NewVerifier()
	loc := w.follow("/v1/oauth/authorize?" + url.Values{"response_type": {"code"}, "client_id": {clientID}, "redirect_uri": {redirect},
		"code_challenge": {pkce.S256(verifier)}, "code_challenge_method": {"S256"}, "state": {"s1"}, "scope": {"connections offline_access"}}.Encode())
	u, err := url.Parse(loc)
	if err != nil || !strings.HasPrefix(loc, redirect) || u.Query().Get("code") == "" || u.Query().Get("iss") != w.srv.URL {
		w.t.Fatalf("flow ended at %q", loc)
	}
	return u.Query().Get("code"), verifier
}

// The authorization endpoint: a trusted client's errors go back to it
// (with state and iss); an untrusted client or redirect is a problem.
func TestAuthorizeStandardParameters(t *testing.T) {
	w := newWorld(t, models.SQLite)
	get := func(q url.Values) (*http.Response, []byte) {
		t.Helper()
		req, _ := http.NewRequest(http.MethodGet, w.srv.URL+"/v1/oauth/authorize?"+q.Encode(), nil)
		resp, err := (&http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}).Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return resp, body
	}
	challenge := pkce.S256(pkce.NewVerifier())
	std := func(redirect string, change ...string) url.Values {
		q := url.Values{"response_type": {"code"}, "client_id": {appClient}, "redirect_uri": {redirect},
			"code_challenge": {challenge}, "code_challenge_method": {"S256"}, "state": {"st"}}
		for i := 0; i+1 < len(change); i += 2 {
			if change[i+1] == "" {
				q.Del(change[i])
			} else {
				q.Set(change[i], change[i+1])
			}
		}
		return q
	}
	toSalesforce := func(name string, q url.Values) {
		t.Helper()
		resp, body := get(q)
		if resp.StatusCode != 302 || !strings.HasPrefix(resp.Header.Get("Location"), w.emuSrv.URL) {
			t.Errorf("%s: %d %s %s, want a redirect to Salesforce", name, resp.StatusCode, resp.Header.Get("Location"), body)
		}
	}
	toSalesforce("custom scheme", std(appRedirect))
	toSalesforce("loopback IPv4 on any port", std("http://127.0.0.1:49152/cb"))
	toSalesforce("loopback IPv6 on any port", std("http://[::1]:50000/cb"))
	toSalesforce("localhost on its registered port", std("http://localhost:8765/cb"))
	toSalesforce("unknown scopes are ignored", std(appRedirect, "scope", "connections openid whatever"))
	toSalesforce("legacy redirect_uri name", url.Values{"redirect_uri": {appRedirect}, "code_challenge": {challenge}, "code_challenge_method": {"S256"}})
	toSalesforce("both names, equal", std(appRedirect, "app_redirect_uri", appRedirect))

	for name, tc := range map[string]struct {
		q    url.Values
		code string
	}{
		"unknown client":                 {std(appRedirect, "client_id", "com.evil"), "invalid_client"},
		"redirect of another client":     {std("com.acme.other:/cb"), "redirect_uri_not_allowed"},
		"loopback on another path":       {std("http://127.0.0.1:49152/other"), "redirect_uri_not_allowed"},
		"localhost on another port":      {std("http://localhost:9999/cb"), "redirect_uri_not_allowed"},
		"loopback https":                 {std("https://127.0.0.1:49152/cb"), "redirect_uri_not_allowed"},
		"no redirect_uri":                {std("", "redirect_uri", ""), "invalid_request"},
		"redirect_uri and legacy differ": {std(appRedirect, "app_redirect_uri", "http://127.0.0.1:1/cb"), "invalid_request"},
		"legacy: not on the allowlist":   {url.Values{"app_redirect_uri": {"http://127.0.0.1:5/cb"}, "code_challenge": {challenge}, "code_challenge_method": {"S256"}}, "redirect_uri_not_allowed"},
		"legacy: response_type token":    {url.Values{"response_type": {"token"}, "app_redirect_uri": {appRedirect}, "code_challenge": {challenge}, "code_challenge_method": {"S256"}}, "unsupported_response_type"},
		"legacy: plain PKCE":             {url.Values{"app_redirect_uri": {appRedirect}, "code_challenge": {challenge}}, "unsupported_challenge_method"},
	} {
		resp, body := get(tc.q)
		var p problem
		_ = json.Unmarshal(body, &p)
		if resp.StatusCode != 400 || p.Code != tc.code || resp.Header.Get("Location") != "" {
			t.Errorf("%s: %d %s, want a 400 problem %s", name, resp.StatusCode, body, tc.code)
		}
	}

	for name, tc := range map[string]struct {
		q    url.Values
		code string
	}{
		"no response_type":            {std(appRedirect, "response_type", ""), "invalid_request"},
		"response_type token":         {std(appRedirect, "response_type", "token"), "unsupported_response_type"},
		"no challenge method (plain)": {std(appRedirect, "code_challenge_method", ""), "invalid_request"},
		"challenge method plain":      {std(appRedirect, "code_challenge_method", "plain"), "invalid_request"},
		"no challenge":                {std(appRedirect, "code_challenge", ""), "invalid_request"},
		"malformed scope":             {std(appRedirect, "scope", `connections "x"`), "invalid_scope"},
		"bad login host":              {std(appRedirect, "login_host", "https://evil.example/some/path"), "invalid_request"},
		"bad re-authorization link":   {std(appRedirect, "reauth_token", "nope"), "invalid_request"},
		"login_hint too long":         {std(appRedirect, "login_hint", strings.Repeat("a", 257)), "invalid_request"},
		"loopback client, any port":   {std("http://127.0.0.1:61000/cb", "response_type", "id_token"), "unsupported_response_type"},
	} {
		resp, body := get(tc.q)
		loc, _ := url.Parse(resp.Header.Get("Location"))
		redirect := tc.q.Get("redirect_uri")
		if resp.StatusCode != 302 || loc == nil || !strings.HasPrefix(loc.String(), redirect) {
			t.Errorf("%s: %d %s %s, want a redirect to %s", name, resp.StatusCode, resp.Header.Get("Location"), body, redirect)
			continue
		}
		if q := loc.Query(); q.Get("error") != tc.code || q.Get("error_description") == "" || q.Get("state") != "st" || q.Get("iss") != w.srv.URL || q.Get("code") != "" {
			t.Errorf("%s: redirect %s, want error %s with state and iss", name, loc, tc.code)
		}
	}
	// A state too long to keep is not echoed.
	resp, _ := get(std(appRedirect, "state", strings.Repeat("s", 513)))
	if loc, _ := url.Parse(resp.Header.Get("Location")); resp.StatusCode != 302 || loc.Query().Get("error") != "invalid_request" || loc.Query().Has("state") {
		t.Errorf("long state: %d %s", resp.StatusCode, resp.Header.Get("Location"))
	}
}

func TestAuthorizationServerMetadata(t *testing.T) {
	w := newWorld(t, models.SQLite)
	resp, err := http.Get(w.srv.URL + "/.well-known/oauth-authorization-server")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var got map[string]any
	if err := json.NewDecoder(resp.Body).Decode(&got); err != nil {
		t.Fatal(err)
	}
	b := w.srv.URL
	want := map[string]any{
		"issuer": b, "authorization_endpoint": b + "/v1/oauth/authorize", "token_endpoint": b + "/v1/device/token",
		"revocation_endpoint": b + "/v1/device/revoke", "jwks_uri": b + "/.well-known/jwks.json",
		"response_types_supported": []any{"code"}, "response_modes_supported": []any{"query"},
		"grant_types_supported": []any{"authorization_code", "refresh_token"}, "code_challenge_methods_supported": []any{"S256"},
		"token_endpoint_auth_methods_supported": []any{"none"}, "revocation_endpoint_auth_methods_supported": []any{"none"},
		"scopes_supported": []any{"connections"}, "authorization_response_iss_parameter_supported": true,
	}
	gotJSON, _ := json.Marshal(got)
	wantJSON, _ := json.Marshal(want)
	if string(gotJSON) != string(wantJSON) {
		t.Fatalf("metadata\n got %s\nwant %s", gotJSON, wantJSON)
	}
	if cc := resp.Header.Get("Cache-Control"); cc != "public, max-age=300" {
		t.Fatalf("Cache-Control %q", cc)
	}
}

// The token endpoint's client and redirect checks, and what a refused
// attempt costs.
func TestTokenEndpointClientChecks(t *testing.T) {
	w := newWorld(t, models.Postgres)
	tokenURL, revokeURL := w.srv.URL+"/v1/device/token", w.srv.URL+"/v1/device/revoke"
	grant := func(code, verifier string, extra ...string) url.Values {
		f := url.Values{"grant_type": {"authorization_code"}, "code": {code}, "code_verifier": {verifier}}
		for i := 0; i+1 < len(extra); i += 2 {
			f.Set(extra[i], extra[i+1])
		}
		return f
	}
	expect := func(name string, resp *http.Response, body map[string]string, status int, code string) {
		t.Helper()
		if resp.StatusCode != status || body["error"] != code {
			t.Fatalf("%s: %d %v, want %d %s", name, resp.StatusCode, body, status, code)
		}
	}

	code, verifier := w.clientCode(appClient, appRedirect)
	// Refused before the code is looked at: the code still works after.
	resp, body := plainForm(t, tokenURL, grant(code, verifier, "client_id", "com.evil", "redirect_uri", appRedirect), "", "")
	expect("unknown client in the form", resp, body, 401, "invalid_client")
	resp, body = plainForm(t, tokenURL, grant(code, verifier, "redirect_uri", appRedirect), "com.evil", "")
	expect("unknown client in Basic", resp, body, 401, "invalid_client")
	if resp.Header.Get("WWW-Authenticate") == "" {
		t.Fatal("401 to HTTP Basic without WWW-Authenticate")
	}
	resp, body = plainForm(t, tokenURL, grant(code, verifier, "redirect_uri", appRedirect), appClient, "a-secret")
	expect("a client secret", resp, body, 401, "invalid_client")
	resp, body = plainForm(t, tokenURL, grant(code, verifier, "client_id", otherClient, "redirect_uri", appRedirect), appClient, "")
	expect("Basic and form differ", resp, body, 400, "invalid_request")
	resp, body = plainForm(t, tokenURL, grant(code, verifier, "client_id", appClient), "", "")
	expect("authorization_code without redirect_uri", resp, body, 400, "invalid_request")
	resp, body = plainForm(t, tokenURL, grant(code, verifier, "client_id", appClient, "redirect_uri", appRedirect), "", "")
	expect("the code after refusals before it was looked at", resp, body, 200, "")
	if body["scope"] != "connections" || body["refresh_token"] == "" {
		t.Fatalf("token response %v", body)
	}
	first := body

	for name, tc := range map[string]struct {
		form      func(code, verifier string) url.Values
		basicUser string
	}{
		"another redirect_uri": {func(c, v string) url.Values {
			return grant(c, v, "redirect_uri", "http://127.0.0.1:1/cb", "client_id", appClient)
		}, ""},
		"another client": {func(c, v string) url.Values {
			return grant(c, v, "redirect_uri", appRedirect, "client_id", otherClient)
		}, ""},
		"no client": {func(c, v string) url.Values { return grant(c, v, "redirect_uri", appRedirect) }, ""},
		"handoff_code alias, another client": {func(c, v string) url.Values {
			f := grant(c, v)
			f.Set("grant_type", "handoff_code")
			return f
		}, otherClient},
	} {
		code, verifier := w.clientCode(appClient, appRedirect)
		resp, body := plainForm(t, tokenURL, tc.form(code, verifier), tc.basicUser, "")
		expect(name, resp, body, 400, "invalid_grant")
		// Every refused look at a code spends it.
		resp, body = plainForm(t, tokenURL, grant(code, verifier, "client_id", appClient, "redirect_uri", appRedirect), "", "")
		expect(name+", then the right request", resp, body, 400, "invalid_grant")
	}

	// The legacy alias with the client in Basic and no redirect_uri.
	code, verifier = w.clientCode(appClient, appRedirect)
	f := grant(code, verifier)
	f.Set("grant_type", "handoff_code")
	resp, body = plainForm(t, tokenURL, f, appClient, "")
	expect("handoff_code alias via Basic", resp, body, 200, "")

	// A legacy code (no client) through the standard grant type.
	code, verifier = w.connectApp("legacy@example.com", nil)
	resp, body = plainForm(t, tokenURL, grant(code, verifier, "redirect_uri", appRedirect), "", "")
	expect("legacy code, authorization_code", resp, body, 200, "")
	legacy := body

	// Refresh: the session's client only; a refusal does not spend it.
	resp, body = plainForm(t, tokenURL, url.Values{"grant_type": {"refresh_token"}, "refresh_token": {first["refresh_token"]}, "client_id": {otherClient}}, "", "")
	expect("refresh by another client", resp, body, 400, "invalid_grant")
	resp, body = plainForm(t, tokenURL, url.Values{"grant_type": {"refresh_token"}, "refresh_token": {legacy["refresh_token"]}, "client_id": {appClient}}, "", "")
	expect("refresh of a legacy session by a client", resp, body, 400, "invalid_grant")
	resp, body = plainForm(t, tokenURL, url.Values{"grant_type": {"refresh_token"}, "refresh_token": {first["refresh_token"]}, "scope": {"anything"}}, appClient, "")
	expect("refresh by its client", resp, body, 200, "")
	second := body

	// Revocation.
	resp, body = plainForm(t, revokeURL, url.Values{"token_type_hint": {"refresh_token"}}, "", "")
	expect("revoke without token", resp, body, 400, "invalid_request")
	resp, body = plainForm(t, revokeURL, url.Values{"token": {"twr_" + strings.Repeat("x", 43)}}, "", "")
	expect("revoke an unknown token", resp, body, 200, "")
	resp, body = plainForm(t, revokeURL, url.Values{"token": {second["refresh_token"]}, "client_id": {"com.evil"}}, "", "")
	expect("revoke by an unknown client", resp, body, 401, "invalid_client")
	resp, body = plainForm(t, revokeURL, url.Values{"token": {second["access_token"]}}, otherClient, "")
	expect("revoke by another client", resp, body, 400, "unauthorized_client")
	if r, _ := w.get("/v1/connections", second["access_token"]); r.StatusCode != 200 {
		t.Fatalf("session after another client's revocation: %d", r.StatusCode)
	}
	resp, body = plainForm(t, revokeURL, url.Values{"token": {second["access_token"]}, "token_type_hint": {"refresh_token"}}, "", "")
	expect("revoke an access token (wrong hint)", resp, body, 200, "")
	if r, _ := w.get("/v1/connections", second["access_token"]); r.StatusCode != 401 {
		t.Fatalf("session after revoking its access token: %d", r.StatusCode)
	}
	resp, body = plainForm(t, revokeURL, url.Values{"token": {second["refresh_token"]}}, appClient, "")
	expect("revoke a revoked session", resp, body, 200, "")
}
