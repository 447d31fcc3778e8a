package apitest

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/tokenwarm/tokenwarm/client"
)

func TestSpecIsValidAndHasEveryOperation(t *testing.T) {
	doc := Spec(t)
	if doc.Info.Title != "tokenwarm" || doc.OpenAPI != "3.0.3" {
		t.Errorf("info.title %q, openapi %q", doc.Info.Title, doc.OpenAPI)
	}
	want := map[string]string{
		"getHealth":                      "GET /healthz",
		"getReady":                       "GET /readyz",
		"authorize":                      "GET /v1/oauth/authorize",
		"oauthCallback":                  "GET /v1/oauth/callback",
		"requestDeviceToken":             "POST /v1/device/token",
		"revokeDeviceToken":              "POST /v1/device/revoke",
		"listConnections":                "GET /v1/connections",
		"getConnection":                  "GET /v1/connections/{id}",
		"getSalesforceAccessToken":       "GET /v1/connections/{id}/access-token",
		"getJWKS":                        "GET /.well-known/jwks.json",
		"getAuthorizationServerMetadata": "GET /.well-known/oauth-authorization-server",
		"getMetrics":                     "GET /metrics",

		"adminListConnections":   "GET /admin/v1/connections",
		"adminGetConnection":     "GET /admin/v1/connections/{id}",
		"adminRefreshConnection": "POST /admin/v1/connections/{id}/refresh",
		"adminCreateReauthLink":  "POST /admin/v1/connections/{id}/reauth-link",
		"adminEraseIdentity":     "DELETE /admin/v1/connections/{id}/identity",
		"adminRevokeConnection":  "POST /admin/v1/connections/{id}/revoke",
		"adminSummary":           "GET /admin/v1/summary",
		"adminListOrgs":          "GET /admin/v1/orgs",
		"adminSetOrgIdleTTL":     "PUT /admin/v1/orgs/{org_id}/refresh-idle-ttl",
	}
	got := map[string]string{}
	for path, item := range doc.Paths.Map() {
		for method, op := range item.Operations() {
			got[op.OperationID] = method + " " + path
		}
	}
	for id, route := range want {
		if got[id] != route {
			t.Errorf("operation %s: got %q, want %q", id, got[id], route)
		}
	}
	if len(got) != len(want) {
		t.Errorf("spec has %d operations, want %d: %v", len(got), len(want), got)
	}
	if Spec(t) != doc {
		t.Error("Spec loaded the document twice")
	}
}

const (
	connID   = "0b9e6f7c-3c1a-4c55-9f0e-2a51d7a3e2c4"
	problem  = "application/problem+json"
	jsonType = "application/json"
)

func connection() map[string]any {
	return map[string]any{
		"id":                connID,
		"org_id":            "00D5g000004Xyz1EAC",
		"user_id":           "0055g00000AbcDeAAJ",
		"login_url":         "https://login.salesforce.com",
		"instance_url":      "https://acme.my.salesforce.com",
		"status":            "active",
		"last_refreshed_at": "2026-11-20T10:00:00Z",
		"idle_expires_at":   "2026-12-20T10:00:00Z",
		"created_at":        "2026-01-02T03:04:05.123456Z",
	}
}

// with sets m[key] to value (an untyped nil deletes it) and returns m.
func with(m map[string]any, key string, value any) map[string]any {
	if value == nil {
		delete(m, key)
	} else {
		m[key] = value
	}
	return m
}

func reauthProblem() map[string]any {
	return map[string]any{
		"type":       "https://tokenwarm.dev/problems/reauth_required",
		"title":      "Conflict",
		"status":     409,
		"code":       "reauth_required",
		"detail":     "the Salesforce connection must be re-authorized",
		"reason":     "expired access/refresh token",
		"reauth_url": "http://127.0.0.1:8080/v1/oauth/authorize?reauth_token=abc.def",
		"instance":   "/v1/connections/" + connID + "/access-token",
	}
}

func accessToken() map[string]any {
	return map[string]any{
		"connection_id": connID,
		"access_token":  "00D5g000004Xyz1!AQ0AQ.fake",
		"token_type":    "Bearer",
		"instance_url":  "https://acme.my.salesforce.com",
		"issued_at":     "2026-11-20T10:00:00Z",
		"expires_at":    "2026-11-20T12:00:00Z",
	}
}

// reply is one canned answer of the fake server.
type reply struct {
	status  int
	header  map[string]string
	body    any // JSON-encoded unless a string
	comment string
}

