package warmer

import (
	"fmt"
	"time"
)

// ValidateConfig refuses a warm schedule that could let a refresh token go
// idle for a whole idle TTL (Salesforce's 30 days by default; an org admin
// may set another). A connection is warmed at most interval·(1+jitter)
// after its last refresh; retryBudget is the longest span of failed
// attempts (backoff) tolerated after that before somebody is alerted. Pass
// the effective values (after defaults).
func ValidateConfig(interval time.Duration, jitter float64, retryBudget, idleTTL time.Duration) error {
	switch {
	case interval <= 0:
		return fmt.Errorf("warm interval %s: must be positive", interval)
	case jitter < 0 || jitter >= 1:
		return fmt.Errorf("warm jitter %g: must be at least 0 and below 1", jitter)
	case retryBudget < 0:
		return fmt.Errorf("warm retry budget %s: must not be negative", retryBudget)
	}
	// In float64: a huge interval must fail here, not overflow.
	worst := float64(interval)*(1+jitter) + float64(retryBudget)
	if worst >= float64(idleTTL) {
		return fmt.Errorf("warm interval %s with jitter %g and a retry budget of %s can leave a refresh token unused for %s, which reaches the %s idle expiry",
			interval, jitter, retryBudget, time.Duration(worst).Round(time.Hour), idleTTL)
	}
	return nil
}
