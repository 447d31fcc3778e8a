package emulator

import (
	"cmp"
	"maps"
	"net/http"
	"net/url"
	"strings"
)

const authorizePath = "/services/oauth2/authorize"

// authParams are the authorize parameters the consent form posts back.
var authParams = []string{
	"response_type", "client_id", "redirect_uri", "state", "scope",
	"code_challenge", "code_challenge_method", "login_hint",
}

// authorizePage serves GET authorize: approve at once, or show consent.
func (s *Server) authorizePage(w http.ResponseWriter, r *http.Request) {
	v := r.URL.Query()
	redirect, ok := s.checkAuthorize(w, r, v)
	if !ok {
		return
	}
	if s.cfg.AutoApprove {
		s.approve(w, r, v, redirect, v.Get("login_hint"))
		return
	}
	page := consentPage{
		Action:   s.baseURL(r) + authorizePath,
		ClientID: v.Get("client_id"),
		Scope:    v.Get("scope"),
		Username: cmp.Or(v.Get("login_hint"), defaultUsername),
	}
	for _, name := range authParams {
		if val := v.Get(name); val != "" {
			page.Hidden = append(page.Hidden, field{name, val})
		}
	}
	renderHTML(w, http.StatusOK, consentTmpl, page)
}

// authorizeDecision serves the consent form's POST back to authorize.
func (s *Server) authorizeDecision(w http.ResponseWriter, r *http.Request) {
	if err := r.ParseForm(); err != nil {
		renderError(w, "invalid_request", "malformed form")
		return
	}
	v := r.PostForm
	redirect, ok := s.checkAuthorize(w, r, v)
	if !ok {
		return
	}
	switch v.Get("action") {
	case "allow":
		s.approve(w, r, v, redirect, cmp.Or(v.Get("username"), v.Get("login_hint")))
	case "deny":
		redirectTo(w, r, redirect, url.Values{
			"error":             {"access_denied"},
			"error_description": {"end-user denied authorization"},
		}, v.Get("state"))
	default:
		renderError(w, "invalid_request", "action must be allow or deny")
	}
}

// checkAuthorize validates an authorize request. Without a trustworthy
// client and redirect URI it answers with a page, never a redirect, so the
// endpoint cannot be used as an open redirector; other errors go back to
// the client. On success it returns the parsed redirect URI.
func (s *Server) checkAuthorize(w http.ResponseWriter, r *http.Request, v url.Values) (*url.URL, bool) {
	clientID := v.Get("client_id")
	if clientID == "" || (s.cfg.ClientID != "" && clientID != s.cfg.ClientID) {
		renderError(w, errUnknownClient.Code, errUnknownClient.Description)
		return nil, false
	}
	redirect, err := url.Parse(v.Get("redirect_uri"))
	if err != nil || !redirect.IsAbs() || redirect.Fragment != "" {
		renderError(w, errRedirectURI.Code, errRedirectURI.Description)
		return nil, false
	}
	var code, desc string
	switch {
	case v.Get("response_type") != "code":
		code, desc = "unsupported_response_type", "response type not supported"
	case v.Get("code_challenge_method") != "S256":
		code, desc = "invalid_request", "code_challenge_method must be S256"
	case !validChallenge(v.Get("code_challenge")):
		code, desc = "invalid_request", "invalid code_challenge"
	default:
		return redirect, true
	}
	redirectTo(w, r, redirect, url.Values{"error": {code}, "error_description": {desc}}, v.Get("state"))
	return nil, false
}

// approve issues an authorization code for username and sends it back.
func (s *Server) approve(w http.ResponseWriter, r *http.Request, v url.Values, redirect *url.URL, username string) {
	s.mu.Lock()
	now := s.cfg.Clock.Now()
	// Sweep expired codes here so a long-running demo does not accumulate them.
	maps.DeleteFunc(s.codes, func(_ string, c *authCode) bool { return !now.Before(c.expires) })
	code := s.newCode()
	s.codes[code] = &authCode{
		clientID:    v.Get("client_id"),
		redirectURI: v.Get("redirect_uri"),
		challenge:   v.Get("code_challenge"),
		scope:       strings.Join(strings.Fields(v.Get("scope")), " "),
		user:        s.userLocked(username),
		expires:     now.Add(codeTTL),
	}
	s.mu.Unlock()
	redirectTo(w, r, redirect, url.Values{"code": {code}}, v.Get("state"))
}

// redirectTo sends the browser to target with params (and state) added to
// whatever query target already has.
func redirectTo(w http.ResponseWriter, r *http.Request, target *url.URL, params url.Values, state string) {
	u := *target
	q := u.Query()
	maps.Copy(q, params)
	if state != "" {
		q.Set("state", state)
	}
	u.RawQuery = q.Encode()
	w.Header().Set("Cache-Control", "no-store")
	http.Redirect(w, r, u.String(), http.StatusFound)
}
