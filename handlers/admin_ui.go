package handlers

import (
	"bytes"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"embed"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"html/template"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/tokenwarm/tokenwarm/admin"
	"github.com/tokenwarm/tokenwarm/adminkeys"
	"github.com/tokenwarm/tokenwarm/internal/text"
)

// The admin web UI under /admin/: server-rendered pages over the admin
// service (the same values and actions as the admin API), behind a session
// cookie made from an admin key. The pages carry no script and never a
// token.

//go:embed templates/*.html templates/app.css
var adminUIFiles embed.FS

var adminUITemplates = template.Must(template.New("adminui").Funcs(template.FuncMap{
	"days": func(seconds int64) string { return fmt.Sprintf("%.1f", float64(seconds)/86400) },
	"when": func(t time.Time) string {
		if t.IsZero() {
			return "never"
		}
		return t.UTC().Format("2006-01-02 15:04 UTC")
	},
}).ParseFS(adminUIFiles, "templates/*.html"))

const (
	adminUIPrefix      = "/admin"
	adminSessionCookie = "tokenwarm_admin"
	adminPreCookie     = "tokenwarm_admin_login"
	adminSessionAD     = "admin_session"
	adminUICSP         = "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)

// AdminUIRouteName names every route of the admin UI: its pages are HTML
// for people, not API, so openapi.yaml does not list them.
const AdminUIRouteName = "admin-ui"

type adminUI struct {
	ad       *adminAPI
	svc      *admin.Service
	sessions Sealer
}

type adminSession struct {
	KeyID string `json:"kid"`
	Name  string `json:"name"`
	Exp   int64  `json:"exp"`
}

// uiPage is what every page template gets.
type uiPage struct {
	Title   string
	KeyName string
	CSRF    string
	Error   string
	Data    any
}

// registerAdminUI mounts the UI as a group of the one router, next to (and
// apart from) the admin API under /admin/v1, whose paths stay the API's.
func registerAdminUI(e *echo.Echo, ad *adminAPI, sessions Sealer) {
	ui := &adminUI{ad: ad, svc: ad.svc, sessions: sessions}
	g := e.Group(adminUIPrefix)
	route := func(r *echo.Route) { r.Name = AdminUIRouteName }
	s := ui.requireSession
	route(g.GET("/static/app.css", ui.css))
	route(g.GET("", func(c echo.Context) error { return c.Redirect(http.StatusFound, "/admin/") }))
	route(g.GET("/login", ui.loginPage))
	route(g.POST("/login", ui.login))
	route(g.POST("/logout", s(ui.logout)))
	route(g.GET("/", s(ui.overview)))
	route(g.GET("/connections", s(ui.connections)))
	route(g.GET("/connections/:id", s(ui.detail)))
	route(g.POST("/connections/:id/refresh", s(ui.refresh)))
	route(g.POST("/connections/:id/reauth-link", s(ui.reauthLink)))
	route(g.POST("/connections/:id/revoke", s(ui.revoke)))
}

func setUIHeaders(h http.Header) {
	h.Set("Content-Security-Policy", adminUICSP)
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "no-referrer")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Frame-Options", "DENY")
}

func (ui *adminUI) css(c echo.Context) error {
	b, err := adminUIFiles.ReadFile("templates/app.css")
	if err != nil {
		return err
	}
	setUIHeaders(c.Response().Header())
	c.Response().Header().Set("Cache-Control", "public, max-age=300")
	return c.Blob(http.StatusOK, "text/css; charset=utf-8", b)
}

func (ui *adminUI) render(c echo.Context, status int, name string, p uiPage) error {
	if k, _ := c.Get(adminKeyCtx).(*adminkeys.Key); k != nil {
		p.KeyName = k.Name
	}
	if p.CSRF == "" {
		if s, _ := c.Get(adminSessionCookie).(string); s != "" {
			p.CSRF = csrfToken(s)
		}
	}
	var b bytes.Buffer
	if err := adminUITemplates.ExecuteTemplate(&b, name, p); err != nil {
		return err
	}
	setUIHeaders(c.Response().Header())
	return c.HTMLBlob(status, b.Bytes())
}

