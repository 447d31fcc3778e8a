package handlers_test

import (
	"context"
	"fmt"
	"github.com/tokenwarm/tokenwarm/internal/rawdb"
	"html"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/chromedp"
	"github.com/google/uuid"

	"github.com/tokenwarm/tokenwarm/models"
	"github.com/tokenwarm/tokenwarm/vault"
)

const chromiumPath = "/usr/bin/chromium"

// browser starts a fresh headless Chromium for one test. Without Chromium
// the test fails in CI and is skipped locally.
func browser(t *testing.T) context.Context {
	t.Helper()
	if _, err := os.Stat(chromiumPath); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("%s is missing: scripts/test installs it (apt-get install chromium)", chromiumPath)
		}
		t.Skipf("%s is missing; install chromium (scripts/test does) to run the admin UI browser tests", chromiumPath)
	}
	// Not t.TempDir: Chromium's helpers may still write as the test ends.
	dataDir, err := os.MkdirTemp("", "tokenwarm-chromium-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(dataDir) })
	opts := []chromedp.ExecAllocatorOption{
		chromedp.ExecPath(chromiumPath),
		chromedp.Headless,
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.NoFirstRun,
		chromedp.NoDefaultBrowserCheck,
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-dev-shm-usage", true),
		chromedp.UserDataDir(dataDir),
		chromedp.WindowSize(412, 915), // a phone
	}
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancelCtx := chromedp.NewContext(actx)
	ctx, cancelTimeout := context.WithTimeout(ctx, 2*time.Minute)
	t.Cleanup(func() { cancelTimeout(); cancelCtx(); cancelAlloc() })
	if err := chromedp.Run(ctx); err != nil {
		t.Fatalf("starting chromium: %v", err)
	}
	return ctx
}

func run(t *testing.T, ctx context.Context, what string, actions ...chromedp.Action) {
	t.Helper()
	if err := chromedp.Run(ctx, actions...); err != nil {
		t.Fatalf("%s: %v", what, err)
	}
}

func screenshot(t *testing.T, ctx context.Context, name string) {
	t.Helper()
	var png []byte
	dir := filepath.Join("..", "artifacts")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	run(t, ctx, "png "+name, chromedp.CaptureScreenshot(&png))
	if err := os.WriteFile(filepath.Join(dir, name), png, 0o644); err != nil {
		t.Fatal(err)
	}
}

// pageHTML returns the page and checks it carries no Salesforce token.
func (w *adminWorld) pageHTML(t *testing.T, ctx context.Context) string {
	t.Helper()
	var html string
	run(t, ctx, "read page", chromedp.OuterHTML("html", &html, chromedp.ByQuery))
	for _, tok := range w.emu.IssuedTokens() {
		if strings.Contains(html, tok) {
			t.Fatalf("a Salesforce token appears on an admin page")
		}
	}
	return html
}

