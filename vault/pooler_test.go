package vault_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/tokenwarm/tokenwarm/internal/testkit"
	"github.com/tokenwarm/tokenwarm/vault"
)

// Each refresh holds two database connections at once: the row lock's
// transaction and the attempt marker's claim. Two replicas share a
// PgBouncer pool (transaction mode) of 3 server connections, smaller than
// their combined demand (2 replicas × refresh slots × 2 connections).
//
// Below the sizing rule of docs/POOLERS.md (4 slots per replica: every
// server connection can be held by a row lock waiting for its marker) the
// claim's wait is bounded like a lock wait: no deadlock, every call is
// answered in time with a token or a retryable error (503 with Retry-After
// at the HTTP layer), and what failed is retried cleanly. At the rule (1
// slot per replica: pool >= slots + 1, though still below the demand of 4)
// every call gets its token. Either way each token is presented exactly
// once and every chain stays alive.
func TestRefreshesThroughAPoolerPoolSmallerThanTheDemand(t *testing.T) {
	t.Run("below the sizing rule", func(t *testing.T) { smallPoolerPool(t, 4, false) })
	t.Run("at the sizing rule", func(t *testing.T) { smallPoolerPool(t, 1, true) })
}

func smallPoolerPool(t *testing.T, slots int, allSucceed bool) {
	e := newEnvOn(t, testkit.SmallPgBouncer)
	// A short lease (2 s + 2 s + 5 s): a claim that timed out at the client
	// may still have committed (the pooler forwarded it as the client gave
	// up); its marker then holds the connection until the lease ends and
	// the next attempt introspects. The clean retries below wait that long.
	cfg := vault.Config{LockTimeout: 2 * time.Second, UpstreamTimeout: 2 * time.Second, CommitRetryBudget: 2 * time.Second,
		MaxConcurrentRefreshes: slots}
	replicas := []*vault.Vault{e.vault(cfg), e.vault(cfg)}

	const conns = 12
	ids := make([]string, conns)
	for i := range ids {
		ids[i] = e.connect(replicas[0], fmt.Sprintf("pool%d@example.com", i))
	}
	e.Clock.Advance(testkit.SessionTimeout + time.Minute)
	e.Emu.ResetStats()

	type answer struct {
		id  string
		err error
	}
	answers := make([]answer, conns*len(replicas)*2)
	started := time.Now()
	testkit.Concurrently(len(answers), func(i int) {
		id := ids[i%conns]
		v := replicas[(i/conns)%len(replicas)]
		_, err := v.GetAccessToken(context.Background(), id, 5*time.Minute)
		answers[i] = answer{id, err}
	})
	took := time.Since(started)
	// Without the bound, the row locks wait for their markers until
	// Postgres ends them as idle in transaction (60s).
	if took > 45*time.Second {
		t.Fatalf("the burst took %s: the replicas waited on each other", took)
	}

	done := map[string]bool{}
	failed := 0
	why := map[string]int{}
	for _, a := range answers {
		if a.err == nil {
			done[a.id] = true
			continue
		}
		failed++
		var ve *vault.Error
		if !errors.As(a.err, &ve) || (ve.Code != vault.CodeUnavailable && ve.Code != vault.CodeUpstreamUnavailable) || ve.RetryAfter <= 0 {
			t.Fatalf("a call failed with %v: want a retryable error with Retry-After", a.err)
		}
		why[ve.Message]++
	}
	if allSucceed && failed > 0 {
		t.Fatalf("%d of %d calls failed (%v), want none at the sizing rule", failed, len(answers), why)
	}
	t.Logf("burst of %d calls through a pool of 3: %d answered with a token, %d asked to retry (%v), in %s",
		len(answers), len(answers)-failed, failed, why, took.Round(time.Millisecond))

	// Clean retries: one caller at a time, each connection gets its token.
	for _, id := range ids {
		for attempt := 0; !done[id]; attempt++ {
			if attempt == 20 {
				t.Fatalf("connection %s still not refreshed after %d retries", id, attempt)
			}
			if _, err := replicas[attempt%2].GetAccessToken(context.Background(), id, 5*time.Minute); err == nil {
				done[id] = true
			} else if vaultCode(t, err) != vault.CodeUnavailable && vaultCode(t, err) != vault.CodeUpstreamUnavailable {
				t.Fatalf("retry of %s: %v", id, err)
			} else {
				time.Sleep(time.Second)
			}
		}
	}
	st := e.Emu.Stats()
	if st.StalePresentations != 0 || st.ChainsRevoked != 0 {
		t.Fatalf("emulator saw stale=%d revoked=%d, want 0/0", st.StalePresentations, st.ChainsRevoked)
	}
	if st.Refreshes != conns {
		t.Fatalf("emulator saw %d refreshes for %d connections", st.Refreshes, conns)
	}
	for _, id := range ids {
		if !e.Emu.ChainAlive(e.storedRefreshToken(id)) {
			t.Fatalf("stored refresh token of %s is not the live one", id)
		}
		if m := e.marker(id); m != nil {
			t.Fatalf("connection %s keeps an attempt marker: %+v", id, m)
		}
	}
}
