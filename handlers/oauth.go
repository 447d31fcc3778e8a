package handlers

import (
	"errors"
	"net/http"
	"net/url"
	"regexp"
	"strings"

	"github.com/labstack/echo/v4"

	"github.com/tokenwarm/tokenwarm/devices"
	"github.com/tokenwarm/tokenwarm/internal/text"
	"github.com/tokenwarm/tokenwarm/pkce"
	"github.com/tokenwarm/tokenwarm/salesforce"
	"github.com/tokenwarm/tokenwarm/vault"
)

const (
	productionLoginURL = "https://login.salesforce.com"
	sandboxLoginURL    = "https://test.salesforce.com"
	// salesforceScope always asks for a refresh token.
	salesforceScope = "api refresh_token"
	// grantedScope is the one scope of a device session, whatever the app
	// asked for: its connections.
	grantedScope = "connections"
)

// authorize starts the web-server flow: it checks the app's request, keeps
// a pending authorization with tokenwarm's own PKCE verifier, and sends the
// browser to Salesforce.
//
// Two dialects: standard OAuth 2.0 (RFC 6749 + 7636 + 8252) for a client
// of TOKENWARM_APP_CLIENTS, which names itself with client_id, and the
// legacy one (app_redirect_uri on TOKENWARM_APP_REDIRECT_URIS, no client).
// An unknown client or a redirect URI that is not allowed is a problem
// (never a redirect: RFC 6749 section 4.1.2.1); once a client's redirect
// URI is trusted, every other refusal goes back to it as an OAuth error.
func (a *API) authorize(c echo.Context) error {
	q := c.QueryParams()
	ctx := c.Request().Context()
	p := pkce.Pending{Purpose: pkce.PurposeConnect, LoginURL: a.cfg.LoginURL}

	redirect := q.Get("redirect_uri")
	if legacy := q.Get("app_redirect_uri"); legacy != "" {
		if redirect != "" && redirect != legacy {
			return badRequest("invalid_request", "redirect_uri", "and app_redirect_uri differ; send one of them")
		}
		redirect = legacy
	}
	clientID := q.Get("client_id")
	switch {
	case clientID != "" && !a.cfg.AppClients.Known(clientID):
		return newProblem(http.StatusBadRequest, "invalid_client", "client_id is not a client registered on this server")
	case clientID != "" && redirect == "":
		return badRequest("invalid_request", "redirect_uri", "is required")
	case clientID != "" && !a.cfg.AppClients.RedirectAllowed(clientID, redirect):
		return newProblem(http.StatusBadRequest, "redirect_uri_not_allowed", "redirect_uri is not registered for this client_id")
	case clientID == "" && redirect != "" && !a.redirectAllowed(redirect):
		return newProblem(http.StatusBadRequest, "redirect_uri_not_allowed", "app_redirect_uri is not on this server's allowlist (exact match)")
	}
	state := q.Get("state")
	if len(state) > 512 {
		state = "" // not echoed
	}
	// refuse answers a bad request: to a trusted client's redirect URI
	// with an OAuth error, else as problem details (the legacy answers).
	refuse := func(oauthCode, problemCode, field, msg string) error {
		if clientID == "" {
			if field != "" {
				return badRequest(problemCode, field, msg)
			}
			return newProblem(http.StatusBadRequest, problemCode, msg)
		}
		if field != "" {
			msg = field + " " + msg
		}
		return a.redirectError(c, redirect, oauthCode, msg, state)
	}

	switch rt := q.Get("response_type"); {
	case rt == "" && clientID != "":
		return refuse("invalid_request", "invalid_request", "response_type", "is required")
	case rt != "" && rt != "code":
		return refuse("unsupported_response_type", "unsupported_response_type", "", "response_type must be code")
	}
	if tok := q.Get("reauth_token"); tok != "" {
		id, err := a.reauth.check(tok)
		if err != nil {
			return refuse("invalid_request", "invalid_reauth_token", "", "the re-authorization link is invalid or has expired; ask for a new one")
		}
		conn, err := a.vault.Connection(ctx, id)
		if err != nil {
			return refuse("invalid_request", "invalid_reauth_token", "", "the connection of this re-authorization link no longer exists")
		}
		p.Purpose, p.ConnectionID, p.LoginURL = pkce.PurposeReauth, conn.ID, conn.LoginURL
	}

	switch {
	case redirect != "":
		if m := q.Get("code_challenge_method"); m != pkce.MethodS256 {
			return refuse("invalid_request", "unsupported_challenge_method", "", "code_challenge_method must be S256")
		}
		if err := pkce.ValidChallenge(q.Get("code_challenge"), pkce.MethodS256); err != nil {
			return refuse("invalid_request", "invalid_request", "code_challenge", "must be the 43-character base64url SHA-256 of the app's code_verifier")
		}
		p.AppRedirectURI, p.AppChallenge, p.ClientID = redirect, q.Get("code_challenge"), clientID
	case p.Purpose == pkce.PurposeConnect:
		return badRequest("invalid_request", "app_redirect_uri", "is required")
	}
	if s := q.Get("state"); len(s) > 512 {
		return refuse("invalid_request", "invalid_request", "state", "is longer than 512 characters")
	} else {
		p.AppState = s
	}
	if clientID != "" && !validScope(q.Get("scope")) {
		return refuse("invalid_scope", "", "", "scope is malformed (RFC 6749 section 3.3)")
	}
	hint := q.Get("login_hint")
	if len(hint) > 256 {
		return refuse("invalid_request", "invalid_request", "login_hint", "is longer than 256 characters")
	}
	if host := q.Get("login_host"); host != "" {
		login, err := a.loginURL(host)
		if err != nil {
			return refuse("invalid_request", "invalid_login_host", "", err.Error())
		}
		p.LoginURL = login
	}

	p.Verifier = pkce.NewVerifier()
	sfState, err := a.pending.Create(ctx, p)
	if err != nil {
		return err
	}
	target := withQuery(strings.TrimRight(p.LoginURL, "/")+"/services/oauth2/authorize", url.Values{
		"response_type":         {"code"},
		"client_id":             {a.cfg.ClientID},
		"redirect_uri":          {a.cfg.PublicURL + "/v1/oauth/callback"},
		"state":                 {sfState},
		"scope":                 {salesforceScope},
		"code_challenge":        {pkce.S256(p.Verifier)},
		"code_challenge_method": {pkce.MethodS256},
		"login_hint":            {hint},
	})
	c.Response().Header().Set("Cache-Control", "no-store")
	return c.Redirect(http.StatusFound, target)
}

