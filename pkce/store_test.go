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