// fakeServer answers each "METHOD /path" (query ignored) with its reply; the
// fake "scenario" query parameter picks among replies of the same route.
func fakeServer(t *testing.T, replies map[string]reply) *httptest.Server {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		key := r.Method + " " + r.URL.Path
		if s := r.URL.Query().Get("scenario"); s != "" {
			key += "#" + s
		}
		rep, ok := replies[key]
		if !ok {
			rep = reply{status: http.StatusNotFound, header: map[string]string{"Content-Type": problem},
				body: map[string]any{"type": "about:blank", "title": "Not Found", "status": 404, "code": "not_found"}}
		}
		for k, v := range rep.header {
			w.Header().Set(k, v)
		}
		var b []byte
		switch body := rep.body.(type) {
		case nil:
		case string:
			b = []byte(body)
		default:
			var err error
			if b, err = json.Marshal(body); err != nil {
				panic(err)
			}
		}
		w.WriteHeader(rep.status)
		_, _ = w.Write(b)
	}))
	t.Cleanup(srv.Close)
	return srv
}

// recorder stands in for a test so that failures of Check can be observed
// instead of failing the real test.
type recorder struct {
	testing.TB
	mu     sync.Mutex
	errors []string
}

func (r *recorder) Errorf(format string, args ...any) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.errors = append(r.errors, fmt.Sprintf(format, args...))
}

func (r *recorder) Helper() {}

func (r *recorder) failures() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.errors...)
}

