package handlers_test

import (
	"context"
	"encoding/json"
	"net/http"
	"net/url"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/tokenwarm/tokenwarm/emulator"
	"github.com/tokenwarm/tokenwarm/handlers"
	"github.com/tokenwarm/tokenwarm/internal/rawdb"
	"github.com/tokenwarm/tokenwarm/models"
	"github.com/tokenwarm/tokenwarm/warmer"
	"github.com/tokenwarm/tokenwarm/webhooks"
)

// personConn is the admin API's view of who a connection belongs to.
type personConn struct {
	ID          string     `json:"id"`
	OrgID       string     `json:"org_id"`
	OrgName     string     `json:"org_name"`
	UserName    string     `json:"user_name"`
	Username    string     `json:"username"`
	Email       string     `json:"email"`
	Status      string     `json:"status"`
	ReauthDueAt *time.Time `json:"reauth_due_at"`
	ReauthSoon  bool       `json:"reauth_soon"`
}

func (w *adminWorld) search(t *testing.T, query url.Values) []personConn {
	t.Helper()
	resp, body := w.admin("GET", "/admin/v1/connections?"+query.Encode(), w.key)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET connections?%s: %d %s", query.Encode(), resp.StatusCode, body)
	}
	return decode[struct {
		Connections []personConn `json:"connections"`
	}](t, body).Connections
}

// onlyIDs lists the connections' IDs, sorted.
func onlyIDs(cs []personConn) []string {
	out := []string{}
	for _, c := range cs {
		out = append(out, c.ID)
	}
	sort.Strings(out)
	return out
}

// The real connect flow captures who the grant belongs to from the
// emulator's identity service and REST API; the admin API shows and
// searches it, webhooks carry it (when configured), and an admin erases it.
func TestAdminPeople(t *testing.T) {
	for _, dialect := range []models.Dialect{models.SQLite, models.Postgres} {
		t.Run(string(dialect), func(t *testing.T) {
			w := adminWorldOf(t, newWorld(t, dialect))
			w.db.SetAnnouncer(webhooks.Announcer([]webhooks.Endpoint{{URL: "https://hooks.example.com/in", Secret: "0123456789abcdef"}}))
			w.db.AnnouncePeople(webhooks.Announces)
			ada := w.connect("ada.lovelace@example.com")
			grace := w.connect("grace_hopper@example.com")

			resp, body := w.admin("GET", "/admin/v1/connections/"+ada, w.key)
			if resp.StatusCode != http.StatusOK {
				t.Fatalf("detail: %d %s", resp.StatusCode, body)
			}
			got := decode[struct {
				Connection personConn `json:"connection"`
			}](t, body).Connection
			if got.UserName != "Ada Lovelace" || got.Username != "ada.lovelace@example.com" || got.Email != "ada.lovelace@example.com" ||
				got.OrgName != "Emulated Org" || got.ReauthDueAt != nil || got.ReauthSoon {
				t.Fatalf("the admin API does not name the person: %s", body)
			}
			for q, want := range map[string][]string{"lovelace": {ada}, "GRACE_HOP": {grace}, "emulated org": {ada, grace}, "%": {}} {
				sort.Strings(want)
				if ids := onlyIDs(w.search(t, url.Values{"q": {q}})); strings.Join(ids, ",") != strings.Join(want, ",") {
					t.Errorf("q=%q: %v, want %v", q, ids, want)
				}
			}
			resp, body = w.admin("GET", "/admin/v1/connections?q="+strings.Repeat("x", 101), w.key)
			if p := decode[problem](t, body); resp.StatusCode != http.StatusBadRequest || p.Code != "invalid_parameter" {
				t.Fatalf("an overlong search: %d %s", resp.StatusCode, body)
			}
			resp, body = w.admin("GET", "/admin/v1/connections?reauth_soon=true", w.key)
			if resp.StatusCode != http.StatusBadRequest {
				t.Fatalf("reauth_soon without a maximum age: %d %s", resp.StatusCode, body)
			}

			// A webhook announces the revocation with the person in it.
			if resp, body := w.admin("POST", "/admin/v1/connections/"+grace+"/revoke", w.key); resp.StatusCode != http.StatusOK {
				t.Fatalf("revoke: %d %s", resp.StatusCode, body)
			}
			var rows []models.WebhookDelivery
			rawdb.Gorm(w.db).Where("event_type = ?", webhooks.TypeRevoked).Find(&rows)
			if len(rows) != 1 {
				t.Fatalf("%d revoked deliveries", len(rows))
			}
			var payload struct {
				Data map[string]any `json:"data"`
			}
			if err := json.Unmarshal([]byte(rows[0].Payload), &payload); err != nil {
				t.Fatal(err)
			}
			if d := payload.Data; d["connection_id"] != grace || d["user_name"] != "Grace Hopper" || d["username"] != "grace_hopper@example.com" ||
				d["email"] != "grace_hopper@example.com" || d["org_name"] != "Emulated Org" || d["org_id"] != w.emu.OrgID() {
				t.Fatalf("webhook payload %s", rows[0].Payload)
			}

			// Erasure: the person is gone from the API and from searches;
			// the connection still works.
			resp, body = w.admin("DELETE", "/admin/v1/connections/"+ada+"/identity", w.key)
			erased := decode[personConn](t, body)
			if resp.StatusCode != http.StatusOK || erased.UserName != "" || erased.Username != "" || erased.Email != "" || erased.Status != models.StatusActive {
				t.Fatalf("erase: %d %s", resp.StatusCode, body)
			}
			if ids := w.search(t, url.Values{"q": {"lovelace"}}); len(ids) != 0 {
				t.Fatalf("an erased person is still found: %v", ids)
			}
			_, body = w.admin("GET", "/admin/v1/connections/"+ada, w.key)
			if strings.Contains(string(body), "Lovelace") || !strings.Contains(string(body), `"identity_erased"`) || !strings.Contains(string(body), "ops-alice") {
				t.Fatalf("after erasure: %s", body)
			}
			if resp, _ := w.admin("DELETE", "/admin/v1/connections/"+grace+"x/identity", w.key); resp.StatusCode != http.StatusNotFound {
				t.Fatalf("erasing an unknown connection: %d", resp.StatusCode)
			}
			if resp, _ := w.admin("DELETE", "/admin/v1/connections/"+ada+"/identity", ""); resp.StatusCode != http.StatusUnauthorized {
				t.Fatalf("erasing without a key: %d", resp.StatusCode)
			}
			// Re-authorization captures the person again.
			w.connect("ada.lovelace@example.com")
			if ids := onlyIDs(w.search(t, url.Values{"q": {"lovelace"}})); len(ids) != 1 || ids[0] != ada {
				t.Fatalf("re-authorization did not capture the person again: %v", ids)
			}
		})
	}
}

