package salesforce

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/tokenwarm/tokenwarm/clock"
)

func TestClassifyFollowsTheTable(t *testing.T) {
	cases := []struct {
		status      int
		code, desc  string
		want        Class
		description string
	}{
		{400, "invalid_grant", "expired access/refresh token", Dead, "expired"},
		{400, "invalid_grant", "token validity expired", Dead, "idle ttl"},
		{400, "invalid_grant", "authentication failure", Dead, "auth failure"},
		{400, "invalid_grant", "something new", Dead, "other invalid_grant"},
		{400, "invalid_grant", "token request is already being processed", Concurrent, "concurrent"},
		{400, "invalid_grant", "ip restricted or invalid login hours", Restricted, "ip or login hours: ambiguous"},
		{400, "invalid_grant", "IP Restricted", Restricted, "ip case"},
		{400, "invalid_grant", "invalid login hours", Restricted, "login hours alone"},
		{400, "invalid_grant", "user's ip is not the one we saw", Dead, "the word ip alone proves nothing"},
		{400, "inactive_user", "", Dead, "inactive user"},
		{400, "inactive_org", "", Dead, "inactive org"},
		{400, "invalid_client_id", "client identifier invalid", Config, "client id"},
		{400, "invalid_client", "invalid client credentials", Config, "client"},
		{400, "invalid_client_credentials", "", Config, "client creds"},
		{400, "unsupported_grant_type", "", Config, "grant type"},
		{400, "invalid_scope", "", Config, "scope"},
		{400, "rate_limit_exceeded", "", Transient, "rate limit"},
		{400, "slow_down", "", Transient, "slow down"},
		{403, "client_blocked_retry", "", Transient, "blocked retry"},
		{429, "", "", Transient, "429"},
		{503, "service_unavailable", "", Transient, "503"},
		{500, "", "", Transient, "500 no body"},
		{400, "server_error", "", Transient, "server_error"},
		{400, "system_down", "", Transient, "system_down"},
		{400, "unauthorized_client", "", Config, "unauthorized client"},
		{400, "weird_new_error", "", Unrecognized, "unknown 4xx: per connection, not dead, not app-wide"},
		{401, "", "", Unrecognized, "bare 401"},
		{307, "", "", Unrecognized, "redirect"},
		{408, "", "", Transient, "408"},
	}
	for _, tc := range cases {
		if got := Classify(tc.status, tc.code, tc.desc); got != tc.want {
			t.Errorf("%s: Classify(%d, %q, %q) = %v, want %v", tc.description, tc.status, tc.code, tc.desc, got, tc.want)
		}
	}
}

func TestRefreshKeepsOldTokenWithoutRotationAndParsesResponse(t *testing.T) {
	now := time.Date(2026, 11, 23, 12, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		name, issuedAt string
		want           time.Time
	}{
		{"string of milliseconds, as Salesforce sends it", `"1278448832702"`, time.UnixMilli(1278448832702).UTC()},
		{"a number", `1278448832702`, time.UnixMilli(1278448832702).UTC()},
		{"unreadable: the local clock", `"soon"`, now},
		{"missing: the local clock", `null`, now},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if err := r.ParseForm(); err != nil || r.Form.Get("grant_type") != "refresh_token" || r.Form.Get("client_id") != "cid" || r.Form.Get("client_secret") != "sec" {
					http.Error(w, `{"error":"invalid_request"}`, 400)
					return
				}
				w.Header().Set("Content-Type", "application/json")
				_, _ = w.Write([]byte(`{"access_token":"00Dxx!AQ","instance_url":"` + "http://" + r.Host + `","id":"https://login.salesforce.com/id/00D000000000001AAA/005000000000001AAA","token_type":"Bearer","issued_at":` + tc.issuedAt + `,"signature":"sig","scope":"api refresh_token"}`))
			}))
			defer srv.Close()
			c := &Client{ClientID: "cid", ClientSecret: "sec", SessionTimeout: time.Hour, Clock: clock.NewFake(now)}
			tok, err := c.Refresh(context.Background(), srv.URL, "5Aep-old-refresh-token")
			if err != nil {
				t.Fatal(err)
			}
			if tok.RefreshToken != "5Aep-old-refresh-token" || tok.Rotated {
				t.Fatalf("refresh token %q rotated=%v, want the old one kept", tok.RefreshToken, tok.Rotated)
			}
			if tok.OrgID != "00D000000000001AAA" || tok.UserID != "005000000000001AAA" {
				t.Fatalf("identity %q %q", tok.OrgID, tok.UserID)
			}
			if !tok.IssuedAt.Equal(tc.want) || !tok.ExpiresAt.Equal(tok.IssuedAt.Add(time.Hour)) {
				t.Fatalf("issued %v expires %v, want issued %v", tok.IssuedAt, tok.ExpiresAt, tc.want)
			}
		})
	}
}

