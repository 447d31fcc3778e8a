package handlers_test

import (
	"context"
	"fmt"
	"github.com/tokenwarm/tokenwarm/internal/rawdb"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/tokenwarm/tokenwarm/adminkeys"
	"github.com/tokenwarm/tokenwarm/models"
)

// adminWorld is the world with an admin key; it keeps every admin response
// body so tests can prove that none carries a Salesforce token.
type adminWorld struct {
	*world
	keys   *adminkeys.Store
	key    string
	bodies [][]byte
}

func newAdminWorld(t *testing.T) *adminWorld {
	return adminWorldOf(t, newWorld(t, models.Postgres))
}

func adminWorldOf(t *testing.T, world *world) *adminWorld {
	w := &adminWorld{world: world}
	w.keys = adminkeys.New(w.db, nil)
	key, err := w.keys.Create(context.Background(), "ops-alice")
	if err != nil {
		t.Fatal(err)
	}
	w.key = key
	t.Cleanup(func() {
		for _, b := range w.bodies {
			for _, tok := range w.emu.IssuedTokens() {
				if strings.Contains(string(b), tok) {
					t.Errorf("a Salesforce token appears in an admin response: %s", b)
					return
				}
			}
		}
	})
	return w
}

func (w *adminWorld) admin(method, path, key string) (*http.Response, []byte) {
	w.t.Helper()
	req, _ := http.NewRequest(method, w.url(path), nil)
	if key != "" {
		req.Header.Set("Authorization", "Bearer "+key)
	}
	resp, body := w.do(req)
	w.bodies = append(w.bodies, body)
	return resp, body
}

// connect connects a Salesforce user through the real flow and returns the
// connection ID.
func (w *adminWorld) connect(username string) string {
	w.t.Helper()
	code, verifier := w.connectApp(username, nil)
	return w.session(code, verifier).ConnectionIDs[0]
}

type adminConn struct {
	ID                  string    `json:"id"`
	OrgID               string    `json:"org_id"`
	UserID              string    `json:"user_id"`
	Owner               string    `json:"owner"`
	Status              string    `json:"status"`
	LastRefreshedAt     time.Time `json:"last_refreshed_at"`
	IdleBudgetSeconds   int64     `json:"idle_budget_seconds"`
	ConsecutiveFailures int       `json:"consecutive_failures"`
}

type adminPage struct {
	Connections []adminConn `json:"connections"`
	NextCursor  string      `json:"next_cursor"`
}

type adminEvent struct {
	Kind   string `json:"kind"`
	Cause  string `json:"cause"`
	Detail string `json:"detail"`
}

func TestAdminAuthFailuresLookAlike(t *testing.T) {
	w := newAdminWorld(t)
	revoked, _ := w.keys.Create(context.Background(), "ops-bob")
	if err := w.keys.Revoke(context.Background(), "ops-bob"); err != nil {
		t.Fatal(err)
	}
	id := w.connect("auth@example.com")
	var first string
	for name, key := range map[string]string{"missing": "", "wrong": "twa_" + strings.Repeat("A", 43), "revoked": revoked,
		"not an admin key": "eyJhbGciOiJFZERTQSJ9.e30.c2ln"} {
		for _, r := range []struct{ method, path string }{
			{"GET", "/admin/v1/connections"}, {"GET", "/admin/v1/connections/" + id}, {"POST", "/admin/v1/connections/" + id + "/refresh"},
			{"POST", "/admin/v1/connections/" + id + "/reauth-link"}, {"POST", "/admin/v1/connections/" + id + "/revoke"}, {"GET", "/admin/v1/summary"},
		} {
			resp, body := w.admin(r.method, r.path, key)
			p := decode[problem](t, body)
			if resp.StatusCode != 401 || p.Code != "unauthorized" || resp.Header.Get("WWW-Authenticate") == "" {
				t.Fatalf("%s key, %s %s: %d %s", name, r.method, r.path, resp.StatusCode, body)
			}
			// Same body for every failure (the instance aside).
			b := strings.Replace(string(body), r.path, "", 1)
			if first == "" {
				first = b
			} else if b != first {
				t.Fatalf("%s key: body %s differs from %s", name, b, first)
			}
		}
	}
	var c models.Connection
	rawdb.Gorm(w.db).Where("id = ?", id).Take(&c)
	if c.Status != models.StatusActive || w.emu.Stats().Revocations != 0 {
		t.Fatal("an unauthorized admin call changed something")
	}
}

