package models_test

import (
	"context"
	"errors"
	"fmt"
	"github.com/tokenwarm/tokenwarm/internal/rawdb"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/tokenwarm/tokenwarm/internal/testkit"
	"github.com/tokenwarm/tokenwarm/models"
)

// takeRow reads the one record of T that where selects.
func takeRow[T any](t *testing.T, db *models.DB, where string, arg any) T {
	t.Helper()
	var v T
	if err := rawdb.Gorm(db).Where(where, arg).Take(&v).Error; err != nil {
		t.Fatal(err)
	}
	return v
}

func init() {
	ctx := context.Background()
	at := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	connection := func(t *testing.T, db *models.DB) string {
		t.Helper()
		c := models.Connection{ID: uuid.NewString(), Owner: "alice", OrgID: "00D", UserID: "005", LoginURL: "https://login.example",
			Status: models.StatusActive, LastRefreshedAt: at, NextWarmAt: at, CreatedAt: at, UpdatedAt: at}
		if err := rawdb.Gorm(db).Create(&c).Error; err != nil {
			t.Fatal(err)
		}
		return c.ID
	}
	session := func(t *testing.T, db *models.DB, refreshHash string) models.DeviceSession {
		t.Helper()
		s := models.DeviceSession{ID: uuid.NewString(), Owner: "alice", DeviceLabel: "phone", Generation: 1,
			CreatedAt: at, LastUsedAt: at, IdleExpiresAt: at.Add(90 * 24 * time.Hour)}
		if err := db.CreateDeviceSession(ctx, s, refreshHash); err != nil {
			t.Fatal(err)
		}
		return s
	}
	stored := func(t *testing.T, db *models.DB, id string) models.DeviceSession {
		t.Helper()
		return takeRow[models.DeviceSession](t, db, "id = ?", id)
	}
	// keepFor keeps successors until until, "sealed" as sealed:<session>:<generation>.
	keepFor := func(until time.Time) models.DeviceReuse {
		return models.DeviceReuse{Until: until, Seal: func(id string, generation int64) (string, error) {
			return fmt.Sprint("sealed:", id, ":", generation), nil
		}}
	}
	refreshRow := func(t *testing.T, db *models.DB, hash string) models.DeviceRefreshToken {
		t.Helper()
		return takeRow[models.DeviceRefreshToken](t, db, "token_hash = ?", hash)
	}
	countTokens := func(t *testing.T, db *models.DB, hash string) int64 {
		t.Helper()
		var n int64
		if err := rawdb.Gorm(db).Model(&models.DeviceRefreshToken{}).Where("token_hash = ?", hash).Count(&n).Error; err != nil {
			t.Fatal(err)
		}
		return n
	}
	signingKey := func(kid string, created time.Time) models.SigningKey {
		return models.SigningKey{Kid: kid, Alg: "EdDSA", PrivateSealed: "sealed", PublicKey: "pub", CreatedAt: created}
	}
	kids := func(keys []models.SigningKey) string {
		out := ""
		for _, k := range keys {
			out += k.Kid + " "
		}
		return out
	}
	register(
		storageCase{"devices: a handoff code is spent by the first attempt only", func(t *testing.T, db *models.DB) {
			c := models.HandoffCode{CodeHash: "h", ConnectionID: connection(t, db), Owner: "alice", AppChallenge: "ch",
				AppRedirectURI: "app://done", CreatedAt: at, ExpiresAt: at.Add(2 * time.Minute)}
			if err := db.CreateHandoffCode(ctx, c); err != nil {
				t.Fatal(err)
			}
			got, spentNow, err := db.SpendHandoffCode(ctx, "h", at.Add(time.Second))
			if err != nil || !spentNow || got.Owner != "alice" || got.ConnectionID != c.ConnectionID || got.AppChallenge != "ch" ||
				got.UsedAt == nil || !got.ExpiresAt.Equal(c.ExpiresAt) {
				t.Fatalf("first spend = %+v, %v, %v", got, spentNow, err)
			}
			if got, spentNow, err := db.SpendHandoffCode(ctx, "h", at.Add(2*time.Second)); err != nil || spentNow || got == nil {
				t.Fatalf("second spend = %+v, %v, %v; want the code, spent before", got, spentNow, err)
			}
			if _, _, err := db.SpendHandoffCode(ctx, "unknown", at); !errors.Is(err, models.ErrNotFound) {
				t.Fatalf("unknown code: %v", err)
			}
		}},
		storageCase{"devices: of racing replicas exactly one spends a handoff code", func(t *testing.T, db *models.DB) {
			conn := connection(t, db)
			const codes = 5
			for i := range codes {
				err := db.CreateHandoffCode(ctx, models.HandoffCode{CodeHash: fmt.Sprint("h", i), ConnectionID: conn, Owner: "alice",
					AppChallenge: "ch", AppRedirectURI: "app://done", CreatedAt: at, ExpiresAt: at.Add(time.Minute)})
				if err != nil {
					t.Fatal(err)
				}
			}
			var mu sync.Mutex
			spent := map[string]int{}
			var wg sync.WaitGroup
			for _, r := range pools(t, db, 4) {
				for i := range codes {
					for range 2 {
						wg.Go(func() {
							h := fmt.Sprint("h", i)
							_, spentNow, err := r.SpendHandoffCode(ctx, h, at)
							mu.Lock()
							defer mu.Unlock()
							if err != nil {
								t.Errorf("spend %s: %v", h, err)
							} else if spentNow {
								spent[h]++
							}
						})
					}
				}
			}
			wg.Wait()
			for i := range codes {
				if h := fmt.Sprint("h", i); spent[h] != 1 {
					t.Errorf("code %s spent by %d attempts, want 1", h, spent[h])
				}
			}
		}},
		storageCase{"devices: a refresh token rotates once; reuse revokes the family", func(t *testing.T, db *models.DB) {
			s := session(t, db, "t1")
			idle := at.Add(24 * time.Hour)
			got, _, err := db.RotateDeviceRefreshToken(ctx, "t1", "t2", at.Add(time.Minute), idle, models.DeviceReuse{})
			if err != nil || got.ID != s.ID || got.Owner != "alice" || got.Generation != 2 || !got.IdleExpiresAt.Equal(idle) {
				t.Fatalf("rotate = %+v, %v", got, err)
			}
			if row := stored(t, db, s.ID); row.Generation != 2 || !row.LastUsedAt.Equal(at.Add(time.Minute)) || !row.IdleExpiresAt.Equal(idle) {
				t.Fatalf("stored session %+v", row)
			}
			if _, _, err := db.RotateDeviceRefreshToken(ctx, "unknown", "x", at, idle, models.DeviceReuse{}); !errors.Is(err, models.ErrNotFound) {
				t.Fatalf("unknown token: %v", err)
			}
			// The rotated token again: reuse, committed although refused.
			if _, _, err := db.RotateDeviceRefreshToken(ctx, "t1", "t3", at.Add(2*time.Minute), idle, models.DeviceReuse{}); !errors.Is(err, models.ErrDeviceTokenReuse) {
				t.Fatalf("reuse: %v", err)
			}
			if row := stored(t, db, s.ID); row.RevokedAt == nil || row.RevokeReason != models.DeviceRevokedReuse {
				t.Fatalf("after reuse the session is %+v, want revoked for reuse", row)
			}
			if _, _, err := db.RotateDeviceRefreshToken(ctx, "t2", "t3", at.Add(3*time.Minute), idle, models.DeviceReuse{}); !errors.Is(err, models.ErrDeviceSessionRevoked) {
				t.Fatalf("current token of a revoked family: %v", err)
			}
			var n int64
			rawdb.Gorm(db).Model(&models.DeviceRefreshToken{}).Where("token_hash = ?", "t3").Count(&n)
			if n != 0 {
				t.Fatal("a refused rotation stored a successor")
			}
		}},
		storageCase{"devices: an idle-expired session is revoked when its token is presented", func(t *testing.T, db *models.DB) {
			s := session(t, db, "t1")
			_, _, err := db.RotateDeviceRefreshToken(ctx, "t1", "t2", s.IdleExpiresAt, s.IdleExpiresAt.Add(time.Hour), models.DeviceReuse{})
			if !errors.Is(err, models.ErrDeviceSessionExpired) {
				t.Fatalf("expired: %v", err)
			}
			if row := stored(t, db, s.ID); row.RevokedAt == nil || row.RevokeReason != models.DeviceRevokedIdleExpired {
				t.Fatalf("session %+v, want revoked as idle expired", row)
			}
		}},
		storageCase{"devices: of racing replicas presenting one token exactly one rotates it; within a reuse interval the others get its successor", func(t *testing.T, db *models.DB) {
			replicas := pools(t, db, 4)
			for _, keep := range []models.DeviceReuse{{}, keepFor(at.Add(30 * time.Second))} {
				s := session(t, db, "t1"+fmt.Sprint(keep.Until.Unix()))
				const n = 16
				reissued := make([]string, n)
				errs := make([]error, n)
				testkit.Concurrently(n, func(i int) {
					_, reissued[i], errs[i] = replicas[i%len(replicas)].RotateDeviceRefreshToken(ctx, "t1"+fmt.Sprint(keep.Until.Unix()), fmt.Sprint("next", i, keep.Until.Unix()), at, at.Add(time.Hour), keep)
				})
				won, got := 0, 0
				for i, err := range errs {
					switch {
					case err == nil && reissued[i] == "":
						won++
					case err == nil && keep.Seal != nil && reissued[i] == fmt.Sprint("sealed:", s.ID, ":2"):
						got++
					case keep.Seal != nil || !errors.Is(err, models.ErrDeviceTokenReuse):
						t.Errorf("loser: %q, %v", reissued[i], err)
					}
				}
				if won != 1 {
					t.Fatalf("%d rotations succeeded, want 1", won)
				}
				row := stored(t, db, s.ID)
				if keep.Seal == nil && (row.Generation != 2 || row.RevokeReason != models.DeviceRevokedReuse) {
					t.Fatalf("session %+v, want generation 2, revoked for reuse", row)
				}
				if keep.Seal != nil && (row.Generation != 2 || row.RevokedAt != nil || got != n-1) {
					t.Fatalf("session %+v, %d got the successor; want generation 2, live, %d", row, got, n-1)
				}
			}
		}},
		storageCase{"devices: a retry within the reuse interval gets the kept successor until it is used", func(t *testing.T, db *models.DB) {
			s := session(t, db, "t1")
			idle := at.Add(24 * time.Hour)
			if _, reissued, err := db.RotateDeviceRefreshToken(ctx, "t1", "t2", at, idle, keepFor(at.Add(30*time.Second))); err != nil || reissued != "" {
				t.Fatalf("rotate = %q, %v", reissued, err)
			}
			if tok := refreshRow(t, db, "t1"); tok.SuccessorSealed != fmt.Sprint("sealed:", s.ID, ":2") || !tok.ReuseUntil.Equal(at.Add(30*time.Second)) {
				t.Fatalf("spent token %+v, want its successor kept", tok)
			}
			// The retry changes nothing and answers the kept successor.
			got, reissued, err := db.RotateDeviceRefreshToken(ctx, "t1", "x", at.Add(10*time.Second), idle.Add(time.Hour), keepFor(at.Add(time.Minute)))
			if err != nil || reissued != fmt.Sprint("sealed:", s.ID, ":2") || got.ID != s.ID || got.Generation != 2 || got.Owner != "alice" {
				t.Fatalf("retry = %+v, %q, %v", got, reissued, err)
			}
			if row := stored(t, db, s.ID); row.Generation != 2 || row.RevokedAt != nil || !row.IdleExpiresAt.Equal(idle) {
				t.Fatalf("session after the retry %+v", row)
			}
			if n := countTokens(t, db, "x"); n != 0 {
				t.Fatal("a retry stored a successor")
			}
			// The successor's first use erases the predecessor's copy.
			if _, reissued, err := db.RotateDeviceRefreshToken(ctx, "t2", "t3", at.Add(20*time.Second), idle, keepFor(at.Add(50*time.Second))); err != nil || reissued != "" {
				t.Fatalf("rotate t2 = %q, %v", reissued, err)
			}
			if tok := refreshRow(t, db, "t1"); tok.SuccessorSealed != "" || tok.ReuseUntil != nil {
				t.Fatalf("predecessor of a used token %+v, want nothing kept", tok)
			}
			// Within t1's interval, but its successor is used: reuse.
			if _, _, err := db.RotateDeviceRefreshToken(ctx, "t1", "y", at.Add(25*time.Second), idle, keepFor(at.Add(time.Minute))); !errors.Is(err, models.ErrDeviceTokenReuse) {
				t.Fatalf("retry after the successor's use: %v, want reuse", err)
			}
			if row := stored(t, db, s.ID); row.RevokeReason != models.DeviceRevokedReuse {
				t.Fatalf("session %+v, want revoked for reuse", row)
			}
			if tok := refreshRow(t, db, "t2"); tok.SuccessorSealed != "" || tok.ReuseUntil != nil {
				t.Fatalf("token of a revoked session %+v, want nothing kept", tok)
			}
		}},
		storageCase{"devices: past the reuse interval a retry is reuse, and the sweep erases the kept successor", func(t *testing.T, db *models.DB) {
			a, b := session(t, db, "a1"), session(t, db, "b1")
			for _, h := range []string{"a1", "b1"} {
				if _, _, err := db.RotateDeviceRefreshToken(ctx, h, h+"next", at, at.Add(time.Hour), keepFor(at.Add(30*time.Second))); err != nil {
					t.Fatal(err)
				}
			}
			if _, _, err := db.RotateDeviceRefreshToken(ctx, "a1", "x", at.Add(30*time.Second), at.Add(time.Hour), keepFor(at.Add(time.Minute))); !errors.Is(err, models.ErrDeviceTokenReuse) {
				t.Fatalf("retry at the end of the interval: %v, want reuse", err)
			}
			if row := stored(t, db, a.ID); row.RevokeReason != models.DeviceRevokedReuse {
				t.Fatalf("session %+v, want revoked for reuse", row)
			}
			if n, err := db.EraseExpiredDeviceSuccessors(ctx, at.Add(29*time.Second)); err != nil || n != 0 {
				t.Fatalf("sweep inside the interval erased %d, %v", n, err)
			}
			if n, err := db.EraseExpiredDeviceSuccessors(ctx, at.Add(30*time.Second)); err != nil || n != 1 {
				t.Fatalf("sweep erased %d, %v, want 1", n, err)
			}
			if tok := refreshRow(t, db, "b1"); tok.SuccessorSealed != "" || tok.ReuseUntil != nil {
				t.Fatalf("swept token %+v", tok)
			}
			if row := stored(t, db, b.ID); row.RevokedAt != nil || row.Generation != 2 {
				t.Fatalf("the sweep touched the session: %+v", row)
			}
		}},
		storageCase{"devices: a retry racing the successor's first use gets the successor or is reuse, never more", func(t *testing.T, db *models.DB) {
			s := session(t, db, "t1")
			if _, _, err := db.RotateDeviceRefreshToken(ctx, "t1", "t2", at, at.Add(time.Hour), keepFor(at.Add(30*time.Second))); err != nil {
				t.Fatal(err)
			}
			replicas := pools(t, db, 4)
			// Goroutine 0 uses the successor t2; the others retry t1.
			const n = 13
			reissued := make([]string, n)
			errs := make([]error, n)
			testkit.Concurrently(n, func(i int) {
				hash, next := "t1", fmt.Sprint("x", i)
				if i == 0 {
					hash, next = "t2", "t3"
				}
				_, reissued[i], errs[i] = replicas[i%len(replicas)].RotateDeviceRefreshToken(ctx, hash, next, at.Add(time.Second), at.Add(time.Hour), keepFor(at.Add(31*time.Second)))
			})
			useErr := errs[0]
			reissued, errs = reissued[1:], errs[1:]
			if useErr != nil {
				t.Fatalf("the successor's use: %v", useErr)
			}
			refused := 0
			for i, err := range errs {
				switch {
				case errors.Is(err, models.ErrDeviceTokenReuse):
					refused++
				case err != nil:
					t.Errorf("retry %d: %v", i, err)
				case reissued[i] != fmt.Sprint("sealed:", s.ID, ":2"):
					t.Errorf("retry %d got %q, want the successor", i, reissued[i])
				}
			}
			row := stored(t, db, s.ID)
			if row.Generation != 3 || (refused > 0) != (row.RevokedAt != nil) {
				t.Fatalf("session %+v after %d refused retries", row, refused)
			}
		}},
		storageCase{"devices: revoking a family or a session keeps the first reason", func(t *testing.T, db *models.DB) {
			a := session(t, db, "a1")
			if _, _, err := db.RotateDeviceRefreshToken(ctx, "a1", "a2", at, at.Add(time.Hour), models.DeviceReuse{}); err != nil {
				t.Fatal(err)
			}
			if err := db.RevokeDeviceFamily(ctx, "a1", "by client", at.Add(time.Minute)); err != nil {
				t.Fatal(err) // a rotated token of the family will do
			}
			if err := db.RevokeDeviceFamily(ctx, "a2", "again", at.Add(2*time.Minute)); err != nil {
				t.Fatal(err)
			}
			if row := stored(t, db, a.ID); row.RevokeReason != "by client" || !row.RevokedAt.Equal(at.Add(time.Minute)) {
				t.Fatalf("session %+v", row)
			}
			if err := db.RevokeDeviceFamily(ctx, "unknown", "x", at); !errors.Is(err, models.ErrNotFound) {
				t.Fatalf("unknown token: %v", err)
			}
			b := session(t, db, "b1")
			for _, reason := range []string{"admin", "later"} {
				if err := db.RevokeDeviceSession(ctx, b.ID, reason, at); err != nil {
					t.Fatal(err)
				}
			}
			if row := stored(t, db, b.ID); row.RevokeReason != "admin" {
				t.Fatalf("session %+v", row)
			}
			if err := db.RevokeDeviceSession(ctx, uuid.NewString(), "x", at); !errors.Is(err, models.ErrNotFound) {
				t.Fatalf("unknown session: %v", err)
			}
		}},
		storageCase{"devices: verification reads owner and revocation", func(t *testing.T, db *models.DB) {
			s := session(t, db, "t1")
			got, err := db.DeviceSessionForVerify(ctx, s.ID)
			if err != nil || got.ID != s.ID || got.Owner != "alice" || got.RevokedAt != nil {
				t.Fatalf("DeviceSessionForVerify = %+v, %v", got, err)
			}
			if err := db.RevokeDeviceSession(ctx, s.ID, "x", at); err != nil {
				t.Fatal(err)
			}
			if got, err := db.DeviceSessionForVerify(ctx, s.ID); err != nil || got.RevokedAt == nil {
				t.Fatalf("revoked: %+v, %v", got, err)
			}
			if _, err := db.DeviceSessionForVerify(ctx, uuid.NewString()); !errors.Is(err, models.ErrNotFound) {
				t.Fatalf("unknown session: %v", err)
			}
		}},
		storageCase{"devices: purge deletes only what can no longer be used", func(t *testing.T, db *models.DB) {
			conn := connection(t, db)
			for i, exp := range []time.Time{at.Add(-time.Hour), at.Add(time.Hour)} {
				err := db.CreateHandoffCode(ctx, models.HandoffCode{CodeHash: fmt.Sprint("h", i), ConnectionID: conn, Owner: "alice",
					AppChallenge: "ch", AppRedirectURI: "app://done", CreatedAt: exp.Add(-time.Minute), ExpiresAt: exp})
				if err != nil {
					t.Fatal(err)
				}
			}
			live := session(t, db, "l1")
			if _, _, err := db.RotateDeviceRefreshToken(ctx, "l1", "l2", at.Add(-2*time.Hour), at.Add(time.Hour), models.DeviceReuse{}); err != nil {
				t.Fatal(err)
			}
			dead := session(t, db, "d1")
			if err := db.RevokeDeviceSession(ctx, dead.ID, "x", at.Add(-2*time.Hour)); err != nil {
				t.Fatal(err)
			}
			p, err := db.PurgeDeviceRecords(ctx, at)
			if err != nil || p != (models.PurgedDevices{HandoffCodes: 1, Sessions: 1, RotatedTokens: 1}) {
				t.Fatalf("purged %+v, %v", p, err)
			}
			var tokens []string
			rawdb.Gorm(db).Model(&models.DeviceRefreshToken{}).Pluck("token_hash", &tokens)
			if fmt.Sprint(tokens) != "[l2]" {
				t.Fatalf("tokens left %v, want the live one", tokens)
			}
			if row := stored(t, db, live.ID); row.RevokedAt != nil {
				t.Fatalf("live session %+v", row)
			}
		}},
		storageCase{"devices: racing replicas add one first signing key", func(t *testing.T, db *models.DB) {
			var mu sync.Mutex
			added := 0
			var wg sync.WaitGroup
			for i, r := range pools(t, db, 4) {
				wg.Go(func() {
					ok, err := r.AddFirstSigningKey(ctx, signingKey(fmt.Sprint("k", i), at))
					mu.Lock()
					defer mu.Unlock()
					if err != nil {
						t.Error(err)
					}
					if ok {
						added++
					}
				})
			}
			wg.Wait()
			keys, err := db.ActiveSigningKeys(ctx, at)
			if err != nil || len(keys) != 1 || added != 1 {
				t.Fatalf("keys %q (%v), %d reported added; want one", kids(keys), err, added)
			}
		}},
		storageCase{"devices: the newest signing key signs and cannot be retired", func(t *testing.T, db *models.DB) {
			if ok, err := db.AddFirstSigningKey(ctx, signingKey("a", at)); err != nil || !ok {
				t.Fatal(ok, err)
			}
			// Same clock reading: the new key is still made strictly newest.
			for _, kid := range []string{"c", "b"} {
				if err := db.AddNewestSigningKey(ctx, signingKey(kid, at), time.Time{}); err != nil {
					t.Fatal(err)
				}
			}
			keys, err := db.ActiveSigningKeys(ctx, at)
			if err != nil || kids(keys) != "b c a " || !keys[0].CreatedAt.After(keys[1].CreatedAt) {
				t.Fatalf("keys %q, %v; want newest first: b c a", kids(keys), err)
			}
			if err := db.RetireSigningKey(ctx, "b", at); !errors.Is(err, models.ErrSigningKeyInUse) {
				t.Fatalf("retiring the signing key: %v", err)
			}
			if err := db.RetireSigningKey(ctx, "zz", at); !errors.Is(err, models.ErrNotFound) {
				t.Fatalf("retiring an unknown key: %v", err)
			}
			for range 2 {
				if err := db.RetireSigningKey(ctx, "a", at); err != nil {
					t.Fatal(err)
				}
			}
			if keys, err := db.ActiveSigningKeys(ctx, at); err != nil || kids(keys) != "b c " {
				t.Fatalf("keys %q, %v", kids(keys), err)
			}
			if ok, err := db.AddFirstSigningKey(ctx, signingKey("d", at)); err != nil || ok {
				t.Fatalf("AddFirstSigningKey with keys active: %v, %v", ok, err)
			}
			// Ties of creation time are broken by kid, the same on every replica.
			x, y := signingKey("x", at), signingKey("y", at)
			if models.NewestSigningKeyFirst(x, y) <= 0 || models.NewestSigningKeyFirst(y, x) >= 0 {
				t.Fatal("ties are not broken by kid, highest first")
			}
		}},
		storageCase{"devices: a rotation schedules the retirement of the older keys", func(t *testing.T, db *models.DB) {
			if ok, err := db.AddFirstSigningKey(ctx, signingKey("a", at)); err != nil || !ok {
				t.Fatal(ok, err)
			}
			retire := at.Add(16 * time.Minute)
			if err := db.AddNewestSigningKey(ctx, signingKey("b", at.Add(time.Minute)), retire); err != nil {
				t.Fatal(err)
			}
			// Until its retirement the old key verifies, and it cannot be
			// scheduled later by another rotation.
			if keys, err := db.ActiveSigningKeys(ctx, retire.Add(-time.Microsecond)); err != nil || kids(keys) != "b a " {
				t.Fatalf("before the retirement: keys %q, %v", kids(keys), err)
			}
			if err := db.AddNewestSigningKey(ctx, signingKey("c", at.Add(2*time.Minute)), retire.Add(time.Hour)); err != nil {
				t.Fatal(err)
			}
			if keys, err := db.ActiveSigningKeys(ctx, retire); err != nil || kids(keys) != "c b " {
				t.Fatalf("at a's retirement: keys %q, %v", kids(keys), err)
			}
			if keys, err := db.ActiveSigningKeys(ctx, retire.Add(time.Hour)); err != nil || kids(keys) != "c " {
				t.Fatalf("after b's retirement: keys %q, %v", kids(keys), err)
			}
			// A scheduled key can be retired at once.
			if err := db.RetireSigningKey(ctx, "b", at.Add(3*time.Minute)); err != nil {
				t.Fatal(err)
			}
			if keys, err := db.ActiveSigningKeys(ctx, retire); err != nil || kids(keys) != "c " {
				t.Fatalf("after retiring b now: keys %q, %v", kids(keys), err)
			}
		}},
		storageCase{"reseal: sealed values are paged by key and replaced by compare-and-swap", func(t *testing.T, db *models.DB) {
			for _, kid := range []string{"k3", "k1", "k2"} {
				k := signingKey(kid, at)
				k.PrivateSealed = "old-" + kid
				if err := db.AddNewestSigningKey(ctx, k, time.Time{}); err != nil {
					t.Fatal(err)
				}
			}
			if err := db.RetireSigningKey(ctx, "k1", at.Add(time.Hour)); err != nil {
				t.Fatal(err)
			}
			page1, err := db.SigningKeysAfter(ctx, "", 2)
			if err != nil || kids(page1) != "k1 k2 " {
				t.Fatalf("first page %q, %v (retired keys included)", kids(page1), err)
			}
			page2, err := db.SigningKeysAfter(ctx, "k2", 2)
			if err != nil || kids(page2) != "k3 " {
				t.Fatalf("second page %q, %v", kids(page2), err)
			}
			if ok, err := db.ReplaceSealedSigningKey(ctx, "k2", "not-what-is-stored", "new"); err != nil || ok {
				t.Fatalf("a swap from a stale value replaced it: %v %v", ok, err)
			}
			if ok, err := db.ReplaceSealedSigningKey(ctx, "k2", "old-k2", "new-k2"); err != nil || !ok {
				t.Fatalf("swap: %v %v", ok, err)
			}
			if keys, _ := db.SigningKeysAfter(ctx, "k1", 1); len(keys) != 1 || keys[0].PrivateSealed != "new-k2" {
				t.Fatalf("after the swap: %+v", keys)
			}
			if ok, err := db.ReplaceSealedVerifier(ctx, "nope", "a", "b"); err != nil || ok {
				t.Fatalf("swap of an unknown pending authorization: %v %v", ok, err)
			}
			if toks, err := db.KeptSuccessorsAfter(ctx, "", 10); err != nil || len(toks) != 0 {
				t.Fatalf("kept successors of an empty database: %v %v", toks, err)
			}
		}},
	)
}
