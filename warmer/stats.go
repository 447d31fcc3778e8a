package warmer

import (
	"context"
	"fmt"
	"time"
)

// Outcomes counts warm refreshes by outcome class.
type Outcomes struct {
	// OK: refreshed at Salesforce.
	OK int64
	// SkippedAlreadyFresh: someone refreshed the connection after it was
	// claimed, so no call was needed.
	SkippedAlreadyFresh int64
	// Transient: Salesforce unavailable or rate limiting, or another worker
	// busy with the connection; retried after backoff.
	Transient int64
	// Dead: the connection needs re-authorization (or was revoked or
	// deleted meanwhile).
	Dead int64
	// Config: Salesforce refused tokenwarm's configuration; warming paused.
	Config int64
	// Failed: tokenwarm's own trouble (database, key ring).
	Failed int64
}

func (o *Outcomes) add(c outcome) {
	switch c {
	case outcomeOK:
		o.OK++
	case outcomeSkipped:
		o.SkippedAlreadyFresh++
	case outcomeTransient:
		o.Transient++
	case outcomeDead:
		o.Dead++
	case outcomeConfig:
		o.Config++
	default:
		o.Failed++
	}
}

// Stats is what a metrics collector reads: counters since New, and gauges
// measured at the end of the last complete pass.
type Stats struct {
	Passes         int64
	Claimed        int64
	Outcomes       Outcomes
	Probes         int64
	IdleRiskEvents int64
	// ReauthSoonEvents counts reauth_soon events this warmer recorded.
	ReauthSoonEvents int64
	// Paused is the app-wide pause after a configuration error, as of now.
	Paused bool

	LastPassDuration time.Duration
	// MinIdleBudget is the smallest idle budget (the org's idle TTL minus the time
	// since the last successful refresh) among active connections; IdleTTL
	// when there are none. Negative means a token is past the TTL.
	MinIdleBudget time.Duration
	// Backlog counts active connections due for warming.
	Backlog int64
}

// Stats returns a snapshot of the counters and gauges.
func (w *Warmer) Stats() Stats {
	w.statsMu.Lock()
	s := w.stats
	w.statsMu.Unlock()
	s.Paused = w.paused.Load()
	return s
}

// measure updates the gauges. Both queries aggregate in the database;
// nothing is loaded per connection.
func (w *Warmer) measure(ctx context.Context) error {
	now := w.clock.Now().UTC()
	backlog, err := w.store.WarmBacklog(ctx, now)
	if err != nil {
		return fmt.Errorf("measure backlog: %w", err)
	}
	ttls, err := w.store.IdleTTLs(ctx, w.idleTTL)
	if err != nil {
		return fmt.Errorf("measure idle budget: %w", err)
	}
	budget := ttls.Default
	for _, g := range ttls.Scopes() {
		oldest, err := w.store.OldestRefresh(ctx, g.Scope)
		if err != nil {
			return fmt.Errorf("measure idle budget: %w", err)
		}
		if !oldest.IsZero() {
			budget = min(budget, g.TTL-now.Sub(oldest))
		}
	}
	w.statsMu.Lock()
	w.stats.Backlog = backlog
	w.stats.MinIdleBudget = budget
	w.statsMu.Unlock()
	return nil
}