// redirectError sends an authorization error to the app (RFC 6749 section
// 4.1.2.1), with the issuer (RFC 9207) so the app knows who answered.
func (a *API) redirectError(c echo.Context, redirect, code, desc, state string) error {
	c.Response().Header().Set("Cache-Control", "no-store")
	return c.Redirect(http.StatusFound, withQuery(redirect, url.Values{"error": {code}, "error_description": {desc}, "state": {state}, "iss": {a.cfg.PublicURL}}))
}

// validScope reports whether scope is a well-formed scope parameter (RFC
// 6749 section 3.3): space-separated tokens of printable ASCII other than
// the double quote and the backslash. Unknown scopes are ignored: the
// grant is always grantedScope.
func validScope(scope string) bool {
	for _, r := range scope {
		if r != ' ' && (r < 0x21 || r > 0x7e || r == '"' || r == '\\') {
			return false
		}
	}
	return true
}

// loginURL resolves login_host: production, sandbox, or a My Domain URL.
func (a *API) loginURL(host string) (string, error) {
	switch host {
	case "production":
		return productionLoginURL, nil
	case "sandbox":
		return sandboxLoginURL, nil
	}
	if strings.TrimRight(host, "/") == strings.TrimRight(a.cfg.LoginURL, "/") {
		return a.cfg.LoginURL, nil // the configured one, whatever it is
	}
	u, err := url.Parse(host)
	if err != nil || u.Host == "" || u.User != nil || (u.Path != "" && u.Path != "/") || u.RawQuery != "" {
		return "", errors.New("login_host must be production, sandbox or an https URL such as https://acme.my.salesforce.com")
	}
	if a.cfg.AllowAnyLoginHost {
		if err := salesforce.ValidateLoginURL(host); err != nil {
			return "", err
		}
		return strings.TrimRight(host, "/"), nil
	}
	h := strings.ToLower(u.Hostname())
	if u.Scheme != "https" || !(strings.HasSuffix(h, ".salesforce.com") || strings.HasSuffix(h, ".force.com") || strings.HasSuffix(h, ".cloudforce.com")) {
		return "", errors.New("login_host must be an https URL on a Salesforce domain (e.g. https://acme.my.salesforce.com)")
	}
	return "https://" + u.Host, nil
}

