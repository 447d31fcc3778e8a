package salesforce

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"
)

// fakeIdentity is a Salesforce that answers identity calls as told and
// records which it got; every call must carry the bearer access token.
type fakeIdentity struct {
	mu       sync.Mutex
	calls    []string
	identity int // status of the identity service
	userinfo int
	user     int // status of the User query
	org      int
	redirect bool
}

const idAccess = "00Dxx!AQ-secret-access"

func (f *fakeIdentity) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Header.Get("Authorization") != "Bearer "+idAccess {
		w.WriteHeader(http.StatusUnauthorized)
		return
	}
	q := r.URL.Query().Get("q")
	name := r.URL.Path
	if q != "" {
		name += "?" + q
	}
	f.mu.Lock()
	f.calls = append(f.calls, name)
	f.mu.Unlock()
	answer := func(status int, v any) {
		if status != http.StatusOK {
			w.WriteHeader(status)
			return
		}
		_ = json.NewEncoder(w).Encode(v)
	}
	switch {
	case f.redirect:
		http.Redirect(w, r, "https://evil.example.com/steal", http.StatusFound)
	case strings.HasPrefix(r.URL.Path, "/id/"):
		answer(f.identity, map[string]any{"display_name": "Ada Lovelace", "username": "ada@acme.example", "email": "ada@mail.example"})
	case r.URL.Path == "/services/oauth2/userinfo":
		answer(f.userinfo, map[string]any{"name": "Ada L.", "preferred_username": "ada@acme.example", "email": "ada@mail.example"})
	case strings.Contains(q, "FROM User WHERE Id = '005000000000001AAA'"):
		answer(f.user, map[string]any{"records": []map[string]string{{"Name": "Ada (SOQL)", "Username": "ada@acme.example", "Email": "ada@mail.example"}}})
	case q == "SELECT Name FROM Organization":
		answer(f.org, map[string]any{"records": []map[string]string{{"Name": "  Acme Corporation "}}})
	default:
		w.WriteHeader(http.StatusNotFound)
	}
}

func TestIdentityFallsBackAndNeverLeaksTheToken(t *testing.T) {
	cases := []struct {
		name                     string
		f                        *fakeIdentity
		scope                    string
		wantName, wantOrg        string
		wantCalls                int
		wantErr                  bool
		wantNoOrgQuery, wantUser bool
	}{
		{"identity service", &fakeIdentity{identity: 200, org: 200}, "api refresh_token", "Ada Lovelace", "Acme Corporation", 2, false, false, true},
		{"userinfo after a refused identity service", &fakeIdentity{identity: 403, userinfo: 200, org: 200}, "api refresh_token", "Ada L.", "Acme Corporation", 3, false, false, true},
		{"the User record when both refuse", &fakeIdentity{identity: 403, userinfo: 403, user: 200, org: 200}, "api refresh_token", "Ada (SOQL)", "Acme Corporation", 4, false, false, true},
		{"no api scope: no REST calls, no org name", &fakeIdentity{identity: 200}, "id refresh_token", "Ada Lovelace", "", 1, false, true, true},
		{"the org query fails: the user is kept", &fakeIdentity{identity: 200, org: 500}, "full", "Ada Lovelace", "", 2, true, false, true},
		{"everything fails", &fakeIdentity{identity: 500, userinfo: 503, user: 400, org: 403}, "api refresh_token", "", "", 4, true, false, false},
		{"a redirect is never followed", &fakeIdentity{redirect: true}, "api refresh_token", "", "", 4, true, false, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			srv := httptest.NewServer(tc.f)
			defer srv.Close()
			c := &Client{HTTP: srv.Client(), Timeout: 5 * time.Second}
			tok := &Token{AccessToken: idAccess, RefreshToken: "5Aep-secret-refresh", InstanceURL: srv.URL, Scope: tc.scope,
				IdentityURL: srv.URL + "/id/00D000000000001AAA/005000000000001AAA", OrgID: "00D000000000001AAA", UserID: "005000000000001AAA"}
			who, err := c.Identity(context.Background(), srv.URL, tok)
			if who == nil || who.Name != tc.wantName || who.OrgName != tc.wantOrg || (err != nil) != tc.wantErr {
				t.Fatalf("got %+v, %v", who, err)
			}
			if tc.wantUser && (who.Username != "ada@acme.example" || who.Email != "ada@mail.example") {
				t.Fatalf("user %+v", who)
			}
			if len(tc.f.calls) != tc.wantCalls {
				t.Fatalf("calls %v", tc.f.calls)
			}
			for _, call := range tc.f.calls {
				if tc.wantNoOrgQuery && strings.Contains(call, "Organization") {
					t.Fatalf("queried the org without the api scope: %v", tc.f.calls)
				}
			}
			if err != nil && (strings.Contains(err.Error(), "secret") || strings.Contains(err.Error(), "evil")) {
				t.Fatalf("the error names a token or the redirect: %v", err)
			}
		})
	}
}

func TestIdentityTrustsOnlySalesforceHosts(t *testing.T) {
	f := &fakeIdentity{identity: 200, userinfo: 200, org: 200}
	srv := httptest.NewServer(f)
	defer srv.Close()
	c := &Client{HTTP: srv.Client(), Timeout: 5 * time.Second}
	// The grant's id and instance URLs point at a host that is neither the
	// login host nor Salesforce's: the access token is never sent there.
	tok := &Token{AccessToken: idAccess, InstanceURL: "https://attacker.example.net", Scope: "api",
		IdentityURL: "https://attacker.example.net/id/00D000000000001AAA/005000000000001AAA", UserID: "005000000000001AAA"}
	who, err := c.Identity(context.Background(), "https://login.salesforce.com", tok)
	if err != nil || who.Name != "" || who.OrgName != "" || len(f.calls) != 0 {
		t.Fatalf("got %+v %v, calls %v", who, err, f.calls)
	}
	if _, err := c.Identity(context.Background(), srv.URL, &Token{}); err == nil {
		t.Fatal("no access token, no error")
	}
}

func TestValidIDGuardsTheSOQLLiteral(t *testing.T) {
	for id, want := range map[string]bool{"005000000000001AAA": true, "005000000000001": true, "005' OR Id != '": false, "": false, "005000000000001AA": false} {
		if validID(id) != want {
			t.Errorf("validID(%q) = %v", id, !want)
		}
	}
}
