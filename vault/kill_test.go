package vault_test

import (
	"context"
	"github.com/tokenwarm/tokenwarm/internal/rawdb"
	"net/http"
	"os"
	"os/exec"
	"strings"
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
		UpstreamTimeout: 50 * time.Second, LockTimeout: 55 * time.Second, AttemptLease: killedLease})
	_, err = v.Access(context.Background(), os.Getenv("TW_CONN"), vault.Request{Cause: vault.CauseWarm, Force: true})
	t.Fatalf("the worker was meant to be killed before finishing (err=%v)", err)
}

// killedLease is the doomed worker's attempt lease: short, so the test
// waits it out in real time (leases run on the database's clock).
const killedLease = 3 * time.Second

// Acceptance g, and the reliability issue's first finding: a worker killed
// with SIGKILL while it holds the row lock in the middle of a refresh.
// Nobody touches the token while the dead worker's lease runs. After it,
// the survivor never presents blind: it introspects the stored token.
// Killed before Salesforce rotated, the token is still active and is
// presented; killed after, the token is inactive, the rotation is recorded
// as lost, and the stale token is never presented (no reuse signal).
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

			// Inside the dead worker's lease nobody touches the token.
			_, err := v.Access(context.Background(), id, vault.Request{Cause: vault.CauseWarm, Force: true})
			if vaultCode(t, err) != vault.CodeUpstreamUnavailable {
				t.Fatalf("inside the dead worker's lease: %v", err)
			}
			if st := e.Emu.Stats(); st.TokenCalls != 1 || st.Introspections != 0 {
				t.Fatalf("token calls = %d, introspections = %d inside the lease, want only the dead worker's call", st.TokenCalls, st.Introspections)
			}

			waitFor(t, "the dead worker's lease to run out (database clock)", 30*time.Second, func() bool {
				var live int64
				rawdb.Gorm(e.dbs[0]).Raw("SELECT count(*) FROM refresh_attempts WHERE connection_id = ? AND lease_until > clock_timestamp()", id).Scan(&live)
				return live == 0
			})
			_, err = v.Access(context.Background(), id, vault.Request{Cause: vault.CauseWarm, Force: true})
			st := e.Emu.Stats()
			kinds := eventKinds(e.events(id))
			var markers int64
			rawdb.Gorm(e.dbs[0]).Model(&models.RefreshAttempt{}).Where("connection_id = ?", id).Count(&markers)
			if markers != 0 {
				t.Fatalf("%d attempt markers left", markers)
			}
			if st.StalePresentations != 0 || st.ChainsRevoked != 0 {
				t.Fatalf("a stale token was presented: stale=%d revoked chains=%d", st.StalePresentations, st.ChainsRevoked)
			}
			if st.Introspections != 1 {
				t.Fatalf("introspections = %d, want 1 before deciding", st.Introspections)
			}
			if rotated {
				// The dead worker's rotation was lost with it: recorded as
				// such, and the stale token never sent to the token endpoint.
				if vaultCode(t, err) != vault.CodeReauthRequired || st.TokenCalls != 1 {
					t.Fatalf("err=%v token calls=%d", err, st.TokenCalls)
				}
				c := e.conn(id)
				if c.Status != models.StatusNeedsReauth || !strings.HasPrefix(c.ReauthReason, models.ReasonRotationLost) {
					t.Fatalf("status %s reason %q", c.Status, c.ReauthReason)
				}
				if !contains(kinds, models.EventRotationLost) || !contains(kinds, models.EventNeedsReauth) {
					t.Fatalf("events %v", kinds)
				}
				return
			}
			if err != nil || st.Refreshes != 1 {
				t.Fatalf("err=%v refreshes=%d", err, st.Refreshes)
			}
			if !contains(kinds, models.EventUnknownOutcome) {
				t.Fatalf("no unknown_outcome event: %v", kinds)
			}
			if !e.Emu.ChainAlive(e.storedRefreshToken(id)) {
				t.Fatal("stored token is not the live one")
			}
		})
	}
}