// Paging by cursor neither repeats nor skips connections when new ones are
// created between pages.
func TestAdminListPagesStableUnderInserts(t *testing.T) {
	w := newAdminWorld(t)
	base := time.Now().UTC().Add(-time.Hour).Truncate(time.Microsecond)
	insert := func(n int, at time.Time) []string {
		var ids []string
		for i := range n {
			id := uuid.NewString()
			c := models.Connection{ID: id, Owner: "owner-1", OrgID: "00Dpage", UserID: fmt.Sprintf("005-%s", id[:8]), LoginURL: w.emuSrv.URL,
				InstanceURL: w.emuSrv.URL, Status: models.StatusActive, LastRefreshedAt: at, NextWarmAt: at, CreatedAt: at.Add(time.Duration(i/2) * time.Second), UpdatedAt: at}
			if err := rawdb.Gorm(w.db).Create(&c).Error; err != nil {
				t.Fatal(err)
			}
			ids = append(ids, id)
		}
		return ids
	}
	// Pairs share created_at, so the id breaks ties across page ends.
	older := insert(7, base)

	seen := map[string]int{}
	resp, body := w.admin("GET", "/admin/v1/connections?limit=3", w.key)
	if resp.StatusCode != 200 {
		t.Fatalf("page 1: %d %s", resp.StatusCode, body)
	}
	page := decode[adminPage](t, body)
	if len(page.Connections) != 3 || page.NextCursor == "" {
		t.Fatalf("page 1: %s", body)
	}
	for _, c := range page.Connections {
		seen[c.ID]++
	}
	newer := insert(2, time.Now().UTC())
	for page.NextCursor != "" {
		resp, body = w.admin("GET", "/admin/v1/connections?limit=3&cursor="+url.QueryEscape(page.NextCursor), w.key)
		if resp.StatusCode != 200 {
			t.Fatalf("next page: %d %s", resp.StatusCode, body)
		}
		page = decode[adminPage](t, body)
		for _, c := range page.Connections {
			seen[c.ID]++
		}
	}
	for _, id := range append(older, newer...) {
		if seen[id] != 1 {
			t.Fatalf("connection %s seen %d times", id, seen[id])
		}
	}
	if len(seen) != len(older)+len(newer) {
		t.Fatalf("saw %d connections, want %d", len(seen), len(older)+len(newer))
	}

	// Filters and bad parameters.
	resp, body = w.admin("GET", "/admin/v1/connections?org_id=00Dpage&status=active&idle_budget_below_days=30&limit=200", w.key)
	if p := decode[adminPage](t, body); resp.StatusCode != 200 || len(p.Connections) != 7 {
		t.Fatalf("idle filter: %d, %d connections", resp.StatusCode, len(p.Connections))
	}
	resp, body = w.admin("GET", "/admin/v1/connections?status=revoked", w.key)
	if p := decode[adminPage](t, body); resp.StatusCode != 200 || len(p.Connections) != 0 {
		t.Fatalf("status filter: %d %s", resp.StatusCode, body)
	}
	for _, q := range []string{"limit=0", "limit=201", "status=dead", "cursor=bm9wZQ", "idle_budget_below_days=-1"} {
		resp, body := w.admin("GET", "/admin/v1/connections?"+q, w.key)
		if resp.StatusCode != 400 || decode[problem](t, body).Code != "invalid_parameter" {
			t.Fatalf("%s: %d %s", q, resp.StatusCode, body)
		}
	}
}