func (ui *adminUI) errorPage(c echo.Context, status int, msg string) error {
	return ui.render(c, status, "error.html", uiPage{Title: http.StatusText(status), Error: msg})
}

// csrfToken is derived from the session cookie it protects (itself sealed
// under the UI's own ring): a page of another origin can neither read the
// cookie nor compute the token.
func csrfToken(cookie string) string {
	m := hmac.New(sha256.New, []byte(cookie))
	m.Write([]byte("csrf"))
	return base64.RawURLEncoding.EncodeToString(m.Sum(nil))
}

func csrfOK(cookie, token string) bool {
	return cookie != "" && token != "" && hmac.Equal([]byte(csrfToken(cookie)), []byte(token))
}

// loopback reports whether the request came to a loopback host, where the
// cookie may go without Secure (plain-HTTP development).
func loopback(r *http.Request) bool {
	host := r.Host
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	return text.IsLoopbackHost(host)
}

func (ui *adminUI) setCookie(c echo.Context, name, value string, maxAge int) {
	c.SetCookie(&http.Cookie{Name: name, Value: value, Path: adminUIPrefix, MaxAge: maxAge, HttpOnly: true,
		Secure: !loopback(c.Request()), SameSite: http.SameSiteStrictMode})
}

// loginPage sets a pre-session cookie so that the login form, too, carries
// a CSRF token.
func (ui *adminUI) loginPage(c echo.Context) error {
	pre := ""
	if ck, err := c.Cookie(adminPreCookie); err == nil && len(ck.Value) >= 32 {
		pre = ck.Value
	} else {
		var b [32]byte
		if _, err := rand.Read(b[:]); err != nil {
			return err
		}
		pre = base64.RawURLEncoding.EncodeToString(b[:])
		ui.setCookie(c, adminPreCookie, pre, 3600)
	}
	return ui.render(c, http.StatusOK, "login.html", uiPage{Title: "Sign in", CSRF: csrfToken(pre)})
}

func (ui *adminUI) login(c echo.Context) error {
	pre := ""
	if ck, err := c.Cookie(adminPreCookie); err == nil {
		pre = ck.Value
	}
	if !csrfOK(pre, c.FormValue("csrf")) {
		return ui.errorPage(c, http.StatusForbidden, "The form expired or did not come from this site. Reload the sign-in page and try again.")
	}
	k, err := ui.ad.keys.Authenticate(c.Request().Context(), strings.TrimSpace(c.FormValue("key")))
	if adminkeys.ErrorCode(err) == adminkeys.CodeInvalidKey {
		return ui.render(c, http.StatusUnauthorized, "login.html", uiPage{Title: "Sign in", CSRF: csrfToken(pre), Error: "That is not a valid admin key."})
	}
	if err != nil {
		ui.unavailable(c, err)
		return ui.render(c, http.StatusServiceUnavailable, "login.html", uiPage{Title: "Sign in", CSRF: csrfToken(pre), Error: unavailableUIMessage})
	}
	ttl := ui.ad.api.cfg.AdminSessionTTL
	exp := ui.ad.api.now().Add(ttl)
	b, _ := json.Marshal(adminSession{KeyID: k.ID, Name: k.Name, Exp: exp.Unix()})
	sealed, err := ui.sessions.Seal(string(b), adminSessionAD)
	if err != nil {
		return err
	}
	ui.setCookie(c, adminSessionCookie, sealed, int(ttl.Seconds()))
	ui.setCookie(c, adminPreCookie, "", -1)
	return c.Redirect(http.StatusSeeOther, "/admin/")
}

var errNoSession = errors.New("no admin session")

