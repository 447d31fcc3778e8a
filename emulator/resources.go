package emulator

import (
	"net/http"
	"strings"
	"time"
)

const (
	apiVersion = "v62.0"
	apiPath    = "/services/data/" + apiVersion + "/"
)

// revoke serves /services/oauth2/revoke. Salesforce also accepts GET with
// the token in the query, so the emulator does too.
func (s *Server) revoke(w http.ResponseWriter, r *http.Request) {
	if s.ipRefused(w, r, true) {
		return
	}
	if e := s.revokeToken(r.FormValue("token")); e != nil {
		e.write(w)
		return
	}
	w.WriteHeader(http.StatusOK)
}

// revokeToken kills a refresh token's chain, or a single access token.
// A known token that is already dead is an error, not a silent success.
func (s *Server) revokeToken(tok string) *oauthError {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.cfg.Clock.Now()
	if rt, ok := s.refresh[tok]; ok {
		if _, live := s.liveRefreshLocked(tok, now); !live {
			return errDeadToken
		}
		s.revokeChainLocked(rt.chain)
	} else if at, ok := s.access[tok]; ok {
		if _, live := s.liveAccessLocked(tok, now); !live {
			return errDeadToken
		}
		at.revoked = true
	} else {
		return errUnknownToken
	}
	s.stats.Revocations++
	return nil
}

// introspection is RFC 7662's answer; a dead or unknown token gets only
// {"active":false}.
type introspection struct {
	Active    bool   `json:"active"`
	Scope     string `json:"scope,omitempty"`
	ClientID  string `json:"client_id,omitempty"`
	Username  string `json:"username,omitempty"`
	Sub       string `json:"sub,omitempty"`
	TokenType string `json:"token_type,omitempty"`
	Exp       int64  `json:"exp,omitempty"`
	Iat       int64  `json:"iat,omitempty"`
	Nbf       int64  `json:"nbf,omitempty"`
}

// introspect serves POST /services/oauth2/introspect. token_type_hint is
// only a hint, so both kinds of token are looked up regardless.
func (s *Server) introspect(w http.ResponseWriter, r *http.Request) {
	if err := r.ParseForm(); err != nil {
		errMalformedForm.write(w)
		return
	}
	if e := s.injectedIntrospectionFailure(); e != nil {
		e.write(w)
		return
	}
	if _, e := s.authenticateClient(r); e != nil {
		e.write(w)
		return
	}
	if s.ipRefused(w, r, true) {
		return
	}
	writeJSON(w, http.StatusOK, s.inspect(r.PostForm.Get("token"), s.baseURL(r)))
}

// inspect only looks: it is not a use of the token. Like Salesforce, it
// does not restart the idle TTL, and a rotated refresh token merely answers
// {"active":false} without revoking its chain (only presenting it at the
// token endpoint does that).
func (s *Server) inspect(tok, base string) introspection {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.stats.Introspections++
	if _, ok := s.refresh[tok]; ok {
		s.stats.RefreshIntrospections++
	}
	now := s.cfg.Clock.Now()
	describe := func(ch *chain, tokenType string, iat, exp time.Time) introspection {
		return introspection{
			Active:    true,
			Scope:     ch.scope,
			ClientID:  ch.clientID,
			Username:  ch.user.name,
			Sub:       identityURL(base, s.cfg.DefaultOrgID, ch.user.id),
			TokenType: tokenType,
			Exp:       exp.Unix(),
			Iat:       iat.Unix(),
			Nbf:       iat.Unix(),
		}
	}
	if at, ok := s.liveAccessLocked(tok, now); ok {
		return describe(at.chain, "access_token", at.issued, at.expires)
	}
	if rt, ok := s.liveRefreshLocked(tok, now); ok {
		return describe(rt.chain, "refresh_token", rt.issued, rt.chain.lastUse.Add(s.cfg.IdleTTL))
	}
	return introspection{}
}

// principal is who a valid access token speaks for.
type principal struct {
	username string
	userID   string
	active   bool
}