func TestAdminRefreshRevokeAndAudit(t *testing.T) {
	w := newAdminWorld(t)
	id := w.connect("admin@example.com")
	other := w.connect("bystander@example.com")

	resp, body := w.admin("GET", "/admin/v1/connections/"+id, w.key)
	detail := decode[struct {
		Connection adminConn    `json:"connection"`
		Events     []adminEvent `json:"events"`
	}](t, body)
	if resp.StatusCode != 200 || detail.Connection.ID != id || detail.Connection.Status != "active" || len(detail.Events) == 0 ||
		detail.Connection.IdleBudgetSeconds <= 29*24*3600 {
		t.Fatalf("get: %d %s", resp.StatusCode, body)
	}
	for _, bad := range []string{uuid.NewString(), "not-a-uuid"} {
		if resp, body := w.admin("GET", "/admin/v1/connections/"+bad, w.key); resp.StatusCode != 404 || decode[problem](t, body).Code != "not_found" {
			t.Fatalf("get %s: %d %s", bad, resp.StatusCode, body)
		}
	}

	// A forced refresh reaches Salesforce exactly once, though the stored
	// access token is fresh.
	before := w.emu.Stats().Refreshes
	w.sfClock.Advance(time.Hour)
	resp, body = w.admin("POST", "/admin/v1/connections/"+id+"/refresh", w.key)
	refreshed := decode[adminConn](t, body)
	if resp.StatusCode != 200 || refreshed.ID != id || !refreshed.LastRefreshedAt.After(detail.Connection.LastRefreshedAt) {
		t.Fatalf("refresh: %d %s", resp.StatusCode, body)
	}
	if got := w.emu.Stats().Refreshes - before; got != 1 {
		t.Fatalf("forced refresh made %d upstream refreshes, want 1", got)
	}

	resp, body = w.admin("GET", "/admin/v1/summary", w.key)
	sum := decode[struct {
		Total    int64            `json:"total"`
		ByStatus map[string]int64 `json:"by_status"`
		MinIdle  *int64           `json:"min_idle_budget_seconds"`
		Under7   int64            `json:"idle_budget_under_7_days"`
	}](t, body)
	if resp.StatusCode != 200 || sum.Total != 2 || sum.ByStatus["active"] != 2 || sum.MinIdle == nil || *sum.MinIdle <= 29*24*3600 || sum.Under7 != 0 {
		t.Fatalf("summary: %d %s", resp.StatusCode, body)
	}

	// Revoke kills the chain at Salesforce, then answers the same view
	// without calling anyone again.
	var c models.Connection
	rawdb.Gorm(w.db).Where("id = ?", id).Take(&c)
	live, _ := w.emu.CurrentRefreshToken(c.OrgID, c.UserID)
	resp, body = w.admin("POST", "/admin/v1/connections/"+id+"/revoke", w.key)
	if resp.StatusCode != 200 || decode[adminConn](t, body).Status != "revoked" {
		t.Fatalf("revoke: %d %s", resp.StatusCode, body)
	}
	if w.emu.ChainAlive(live) || w.emu.Stats().Revocations != 1 {
		t.Fatalf("the refresh token is still alive at Salesforce (%+v)", w.emu.Stats())
	}
	resp, again := w.admin("POST", "/admin/v1/connections/"+id+"/revoke", w.key)
	if resp.StatusCode != 200 || string(again) != string(body) || w.emu.Stats().Revocations != 1 {
		t.Fatalf("second revoke: %d %s (revocations %d)", resp.StatusCode, again, w.emu.Stats().Revocations)
	}
	rawdb.Gorm(w.db).Where("id = ?", id).Take(&c)
	if c.RefreshTokenSealed != "" || c.AccessTokenSealed != "" {
		t.Fatal("revoked connection still stores tokens")
	}
	if resp, body := w.admin("POST", "/admin/v1/connections/"+id+"/refresh", w.key); resp.StatusCode != 409 || decode[problem](t, body).Code != "connection_revoked" {
		t.Fatalf("refresh of a revoked connection: %d %s", resp.StatusCode, body)
	}
	var bystander models.Connection
	rawdb.Gorm(w.db).Where("id = ?", other).Take(&bystander)
	if bystander.Status != models.StatusActive {
		t.Fatal("revoking one connection touched another")
	}

	// Every admin action is on record with the key's name, never the key.
	var evs []models.Event
	rawdb.Gorm(w.db).Where("connection_id = ? AND cause = ?", id, "admin").Order("id").Find(&evs)
	kinds := map[string]bool{}
	for _, e := range evs {
		if strings.Contains(e.Detail, w.key) || strings.Contains(e.Detail, w.key[4:]) {
			t.Fatal("an event holds the admin key")
		}
		if strings.Contains(e.Detail, "ops-alice") {
			kinds[e.Kind] = true
		}
	}
	if !kinds["admin_refresh"] || !kinds[models.EventRevoked] {
		t.Fatalf("audit events %+v", evs)
	}
	resp, body = w.admin("GET", "/admin/v1/connections/"+id, w.key)
	if resp.StatusCode != 200 || !strings.Contains(string(body), `revoked by admin key \"ops-alice\"`) {
		t.Fatalf("events of the revoked connection: %s", body)
	}
}

