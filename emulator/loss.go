package emulator

import (
	"context"
	"encoding/json"
	"net"
	"net/http"
	"slices"
	"time"
)

// Why a rotation's answer never reached its client.
const (
	// LostDropped: the emulator closed the connection instead of answering
	// (DropAfterRotateNext, SetDropRate).
	LostDropped = "dropped"
	// LostClientGone: the client went away before the answer was written
	// (during SetAnswerLatency or HoldRefreshes), or writing it failed.
	LostClientGone = "client_gone"
)

// Rotation is one successful refresh grant: the chain moved from Presented
// to Issued, whatever became of the answer.
type Rotation struct {
	Username  string
	UserID    string
	Presented string // the refresh token presented, stale from At on
	Issued    string // the new current refresh token
	At        time.Time
	// Local is the emulator's listening address the request came in on
	// (the server side of the connection), so a harness serving several
	// clients on distinct listeners can tell them apart. Empty if unknown.
	Local string
	// Delivered: the answer was written and flushed to the connection
	// without error. It does not prove the client read it (a client killed
	// right after the write is indistinguishable here). Lost records are
	// the ones that certainly did not arrive.
	Delivered   bool
	AnsweredAt  time.Time // when the answer was flushed or given up on
	Why         string    // for undelivered ones: LostDropped or LostClientGone
	deliverable bool      // settled: Delivered or Why is final
}

// LostRotation is a successful rotation whose answer never reached the
// client: Salesforce's chain moved on while the client still holds Presented.
type LostRotation = Rotation

// SetDropRate makes a fraction p of successful refresh grants rotate the
// chain and then close the connection without answering, like
// DropAfterRotateNext. SetRand makes the choice repeatable.
func (s *Server) SetDropRate(p float64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.ctl.dropRate = p
}

// SetAnswerLatency delays the answer of every successful refresh grant by
// fn() after the chain rotated: a client that goes away meanwhile holds a
// token that is already stale (the rotation stands, as upstream), and the
// rotation is recorded as lost. nil removes the delay. fn must be safe for
// concurrent use.
func (s *Server) SetAnswerLatency(fn func() time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.ctl.answerLatency = fn
}

// SetIntrospectionFailure makes the next n introspection calls answer status
// (503 when 0; 401 answers invalid_client) without looking at the token.
func (s *Server) SetIntrospectionFailure(status int, n int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.ctl.introFailNext, s.ctl.introFailStatus = n, orUnavailable(status)
}

// Rotations returns every successful rotation so far, oldest first.
func (s *Server) Rotations() []Rotation {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.rotations)
}

// LostRotations returns the rotations whose answer certainly did not reach
// the client, oldest first.
func (s *Server) LostRotations() []LostRotation {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []LostRotation
	for _, r := range s.rotations {
		if r.deliverable && !r.Delivered {
			out = append(out, r)
		}
	}
	return out
}

// recordRotationLocked logs a rotation and returns its index.
func (s *Server) recordRotationLocked(ch *chain, presented, issued string, now time.Time, local string) int {
	s.rotations = append(s.rotations, Rotation{
		Username: ch.user.name, UserID: ch.user.id,
		Presented: presented, Issued: issued, At: now, Local: local,
	})
	return len(s.rotations) - 1
}

// settleRotation records what became of a rotation's answer.
func (s *Server) settleRotation(i int, delivered bool, why string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	r := &s.rotations[i]
	if r.deliverable {
		return
	}
	r.deliverable = true
	r.Delivered = delivered
	r.AnsweredAt = s.cfg.Clock.Now()
	if !delivered {
		r.Why = why
		s.stats.LostRotations++
	}
}

// answerLatency returns the injected delay before a rotation's answer.
func (s *Server) answerLatency() time.Duration {
	s.mu.Lock()
	fn := s.ctl.answerLatency
	s.mu.Unlock()
	if fn == nil {
		return 0
	}
	return fn()
}

// waitAnswer sleeps d unless ctx ends first; it reports whether it slept
// (the injected latencies, before processing and before answering).
func waitAnswer(ctx context.Context, d time.Duration) bool {
	if d <= 0 {
		return ctx.Err() == nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// writeAnswer writes a token answer and flushes it, reporting whether both
// worked.
func writeAnswer(w http.ResponseWriter, v any) bool {
	h := w.Header()
	h.Set("Content-Type", "application/json;charset=UTF-8")
	h.Set("Cache-Control", "no-store")
	h.Set("Pragma", "no-cache")
	w.WriteHeader(http.StatusOK)
	if err := json.NewEncoder(w).Encode(v); err != nil {
		return false
	}
	return http.NewResponseController(w).Flush() == nil
}

// localAddr is the listening address the request arrived on.
func localAddr(r *http.Request) string {
	if a, ok := r.Context().Value(http.LocalAddrContextKey).(net.Addr); ok {
		return a.String()
	}
	return ""
}

// injectedIntrospectionFailure consumes an injected introspection failure.
func (s *Server) injectedIntrospectionFailure() *oauthError {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ctl.introFailNext <= 0 {
		return nil
	}
	s.ctl.introFailNext--
	s.stats.InjectedIntrospectionFailures++
	status := s.ctl.introFailStatus
	code := "service_unavailable"
	switch status {
	case http.StatusUnauthorized:
		code = "invalid_client"
	case http.StatusTooManyRequests:
		code = "rate_limit_exceeded"
	case http.StatusInternalServerError:
		code = "server_error"
	}
	return &oauthError{status: status, Code: code, Description: "injected failure"}
}