func TestCheck(t *testing.T) {
	js := map[string]string{"Content-Type": jsonType}
	pj := map[string]string{"Content-Type": problem}
	noStore := map[string]string{"Content-Type": jsonType, "Cache-Control": "no-store"}
	cacheable := map[string]string{"Content-Type": jsonType, "Cache-Control": "public, max-age=300"}
	unauthorized := map[string]any{"type": "https://tokenwarm.dev/problems/unauthorized", "title": "Unauthorized", "status": 401, "code": "unauthorized"}
	internal := map[string]any{"type": "https://tokenwarm.dev/problems/internal", "title": "Internal Server Error", "status": 500, "code": "internal"}
	conn := "/v1/connections/" + connID

	replies := map[string]reply{
		"GET /healthz":                       {status: 200, header: js, body: map[string]any{"status": "ok"}},
		"GET /healthz#wrong":                 {status: 200, header: js, body: map[string]any{"status": "fine"}},
		"GET " + conn:                        {status: 200, header: map[string]string{"Content-Type": "application/json; charset=UTF-8"}, body: connection()},
		"GET " + conn + "#extra":             {status: 200, header: js, body: with(connection(), "future_field", 42)},
		"GET " + conn + "#needs_reauth":      {status: 200, header: js, body: with(with(connection(), "status", "needs_reauth"), "reauth_url", "http://127.0.0.1:8080/v1/oauth/authorize?reauth_token=x")},
		"GET " + conn + "#missing":           {status: 200, header: js, body: with(connection(), "created_at", nil)},
		"GET " + conn + "#enum":              {status: 200, header: js, body: with(connection(), "status", "expired")},
		"GET " + conn + "#uuid":              {status: 200, header: js, body: with(connection(), "id", "42")},
		"GET " + conn + "#date":              {status: 200, header: js, body: with(connection(), "created_at", "yesterday")},
		"GET " + conn + "#null":              {status: 200, header: js, body: with(connection(), "reauth_reason", (*string)(nil))},
		"GET " + conn + "#relative":          {status: 200, header: js, body: with(connection(), "instance_url", "acme.my.salesforce.com")},
		"GET " + conn + "#notjson":           {status: 200, header: js, body: "{"},
		"GET " + conn + "#teapot":            {status: 418, header: map[string]string{"Content-Type": "text/plain"}, body: "short and stout"},
		"GET " + conn + "#500":               {status: 500, header: pj, body: internal},
		"GET " + conn + "#500-html":          {status: 500, header: map[string]string{"Content-Type": "text/html"}, body: "<p>oops</p>"},
		"GET " + conn + "#301":               {status: 301, header: map[string]string{"Location": "/elsewhere"}},
		"GET " + conn + "#401":               {status: 401, header: map[string]string{"Content-Type": problem, "WWW-Authenticate": `Bearer error="invalid_token"`}, body: unauthorized},
		"GET " + conn + "#401-no-challenge":  {status: 401, header: pj, body: unauthorized},
		"GET " + conn + "#404-as-json":       {status: 404, header: js, body: unauthorized},
		"GET " + conn + "#404-no-code":       {status: 404, header: pj, body: with(with(reauthProblem(), "status", 404), "code", nil)},
		"GET " + conn + "/access-token":      {status: 200, header: noStore, body: accessToken()},
		"GET " + conn + "/access-token#nc":   {status: 200, header: js, body: accessToken()},
		"GET " + conn + "/access-token#409":  {status: 409, header: pj, body: reauthProblem()},
		"GET " + conn + "/access-token#503":  {status: 503, header: map[string]string{"Content-Type": problem, "Retry-After": "30"}, body: with(with(with(reauthProblem(), "status", 503), "code", "upstream_unavailable"), "retry_after", 30)},
		"GET " + conn + "/access-token#503d": {status: 503, header: map[string]string{"Content-Type": problem, "Retry-After": "Wed, 21 Oct 2026 07:28:00 GMT"}, body: with(reauthProblem(), "status", 503)},
		"GET " + conn + "/access-token#400":  {status: 400, header: pj, body: with(with(with(reauthProblem(), "status", 400), "code", "invalid_parameter"), "errors", []map[string]string{{"field": "min_validity", "message": "too big"}})},
		"GET " + conn + "/access-token#400e": {status: 400, header: pj, body: with(with(reauthProblem(), "status", 400), "errors", []map[string]string{{"field": "min_validity"}})},
		"GET /v1/oauth/authorize":            {status: 302, header: map[string]string{"Location": "https://login.salesforce.com/services/oauth2/authorize?client_id=x"}},
		"GET /v1/oauth/authorize#noloc":      {status: 302},
		"GET /v1/oauth/callback":             {status: 200, header: map[string]string{"Content-Type": "text/html; charset=utf-8"}, body: "<!doctype html><p>Connected.</p>"},
		"GET /v1/oauth/callback#redirect":    {status: 302, header: map[string]string{"Location": "com.example.fieldapp:/oauth/callback?code=twh_x&state=s"}},
		"POST /v1/device/token":              {status: 400, header: js, body: map[string]any{"error": "invalid_grant", "error_description": "handoff code is invalid"}},
		"POST /v1/device/token#bad":          {status: 400, header: js, body: map[string]any{"error": "expired_code"}},
		"POST /v1/device/revoke":             {status: 200, header: js, body: map[string]any{}},
		"GET /.well-known/jwks.json":         {status: 200, header: cacheable, body: map[string]any{"keys": []map[string]any{{"kty": "OKP", "crv": "Ed25519", "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo", "kid": "k1", "alg": "EdDSA", "use": "sig"}}}},
		"GET /.well-known/jwks.json#rsa":     {status: 200, header: cacheable, body: map[string]any{"keys": []map[string]any{{"kty": "RSA", "crv": "Ed25519", "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo", "kid": "k1", "alg": "EdDSA", "use": "sig"}}}},
		"GET /v1/nope":                       {status: 200, header: js, body: map[string]any{}},
		"DELETE " + conn:                     {status: 204},
	}
	srv := fakeServer(t, replies)
	v := New(t)

	cases := []struct {
		method, target string
		valid          bool
		why            string // expected in the failure message
	}{
		{"GET", "/healthz", true, ""},
		{"GET", "/healthz?scenario=wrong", false, "status"},
		{"GET", conn, true, ""},
		{"GET", conn + "?scenario=extra", true, ""},
		{"GET", conn + "?scenario=needs_reauth", true, ""},
		{"GET", conn + "?scenario=missing", false, "created_at"},
		{"GET", conn + "?scenario=null", false, "reauth_reason"},
		{"GET", conn + "?scenario=enum", false, "expired"},
		{"GET", conn + "?scenario=uuid", false, "uuid"},
		{"GET", conn + "?scenario=date", false, "created_at"},
		{"GET", conn + "?scenario=relative", false, "instance_url"},
		{"GET", conn + "?scenario=notjson", false, "decode"},
		{"GET", conn + "?scenario=teapot", false, "text/plain"},
		{"GET", conn + "?scenario=500", true, ""},
		{"GET", conn + "?scenario=500-html", false, "text/html"},
		{"GET", conn + "?scenario=301", false, "301"},
		{"GET", conn + "?scenario=401", true, ""},
		{"GET", conn + "?scenario=401-no-challenge", false, "WWW-Authenticate"},
		{"GET", conn + "?scenario=404-as-json", false, "Content-Type"},
		{"GET", conn + "?scenario=404-no-code", false, "code"},
		{"GET", conn + "/access-token?min_validity=600", true, ""},
		{"GET", conn + "/access-token?scenario=nc", false, "Cache-Control"},
		{"GET", conn + "/access-token?scenario=409", true, ""},
		{"GET", conn + "/access-token?scenario=503", true, ""},
		{"GET", conn + "/access-token?scenario=503d", false, "Retry-After"},
		{"GET", conn + "/access-token?scenario=400", true, ""},
		{"GET", conn + "/access-token?scenario=400e", false, "message"},
		{"GET", "/v1/oauth/authorize", true, ""},
		{"GET", "/v1/oauth/authorize?scenario=noloc", false, "Location"},
		{"GET", "/v1/oauth/callback", true, ""},
		{"GET", "/v1/oauth/callback?scenario=redirect", true, ""},
		{"POST", "/v1/device/token", true, ""},
		{"POST", "/v1/device/token?scenario=bad", false, "expired_code"},
		{"POST", "/v1/device/revoke", true, ""},
		{"GET", "/.well-known/jwks.json", true, ""},
		{"GET", "/.well-known/jwks.json?scenario=rsa", false, "RSA"},
		{"GET", "/v1/nope", false, "not in openapi.yaml"},
		{"DELETE", conn, false, "not in openapi.yaml"},
	}
	for _, tc := range cases {
		t.Run(tc.method+" "+tc.target, func(t *testing.T) {
			rec := &recorder{TB: t}
			hc := &http.Client{
				Transport:     v.Transport(rec, nil),
				CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
			}
			req, err := http.NewRequestWithContext(t.Context(), tc.method, srv.URL+tc.target, nil)
			if err != nil {
				t.Fatal(err)
			}
			resp, err := hc.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			body, err := io.ReadAll(resp.Body)
			resp.Body.Close()
			if err != nil {
				t.Fatal(err)
			}

			// The transport hands the body on unchanged.
			key := tc.method + " " + req.URL.Path
			if s := req.URL.Query().Get("scenario"); s != "" {
				key += "#" + s
			}
			if want, ok := replies[key].body.(string); ok && string(body) != want {
				t.Errorf("body through Transport = %q, want %q", body, want)
			}

			got := rec.failures()
			switch {
			case tc.valid && len(got) > 0:
				t.Errorf("valid exchange rejected: %v", got)
			case !tc.valid && len(got) == 0:
				t.Errorf("invalid exchange accepted (body %s)", body)
			case !tc.valid && !strings.Contains(strings.Join(got, "\n"), tc.why):
				t.Errorf("rejected, but the message does not mention %q: %v", tc.why, got)
			case !tc.valid:
				t.Logf("rejected as expected: %v", got)
			}

			// Check itself agrees with the transport.
			rec2 := &recorder{TB: t}
			v.Check(rec2, req, resp, body)
			if len(rec2.failures()) != len(got) {
				t.Errorf("Check: %v; Transport: %v", rec2.failures(), got)
			}
		})
	}
}

