package handlers_test

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"

	"golang.org/x/net/http/httpguts"

	"github.com/tokenwarm/tokenwarm/models"
)

// FuzzDeviceTokenEndpoint throws arbitrary bodies at POST /v1/device/token.
// Whatever arrives, the answer is a 4xx with an RFC 6749 body (or problem
// details for an oversized body), never a 5xx, never a session.
func FuzzDeviceTokenEndpoint(f *testing.F) {
	w := newWorld(f, models.SQLite)
	seeds := []struct{ ct, body string }{
		{"application/x-www-form-urlencoded", "grant_type=handoff_code&code=twh_x&code_verifier=" + strings.Repeat("a", 43)},
		{"application/x-www-form-urlencoded", "grant_type=refresh_token&refresh_token=twr_abc"},
		{"application/x-www-form-urlencoded", "grant_type=refresh_token&grant_type=handoff_code"},
		{"application/x-www-form-urlencoded", "grant_type=authorization_code&code=twh_x&code_verifier=" + strings.Repeat("a", 43) + "&redirect_uri=app:/x&client_id=com.acme.app"},
		{"application/x-www-form-urlencoded", "grant_type=authorization_code&client_id=unknown.client"},
		{"application/x-www-form-urlencoded", "%zz=%%&grant_type"},
		{"application/json", `{"grant_type":"refresh_token"}`},
		{"multipart/form-data; boundary=x", "--x\r\n"},
		{"", ""},
	}
	for _, s := range seeds {
		f.Add(s.ct, s.body)
	}
	f.Fuzz(func(t *testing.T, contentType, body string) {
		if !httpguts.ValidHeaderFieldValue(contentType) {
			t.Skip("no HTTP client can send this header")
		}
		req, err := http.NewRequest(http.MethodPost, w.srv.URL+"/v1/device/token", strings.NewReader(body))
		if err != nil {
			t.Skip()
		}
		req.Header.Set("Content-Type", contentType)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var out map[string]any
		if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
			t.Fatalf("status %d with a body that is not JSON: %v", resp.StatusCode, err)
		}
		switch {
		case resp.StatusCode == http.StatusBadRequest:
			if _, ok := out["error"].(string); !ok {
				t.Fatalf("400 without an RFC 6749 error: %v", out)
			}
		case resp.StatusCode == http.StatusUnauthorized:
			if out["error"] != "invalid_client" {
				t.Fatalf("401 without invalid_client: %v", out)
			}
		case resp.StatusCode == http.StatusRequestEntityTooLarge:
			if out["code"] != "body_too_large" {
				t.Fatalf("413 without problem code: %v", out)
			}
		default:
			t.Fatalf("status %d for a fuzzed body: %v", resp.StatusCode, out)
		}
	})
}