var oauthErrorCode = regexp.MustCompile(`^[a-z_]{1,64}$`)

// callback completes the flow: single-use state, code exchange with the
// verifier, upsert by (org, user), revocation of the replaced token, then a
// handoff code to the app (or a page when no app is waiting).
func (a *API) callback(c echo.Context) error {
	q := c.QueryParams()
	ctx := c.Request().Context()
	p, err := a.pending.Take(ctx, q.Get("state"))
	if errors.Is(err, pkce.ErrStateInvalid) {
		return newProblem(http.StatusBadRequest, "invalid_state", "this sign-in link is unknown, was already used or has expired; start again from the app")
	}
	if err != nil {
		return err
	}
	if e := q.Get("error"); e != "" {
		if !oauthErrorCode.MatchString(e) {
			e = "server_error"
		}
		return a.finish(c, p, "", e, text.Truncate(q.Get("error_description"), 200))
	}
	code := q.Get("code")
	if code == "" {
		return a.finish(c, p, "", "invalid_request", "Salesforce returned neither a code nor an error")
	}
	tok, err := a.sf.Exchange(ctx, p.LoginURL, code, p.Verifier)
	if err != nil {
		a.log.Warn("authorization code exchange failed", "err", err)
		return a.finish(c, p, "", "server_error", "the code exchange with Salesforce failed")
	}
	expect := ""
	if p.Purpose == pkce.PurposeReauth {
		expect = p.ConnectionID
	}
	// The vault revokes whatever token it does not keep: a grant of the
	// wrong user, one it could not store, the one a re-authorization
	// replaced.
	res, err := a.vault.Connect(ctx, p.LoginURL, ownerOf(tok), tok, expect)
	switch {
	case vault.ErrorCode(err) == vault.CodeWrongUser:
		return a.finish(c, p, "", "access_denied", "signed in as a different Salesforce user than the one of this connection")
	case err != nil:
		return a.finish(c, p, "", "server_error", "the connection could not be stored")
	}
	return a.finish(c, p, res.Connection.ID, "", "")
}

// finish ends the flow: to the app's redirect URI with a handoff code or an
// error, or on a page when the flow had no app (a re-authorization link).
func (a *API) finish(c echo.Context, p *pkce.Pending, connectionID, errCode, errDesc string) error {
	if p.AppRedirectURI == "" {
		status := http.StatusOK
		if errCode != "" {
			status = http.StatusBadRequest
		}
		return renderPage(c, status, "done", map[string]any{"Error": errCode, "Description": errDesc, "Reauth": p.Purpose == pkce.PurposeReauth})
	}
	params := url.Values{"state": {p.AppState}, "iss": {a.cfg.PublicURL}}
	if errCode != "" {
		params.Set("error", errCode)
		params.Set("error_description", errDesc)
	} else {
		owner := ""
		if conn, err := a.vault.Connection(c.Request().Context(), connectionID); err == nil {
			owner = conn.Owner
		}
		code, err := a.devices.IssueHandoffFor(c.Request().Context(), devices.Handoff{ConnectionID: connectionID, Owner: owner,
			AppRedirectURI: p.AppRedirectURI, ClientID: p.ClientID}, p.AppChallenge)
		if err != nil {
			return err
		}
		params.Set("code", code)
	}
	c.Response().Header().Set("Cache-Control", "no-store")
	return c.Redirect(http.StatusFound, withQuery(p.AppRedirectURI, params))
}

// ownerOf names the app user a Salesforce identity belongs to: today the
// identity itself, so every device of one Salesforce user shares one
// connection and one approval.
func ownerOf(tok *salesforce.Token) string { return tok.OrgID + "/" + tok.UserID }

func badRequest(code, field, msg string) error { return newFieldProblem(code, field, msg) }

func renderPage(c echo.Context, status int, name string, data any) error {
	var b strings.Builder
	if err := pages.ExecuteTemplate(&b, name, data); err != nil {
		return err
	}
	h := c.Response().Header()
	h.Set("Content-Security-Policy", "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "no-referrer")
	h.Set("Cache-Control", "no-store")
	return c.HTML(status, b.String())
}