// The generated client works over the validating transport, concurrently.
func TestTransportWithGeneratedClient(t *testing.T) {
	srv := fakeServer(t, map[string]reply{
		"GET /v1/connections/" + connID:                   {status: 200, header: map[string]string{"Content-Type": jsonType}, body: connection()},
		"GET /v1/connections/" + connID + "/access-token": {status: 409, header: map[string]string{"Content-Type": problem}, body: reauthProblem()},
	})
	v := New(t)
	c, err := client.NewClientWithResponses(srv.URL, client.WithHTTPClient(&http.Client{Transport: v.Transport(t, nil)}))
	if err != nil {
		t.Fatal(err)
	}
	var id client.ConnectionId
	if err := id.UnmarshalText([]byte(connID)); err != nil {
		t.Fatal(err)
	}

	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			got, err := c.GetConnectionWithResponse(t.Context(), id)
			if err != nil {
				t.Error(err)
				return
			}
			if got.JSON200 == nil || got.JSON200.Id != id || got.JSON200.Status != client.ConnectionStatusActive {
				t.Errorf("GetConnection: status %d, body %s", got.StatusCode(), got.Body)
			}
			minValidity := 600
			tok, err := c.GetSalesforceAccessTokenWithResponse(t.Context(), id, &client.GetSalesforceAccessTokenParams{MinValidity: &minValidity})
			if err != nil {
				t.Error(err)
				return
			}
			p := tok.ApplicationproblemJSON409
			if p == nil || p.Code != "reauth_required" || p.ReauthUrl == nil || p.Reason == nil {
				t.Errorf("GetSalesforceAccessToken: status %d, body %s", tok.StatusCode(), tok.Body)
			}
		})
	}
	wg.Wait()
}