// signIn signs the browser in with the world's admin key.
func (w *adminWorld) signIn(t *testing.T, ctx context.Context) {
	t.Helper()
	run(t, ctx, "sign in",
		chromedp.Navigate(w.srv.URL+"/admin/"),
		chromedp.WaitVisible("#key", chromedp.ByID),
		chromedp.SendKeys("#key", w.key, chromedp.ByID),
		chromedp.Click("#signin", chromedp.ByID),
		chromedp.WaitVisible("#needs-reauth", chromedp.ByID))
}

// Acceptance f: in Chromium, the overview and detail pages show the
// user's name and username, and the connections search finds a connection
// by either. With SALESFORCE_REFRESH_MAX_AGE, a connection approaching it
// raises reauth_soon once and shows on the overview ahead of time.
func TestAdminUIPeople(t *testing.T) {
	const maxAge, soon = 90 * 24 * time.Hour, 7 * 24 * time.Hour
	w := adminWorldOf(t, newWorldWith(t, models.Postgres, nil, func(c *handlers.APIConfig) { c.RefreshMaxAge, c.ReauthSoon = maxAge, soon }))
	ctx := browser(t)
	ada := w.connect("ada.lovelace@example.com")
	grace := w.connect("grace.hopper@example.com")
	// Ada authorized 85 days ago: her grant ends in 5 days.
	rawdb.Gorm(w.db).Model(&models.Connection{}).Where("id = ?", ada).Update("authorized_at", w.sfClock.Now().Add(-85*24*time.Hour))

	w.db.SetAnnouncer(webhooks.Announcer([]webhooks.Endpoint{{URL: "https://hooks.example.com/in", Secret: "0123456789abcdef"}}))
	w.db.AnnouncePeople(webhooks.Announces)
	wm := warmer.New(w.vault, w.db, w.sfClock, nil, warmer.Config{RefreshMaxAge: maxAge, ReauthSoon: soon})
	for range 2 {
		if _, err := wm.RunOnce(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	var evs []models.Event
	rawdb.Gorm(w.db).Where("kind = ?", models.EventReauthSoon).Find(&evs)
	if len(evs) != 1 || *evs[0].ConnectionID != ada || !strings.Contains(evs[0].Detail, "re-authorize") {
		t.Fatalf("reauth_soon events after two passes: %+v", evs)
	}
	var hooks []models.WebhookDelivery
	rawdb.Gorm(w.db).Where("event_type = ?", webhooks.TypeReauthSoon).Find(&hooks)
	if len(hooks) != 1 || !strings.Contains(hooks[0].Payload, `"user_name":"Ada Lovelace"`) || !strings.Contains(hooks[0].Payload, `"connection_id":"`+ada+`"`) {
		t.Fatalf("reauth_soon webhooks: %+v", hooks)
	}
	soonList := w.search(t, url.Values{"reauth_soon": {"true"}})
	if len(soonList) != 1 || soonList[0].ID != ada || !soonList[0].ReauthSoon || soonList[0].ReauthDueAt == nil {
		t.Fatalf("reauth_soon filter: %+v", soonList)
	}

	w.signIn(t, ctx)
	html := w.pageHTML(t, ctx)
	for _, want := range []string{"Ada Lovelace", "ada.lovelace@example.com"} {
		if !strings.Contains(between(html, `id="reauth-soon"`, "</div>"), want) {
			t.Fatalf("the overview's re-authorization-due section lacks %q:\n%s", want, html)
		}
	}
	if strings.Contains(between(html, `id="reauth-soon"`, "</div>"), "Grace Hopper") {
		t.Fatalf("a fresh grant is listed as due:\n%s", html)
	}
	screenshot(t, ctx, "adminui-people-overview.png")

	// The detail page names the person.
	var name, username, email, org string
	run(t, ctx, "detail",
		chromedp.Navigate(w.srv.URL+"/admin/connections/"+grace),
		chromedp.WaitVisible("#who", chromedp.ByID),
		chromedp.Text("#who", &name, chromedp.ByID),
		chromedp.Text("#username", &username, chromedp.ByID),
		chromedp.Text("#user-email", &email, chromedp.ByID),
		chromedp.Text("#org", &org, chromedp.ByID))
	if name != "Grace Hopper" || username != "grace.hopper@example.com" || email != "grace.hopper@example.com" || !strings.HasPrefix(org, "Emulated Org") {
		t.Fatalf("detail shows %q %q %q %q", name, username, email, org)
	}
	w.pageHTML(t, ctx)
	screenshot(t, ctx, "adminui-people-detail.png")

	// The search box finds a connection by name and by username.
	for q, want := range map[string]string{"hopper": grace, "ADA.LOVELACE@": ada} {
		run(t, ctx, "search "+q,
			chromedp.Navigate(w.srv.URL+"/admin/connections"),
			chromedp.WaitVisible("#q", chromedp.ByID),
			chromedp.SendKeys("#q", q, chromedp.ByID),
			chromedp.Click("#search", chromedp.ByID),
			chromedp.WaitVisible("#matching", chromedp.ByID))
		html := w.pageHTML(t, ctx)
		table := between(html, `id="connections"`, "</table>")
		other := ada
		if want == ada {
			other = grace
		}
		if !strings.Contains(table, "/admin/connections/"+want) || strings.Contains(table, "/admin/connections/"+other) {
			t.Fatalf("search %q:\n%s", q, table)
		}
		var value string
		run(t, ctx, "search box keeps its text", chromedp.Value("#q", &value, chromedp.ByID))
		if value != q {
			t.Fatalf("search box shows %q after searching %q", value, q)
		}
	}
	screenshot(t, ctx, "adminui-people-search.png")
}

// Without SALESFORCE_REFRESH_MAX_AGE nothing is raised, however old the
// authorization, and the overview has no such section.
func TestAdminReauthSoonOff(t *testing.T) {
	w := newAdminWorld(t)
	id := w.connect("old.timer@example.com")
	rawdb.Gorm(w.db).Model(&models.Connection{}).Where("id = ?", id).Update("authorized_at", w.sfClock.Now().Add(-400*24*time.Hour))
	wm := warmer.New(w.vault, w.db, w.sfClock, nil, warmer.Config{})
	if _, err := wm.RunOnce(context.Background()); err != nil {
		t.Fatal(err)
	}
	var n int64
	rawdb.Gorm(w.db).Model(&models.Event{}).Where("kind = ?", models.EventReauthSoon).Count(&n)
	if n != 0 {
		t.Fatalf("%d reauth_soon events without a maximum age", n)
	}
	_, body := w.admin("GET", "/admin/v1/connections/"+id, w.key)
	if c := decode[struct {
		Connection personConn `json:"connection"`
	}](t, body).Connection; c.ReauthSoon || c.ReauthDueAt != nil {
		t.Fatalf("without the policy: %s", body)
	}
	if emulator.DisplayName("old.timer@example.com") != "Old Timer" {
		t.Fatal("the emulator's display name changed; the tests above rely on it")
	}
}