func TestTransportErrorsAreUnknownOnlyAfterSending(t *testing.T) {
	// The server reads the request, then drops the connection: the token may
	// have been rotated, so the outcome is unknown.
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_ = r.ParseForm()
		hj, _ := w.(http.Hijacker)
		conn, _, _ := hj.Hijack()
		conn.Close()
	}))
	defer srv.Close()
	c := &Client{ClientID: "cid"}
	_, err := c.Refresh(context.Background(), srv.URL, "5Aep-secret-refresh-token")
	var se *Error
	if !errors.As(err, &se) || se.Class != Unknown {
		t.Fatalf("dropped answer: %v, want class unknown", err)
	}
	if strings.Contains(err.Error(), "5Aep-secret-refresh-token") {
		t.Fatal("error carries the token")
	}

	// Nothing listens: the request never left, a plain transient failure.
	srv.Close()
	_, err = c.Refresh(context.Background(), srv.URL, "5Aep-secret-refresh-token")
	if !errors.As(err, &se) || se.Class != Transient {
		t.Fatalf("refused connection: %v, want transient", err)
	}
}

func TestRetryAfterAndErrorBody(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Retry-After", "42")
		w.WriteHeader(503)
		_, _ = w.Write([]byte(`{"error":"service_unavailable","error_description":"down for 5Aep-token-echo"}`))
	}))
	defer srv.Close()
	c := &Client{ClientID: "cid"}
	_, err := c.Refresh(context.Background(), srv.URL, "5Aep-token-echo")
	var se *Error
	if !errors.As(err, &se) || se.Class != Transient || se.RetryAfter != 42*time.Second || se.HTTPStatus != 503 {
		t.Fatalf("err = %#v", err)
	}
	if strings.Contains(se.Error(), "5Aep-token-echo") {
		t.Fatal("an echoed token survived into the error")
	}
}

func TestLoginAndInstanceURLChecks(t *testing.T) {
	for u, ok := range map[string]bool{
		"https://login.salesforce.com":    true,
		"https://acme.my.salesforce.com":  true,
		"http://127.0.0.1:8080/_emulator": true,
		"http://login.salesforce.com":     false,
		"ftp://login.salesforce.com":      false,
		"login.salesforce.com":            false,
	} {
		if err := ValidateLoginURL(u); (err == nil) != ok {
			t.Errorf("ValidateLoginURL(%q) = %v", u, err)
		}
	}
	c := &Client{AllowedInstanceHosts: []string{"example.org"}}
	for u, ok := range map[string]bool{
		"https://acme.my.salesforce.com":      true,
		"https://na1.salesforce.com":          true,
		"https://acme.lightning.force.com":    true,
		"https://api.example.org":             true,
		"https://evil.com":                    false,
		"https://salesforce.com.evil.com":     false,
		"http://acme.my.salesforce.com":       false,
		"https://user:pw@acme.salesforce.com": false,
	} {
		if got := c.validInstanceURL(u, "https://login.salesforce.com"); got != ok {
			t.Errorf("validInstanceURL(%q) = %v", u, got)
		}
	}
	for _, tc := range []struct {
		login, instance string
		ok              bool
	}{
		{"http://127.0.0.1:8181", "http://127.0.0.1:8181", true},
		{"http://127.0.0.1:8181", "http://localhost:9000", true},
		{"http://127.0.0.1:8181", "https://acme.my.salesforce.com", true},
		{"http://127.0.0.1:8181", "http://acme.my.salesforce.com", false},
		{"https://login.salesforce.com", "http://127.0.0.1:8181", false},
		{"http://127.0.0.1:8181", "file:///etc/passwd", false},
	} {
		if got := c.validInstanceURL(tc.instance, tc.login); got != tc.ok {
			t.Errorf("validInstanceURL(%q) after logging in at %q = %v", tc.instance, tc.login, got)
		}
	}
}

