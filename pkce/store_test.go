package pkce_test

import (
	"context"
	"errors"
	"github.com/tokenwarm/tokenwarm/internal/rawdb"
	"sync"
	"testing"
	"time"

	"github.com/tokenwarm/tokenwarm/clock"
	"github.com/tokenwarm/tokenwarm/internal/testkit"
	"github.com/tokenwarm/tokenwarm/models"
	"github.com/tokenwarm/tokenwarm/pkce"
	"github.com/tokenwarm/tokenwarm/seal"
)

func newStore(t *testing.T, dialect models.Dialect, clk clock.Clock) (*pkce.Store, *models.DB) {
	t.Helper()
	db := testkit.MigratedDB(t, dialect)
	key, _ := seal.GenerateKey("k")
	ring, _ := seal.ParseRing(key)
	return pkce.NewStore(db, ring, clk, 10*time.Minute), db
}

func TestPendingAuthorizationsAreSingleUseAndExpire(t *testing.T) {
	for _, dialect := range []models.Dialect{models.SQLite, models.Postgres} {
		t.Run(string(dialect), func(t *testing.T) {
			clk := clock.NewFake(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
			s, db := newStore(t, dialect, clk)
			ctx := context.Background()
			verifier := pkce.NewVerifier()
			p := pkce.Pending{Purpose: pkce.PurposeConnect, Verifier: verifier, LoginURL: "https://login.salesforce.com",
				AppRedirectURI: "com.acme.app:/cb", AppChallenge: pkce.S256(pkce.NewVerifier()), AppState: "xyz"}
			state, err := s.Create(ctx, p)
			if err != nil {
				t.Fatal(err)
			}
			if len(state) < 43 {
				t.Fatalf("state %d chars, want >= 43 (256 bits)", len(state))
			}
			var stored string
			rawdb.Gorm(db).Raw("SELECT state_hash || verifier_sealed FROM pending_authorizations").Scan(&stored)
			if stored == "" || contains(stored, state) || contains(stored, verifier) {
				t.Fatal("state or verifier stored in the clear")
			}

			// Concurrent takers: exactly one wins.
			var wg sync.WaitGroup
			wins := make(chan *pkce.Pending, 10)
			for range 10 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					if got, err := s.Take(ctx, state); err == nil {
						wins <- got
					} else if !errors.Is(err, pkce.ErrStateInvalid) {
						t.Error(err)
					}
				}()
			}
			wg.Wait()
			close(wins)
			if len(wins) != 1 {
				t.Fatalf("%d takers won, want 1", len(wins))
			}
			got := <-wins
			if got.Verifier != verifier || got.AppState != "xyz" || got.Purpose != pkce.PurposeConnect || got.AppRedirectURI != p.AppRedirectURI {
				t.Fatalf("took %+v", got)
			}

			expiring, _ := s.Create(ctx, p)
			clk.Advance(10*time.Minute + time.Second)
			if _, err := s.Take(ctx, expiring); !errors.Is(err, pkce.ErrStateInvalid) {
				t.Fatalf("expired state: %v", err)
			}
			if _, err := s.Take(ctx, "made-up"); !errors.Is(err, pkce.ErrStateInvalid) {
				t.Fatalf("unknown state: %v", err)
			}
			if n, err := s.Purge(ctx, clk.Now()); err != nil || n != 2 {
				t.Fatalf("Purge removed %d (%v), want the 2 expired ones", n, err)
			}
			if _, err := s.Create(ctx, pkce.Pending{Purpose: pkce.PurposeReauth, Verifier: verifier}); err == nil {
				t.Fatal("re-authorization without a connection accepted")
			}
		})
	}
}

func contains(s, sub string) bool {
	for i := 0; i+len(sub) <= len(s); i++ {
		if s[i:i+len(sub)] == sub {
			return true
		}
	}
	return false
}

// A seal key rotation: Reseal moves every stored verifier to the new key,
// so an authorization started before the old key is dropped completes
// after it.
func TestResealMovesPendingVerifiers(t *testing.T) {
	for _, dialect := range []models.Dialect{models.SQLite, models.Postgres} {
		t.Run(string(dialect), func(t *testing.T) {
			ctx := context.Background()
			clk := clock.NewFake(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
			db := testkit.MigratedDB(t, dialect)
			oldKey, _ := seal.GenerateKey("old")
			newKey, _ := seal.GenerateKey("new")
			oldRing, _ := seal.ParseRing(oldKey)
			both, _ := seal.ParseRing(newKey + "," + oldKey)
			onlyNew, _ := seal.ParseRing(newKey)
			verifier := pkce.NewVerifier()
			state, err := pkce.NewStore(db, oldRing, clk, 0).Create(ctx, pkce.Pending{Purpose: pkce.PurposeConnect, Verifier: verifier,
				LoginURL: "https://login.salesforce.com", AppRedirectURI: "com.acme.app:/cb", AppChallenge: pkce.S256(pkce.NewVerifier())})
			if err != nil {
				t.Fatal(err)
			}
			if n, missed, err := pkce.NewStore(db, both, clk, 0).Reseal(ctx); err != nil || n != 1 || missed != 0 {
				t.Fatalf("Reseal = %d, %d, %v; want 1 replaced", n, missed, err)
			}
			if n, _, err := pkce.NewStore(db, both, clk, 0).Reseal(ctx); err != nil || n != 0 {
				t.Fatalf("second Reseal = %d, %v", n, err)
			}
			got, err := pkce.NewStore(db, onlyNew, clk, 0).Take(ctx, state)
			if err != nil || got.Verifier != verifier {
				t.Fatalf("the authorization after the old key is dropped: %v", err)
			}
		})
	}
}
