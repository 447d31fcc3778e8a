package emulator

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"net/http"
	"net/url"
)

// presentation is one request presenting a refresh token, from its arrival
// until its response is written.
type presentation struct {
	token      string
	chain      *chain // nil for a token the emulator never issued
	concurrent bool   // the same token was already in flight when it arrived
	settled    bool   // processed or abandoned: no longer pending
	left       bool   // no longer in flight
}

// presentationWriter ends a presentation just before its answer goes out:
// a client may present again as soon as it sees the answer, and that must
// not look concurrent.
type presentationWriter struct {
	http.ResponseWriter
	end func()
}

func (w *presentationWriter) WriteHeader(status int) {
	w.end()
	w.ResponseWriter.WriteHeader(status)
}

func (w *presentationWriter) Write(b []byte) (int, error) {
	w.end()
	return w.ResponseWriter.Write(b)
}

// Unwrap lets dropConnection reach the connection.
func (w *presentationWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// token serves POST /services/oauth2/token.
func (s *Server) token(w http.ResponseWriter, r *http.Request) {
	if err := r.ParseForm(); err != nil {
		errMalformedForm.write(w)
		return
	}
	s.count(&s.stats.TokenCalls)
	grant := r.PostForm.Get("grant_type")
	// A refresh presentation is in flight from its arrival, injected latency
	// included, so overlapping requests are seen as concurrent the way
	// Salesforce sees them.
	var p *presentation
	if grant == "refresh_token" {
		p = s.arrive(r.PostForm.Get("refresh_token"))
		end := func() { s.leave(p) }
		defer end() // for requests that end without an answer
		w = &presentationWriter{ResponseWriter: w, end: end}
	}
	// A client that gave up during the latency is never processed, so
	// nothing rotates behind its back.
	if !s.delay(r.Context()) {
		return
	}
	if e := s.injectedFailure(); e != nil {
		e.write(w)
		return
	}
	clientID, e := s.authenticateClient(r)
	if e != nil {
		e.write(w)
		return
	}
	if s.ipRefused(w, r, false) {
		return
	}
	switch grant {
	case "authorization_code":
		s.exchange(w, r, clientID)
	case "refresh_token":
		s.refreshGrant(w, r, p, clientID)
	default:
		errGrantType.write(w)
	}
}

// authenticateClient checks the client credentials of a token or
// introspection call, sent as HTTP Basic or as body parameters.
func (s *Server) authenticateClient(r *http.Request) (string, *oauthError) {
	id, secret, basic := r.BasicAuth()
	if basic {
		// RFC 6749 §2.3.1: Basic credentials are form-encoded first.
		id, secret = formUnescape(id), formUnescape(secret)
	} else {
		id, secret = r.PostForm.Get("client_id"), r.PostForm.Get("client_secret")
	}
	var e *oauthError
	switch {
	case id == "" || (s.cfg.ClientID != "" && id != s.cfg.ClientID):
		e = errUnknownClient
	case s.cfg.ClientSecret != "" && subtle.ConstantTimeCompare([]byte(secret), []byte(s.cfg.ClientSecret)) != 1:
		e = errBadSecret
	default:
		return id, nil
	}
	s.count(&s.stats.ClientErrors)
	return "", e
}

func formUnescape(v string) string {
	if u, err := url.QueryUnescape(v); err == nil {
		return u
	}
	return v
}

func (s *Server) exchange(w http.ResponseWriter, r *http.Request, clientID string) {
	f := r.PostForm
	resp, e := s.redeem(f.Get("code"), clientID, f.Get("redirect_uri"), f.Get("code_verifier"), s.baseURL(r))
	if e != nil {
		e.write(w)
		return
	}
	writeJSON(w, http.StatusOK, resp)
}

// redeem trades an authorization code for the first tokens of a new chain.
func (s *Server) redeem(code, clientID, redirectURI, verifier, base string) (tokenResponse, *oauthError) {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.cfg.Clock.Now()
	c, ok := s.codes[code]
	// Single use in the strict sense: a failed attempt burns the code too.
	delete(s.codes, code)
	var e *oauthError
	switch {
	case !ok || !now.Before(c.expires) || c.clientID != clientID:
		e = errExpiredCode
	case redirectURI != c.redirectURI:
		e = errRedirectURI
	case verifier == "":
		e = errMissingVerifier
	case !validVerifier(verifier) || challengeOf(verifier) != c.challenge:
		e = errBadVerifier
	case !c.user.active:
		e = errInactiveUser
	}
	if e != nil {
		return tokenResponse{}, e
	}
	ch := &chain{user: c.user, clientID: clientID, scope: c.scope, offline: offlineScope(c.scope)}
	c.user.chains = append(c.user.chains, ch)
	s.stats.Exchanges++
	return s.issueLocked(ch, now, base), nil
}

// validVerifier checks RFC 7636's shape: 43 to 128 unreserved characters.
func validVerifier(v string) bool {
	if len(v) < 43 || len(v) > 128 {
		return false
	}
	for _, c := range []byte(v) {
		if !isUnreserved(c) {
			return false
		}
	}
	return true
}

func isUnreserved(c byte) bool {
	return 'A' <= c && c <= 'Z' || 'a' <= c && c <= 'z' || '0' <= c && c <= '9' ||
		c == '-' || c == '.' || c == '_' || c == '~'
}

// validChallenge accepts what S256 produces: 43 base64url characters.
func validChallenge(c string) bool {
	if len(c) != 43 {
		return false
	}
	_, err := base64.RawURLEncoding.DecodeString(c)
	return err == nil
}

func challengeOf(verifier string) string {
	sum := sha256.Sum256([]byte(verifier))
	return base64.RawURLEncoding.EncodeToString(sum[:])
}

// afterRotate says what to do between a successful rotation and the answer.
type afterRotate struct {
	hold     <-chan struct{} // wait for it to close before answering
	drop     bool            // close the connection instead of answering
	rotation int             // index in s.rotations
}

func (s *Server) refreshGrant(w http.ResponseWriter, r *http.Request, p *presentation, clientID string) {
	resp, after, e := s.rotate(p, clientID, s.baseURL(r), localAddr(r))
	if e != nil {
		e.write(w)
		return
	}
	if after.hold != nil {
		s.addHeld(1)
		select {
		case <-after.hold:
			s.addHeld(-1)
		case <-r.Context().Done():
			s.addHeld(-1)
			// The client gave up; the rotation stands, as it would upstream.
			s.settleRotation(after.rotation, false, LostClientGone)
			return
		}
	}
	if after.drop {
		s.settleRotation(after.rotation, false, LostDropped)
		s.leave(p) // the client learns of the drop at once, like of an answer
		dropConnection(w)
		return
	}
	if !waitAnswer(r.Context(), s.answerLatency()) {
		s.settleRotation(after.rotation, false, LostClientGone)
		return
	}
	s.settleRotation(after.rotation, writeAnswer(w, resp), LostClientGone)
}

// rotate decides a refresh presentation and, when it is good, rotates the
// chain: the presented token goes stale and a new one becomes current.
func (s *Server) rotate(p *presentation, clientID, base, local string) (tokenResponse, afterRotate, *oauthError) {
	s.mu.Lock()
	defer s.mu.Unlock()
	defer s.settleLocked(p)
	now := s.cfg.Clock.Now()
	ch := p.chain
	var e *oauthError
	switch {
	case ch == nil || ch.clientID != clientID:
		e = errExpiredToken
	case ch.dead:
		ch.deadAnswered = true
		e = errExpiredToken
	case p.concurrent:
		// Salesforce finishes the request it is already processing and may
		// then invalidate the chain. Take the strict reading: the chain dies
		// once that request is done (see settleLocked).
		ch.poisoned = true
		e = errInFlight
	case p.token != ch.current:
		// No grace period: a rotated token coming back means it leaked or a
		// client lost track, so Salesforce kills the whole family.
		s.stats.StalePresentations++
		s.revokeChainLocked(ch)
		ch.deadAnswered = true
		e = errExpiredToken
	case s.idleExpiredLocked(ch, now):
		ch.dead = true
		s.stats.IdleExpiries++
		ch.deadAnswered = true
		e = errIdleExpired
	case !ch.user.active:
		e = errInactiveUser
	}
	if e != nil {
		return tokenResponse{}, afterRotate{}, e
	}
	resp := s.issueLocked(ch, now, base)
	s.stats.Refreshes++
	after := afterRotate{hold: s.ctl.hold, rotation: s.recordRotationLocked(ch, p.token, resp.RefreshToken, now, local)}
	switch {
	case s.ctl.dropNext > 0:
		s.ctl.dropNext--
		after.drop = true
	case s.ctl.dropRate > 0 && s.ctl.rng.Float64() < s.ctl.dropRate:
		after.drop = true
	}
	return resp, after, nil
}

// arrive registers a refresh presentation as in flight.
func (s *Server) arrive(token string) *presentation {
	s.mu.Lock()
	defer s.mu.Unlock()
	p := &presentation{token: token, concurrent: s.presenting[token] > 0}
	if p.concurrent {
		s.stats.ConcurrentPresentations++
	}
	s.presenting[token]++
	if rt, ok := s.refresh[token]; ok {
		ch := rt.chain
		p.chain = ch
		ch.inFlight++
		ch.pending++
		s.stats.MaxConcurrentPresentations = max(s.stats.MaxConcurrentPresentations, ch.inFlight)
		if ch.deadAnswered {
			s.stats.CallsAfterDead++
		}
	}
	return p
}

// leave ends a presentation when it is answered or abandoned. Calls after
// the first do nothing.
func (s *Server) leave(p *presentation) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if p.left {
		return
	}
	p.left = true
	if n := s.presenting[p.token] - 1; n > 0 {
		s.presenting[p.token] = n
	} else {
		delete(s.presenting, p.token)
	}
	if p.chain != nil {
		p.chain.inFlight--
	}
	s.settleLocked(p)
}

// settleLocked marks a presentation as no longer waiting to be processed and
// kills a poisoned chain once none is.
func (s *Server) settleLocked(p *presentation) {
	if p.settled {
		return
	}
	p.settled = true
	if ch := p.chain; ch != nil {
		ch.pending--
		if ch.poisoned && ch.pending == 0 {
			s.revokeChainLocked(ch)
		}
	}
}

// dropConnection closes the connection without an answer, so the client
// cannot tell whether its refresh happened.
func dropConnection(w http.ResponseWriter) {
	conn, _, err := http.NewResponseController(w).Hijack()
	if err != nil {
		// HTTP/2 cannot hijack; aborting the handler resets the stream,
		// which the client sees the same way.
		panic(http.ErrAbortHandler)
	}
	_ = conn.Close()
}

// delay applies the injected latency. It reports false when the request was
// cancelled meanwhile.
func (s *Server) delay(ctx context.Context) bool {
	s.mu.Lock()
	latency := s.ctl.latency
	s.mu.Unlock()
	if latency == nil {
		return true
	}
	if d := latency(); d > 0 {
		return waitAnswer(ctx, d)
	}
	return true
}
