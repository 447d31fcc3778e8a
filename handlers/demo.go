package handlers

import (
	"context"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/tokenwarm/tokenwarm/pkce"
)

// The demo plays the mobile app's part in a browser, so a newcomer sees the
// whole flow against the built-in emulator with nothing set up. It only
// exists in demo mode.

const demoCookie = "tokenwarm_demo_verifier"

// DemoRedirectPath is the app redirect URI the demo registers.
const DemoRedirectPath = "/demo/done"

func (a *API) demoHome(c echo.Context) error {
	return renderPage(c, http.StatusOK, "demo", map[string]any{"Start": "/demo/start"})
}

// demoStart makes the "app's" PKCE pair, keeps the verifier in a cookie and
// opens the authorize endpoint like an app would.
func (a *API) demoStart(c echo.Context) error {
	verifier := pkce.NewVerifier()
	c.SetCookie(&http.Cookie{Name: demoCookie, Value: verifier, Path: "/demo", HttpOnly: true, SameSite: http.SameSiteLaxMode, MaxAge: 600})
	return c.Redirect(http.StatusFound, "/v1/oauth/authorize?"+url.Values{
		"app_redirect_uri":      {a.cfg.PublicURL + DemoRedirectPath},
		"code_challenge":        {pkce.S256(verifier)},
		"code_challenge_method": {pkce.MethodS256},
		"state":                 {"demo"},
	}.Encode())
}

// demoDone is where the handoff lands: it redeems the code like an app and
// shows what the app now holds (tokens shortened, never in full).
func (a *API) demoDone(c echo.Context) error {
	data := map[string]any{"Error": c.QueryParam("error"), "Description": c.QueryParam("error_description")}
	code := c.QueryParam("code")
	cookie, err := c.Cookie(demoCookie)
	if data["Error"] == "" && (code == "" || err != nil) {
		data["Error"], data["Description"] = "invalid_request", "no handoff code or demo cookie: start again"
	}
	if data["Error"] == "" {
		ctx, cancel := context.WithTimeout(c.Request().Context(), 20*time.Second)
		defer cancel()
		h, err := a.devices.RedeemHandoff(ctx, code, cookie.Value)
		if err != nil {
			data["Error"], data["Description"] = "invalid_grant", "the handoff code could not be redeemed"
		} else if at, err := a.vault.GetAccessToken(ctx, h.ConnectionID, time.Minute); err != nil {
			data["Error"], data["Description"] = "pull_failed", err.Error()
		} else {
			data["ConnectionID"] = h.ConnectionID
			data["Owner"] = h.Owner
			data["HandoffCode"] = shorten(code)
			data["AccessToken"] = shorten(at.Token)
			data["InstanceURL"] = at.InstanceURL
			data["ExpiresAt"] = at.ExpiresAt.UTC().Format(time.RFC3339)
		}
	}
	c.SetCookie(&http.Cookie{Name: demoCookie, Path: "/demo", MaxAge: -1})
	return renderPage(c, http.StatusOK, "demodone", data)
}

func shorten(s string) string {
	if len(s) <= 8 {
		return "…"
	}
	return s[:6] + "…(" + strconv.Itoa(len(s)) + " characters)"
}