// The link an admin hands out re-authorizes a dead connection in place.
func TestAdminReauthLink(t *testing.T) {
	w := newAdminWorld(t)
	code, verifier := w.connectApp("relink@example.com", nil)
	dt := w.session(code, verifier)
	id := dt.ConnectionIDs[0]
	var c models.Connection
	rawdb.Gorm(w.db).Where("id = ?", id).Take(&c)
	dead, _ := w.emu.CurrentRefreshToken(c.OrgID, c.UserID)
	w.emu.ExpireChainOf(dead)

	resp, body := w.admin("POST", "/admin/v1/connections/"+id+"/refresh", w.key)
	p := decode[problem](t, body)
	if resp.StatusCode != 409 || p.Code != "reauth_required" || p.ReauthURL == "" {
		t.Fatalf("refresh of a dead connection: %d %s", resp.StatusCode, body)
	}

	resp, body = w.admin("POST", "/admin/v1/connections/"+id+"/reauth-link", w.key)
	link := decode[struct {
		URL       string    `json:"url"`
		ExpiresAt time.Time `json:"expires_at"`
	}](t, body)
	if resp.StatusCode != 200 || !strings.HasPrefix(link.URL, w.srv.URL+"/v1/oauth/authorize?") || !link.ExpiresAt.After(w.sfClock.Now()) {
		t.Fatalf("reauth link: %d %s", resp.StatusCode, body)
	}
	if end := w.follow(link.URL + "&" + url.Values{"login_hint": {"relink@example.com"}}.Encode()); end != "" {
		t.Fatalf("re-auth link ended at %q, want the done page", end)
	}
	resp, body = w.admin("GET", "/admin/v1/connections/"+id, w.key)
	if resp.StatusCode != 200 || decode[struct {
		Connection adminConn `json:"connection"`
	}](t, body).Connection.Status != "active" {
		t.Fatalf("after re-authorization: %d %s", resp.StatusCode, body)
	}
	if resp, body := w.pull(id, dt.AccessToken, "?min_validity=0"); resp.StatusCode != 200 {
		t.Fatalf("device pull after re-authorization: %d %s", resp.StatusCode, body)
	}
	var n int64
	rawdb.Gorm(w.db).Model(&models.Event{}).Where("connection_id = ? AND kind = ? AND cause = ? AND detail LIKE ?", id, "admin_reauth_link", "admin", "%ops-alice%").Count(&n)
	if n != 1 {
		t.Fatalf("%d reauth-link audit events, want 1", n)
	}
}
