package models_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/tokenwarm/tokenwarm/internal/rawdb"
	"github.com/tokenwarm/tokenwarm/models"
)

// Storage of the standard OAuth leg (migration 0008): a handoff code spent
// together with the session it starts, and the client carried along.
func init() {
	ctx := context.Background()
	at := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	handoff := func(t *testing.T, db *models.DB, hash, clientID string) (connectionID string) {
		t.Helper()
		c := models.Connection{ID: uuid.NewString(), Owner: "alice", OrgID: "00D", UserID: "005", LoginURL: "https://login.example",
			Status: models.StatusActive, LastRefreshedAt: at, NextWarmAt: at, CreatedAt: at, UpdatedAt: at}
		if err := rawdb.Gorm(db).Create(&c).Error; err != nil {
			t.Fatal(err)
		}
		err := db.CreateHandoffCode(ctx, models.HandoffCode{CodeHash: hash, ConnectionID: c.ID, Owner: "alice", AppChallenge: "ch",
			AppRedirectURI: "app://done", ClientID: clientID, CreatedAt: at, ExpiresAt: at.Add(2 * time.Minute)})
		if err != nil {
			t.Fatal(err)
		}
		return c.ID
	}
	newSession := func(c models.HandoffCode) models.DeviceSession {
		return models.DeviceSession{ID: uuid.NewString(), Owner: c.Owner, Generation: 1, ClientID: c.ClientID,
			CreatedAt: at, LastUsedAt: at, IdleExpiresAt: at.Add(time.Hour)}
	}
	sessions := func(t *testing.T, db *models.DB) int64 {
		t.Helper()
		var n int64
		if err := rawdb.Gorm(db).Model(&models.DeviceSession{}).Count(&n).Error; err != nil {
			t.Fatal(err)
		}
		return n
	}
	register(
		storageCase{"handoff: a session that cannot be stored leaves the code unspent", func(t *testing.T, db *models.DB) {
			conn := handoff(t, db, "h", "app.one")
			// The injected failure: the first refresh token's hash is taken,
			// so the insert fails inside the transaction, after the spend.
			taken := models.DeviceSession{ID: uuid.NewString(), Owner: "bob", Generation: 1, CreatedAt: at, LastUsedAt: at, IdleExpiresAt: at.Add(time.Hour)}
			if err := db.CreateDeviceSession(ctx, taken, "taken"); err != nil {
				t.Fatal(err)
			}
			_, err := db.StartDeviceSessionFromHandoff(ctx, "h", at, func(c models.HandoffCode) (models.DeviceSession, string, error) {
				return newSession(c), "taken", nil
			})
			if err == nil || errors.Is(err, models.ErrHandoffCodeUsed) || errors.Is(err, models.ErrNotFound) {
				t.Fatalf("storing a session with a taken refresh hash: %v, want a database error", err)
			}
			if n := sessions(t, db); n != 1 {
				t.Fatalf("%d sessions after the failed start, want 1 (nothing stored)", n)
			}
			var got models.DeviceSession
			ids, err := db.StartDeviceSessionFromHandoff(ctx, "h", at.Add(time.Second), func(c models.HandoffCode) (models.DeviceSession, string, error) {
				if c.UsedAt == nil || !c.UsedAt.Equal(at.Add(time.Second)) || c.ClientID != "app.one" || c.AppRedirectURI != "app://done" {
					t.Errorf("start sees %+v", c)
				}
				got = newSession(c)
				return got, "fresh", nil
			})
			if err != nil || len(ids) != 1 || ids[0] != conn {
				t.Fatalf("the code after the failed start: %v %v, want the owner's connection %s", ids, err, conn)
			}
			s, err := db.DeviceSessionOfRefreshToken(ctx, "fresh")
			if err != nil || s.ID != got.ID || s.ClientID != "app.one" || s.Owner != "alice" || s.RevokedAt != nil {
				t.Fatalf("session of the first refresh token = %+v, %v", s, err)
			}
			_, err = db.StartDeviceSessionFromHandoff(ctx, "h", at.Add(2*time.Second), func(models.HandoffCode) (models.DeviceSession, string, error) {
				t.Error("start called for a spent code")
				return models.DeviceSession{}, "", nil
			})
			if !errors.Is(err, models.ErrHandoffCodeUsed) {
				t.Fatalf("third redemption: %v, want ErrHandoffCodeUsed", err)
			}
		}},
		storageCase{"handoff: a refused redemption spends the code and stores nothing", func(t *testing.T, db *models.DB) {
			handoff(t, db, "h", "")
			refusal := errors.New("wrong verifier")
			_, err := db.StartDeviceSessionFromHandoff(ctx, "h", at, func(models.HandoffCode) (models.DeviceSession, string, error) {
				return models.DeviceSession{}, "", refusal
			})
			if !errors.Is(err, refusal) {
				t.Fatalf("refused start: %v", err)
			}
			if n := sessions(t, db); n != 0 {
				t.Fatalf("%d sessions stored by a refusal", n)
			}
			_, err = db.StartDeviceSessionFromHandoff(ctx, "h", at, func(c models.HandoffCode) (models.DeviceSession, string, error) {
				return newSession(c), "r", nil
			})
			if !errors.Is(err, models.ErrHandoffCodeUsed) {
				t.Fatalf("after a refusal: %v, want ErrHandoffCodeUsed", err)
			}
			_, err = db.StartDeviceSessionFromHandoff(ctx, "unknown", at, func(c models.HandoffCode) (models.DeviceSession, string, error) {
				return newSession(c), "r", nil
			})
			if !errors.Is(err, models.ErrNotFound) {
				t.Fatalf("unknown code: %v", err)
			}
			if _, err := db.DeviceSessionOfRefreshToken(ctx, "unknown"); !errors.Is(err, models.ErrNotFound) {
				t.Fatalf("session of an unknown refresh token: %v", err)
			}
		}},
		storageCase{"handoff: of racing replicas exactly one starts a session", func(t *testing.T, db *models.DB) {
			handoff(t, db, "h", "")
			results := make(chan error, 8)
			i := 0
			for _, r := range pools(t, db, 4) {
				for range 2 {
					i++
					hash := "r" + string(rune('a'+i))
					go func() {
						_, err := r.StartDeviceSessionFromHandoff(ctx, "h", at, func(c models.HandoffCode) (models.DeviceSession, string, error) {
							return newSession(c), hash, nil
						})
						results <- err
					}()
				}
			}
			wins := 0
			for range i {
				err := <-results
				switch {
				case err == nil:
					wins++
				case !errors.Is(err, models.ErrHandoffCodeUsed):
					t.Errorf("racing redemption: %v", err)
				}
			}
			if wins != 1 || sessions(t, db) != 1 {
				t.Fatalf("%d redemptions won, %d sessions; want 1 and 1", wins, sessions(t, db))
			}
		}},
	)
}
