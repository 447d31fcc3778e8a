package emulator

import "slices"

// Stats counts what the emulator saw. Tests use it to prove what a client
// did not do (present a token twice, retry a dead one).
type Stats struct {
	Refreshes          int // successful refresh grants (rotations)
	Exchanges          int // successful authorization-code exchanges
	StalePresentations int // already-rotated refresh tokens presented; each revoked its chain
	// ChainsRevoked counts chains killed by a stale or concurrent
	// presentation, the revoke endpoint or RevokeUser. Idle expiry is
	// counted in IdleExpiries instead.
	ChainsRevoked int
	IdleExpiries  int // presentations that found their chain idle past IdleTTL
	// MaxConcurrentPresentations is the most refresh requests observed in
	// flight at once for any one chain. A correct client keeps it at 1.
	MaxConcurrentPresentations int
	// CallsAfterDead counts refresh presentations for a chain the emulator
	// had already declared dead to some client. A correct client keeps it at 0.
	CallsAfterDead int
	// ConcurrentPresentations counts refresh presentations that arrived
	// while the same token was already in flight. A correct client keeps it
	// at 0.
	ConcurrentPresentations int
	// LostRotations counts successful rotations whose answer never reached
	// the client (see LostRotations).
	LostRotations    int
	IPRejections     int // calls refused by the IP allowlist
	ClientErrors     int // token or introspection calls with a bad client ID or secret
	InjectedFailures int // answers from FailNext or SetFailureRate
	Revocations      int // successful revoke calls
	Introspections   int // introspection calls with valid client credentials
	// RefreshIntrospections counts those about a refresh token the emulator
	// issued, current or rotated (the rest are about access tokens or
	// unknown tokens).
	RefreshIntrospections int
	// InjectedIntrospectionFailures counts answers from SetIntrospectionFailure.
	InjectedIntrospectionFailures int
	// TokenCalls counts every token-endpoint request at its arrival,
	// whatever its outcome: "no upstream call" means it did not move.
	TokenCalls int
	// Held is how many rotated refreshes are waiting in HoldRefreshes now.
	Held int
}

// Stats returns a snapshot of the counters.
func (s *Server) Stats() Stats {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.stats
}

// ResetStats zeroes the counters; tokens and chains are untouched.
func (s *Server) ResetStats() {
	s.mu.Lock()
	defer s.mu.Unlock()
	held := s.stats.Held
	s.stats = Stats{Held: held}
}

// count bumps one counter, e.g. s.count(&s.stats.IPRejections).
func (s *Server) count(counter *int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	*counter++
}

// CurrentRefreshToken returns the live refresh token of the user's newest
// chain, if that chain is alive and has one.
func (s *Server) CurrentRefreshToken(orgID, userID string) (string, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if orgID != s.cfg.DefaultOrgID {
		return "", false
	}
	for _, u := range s.users {
		if u.id != userID || len(u.chains) == 0 {
			continue
		}
		ch := u.chains[len(u.chains)-1]
		if ch.current == "" || !s.chainAliveLocked(ch, s.cfg.Clock.Now()) {
			return "", false
		}
		return ch.current, true
	}
	return "", false
}

// IssuedTokens returns every access token, refresh token and authorization
// code issued so far, so a test can scan logs and stores for leaks.
func (s *Server) IssuedTokens() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.issued)
}

// ChainAlive reports whether the chain refreshToken belongs to can still
// refresh. It says nothing about whether this token is the current one.
func (s *Server) ChainAlive(refreshToken string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	rt, ok := s.refresh[refreshToken]
	return ok && s.chainAliveLocked(rt.chain, s.cfg.Clock.Now())
}

func (s *Server) addHeld(n int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.stats.Held += n
}
