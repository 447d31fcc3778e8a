package vault_test

import (
	"context"
	"net/http"
	"os"
	"os/exec"
	"testing"
	"time"

	"github.com/tokenwarm/tokenwarm/clock"
	"github.com/tokenwarm/tokenwarm/internal/testkit"
	"github.com/tokenwarm/tokenwarm/models"
	"github.com/tokenwarm/tokenwarm/salesforce"
	"github.com/tokenwarm/tokenwarm/seal"
	"github.com/tokenwarm/tokenwarm/vault"
)

// TestHelperRefreshWorker is not a test: it is the worker process that
// TestKilledWorkerHoldingTheLock starts and kills.
func TestHelperRefreshWorker(t *testing.T) {
	if os.Getenv("TW_HELPER") != "1" {
		t.Skip("helper process only")
	}
	db, err := models.Open(os.Getenv("TW_PG_URL"), "", models.Options{})
	if err != nil {
		t.Fatal(err)
	}
	ring, err := seal.ParseRing(os.Getenv("TW_SEAL"))
	if err != nil {
		t.Fatal(err)
	}
	sf := &salesforce.Client{HTTP: &http.Client{}, ClientID: testkit.ClientID, ClientSecret: testkit.ClientSecret,
		Timeout: 50 * time.Second, SessionTimeout: testkit.SessionTimeout}
	v := vault.New(db, ring, sf, clock.System{}, nil, vault.Config{Worker: "doomed",
		UpstreamTimeout: 50 * time.Second, LockTimeout: 55 * time.Second, AttemptLease: time.Minute})
	_, err = v.Access(context.Background(), os.Getenv("TW_CONN"), vault.Request{Cause: vault.CauseWarm, Force: true})
	t.Fatalf("the worker was meant to be killed before finishing (err=%v)", err)
}

// Acceptance g: a worker killed with SIGKILL while it holds the row lock in
// the middle of a refresh. Another worker proceeds once the lock is freed;
// it presents a stale token only if the emulator had already rotated, and
// then the event log shows the unknown outcome.
func TestKilledWorkerHoldingTheLock(t *testing.T) {
	for _, rotated := range []bool{false, true} {
		name := "killed before the emulator rotated"
		if rotated {
			name = "killed after the emulator rotated"
		}
		t.Run(name, func(t *testing.T) {
			e := newEnvAt(t, models.Postgres, time.Now().UTC())
			v := e.vault(vault.Config{Worker: "survivor"})
			id := e.connect(v, "killed@example.com")
			e.Emu.ResetStats()

			var release func()
			if rotated {
				release = e.Emu.HoldRefreshes()
				defer release()
			} else {
				// The request reaches the emulator, which waits before
				// processing; the worker dies during the wait.
				e.Emu.SetLatency(func() time.Duration { return 30 * time.Second })
			}
			cmd := exec.Command(os.Args[0], "-test.run=^TestHelperRefreshWorker$", "-test.count=1")
			cmd.Env = append(os.Environ(), "TW_HELPER=1", "TW_PG_URL="+e.PGURL, "TW_SEAL="+e.RingSpec, "TW_CONN="+id)
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			waitFor(t, "the worker to present the token while holding the lock", 60*time.Second, func() bool {
				st := e.Emu.Stats()
				if rotated {
					return st.Held == 1
				}
				return st.TokenCalls == 1
			})
			if err := cmd.Process.Kill(); err != nil {
				t.Fatal(err)
			}
			_ = cmd.Wait()
			e.Emu.SetLatency(nil)
			if rotated {
				release()
			}

			// The survivor gets the lock once Postgres notices the dead
			// worker, finds its unfinished attempt, and waits out the lease.
			_, err := v.Access(context.Background(), id, vault.Request{Cause: vault.CauseWarm, Force: true})
			if vaultCode(t, err) != vault.CodeUpstreamUnavailable {
				t.Fatalf("inside the dead worker's lease: %v", err)
			}
			calls := e.Emu.Stats().TokenCalls
			if calls != 1 {
				t.Fatalf("token calls = %d inside the lease, want only the dead worker's", calls)
			}

			e.Clock.Advance(2 * time.Minute)
			_, err = v.Access(context.Background(), id, vault.Request{Cause: vault.CauseWarm, Force: true})
			st := e.Emu.Stats()
			kinds := eventKinds(e.events(id))
			if !contains(kinds, models.EventUnknownOutcome) {
				t.Fatalf("no unknown_outcome event: %v", kinds)
			}
			var markers int64
			e.dbs[0].Gorm.Model(&models.RefreshAttempt{}).Where("connection_id = ?", id).Count(&markers)
			if markers != 0 {
				t.Fatalf("%d attempt markers left", markers)
			}
			if rotated {
				// The dead worker's rotation was lost with it: the only token
				// we hold is stale, and presenting it is the documented
				// consequence, visible in the events.
				if vaultCode(t, err) != vault.CodeReauthRequired || st.StalePresentations != 1 {
					t.Fatalf("err=%v stale=%d", err, st.StalePresentations)
				}
				if e.conn(id).Status != models.StatusNeedsReauth {
					t.Fatal("connection not marked needs_reauth")
				}
				return
			}
			if err != nil || st.StalePresentations != 0 || st.Refreshes != 1 {
				t.Fatalf("err=%v stale=%d refreshes=%d", err, st.StalePresentations, st.Refreshes)
			}
			if !e.Emu.ChainAlive(e.storedRefreshToken(id)) {
				t.Fatal("stored token is not the live one")
			}
		})
	}
}
