package models_test

import (
	"context"
	"github.com/tokenwarm/tokenwarm/internal/rawdb"
	"testing"
	"time"

	"github.com/tokenwarm/tokenwarm/models"
)

func init() {
	ctx := context.Background()
	now := time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)
	register(
		storageCase{"metrics: fleet readings with no connections", func(t *testing.T, db *models.DB) {
			counts, err := db.ConnectionCountsByStatus(ctx)
			if err != nil || len(counts) != 0 {
				t.Fatalf("counts %v, %v", counts, err)
			}
			if oldest, err := db.OldestRefresh(ctx, models.OrgScope{}); err != nil || !oldest.IsZero() {
				t.Fatalf("OldestRefresh = %v, %v", oldest, err)
			}
			if n, err := db.WarmBacklog(ctx, now); err != nil || n != 0 {
				t.Fatalf("WarmBacklog = %d, %v", n, err)
			}
		}},
		storageCase{"metrics: counts by status, oldest active refresh, warm backlog", func(t *testing.T, db *models.DB) {
			add := func(id, status string, lastRefresh, nextWarm time.Time) {
				c := models.Connection{ID: id, Owner: "o", OrgID: "00D", UserID: id, LoginURL: "https://login.salesforce.com",
					Status: status, LastRefreshedAt: lastRefresh, NextWarmAt: nextWarm, CreatedAt: now, UpdatedAt: now}
				if err := rawdb.Gorm(db).Create(&c).Error; err != nil {
					t.Fatal(err)
				}
			}
			add("11111111-1111-1111-1111-111111111111", models.StatusActive, now.Add(-20*24*time.Hour), now.Add(-time.Hour))
			add("22222222-2222-2222-2222-222222222222", models.StatusActive, now.Add(-time.Hour), now)
			add("33333333-3333-3333-3333-333333333333", models.StatusActive, now.Add(-2*time.Hour), now.Add(time.Second))
			add("44444444-4444-4444-4444-444444444444", models.StatusNeedsReauth, now.Add(-40*24*time.Hour), now.Add(-time.Hour))
			counts, err := db.ConnectionCountsByStatus(ctx)
			if err != nil || len(counts) != 2 || counts[models.StatusActive] != 3 || counts[models.StatusNeedsReauth] != 1 {
				t.Fatalf("counts %v, %v", counts, err)
			}
			oldest, err := db.OldestRefresh(ctx, models.OrgScope{})
			if err != nil || !oldest.Equal(now.Add(-20*24*time.Hour)) {
				t.Fatalf("OldestRefresh = %v, %v", oldest, err)
			}
			if other, err := db.OldestRefresh(ctx, models.OrgScope{Only: "00Dother"}); err != nil || !other.IsZero() {
				t.Fatalf("OldestRefresh of another org = %v, %v", other, err)
			}
			if n, err := db.WarmBacklog(ctx, now); err != nil || n != 2 {
				t.Fatalf("WarmBacklog = %d, %v; want 2 (due at or before now, active only)", n, err)
			}
		}},
	)
}