// session opens the session cookie and checks that its key still lives.
func (ui *adminUI) session(c echo.Context) (*adminkeys.Key, string, error) {
	ck, err := c.Cookie(adminSessionCookie)
	if err != nil || ck.Value == "" {
		return nil, "", errNoSession
	}
	plain, err := ui.sessions.Open(ck.Value, adminSessionAD)
	if err != nil {
		return nil, "", errNoSession
	}
	var s adminSession
	if json.Unmarshal([]byte(plain), &s) != nil || ui.ad.api.now().Unix() >= s.Exp {
		return nil, "", errNoSession
	}
	if !text.IsUUID(s.KeyID) {
		return nil, "", errNoSession
	}
	k, err := ui.ad.keys.Live(c.Request().Context(), s.KeyID)
	if adminkeys.ErrorCode(err) == adminkeys.CodeNotFound {
		return nil, "", errNoSession
	}
	if err != nil {
		return nil, "", err
	}
	return k, ck.Value, nil
}

// requireSession sends visitors without a live session to the login page
// and refuses every POST without the session's CSRF token.
func (ui *adminUI) requireSession(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		k, cookie, err := ui.session(c)
		if errors.Is(err, errNoSession) {
			ui.setCookie(c, adminSessionCookie, "", -1)
			if c.Request().Method == http.MethodGet {
				return c.Redirect(http.StatusSeeOther, "/admin/login")
			}
			return ui.errorPage(c, http.StatusForbidden, "Your session ended. Sign in again.")
		}
		if err != nil {
			// The key could not be checked: the session is not over.
			ui.unavailable(c, err)
			return ui.errorPage(c, http.StatusServiceUnavailable, unavailableUIMessage)
		}
		if c.Request().Method != http.MethodGet && !csrfOK(cookie, c.FormValue("csrf")) {
			return ui.errorPage(c, http.StatusForbidden, "The form did not carry a valid CSRF token.")
		}
		c.Set(adminKeyCtx, k)
		c.Set(adminSessionCookie, cookie)
		return next(c)
	}
}

const unavailableUIMessage = "The service cannot check your key right now (its database did not answer). Try again in a moment."

// unavailable logs a key check that could not be made (err carries no key)
// and sets the Retry-After of the 503 page that follows.
func (ui *adminUI) unavailable(c echo.Context, err error) {
	ui.ad.api.log.Warn("admin UI: key check failed: service unavailable", "path", c.Request().URL.Path, "err", err)
	c.Response().Header().Set("Retry-After", strconv.Itoa(unavailableRetryAfter))
}

func (ui *adminUI) logout(c echo.Context) error {
	ui.setCookie(c, adminSessionCookie, "", -1)
	return c.Redirect(http.StatusSeeOther, "/admin/login")
}

// uiError renders a failure as a page with the problem's text; our own
// unexpected failures go to the error handler.
func (ui *adminUI) uiError(c echo.Context, err error) error {
	p := toProblem(adminProblem(err))
	if p.Status == http.StatusInternalServerError {
		return err
	}
	msg := p.Detail
	if msg == "" {
		msg = p.Title
	}
	return ui.errorPage(c, p.Status, fmt.Sprintf("%s (%s)", msg, p.Code))
}

func (ui *adminUI) overview(c echo.Context) error {
	d, err := ui.svc.Overview(c.Request().Context())
	if err != nil {
		return err
	}
	return ui.render(c, http.StatusOK, "overview.html", uiPage{Title: "Fleet", Data: d})
}

type uiConnections struct {
	Status      string
	Search      string
	Statuses    []string
	Connections []admin.Connection
	PageSize    int
	// Paged: this is not the first page. Next: the link to the next one.
	Paged bool
	Next  string
}

