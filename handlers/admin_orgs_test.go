package handlers_test

import (
	"bytes"
	"encoding/json"
	"net/http"
	"testing"
	"time"
)

// An org's own refresh-token idle TTL, set through the admin API, is what
// the connection views count the idle budget against; 0 goes back to the
// default, and nonsense is refused without changing anything.
func TestAdminOrgIdleTTL(t *testing.T) {
	w := newAdminWorld(t)
	id := w.connect("org-ttl@example.com")
	var conn adminConn
	_, body := w.admin(http.MethodGet, "/admin/v1/connections/"+id, w.key)
	var detail struct {
		Connection adminConn `json:"connection"`
	}
	if err := json.Unmarshal(body, &detail); err != nil {
		t.Fatal(err)
	}
	conn = detail.Connection
	day := int64(24 * time.Hour / time.Second)
	if conn.IdleBudgetSeconds < 29*day {
		t.Fatalf("default budget %d", conn.IdleBudgetSeconds)
	}
	put := func(org string, body string) (*http.Response, []byte) {
		req, _ := http.NewRequest(http.MethodPut, w.url("/admin/v1/orgs/"+org+"/refresh-idle-ttl"), bytes.NewBufferString(body))
		req.Header.Set("Authorization", "Bearer "+w.key)
		req.Header.Set("Content-Type", "application/json")
		return w.do(req)
	}
	if resp, b := put(conn.OrgID, `{"refresh_idle_ttl_seconds": 864000}`); resp.StatusCode != 200 {
		t.Fatalf("set: %d %s", resp.StatusCode, b)
	}
	_, body = w.admin(http.MethodGet, "/admin/v1/connections/"+id, w.key)
	if err := json.Unmarshal(body, &detail); err != nil {
		t.Fatal(err)
	}
	if b := detail.Connection.IdleBudgetSeconds; b > 10*day || b < 10*day-3600 {
		t.Fatalf("budget under the org's 10 days: %d", b)
	}
	var orgs struct {
		Default int64 `json:"default_refresh_idle_ttl_seconds"`
		Orgs    []struct {
			OrgID   string `json:"org_id"`
			Seconds int64  `json:"refresh_idle_ttl_seconds"`
		} `json:"orgs"`
	}
	_, body = w.admin(http.MethodGet, "/admin/v1/orgs", w.key)
	if err := json.Unmarshal(body, &orgs); err != nil || orgs.Default != 30*day || len(orgs.Orgs) != 1 || orgs.Orgs[0].Seconds != 10*day {
		t.Fatalf("orgs %s", body)
	}
	for _, bad := range []struct{ org, body string }{
		{conn.OrgID, `{"refresh_idle_ttl_seconds": 60}`},
		{conn.OrgID, `{"refresh_idle_ttl_seconds": -1}`},
		{conn.OrgID, `{}`},
		{"not-an-org", `{"refresh_idle_ttl_seconds": 864000}`},
	} {
		if resp, b := put(bad.org, bad.body); resp.StatusCode != 400 {
			t.Fatalf("%s %s: %d %s", bad.org, bad.body, resp.StatusCode, b)
		}
	}
	if resp, b := put(conn.OrgID, `{"refresh_idle_ttl_seconds": 0}`); resp.StatusCode != 200 {
		t.Fatalf("reset: %d %s", resp.StatusCode, b)
	}
	_, body = w.admin(http.MethodGet, "/admin/v1/orgs", w.key)
	if err := json.Unmarshal(body, &orgs); err != nil || len(orgs.Orgs) != 0 {
		t.Fatalf("after reset %s", body)
	}
}
