package emulator

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"strconv"
	"strings"
	"time"
)

// user is a user of the emulated org, identified by username.
type user struct {
	name   string
	id     string
	active bool
	chains []*chain // oldest first
}

// chain is the token family one authorization starts: every refresh token
// it rotates through and every access token issued along the way.
type chain struct {
	user     *user
	clientID string
	scope    string
	offline  bool   // the scope allows a refresh token
	current  string // the one live refresh token; older ones are stale
	lastUse  time.Time
	dead     bool
	expired  bool // forced idle expiry (ExpireChainOf)
	// poisoned marks a chain that saw a concurrent presentation. It dies as
	// soon as no presentation of it is waiting to be processed, so the
	// request that was already in flight still gets its answer.
	poisoned bool
	// deadAnswered records that a client was told the chain is dead; any
	// later presentation is counted in Stats.CallsAfterDead.
	deadAnswered bool
	inFlight     int // requests presenting one of its tokens right now
	pending      int // of those, the ones not yet processed
}

type refreshToken struct {
	chain  *chain
	issued time.Time
}

type accessToken struct {
	chain   *chain
	issued  time.Time
	expires time.Time
	revoked bool
}

type authCode struct {
	clientID    string
	redirectURI string
	challenge   string
	scope       string
	user        *user
	expires     time.Time
}

// tokenResponse is Salesforce's token answer. It has no expires_in: the
// session timeout is an org setting the client has to learn elsewhere.
type tokenResponse struct {
	AccessToken  string `json:"access_token"`
	RefreshToken string `json:"refresh_token,omitempty"`
	Signature    string `json:"signature"`
	Scope        string `json:"scope"`
	InstanceURL  string `json:"instance_url"`
	ID           string `json:"id"`
	TokenType    string `json:"token_type"`
	IssuedAt     string `json:"issued_at"`
}

const alnum = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"

// toAlnum maps bytes onto Salesforce's ID alphabet. The modulo bias does not
// matter: IDs must be distinct, not secret.
func toAlnum(b []byte) string {
	out := make([]byte, len(b))
	for i, c := range b {
		out[i] = alnum[int(c)%len(alnum)]
	}
	return string(out)
}

func newOrgID() string {
	b := make([]byte, 15)
	_, _ = rand.Read(b) // crypto/rand.Read never fails
	return "00D" + toAlnum(b)
}

// userIDFor derives the user ID from org and username, so a user keeps the
// same ID across emulator restarts with a fixed org.
func userIDFor(orgID, username string) string {
	sum := sha256.Sum256([]byte(orgID + "\x00" + username))
	return "005" + toAlnum(sum[:15])
}

func randomString(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return base64.RawURLEncoding.EncodeToString(b)
}

// newAccessToken looks like Salesforce's: the 15-character org ID, "!", and
// an opaque tail. Tokens are long so a substring search in logs means something.
func (s *Server) newAccessToken() string {
	org := s.cfg.DefaultOrgID
	if len(org) > 15 {
		org = org[:15]
	}
	return s.remember(org + "!" + randomString(48))
}

func (s *Server) newRefreshToken() string { return s.remember("5Aep861" + randomString(60)) }

func (s *Server) newCode() string { return s.remember("aPrx" + randomString(48)) }

// remember records a secret for IssuedTokens. Caller holds s.mu.
func (s *Server) remember(tok string) string {
	s.issued = append(s.issued, tok)
	return tok
}

// userLocked returns the user with that username, creating it on first sight.
func (s *Server) userLocked(username string) *user {
	name := strings.ToLower(strings.TrimSpace(username))
	if name == "" {
		name = defaultUsername
	}
	u, ok := s.users[name]
	if !ok {
		u = &user{name: name, id: userIDFor(s.cfg.DefaultOrgID, name), active: true}
		s.users[name] = u
	}
	return u
}

func offlineScope(scope string) bool {
	for _, sc := range strings.Fields(scope) {
		if sc == "refresh_token" || sc == "offline_access" {
			return true
		}
	}
	return false
}

// issueLocked hands out a new access token, and a new refresh token when the
// scope allows one, making it the chain's only live refresh token.
func (s *Server) issueLocked(ch *chain, now time.Time, base string) tokenResponse {
	at := s.newAccessToken()
	s.access[at] = &accessToken{chain: ch, issued: now, expires: now.Add(s.cfg.SessionTimeout)}
	resp := tokenResponse{
		AccessToken: at,
		Scope:       ch.scope,
		InstanceURL: base,
		ID:          identityURL(base, s.cfg.DefaultOrgID, ch.user.id),
		TokenType:   "Bearer",
		IssuedAt:    strconv.FormatInt(now.UnixMilli(), 10),
	}
	// Salesforce signs id+issued_at with the client secret so a client can
	// check the identity URL was not tampered with.
	mac := hmac.New(sha256.New, []byte(s.cfg.ClientSecret))
	mac.Write([]byte(resp.ID + resp.IssuedAt))
	resp.Signature = base64.StdEncoding.EncodeToString(mac.Sum(nil))
	if ch.offline {
		rt := s.newRefreshToken()
		s.refresh[rt] = &refreshToken{chain: ch, issued: now}
		ch.current = rt
		resp.RefreshToken = rt
	}
	ch.lastUse = now
	return resp
}

func (s *Server) idleExpiredLocked(ch *chain, now time.Time) bool {
	return ch.expired || now.Sub(ch.lastUse) > s.cfg.IdleTTL
}

// chainAliveLocked tells whether the chain could still refresh. It does not
// count or record anything: only a presentation does.
func (s *Server) chainAliveLocked(ch *chain, now time.Time) bool {
	return !ch.dead && !s.idleExpiredLocked(ch, now)
}

// revokeChainLocked kills a chain: its refresh token and, because access
// tokens check their chain, all its access tokens.
func (s *Server) revokeChainLocked(ch *chain) {
	if !ch.dead {
		ch.dead = true
		s.stats.ChainsRevoked++
	}
}

// liveAccessLocked returns the access token if it is usable right now.
func (s *Server) liveAccessLocked(tok string, now time.Time) (*accessToken, bool) {
	at, ok := s.access[tok]
	if !ok || at.revoked || at.chain.dead || !at.chain.user.active || !now.Before(at.expires) {
		return nil, false
	}
	return at, true
}

// liveRefreshLocked returns the refresh token if presenting it would succeed.
func (s *Server) liveRefreshLocked(tok string, now time.Time) (*refreshToken, bool) {
	rt, ok := s.refresh[tok]
	if !ok || rt.chain.current != tok || !s.chainAliveLocked(rt.chain, now) || !rt.chain.user.active {
		return nil, false
	}
	return rt, true
}
