package models_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/tokenwarm/tokenwarm/models"
)

func init() {
	ctx := context.Background()
	at := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	key := func(name, hash string) models.AdminKey {
		return models.AdminKey{ID: uuid.NewString(), Name: name, KeyHash: hash, Prefix: "twa_abcd", CreatedAt: at}
	}
	register(
		storageCase{"admin keys: names are unique, revoked ones included", func(t *testing.T, db *models.DB) {
			if err := db.CreateAdminKey(ctx, key("ops", "h1")); err != nil {
				t.Fatal(err)
			}
			if err := db.RevokeAdminKey(ctx, "ops", at); err != nil {
				t.Fatal(err)
			}
			if err := db.CreateAdminKey(ctx, key("ops", "h2")); !errors.Is(err, models.ErrAdminKeyNameTaken) {
				t.Fatalf("second key named ops: %v, want ErrAdminKeyNameTaken", err)
			}
		}},
		storageCase{"admin keys: found by hash, live only until revoked, listed oldest first", func(t *testing.T, db *models.DB) {
			b, a := key("b", "hb"), key("a", "ha")
			a.CreatedAt = at.Add(time.Second)
			for _, k := range []models.AdminKey{b, a} {
				if err := db.CreateAdminKey(ctx, k); err != nil {
					t.Fatal(err)
				}
			}
			got, err := db.AdminKeyByHash(ctx, "ha")
			if err != nil || got.ID != a.ID || got.Name != "a" || got.RevokedAt != nil {
				t.Fatalf("AdminKeyByHash = %+v, %v", got, err)
			}
			if _, err := db.AdminKeyByHash(ctx, "nope"); !errors.Is(err, models.ErrNotFound) {
				t.Fatalf("unknown hash: %v", err)
			}
			if live, err := db.LiveAdminKey(ctx, b.ID); err != nil || live.Name != "b" {
				t.Fatalf("LiveAdminKey = %+v, %v", live, err)
			}
			if err := db.RevokeAdminKey(ctx, "b", at.Add(time.Minute)); err != nil {
				t.Fatal(err)
			}
			if err := db.RevokeAdminKey(ctx, "b", at.Add(time.Hour)); err != nil {
				t.Fatalf("revoking again: %v", err)
			}
			if err := db.RevokeAdminKey(ctx, "nobody", at); !errors.Is(err, models.ErrNotFound) {
				t.Fatalf("revoking an unknown name: %v", err)
			}
			if _, err := db.LiveAdminKey(ctx, b.ID); !errors.Is(err, models.ErrNotFound) {
				t.Fatalf("LiveAdminKey of a revoked key: %v", err)
			}
			revoked, err := db.AdminKeyByHash(ctx, "hb")
			if err != nil || revoked.RevokedAt == nil || !revoked.RevokedAt.Equal(at.Add(time.Minute)) {
				t.Fatalf("revoked key %+v, %v: the first revocation time is kept", revoked, err)
			}
			list, err := db.ListAdminKeys(ctx)
			if err != nil || len(list) != 2 || list[0].Name != "b" || list[1].Name != "a" {
				t.Fatalf("ListAdminKeys = %+v, %v", list, err)
			}
		}},
		storageCase{"admin keys: a touch writes once per granularity", func(t *testing.T, db *models.DB) {
			k := key("ops", "h")
			if err := db.CreateAdminKey(ctx, k); err != nil {
				t.Fatal(err)
			}
			lastUsed := func() time.Time {
				t.Helper()
				got, err := db.AdminKeyByHash(ctx, "h")
				if err != nil || got.LastUsedAt == nil {
					t.Fatalf("%+v, %v", got, err)
				}
				return got.LastUsedAt.UTC()
			}
			if err := db.TouchAdminKey(ctx, k.ID, at, at.Add(-time.Minute)); err != nil {
				t.Fatal(err)
			}
			if got := lastUsed(); !got.Equal(at) {
				t.Fatalf("last used %v, want %v", got, at)
			}
			// 30s later: used within the minute, so nothing is written.
			if err := db.TouchAdminKey(ctx, k.ID, at.Add(30*time.Second), at.Add(-30*time.Second)); err != nil {
				t.Fatal(err)
			}
			if got := lastUsed(); !got.Equal(at) {
				t.Fatalf("last used %v, want %v (unchanged)", got, at)
			}
			if err := db.TouchAdminKey(ctx, k.ID, at.Add(time.Minute), at); err != nil {
				t.Fatal(err)
			}
			if got := lastUsed(); !got.Equal(at.Add(time.Minute)) {
				t.Fatalf("last used %v, want %v", got, at.Add(time.Minute))
			}
		}},
	)
}