// authenticate resolves the request's Bearer access token.
func (s *Server) authenticate(r *http.Request) (principal, bool) {
	scheme, tok, _ := strings.Cut(r.Header.Get("Authorization"), " ")
	if !strings.EqualFold(scheme, "Bearer") {
		return principal{}, false
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	at, ok := s.liveAccessLocked(strings.TrimSpace(tok), s.cfg.Clock.Now())
	if !ok {
		return principal{}, false
	}
	u := at.chain.user
	return principal{username: u.name, userID: u.id, active: u.active}, true
}

var errInvalidAccess = &oauthError{http.StatusUnauthorized, "invalid_token", "access token is invalid or expired"}

func unauthorized(w http.ResponseWriter) {
	w.Header().Set("WWW-Authenticate", `Bearer error="invalid_token"`)
	errInvalidAccess.write(w)
}

// userinfo serves the OpenID Connect userinfo endpoint.
func (s *Server) userinfo(w http.ResponseWriter, r *http.Request) {
	p, ok := s.authenticate(r)
	if !ok {
		unauthorized(w)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{
		"sub":                identityURL(s.baseURL(r), s.cfg.DefaultOrgID, p.userID),
		"user_id":            p.userID,
		"organization_id":    s.cfg.DefaultOrgID,
		"preferred_username": p.username,
		"nickname":           nickname(p.username),
		"name":               DisplayName(p.username),
		"email":              p.username,
		"active":             p.active,
		"user_type":          "STANDARD",
	})
}

// identity serves the identity URL. A token may read only its own identity.
func (s *Server) identity(w http.ResponseWriter, r *http.Request) {
	p, ok := s.authenticate(r)
	if !ok {
		unauthorized(w)
		return
	}
	if r.PathValue("org") != s.cfg.DefaultOrgID || r.PathValue("user") != p.userID {
		writeJSON(w, http.StatusForbidden, &oauthError{Code: "Bad_Id", Description: "identity URL does not match the token"})
		return
	}
	base := s.baseURL(r)
	writeJSON(w, http.StatusOK, map[string]any{
		"id":              identityURL(base, s.cfg.DefaultOrgID, p.userID),
		"asserted_user":   true,
		"user_id":         p.userID,
		"organization_id": s.cfg.DefaultOrgID,
		"username":        p.username,
		"display_name":    DisplayName(p.username),
		"nick_name":       nickname(p.username),
		"email":           p.username,
		"active":          p.active,
		"user_type":       "STANDARD",
		"urls": map[string]string{
			"rest":     base + "/services/data/v{version}/",
			"query":    base + "/services/data/v{version}/query/",
			"userinfo": base + "/services/oauth2/userinfo",
		},
	})
}

// restError is the REST API's error shape: a list, unlike OAuth's object.
type restError struct {
	Message   string `json:"message"`
	ErrorCode string `json:"errorCode"`
}

// apiAuthenticated answers INVALID_SESSION_ID unless the request carries a
// live access token, which is how Salesforce tells a client to refresh.
func (s *Server) apiAuthenticated(w http.ResponseWriter, r *http.Request) bool {
	if _, ok := s.authenticate(r); !ok {
		writeJSON(w, http.StatusUnauthorized, []restError{{"Session expired or invalid", "INVALID_SESSION_ID"}})
		return false
	}
	return true
}

// apiRoot serves the version's resource directory, limited to what the
// emulator implements.
func (s *Server) apiRoot(w http.ResponseWriter, r *http.Request) {
	if !s.apiAuthenticated(w, r) {
		return
	}
	writeJSON(w, http.StatusOK, map[string]string{"query": apiPath + "query"})
}

// query serves SOQL queries. It knows two: the org's name (SELECT ...
// FROM Organization) and the authenticated user's own record (SELECT ...
// FROM User WHERE Id = '<their ID>'); every other query, or a User query
// for someone else, has an empty result: enough for a client to prove its
// access token works.
func (s *Server) query(w http.ResponseWriter, r *http.Request) {
	p, ok := s.authenticate(r)
	if !ok {
		writeJSON(w, http.StatusUnauthorized, []restError{{"Session expired or invalid", "INVALID_SESSION_ID"}})
		return
	}
	q := strings.Join(strings.Fields(r.URL.Query().Get("q")), " ")
	if q == "" {
		writeJSON(w, http.StatusBadRequest, []restError{{"missing query parameter q", "MALFORMED_QUERY"}})
		return
	}
	records := []any{}
	lq := strings.ToLower(q)
	switch {
	case strings.HasSuffix(lq, " from organization"):
		records = append(records, map[string]any{"attributes": map[string]string{"type": "Organization"},
			"Id": s.cfg.DefaultOrgID, "Name": s.orgName()})
	case strings.HasSuffix(lq, " from user where id = '"+strings.ToLower(p.userID)+"'"):
		records = append(records, map[string]any{"attributes": map[string]string{"type": "User"},
			"Id": p.userID, "Name": DisplayName(p.username), "Username": p.username, "Email": p.username})
	}
	writeJSON(w, http.StatusOK, map[string]any{"totalSize": len(records), "done": true, "records": records})
}

// orgName is the emulated org's name.
func (s *Server) orgName() string {
	if s.cfg.OrgName == "" {
		return "Emulated Org"
	}
	return s.cfg.OrgName
}

// DisplayName is the full name the emulator gives a username: its local
// part split at dots, underscores and dashes, each word capitalised
// ("ada.lovelace@example.com" is "Ada Lovelace").
func DisplayName(username string) string {
	words := strings.FieldsFunc(nickname(username), func(r rune) bool { return r == '.' || r == '_' || r == '-' || r == '+' })
	for i, w := range words {
		r := []rune(w)
		words[i] = strings.ToUpper(string(r[:1])) + string(r[1:])
	}
	return strings.Join(words, " ")
}

func nickname(username string) string {
	nick, _, _ := strings.Cut(username, "@")
	return nick
}
