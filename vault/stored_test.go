package vault_test

import (
	"context"
	"errors"
	"maps"
	"sync"
	"testing"
	"time"

	"github.com/tokenwarm/tokenwarm/internal/testkit"
	"github.com/tokenwarm/tokenwarm/models"
	"github.com/tokenwarm/tokenwarm/vault"
)

// Config.Stored (the metrics' event counters) hears of exactly the events
// that were committed: a lost answer's unknown outcome, then the lost
// rotation introspection finds; a result whose every commit fails is not
// heard of.
func TestStoredHearsOfCommittedEventsOnly(t *testing.T) {
	dialects(t, func(t *testing.T, dialect models.Dialect) {
		e := newEnv(t, dialect)
		var mu sync.Mutex
		heard := map[string]int{}
		snapshot := func() map[string]int { mu.Lock(); defer mu.Unlock(); return maps.Clone(heard) }
		v := e.vault(vault.Config{CommitRetryBudget: time.Second, Stored: func(kind string) {
			mu.Lock()
			defer mu.Unlock()
			heard[kind]++
		}})
		lost := e.connect(v, "lost@example.com")
		e.Clock.Advance(testkit.SessionTimeout)

		e.Emu.DropAfterRotateNext(1)
		if _, err := v.GetAccessToken(context.Background(), lost, time.Minute); vaultCode(t, err) != vault.CodeUpstreamUnavailable {
			t.Fatalf("dropped answer: %v", err)
		}
		e.Clock.Advance(2 * time.Hour)
		if _, err := v.GetAccessToken(context.Background(), lost, time.Minute); vaultCode(t, err) != vault.CodeReauthRequired {
			t.Fatalf("after the dropped rotation: %v", err)
		}
		stored := map[string]int{}
		for _, k := range eventKinds(e.events(lost)) {
			if k != models.EventConnected { // stored by connect, not the refresh path
				stored[k]++
			}
		}
		got := snapshot()
		if !maps.Equal(got, stored) || got[models.EventUnknownOutcome] != 1 || got[models.EventRotationLost] != 1 || got[models.EventNeedsReauth] != 1 {
			t.Fatalf("heard %v, stored %v", got, stored)
		}

		// Every commit of a refresh result fails: nothing is heard of.
		failing := e.connect(v, "failing@example.com")
		e.Clock.Advance(testkit.SessionTimeout)
		v.SetBeforeCommit(func(int, *models.Tx) error { return errors.New("injected commit failure") })
		if _, err := v.GetAccessToken(context.Background(), failing, time.Minute); err == nil {
			t.Fatal("a refresh whose result was never stored succeeded")
		}
		if after := snapshot(); !maps.Equal(after, got) {
			t.Fatalf("heard %v after a failed store, want %v", after, got)
		}
	})
}