// connections shows the table by idle budget, least first.
func (ui *adminUI) connections(c echo.Context) error {
	d := uiConnections{Status: c.QueryParam("status"), Search: c.QueryParam("q"), Statuses: admin.Statuses(), PageSize: admin.TablePageSize}
	if s := c.QueryParam("sort"); s != "" && s != "idle_budget" {
		return ui.errorPage(c, http.StatusBadRequest, "sort must be idle_budget")
	}
	after := c.QueryParam("after")
	t, err := ui.svc.TableByIdleBudget(c.Request().Context(), d.Status, d.Search, after)
	var ie *admin.InvalidError
	if errors.As(err, &ie) {
		return ui.errorPage(c, http.StatusBadRequest, ie.Error())
	}
	if err != nil {
		return err
	}
	d.Connections, d.Paged = t.Connections, after != ""
	if t.After != "" {
		next := url.Values{"sort": {"idle_budget"}, "after": {t.After}}
		if d.Status != "" {
			next.Set("status", d.Status)
		}
		if d.Search != "" {
			next.Set("q", d.Search)
		}
		d.Next = "/admin/connections?" + next.Encode()
	}
	return ui.render(c, http.StatusOK, "connections.html", uiPage{Title: "Connections", Data: d})
}

type uiDetail struct {
	Connection admin.Connection
	Events     []admin.Event
	Notice     string
	ReauthLink string
	ReauthExp  time.Time
	Revocable  bool
}

func (ui *adminUI) detailData(c echo.Context) (*uiDetail, error) {
	d, err := ui.svc.Connection(c.Request().Context(), c.Param("id"))
	if err != nil {
		return nil, err
	}
	return &uiDetail{Connection: d.Connection, Events: d.Events, Revocable: d.Connection.Status != admin.StatusRevoked}, nil
}

func (ui *adminUI) showDetail(c echo.Context, status int, fill func(*uiDetail)) error {
	d, err := ui.detailData(c)
	if err != nil {
		return ui.uiError(c, err)
	}
	if fill != nil {
		fill(d)
	}
	return ui.render(c, status, "detail.html", uiPage{Title: "Connection", Data: d})
}

func (ui *adminUI) detail(c echo.Context) error { return ui.showDetail(c, http.StatusOK, nil) }

func (ui *adminUI) refresh(c echo.Context) error {
	_, err := ui.svc.Refresh(c.Request().Context(), c.Param("id"), adminKeyName(c))
	notice := "Refreshed: the connection has a new access token."
	if err != nil {
		var failed *admin.RefreshError
		if !errors.As(err, &failed) {
			return ui.uiError(c, err)
		}
		p := toProblem(failed.Err)
		if p.Status == http.StatusInternalServerError {
			return err
		}
		notice = "The refresh failed: " + p.Code
		if p.Detail != "" {
			notice += " — " + p.Detail
		}
	}
	return ui.showDetail(c, http.StatusOK, func(d *uiDetail) { d.Notice = notice })
}

func (ui *adminUI) reauthLink(c echo.Context) error {
	link, err := ui.svc.ReauthLink(c.Request().Context(), c.Param("id"), adminKeyName(c))
	if err != nil {
		return ui.uiError(c, err)
	}
	return ui.showDetail(c, http.StatusOK, func(d *uiDetail) {
		d.ReauthLink, d.ReauthExp = link.URL, link.ExpiresAt
		d.Notice = "Re-authorization link created. Send it to the connection's Salesforce user."
	})
}

// revoke shows a confirmation page; the confirmation's own POST revokes.
func (ui *adminUI) revoke(c echo.Context) error {
	if c.FormValue("confirm") != "yes" {
		d, err := ui.detailData(c)
		if err != nil {
			return ui.uiError(c, err)
		}
		return ui.render(c, http.StatusOK, "revoke.html", uiPage{Title: "Revoke connection", Data: d})
	}
	if _, err := ui.svc.Revoke(c.Request().Context(), c.Param("id"), adminKeyName(c)); err != nil {
		return ui.uiError(c, err)
	}
	return ui.showDetail(c, http.StatusOK, func(d *uiDetail) { d.Notice = "The connection was revoked." })
}