// A redirect from the token endpoint must not carry the refresh token and
// the client secret anywhere else: the client answers with what it got.
func TestNoRedirectIsFollowed(t *testing.T) {
	for _, status := range []int{http.StatusTemporaryRedirect, http.StatusPermanentRedirect, http.StatusFound} {
		elsewhere := 0
		other := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { elsewhere++ }))
		login := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			http.Redirect(w, r, other.URL+r.URL.Path, status)
		}))
		c := &Client{HTTP: &http.Client{}, ClientID: "id", ClientSecret: "secret-value"}
		_, err := c.Refresh(context.Background(), login.URL, "refresh-token-value")
		var se *Error
		if !errors.As(err, &se) || se.HTTPStatus != status || se.Class != Unrecognized || !se.MayHaveRotated() {
			t.Errorf("%d: err = %v, want an unrecognised answer that may have rotated", status, err)
		}
		if err := c.Revoke(context.Background(), login.URL, "refresh-token-value"); err == nil {
			t.Errorf("%d: revoke through a redirect reported success", status)
		}
		if _, err := c.Introspect(context.Background(), login.URL, "refresh-token-value", "refresh_token"); err == nil {
			t.Errorf("%d: introspect through a redirect reported success", status)
		}
		if elsewhere != 0 {
			t.Errorf("%d: %d request(s) followed the redirect", status, elsewhere)
		}
		login.Close()
		other.Close()
	}
}

func TestMayHaveRotated(t *testing.T) {
	for _, tc := range []struct {
		e    Error
		want bool
	}{
		{Error{Class: Unknown, Code: "timeout_after_send"}, true},
		{Error{Class: Transient, HTTPStatus: 503, Code: "service_unavailable"}, true},
		{Error{Class: Transient, HTTPStatus: 502}, true},
		{Error{Class: Transient, Code: "network_error"}, false}, // never sent
		{Error{Class: Transient, HTTPStatus: 429}, false},
		{Error{Class: Dead, HTTPStatus: 400, Code: "invalid_grant"}, false},
		{Error{Class: Restricted, HTTPStatus: 400, Code: "invalid_grant"}, false},
		{Error{Class: Unrecognized, HTTPStatus: 400, Code: "weird"}, false},
		{Error{Class: Unrecognized, HTTPStatus: 308}, true},
	} {
		if got := tc.e.MayHaveRotated(); got != tc.want {
			t.Errorf("%+v: MayHaveRotated = %v, want %v", tc.e, got, tc.want)
		}
	}
}

// Only a well-formed 200 with a boolean "active" is a verdict about a
// refresh token; anything else leaves its state unknown.
func TestRefreshTokenActiveNeedsAWellFormedAnswer(t *testing.T) {
	for _, tc := range []struct {
		name        string
		status      int
		body        string
		wantErr     bool
		wantActive  bool
		wantRequest bool
	}{
		{"active", 200, `{"active":true,"token_type":"refresh_token"}`, false, true, true},
		{"inactive", 200, `{"active":false}`, false, false, true},
		{"empty object", 200, `{}`, true, false, true},
		{"active as a string", 200, `{"active":"false"}`, true, false, true},
		{"not json", 200, `<html>`, true, false, true},
		{"unauthorized", 401, `{"error":"invalid_client"}`, true, false, true},
		{"forbidden", 403, ``, true, false, true},
		{"server error", 503, `{"active":false}`, true, false, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var hint, tok string
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				_ = r.ParseForm()
				hint, tok = r.PostForm.Get("token_type_hint"), r.PostForm.Get("token")
				w.WriteHeader(tc.status)
				_, _ = w.Write([]byte(tc.body))
			}))
			defer srv.Close()
			c := &Client{HTTP: &http.Client{}, ClientID: "id"}
			active, err := c.RefreshTokenActive(context.Background(), srv.URL, "rt-value")
			if (err != nil) != tc.wantErr || active != tc.wantActive {
				t.Fatalf("active=%v err=%v", active, err)
			}
			if hint != "refresh_token" || tok != "rt-value" {
				t.Fatalf("sent hint %q token %q", hint, tok)
			}
			if err != nil && strings.Contains(err.Error(), "rt-value") {
				t.Fatal("error carries the token")
			}
		})
	}
}