func TestAdminUIBrowser(t *testing.T) {
	w := newAdminWorld(t)
	ctx := browser(t)
	dead := w.connect("dead@example.com")
	other := w.connect("other@example.com")

	// The emulator kills dead's refresh token; a pull through the vault
	// finds out and marks the connection needs_reauth.
	var c models.Connection
	rawdb.Gorm(w.db).Where("id = ?", dead).Take(&c)
	rt, _ := w.emu.CurrentRefreshToken(c.OrgID, c.UserID)
	w.emu.ExpireChainOf(rt)
	w.sfClock.Advance(3 * time.Hour)
	if _, err := w.vault.Access(context.Background(), dead, vault.Request{Cause: vault.CausePull}); vault.ErrorCode(err) != vault.CodeReauthRequired {
		t.Fatalf("pull of the dead connection: %v", err)
	}

	// A wrong key is refused; the right one signs in.
	run(t, ctx, "wrong key",
		chromedp.Navigate(w.srv.URL+"/admin/"),
		chromedp.WaitVisible("#key", chromedp.ByID),
		chromedp.SendKeys("#key", "twk_wrong", chromedp.ByID),
		chromedp.Click("#signin", chromedp.ByID),
		chromedp.WaitVisible("#error", chromedp.ByID))
	run(t, ctx, "log in",
		chromedp.SendKeys("#key", w.key, chromedp.ByID),
		chromedp.Click("#signin", chromedp.ByID),
		chromedp.WaitVisible("#needs-reauth", chromedp.ByID))
	html := w.pageHTML(t, ctx)
	if !strings.Contains(html, "/admin/connections/"+dead) || !strings.Contains(html, `badge-needs_reauth`) {
		t.Fatalf("overview does not list the needs_reauth connection:\n%s", html)
	}
	var n string
	run(t, ctx, "counts", chromedp.Text("#count-needs_reauth", &n, chromedp.ByID))
	if n != "1" {
		t.Fatalf("needs_reauth count %q", n)
	}
	screenshot(t, ctx, "adminui-overview.png")

	// The connections table filters by status.
	run(t, ctx, "connections", chromedp.Navigate(w.srv.URL+"/admin/connections?status=needs_reauth&sort=idle_budget"),
		chromedp.WaitVisible("#connections", chromedp.ByID))
	html = w.pageHTML(t, ctx)
	if !strings.Contains(html, dead) || strings.Contains(html, other) {
		t.Fatalf("status filter:\n%s", html)
	}

	// Detail → re-auth link → the browser follows it through the emulator.
	var link, status string
	run(t, ctx, "re-auth link",
		chromedp.Navigate(w.srv.URL+"/admin/connections/"+dead),
		chromedp.WaitVisible("#create-reauth", chromedp.ByID),
		chromedp.Click("#create-reauth", chromedp.ByID),
		chromedp.WaitVisible("#reauth-link", chromedp.ByID),
		chromedp.Value("#reauth-link", &link, chromedp.ByID),
		chromedp.Text("#status", &status, chromedp.ByID))
	w.pageHTML(t, ctx)
	if !strings.HasPrefix(link, w.srv.URL+"/") || strings.TrimSpace(status) != models.StatusNeedsReauth {
		t.Fatalf("link %q, status %q", link, status)
	}
	screenshot(t, ctx, "adminui-detail.png")
	var done string
	run(t, ctx, "follow the link",
		chromedp.Navigate(link+"&"+url.Values{"login_hint": {"dead@example.com"}}.Encode()),
		chromedp.WaitVisible("h1", chromedp.ByQuery),
		chromedp.Text("h1", &done, chromedp.ByQuery))
	if !strings.Contains(done, "re-authorized") {
		t.Fatalf("re-auth flow ended with %q", done)
	}
	run(t, ctx, "detail after re-auth",
		chromedp.Navigate(w.srv.URL+"/admin/connections/"+dead),
		chromedp.WaitVisible("#status", chromedp.ByID),
		chromedp.Text("#status", &status, chromedp.ByID))
	if strings.TrimSpace(status) != models.StatusActive {
		t.Fatalf("after re-auth the page shows %q", status)
	}

	// Refresh now works on the live connection.
	var notice string
	run(t, ctx, "refresh now",
		chromedp.Click("#refresh", chromedp.ByID),
		chromedp.WaitVisible("#notice", chromedp.ByID),
		chromedp.Text("#notice", &notice, chromedp.ByID))
	if !strings.HasPrefix(notice, "Refreshed") {
		t.Fatalf("refresh: %q", notice)
	}

	// Revoke the other connection through the confirmation page.
	var question string
	run(t, ctx, "revoke",
		chromedp.Navigate(w.srv.URL+"/admin/connections/"+other),
		chromedp.WaitVisible("#revoke", chromedp.ByID),
		chromedp.Click("#revoke", chromedp.ByID),
		chromedp.WaitVisible("#confirm-revoke", chromedp.ByID),
		chromedp.Text("main", &question, chromedp.ByQuery))
	if !strings.Contains(question, "Are you sure?") {
		t.Fatalf("confirmation page: %q", question)
	}
	var o models.Connection
	rawdb.Gorm(w.db).Where("id = ?", other).Take(&o)
	if o.Status != models.StatusActive {
		t.Fatalf("the confirmation page alone changed the status to %s", o.Status)
	}
	run(t, ctx, "confirm revoke",
		chromedp.Click("#confirm-revoke", chromedp.ByID),
		chromedp.WaitVisible("#notice", chromedp.ByID),
		chromedp.Text("#status", &status, chromedp.ByID))
	rawdb.Gorm(w.db).Where("id = ?", other).Take(&o)
	if strings.TrimSpace(status) != models.StatusRevoked || o.Status != models.StatusRevoked {
		t.Fatalf("after revoke: page %q, db %q", status, o.Status)
	}

	// A POST with the session cookie but without the CSRF token is refused.
	var cookies []*network.Cookie
	run(t, ctx, "cookies", chromedp.ActionFunc(func(ctx context.Context) error {
		var err error
		cookies, err = network.GetCookies().WithURLs([]string{w.srv.URL + "/admin/"}).Do(ctx)
		return err
	}))
	var session *network.Cookie
	for _, ck := range cookies {
		if ck.Name == "tokenwarm_admin" {
			session = ck
		}
	}
	if session == nil || !session.HTTPOnly || session.SameSite != network.CookieSameSiteStrict || session.Path != "/admin" {
		t.Fatalf("session cookie %+v", session)
	}
	plain := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	post := func(form url.Values) *http.Response {
		req, _ := http.NewRequest(http.MethodPost, w.srv.URL+"/admin/connections/"+dead+"/revoke", strings.NewReader(form.Encode()))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		req.AddCookie(&http.Cookie{Name: session.Name, Value: session.Value})
		resp, err := plain.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp
	}
	for _, form := range []url.Values{{"confirm": {"yes"}}, {"confirm": {"yes"}, "csrf": {"forged"}}} {
		if resp := post(form); resp.StatusCode != http.StatusForbidden {
			t.Fatalf("POST %v without a valid CSRF token: %d", form, resp.StatusCode)
		}
	}
	rawdb.Gorm(w.db).Where("id = ?", dead).Take(&c)
	if c.Status != models.StatusActive {
		t.Fatalf("a forged POST changed the connection: %s", c.Status)
	}

	// Signing out ends the session in the browser.
	run(t, ctx, "sign out",
		chromedp.Click("button.link", chromedp.ByQuery),
		chromedp.WaitVisible("#key", chromedp.ByID))
}

