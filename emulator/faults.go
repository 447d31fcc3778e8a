package emulator

import (
	"fmt"
	"math/rand/v2"
	"net/http"
	"net/netip"
	"strings"
	"time"
)

// controls are the knobs tests turn to make the emulator misbehave.
type controls struct {
	latency         func() time.Duration
	failNext        int
	failNextStatus  int
	failRate        float64
	failRateStatus  int
	rng             *rand.Rand
	dropNext        int
	dropRate        float64
	answerLatency   func() time.Duration
	hold            chan struct{}
	introFailNext   int
	introFailStatus int
	allowed         []netip.Prefix
	// allowedAll applies allowed to revoke and introspection as well.
	allowedAll bool
}

func newControls() controls {
	return controls{rng: rand.New(rand.NewPCG(rand.Uint64(), rand.Uint64()))}
}

// SetLatency delays every token-endpoint call by fn() before it is
// processed; nil removes the delay. A request whose client goes away during
// the delay is not processed at all. fn must be safe for concurrent use.
func (s *Server) SetLatency(fn func() time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.ctl.latency = fn
}

// FailNext makes the next n token-endpoint calls answer status (503 when 0)
// without being processed.
func (s *Server) FailNext(n int, status int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.ctl.failNext, s.ctl.failNextStatus = n, orUnavailable(status)
}

// SetFailureRate makes a fraction p of token-endpoint calls answer status
// (503 when 0) without being processed. SetRand makes the choice repeatable.
func (s *Server) SetFailureRate(p float64, status int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.ctl.failRate, s.ctl.failRateStatus = p, orUnavailable(status)
}

// SetRand replaces the random source behind SetFailureRate and SetDropRate. The Server
// serializes its use, so r need not be safe for concurrent use.
func (s *Server) SetRand(r *rand.Rand) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.ctl.rng = r
}

func orUnavailable(status int) int {
	if status == 0 {
		return http.StatusServiceUnavailable
	}
	return status
}

// injectedFailure consumes an injected failure if one is due.
func (s *Server) injectedFailure() *oauthError {
	s.mu.Lock()
	defer s.mu.Unlock()
	var status int
	switch {
	case s.ctl.failNext > 0:
		s.ctl.failNext--
		status = s.ctl.failNextStatus
	case s.ctl.failRate > 0 && s.ctl.rng.Float64() < s.ctl.failRate:
		status = s.ctl.failRateStatus
	default:
		return nil
	}
	s.stats.InjectedFailures++
	code := "service_unavailable"
	switch status {
	case http.StatusTooManyRequests:
		code = "rate_limit_exceeded"
	case http.StatusInternalServerError:
		code = "server_error"
	}
	return &oauthError{status: status, Code: code, Description: "injected failure"}
}

// DropAfterRotateNext makes the next n successful refresh grants rotate the
// chain and then close the connection without answering: the new token is
// current upstream but the client never saw it.
func (s *Server) DropAfterRotateNext(n int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.ctl.dropNext = n
}

// HoldRefreshes makes successful refresh grants wait after rotating and
// before answering, until release is called (or the client goes away). It
// lets a test kill a client after the emulator rotated. Calls do not nest:
// while a hold is on, another call shares it.
func (s *Server) HoldRefreshes() (release func()) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ctl.hold == nil {
		s.ctl.hold = make(chan struct{})
	}
	hold := s.ctl.hold
	return func() {
		s.mu.Lock()
		defer s.mu.Unlock()
		if s.ctl.hold == hold {
			close(hold)
			s.ctl.hold = nil
		}
	}
}

// SetAllowedIPs restricts the token endpoint to clients from these ranges
// ("203.0.113.0/24") or addresses ("2001:db8::1"), like a connected app's
// Refresh Token IP Allowlist: only listed sources complete the web server
// flow (the code exchange) or the refresh token flow; others get 400
// invalid_grant "ip restricted or invalid login hours" and nothing happens
// to the token. The authorize page is not restricted (the user's browser
// signs in from anywhere). Empty lifts the restriction.
func (s *Server) SetAllowedIPs(ranges []string) error {
	prefixes := make([]netip.Prefix, 0, len(ranges))
	for _, r := range ranges {
		r = strings.TrimSpace(r)
		var p netip.Prefix
		var err error
		if strings.Contains(r, "/") {
			p, err = netip.ParsePrefix(r)
		} else {
			var a netip.Addr
			a, err = netip.ParseAddr(r)
			p = netip.PrefixFrom(a, a.BitLen())
		}
		if err != nil {
			return fmt.Errorf("emulator: allowed IP %q: %w", r, err)
		}
		prefixes = append(prefixes, p.Masked())
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.ctl.allowed = prefixes
	return nil
}

// RestrictRevokeAndIntrospect applies the allowlist of SetAllowedIPs to
// the revoke and introspection endpoints too. Salesforce documents the
// allowlist for the web server and refresh token flows only and says
// nothing of these two, so this is the harsher reading: a client that
// passes with it sends every call through its fixed egress.
func (s *Server) RestrictRevokeAndIntrospect(on bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.ctl.allowedAll = on
}

// ipRefused answers a call from a source outside the allowlist the way the
// token endpoint does, and reports whether it did. everywhere says the call
// is not a token-endpoint call (revoke, introspection).
func (s *Server) ipRefused(w http.ResponseWriter, r *http.Request, everywhere bool) bool {
	s.mu.Lock()
	skip := everywhere && !s.ctl.allowedAll
	s.mu.Unlock()
	if skip || s.ipAllowed(r) {
		return false
	}
	s.count(&s.stats.IPRejections)
	errIPRestricted.write(w)
	return true
}

func (s *Server) ipAllowed(r *http.Request) bool {
	s.mu.Lock()
	allowed := s.ctl.allowed // replaced, never modified in place
	s.mu.Unlock()
	if len(allowed) == 0 {
		return true
	}
	ap, err := netip.ParseAddrPort(r.RemoteAddr)
	if err != nil {
		return false
	}
	addr := ap.Addr().Unmap()
	for _, p := range allowed {
		if p.Contains(addr) {
			return true
		}
	}
	return false
}

// SetUserActive activates or deactivates a user (created if unknown).
// An inactive user's refreshes answer inactive_user and its access tokens
// stop working; its chains survive, as they do when an admin re-activates.
func (s *Server) SetUserActive(username string, active bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.userLocked(username).active = active
}

// RevokeUser revokes every chain of the user, as an admin would.
func (s *Server) RevokeUser(username string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, ch := range s.userLocked(username).chains {
		s.revokeChainLocked(ch)
	}
}

// ExpireChainOf makes the chain of refreshToken idle-expired, as if its idle
// TTL had run out: the next presentation answers "token validity expired".
// It reports whether the token is known.
func (s *Server) ExpireChainOf(refreshToken string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	rt, ok := s.refresh[refreshToken]
	if ok {
		rt.chain.expired = true
	}
	return ok
}
