package vault_test

import (
	"context"
	"testing"
	"time"

	"github.com/tokenwarm/tokenwarm/internal/testkit"
	"github.com/tokenwarm/tokenwarm/models"
	"github.com/tokenwarm/tokenwarm/vault"
)

// slowClaims is a store whose attempt-marker claims are acknowledged late,
// as behind a stalled synchronous standby: the claim commits, then the
// answer takes delay to arrive.
type slowClaims struct {
	*models.DB
	delay time.Duration
}

func (s *slowClaims) ClaimAttempt(ctx context.Context, c *models.Connection, prior *models.Attempt, attemptID, worker string, lease time.Duration) error {
	err := s.DB.ClaimAttempt(context.WithoutCancel(ctx), c, prior, attemptID, worker, lease)
	time.Sleep(s.delay)
	return err
}

// A claim that outlasts its budget is not followed by a presentation: the
// lease it started might end under the call, and the next worker would then
// introspect while Salesforce may still be rotating. The token stays live
// and the next attempt, after the lease, introspects and refreshes.
func TestSlowClaimIsNotFollowedByAPresentation(t *testing.T) {
	testkit.Dialects(t, func(t *testing.T, dialect models.Dialect) {
		e := newEnvAt(t, dialect, time.Now().UTC())
		// Lease 1 s + 1 s + 5 s = 7 s, so a claim may take 1 s.
		cfg := vault.Config{UpstreamTimeout: time.Second, CommitRetryBudget: time.Second}
		id := e.connect(e.vault(cfg), "slowclaim@example.com")
		e.Clock.Advance(testkit.SessionTimeout + time.Minute)
		e.Emu.ResetStats()

		slow := vault.New(&slowClaims{DB: e.openDB(), delay: 1500 * time.Millisecond}, e.Ring, e.SFClient(), e.Clock, e.Log, cfg)
		_, err := slow.GetAccessToken(context.Background(), id, time.Minute)
		if vault.ErrorCode(err) != vault.CodeUpstreamUnavailable {
			t.Fatalf("slow claim: %v, want upstream_unavailable", err)
		}
		if st := e.Emu.Stats(); st.Refreshes != 0 || st.StalePresentations != 0 || st.MaxConcurrentPresentations != 0 {
			t.Fatalf("the token was presented after a claim that outlasted its budget: %+v", st)
		}
		if c := e.conn(id); c.Status != models.StatusActive {
			t.Fatalf("status %s after a refused claim", c.Status)
		}
		// While the marker's lease runs, a normal worker is told to retry;
		// once it ends, the worker introspects (the token was never
		// presented, so it is live) and refreshes: the chain is alive.
		fresh := e.vault(cfg)
		for deadline := time.Now().Add(30 * time.Second); ; {
			_, err := fresh.GetAccessToken(context.Background(), id, time.Minute)
			if err == nil {
				break
			}
			if vault.ErrorCode(err) != vault.CodeUpstreamUnavailable || time.Now().After(deadline) {
				t.Fatalf("refresh after the lease: %v", err)
			}
			time.Sleep(100 * time.Millisecond)
		}
		if st := e.Emu.Stats(); st.Refreshes != 1 || st.StalePresentations != 0 || st.ChainsRevoked != 0 {
			t.Fatalf("after the lease: %+v, want one refresh and no reuse", st)
		}
	})
}