// Headers, cookies and access control, without a browser.
func TestAdminUIHTTP(t *testing.T) {
	w := newAdminWorld(t)
	id := w.connect("plain@example.com")
	jar := newJar(t)
	cl := &http.Client{Jar: jar, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	get := func(path string) (*http.Response, string) {
		resp, err := cl.Get(w.srv.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp, string(b)
	}
	// Without a session every page sends to the login page.
	for _, p := range []string{"/admin/", "/admin/connections", "/admin/connections/" + id} {
		if resp, _ := get(p); resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != "/admin/login" {
			t.Fatalf("GET %s without a session: %d %s", p, resp.StatusCode, resp.Header.Get("Location"))
		}
	}
	resp, body := get("/admin/login")
	wantCSP := "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
	h := resp.Header
	if resp.StatusCode != 200 || h.Get("Content-Security-Policy") != wantCSP || h.Get("X-Content-Type-Options") != "nosniff" ||
		h.Get("Referrer-Policy") != "no-referrer" || h.Get("Cache-Control") != "no-store" || strings.Contains(body, "<script") {
		t.Fatalf("login page: %d %v", resp.StatusCode, h)
	}
	csrf := between(body, `name="csrf" value="`, `"`)
	// Login without the form's CSRF token is refused.
	r, err := cl.PostForm(w.srv.URL+"/admin/login", url.Values{"key": {w.key}})
	if err != nil {
		t.Fatal(err)
	}
	r.Body.Close()
	if r.StatusCode != http.StatusForbidden {
		t.Fatalf("login without CSRF: %d", r.StatusCode)
	}
	r, err = cl.PostForm(w.srv.URL+"/admin/login", url.Values{"key": {w.key}, "csrf": {csrf}})
	if err != nil {
		t.Fatal(err)
	}
	r.Body.Close()
	if r.StatusCode != http.StatusSeeOther {
		t.Fatalf("login: %d", r.StatusCode)
	}
	sc := ""
	for _, v := range r.Header.Values("Set-Cookie") {
		if strings.HasPrefix(v, "tokenwarm_admin=") {
			sc = v
		}
	}
	for _, want := range []string{"Path=/admin", "HttpOnly", "SameSite=Strict", "Max-Age=28800"} {
		if !strings.Contains(sc, want) || strings.Contains(sc, "Secure") {
			t.Fatalf("session cookie %q lacks %s", sc, want)
		}
	}
	if resp, body := get("/admin/connections/" + id); resp.StatusCode != 200 || resp.Header.Get("Content-Security-Policy") != wantCSP || !strings.Contains(body, id) {
		t.Fatalf("detail: %d", resp.StatusCode)
	}
	if resp, _ := get("/admin/static/app.css"); resp.StatusCode != 200 || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/css") {
		t.Fatalf("css: %d %s", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	// The table pages through every connection, least idle budget first.
	base := time.Now().UTC().Add(-20 * 24 * time.Hour).Truncate(time.Microsecond)
	for i := range 2*200 + 5 {
		at := base.Add(time.Duration(i/3) * time.Minute) // ties across page ends
		cn := models.Connection{ID: uuid.NewString(), Owner: fmt.Sprintf("00Dpage/005page%04d", i), OrgID: "00Dpage", UserID: fmt.Sprintf("005page%04d", i), LoginURL: w.emuSrv.URL,
			InstanceURL: w.emuSrv.URL, Status: models.StatusNeedsReauth, LastRefreshedAt: at, NextWarmAt: at, CreatedAt: at, UpdatedAt: at}
		if err := rawdb.Gorm(w.db).Create(&cn).Error; err != nil {
			t.Fatal(err)
		}
	}
	seen := map[string]bool{}
	next, pages := "/admin/connections?status=needs_reauth&sort=idle_budget", 0
	for next != "" {
		resp, body := get(next)
		if resp.StatusCode != 200 {
			t.Fatalf("GET %s: %d", next, resp.StatusCode)
		}
		pages++
		for _, part := range strings.Split(body, "005page")[1:] {
			u := "005page" + part[:4]
			if seen[u] {
				t.Fatalf("page %d shows %s again", pages, u)
			}
			seen[u] = true
		}
		next = html.UnescapeString(between(body, `id="next-page" href="`, `"`))
		if (pages > 1) != strings.Contains(body, `id="first-page"`) {
			t.Fatalf("page %d: first-page link wrong", pages)
		}
	}
	if pages != 3 || len(seen) != 405 {
		t.Fatalf("%d pages showed %d connections, want 3 pages and 405", pages, len(seen))
	}
	if resp, _ := get("/admin/connections?after=bogus"); resp.StatusCode != 400 {
		t.Fatalf("bad page position: %d", resp.StatusCode)
	}
	if resp, _ := get("/admin/connections/not-a-uuid"); resp.StatusCode != 404 {
		t.Fatalf("unknown connection: %d", resp.StatusCode)
	}
	// The admin API is untouched by the UI's routes.
	if resp, _ := w.admin(http.MethodGet, "/admin/v1/connections", ""); resp.StatusCode != 401 {
		t.Fatalf("admin API without a key: %d", resp.StatusCode)
	}
	// Revoking the key ends its sessions.
	if err := w.keys.Revoke(context.Background(), "ops-alice"); err != nil {
		t.Fatal(err)
	}
	if resp, _ := get("/admin/"); resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("session of a revoked key: %d", resp.StatusCode)
	}
}

func between(s, from, to string) string {
	_, after, ok := strings.Cut(s, from)
	if !ok {
		return ""
	}
	v, _, _ := strings.Cut(after, to)
	return v
}

func newJar(t *testing.T) http.CookieJar {
	t.Helper()
	jar, err := cookiejar.New(nil)
	if err != nil {
		t.Fatal(err)
	}
	return jar
}
