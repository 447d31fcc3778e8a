package models_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/tokenwarm/tokenwarm/models"
)

func init() {
	ctx := context.Background()
	at := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	pending := func(hash string) models.PendingAuthorization {
		conn := "11111111-1111-1111-1111-111111111111"
		return models.PendingAuthorization{StateHash: hash, Purpose: "reauth", ConnectionID: &conn, VerifierSealed: "sealed",
			LoginURL: "https://login.example", AppRedirectURI: "app://done", AppChallenge: "ch", AppState: "st",
			CreatedAt: at, ExpiresAt: at.Add(10 * time.Minute)}
	}
	register(
		storageCase{"pending authorizations: taken once, never after expiry, purged after", func(t *testing.T, db *models.DB) {
			for _, h := range []string{"a", "b"} {
				if err := db.SavePending(ctx, pending(h)); err != nil {
					t.Fatal(err)
				}
			}
			p, err := db.TakePending(ctx, "a", at.Add(time.Minute))
			if err != nil || p.StateHash != "a" || p.ConnectionID == nil || *p.ConnectionID != "11111111-1111-1111-1111-111111111111" ||
				p.VerifierSealed != "sealed" || p.AppState != "st" || p.UsedAt == nil {
				t.Fatalf("TakePending = %+v, %v", p, err)
			}
			if _, err := db.TakePending(ctx, "a", at.Add(time.Minute)); !errors.Is(err, models.ErrNotFound) {
				t.Fatalf("second take: %v, want ErrNotFound", err)
			}
			if _, err := db.TakePending(ctx, "unknown", at); !errors.Is(err, models.ErrNotFound) {
				t.Fatalf("unknown state: %v", err)
			}
			if _, err := db.TakePending(ctx, "b", at.Add(10*time.Minute)); !errors.Is(err, models.ErrNotFound) {
				t.Fatalf("expired state: %v", err)
			}
			if n, err := db.PurgePending(ctx, at.Add(10*time.Minute)); err != nil || n != 0 {
				t.Fatalf("purge at expiry: %d, %v", n, err)
			}
			if n, err := db.PurgePending(ctx, at.Add(11*time.Minute)); err != nil || n != 2 {
				t.Fatalf("purge after expiry: %d, %v", n, err)
			}
		}},
		storageCase{"pending authorizations: of racing replicas exactly one takes a state", func(t *testing.T, db *models.DB) {
			const states = 5
			for i := range states {
				if err := db.SavePending(ctx, pending(string(rune('a'+i)))); err != nil {
					t.Fatal(err)
				}
			}
			replicas := pools(t, db, 4)
			var mu sync.Mutex
			won := map[string]int{}
			var wg sync.WaitGroup
			for _, r := range replicas {
				for i := range states {
					for range 2 {
						h := string(rune('a' + i))
						wg.Go(func() {
							_, err := r.TakePending(ctx, h, at.Add(time.Minute))
							mu.Lock()
							defer mu.Unlock()
							switch {
							case err == nil:
								won[h]++
							case !errors.Is(err, models.ErrNotFound):
								t.Errorf("take %s: %v", h, err)
							}
						})
					}
				}
			}
			wg.Wait()
			for i := range states {
				if h := string(rune('a' + i)); won[h] != 1 {
					t.Errorf("state %s taken %d times, want once", h, won[h])
				}
			}
		}},
	)
}
