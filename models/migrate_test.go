package models_test

import (
	"context"
	"github.com/tokenwarm/tokenwarm/internal/rawdb"
	"sync"
	"testing"
	"time"

	"github.com/tokenwarm/tokenwarm/internal/pgtest"
	"github.com/tokenwarm/tokenwarm/internal/testkit"
	"github.com/tokenwarm/tokenwarm/models"
)

func TestMigrationsApplyOnceOnBothDialects(t *testing.T) {
	for _, dialect := range []models.Dialect{models.SQLite, models.Postgres} {
		t.Run(string(dialect), func(t *testing.T) {
			url, dir := "", t.TempDir()
			if dialect == models.Postgres {
				url = pgtest.NewDatabase(t)
			}
			db, err := models.Open(url, dir, models.Options{})
			if err != nil {
				t.Fatal(err)
			}
			defer db.Close()
			ctx := context.Background()
			all, err := models.Migrations(dialect)
			if err != nil || len(all) == 0 {
				t.Fatalf("migrations: %v (%d)", err, len(all))
			}
			if n, _ := db.Pending(ctx); n != len(all) {
				t.Fatalf("pending before = %d, want %d", n, len(all))
			}
			applied, err := db.Migrate(ctx)
			if err != nil || len(applied) != len(all) {
				t.Fatalf("first migrate applied %v, err %v", applied, err)
			}
			applied, err = db.Migrate(ctx)
			if err != nil || len(applied) != 0 {
				t.Fatalf("second migrate applied %v, err %v", applied, err)
			}
			if n, err := db.Pending(ctx); err != nil || n != 0 {
				t.Fatalf("pending after = %d, %v", n, err)
			}
			for _, table := range []string{"connections", "events", "refresh_attempts"} {
				if !rawdb.Gorm(db).Migrator().HasTable(table) {
					t.Errorf("table %s missing", table)
				}
			}
			// One connection per (org, user), and the violation is recognised.
			now := time.Now().UTC()
			for i, id := range []string{"00000000-0000-4000-8000-000000000001", "00000000-0000-4000-8000-000000000002"} {
				err := rawdb.Gorm(db).Create(&models.Connection{ID: id, Owner: "o", OrgID: "00D1", UserID: "0051", Status: models.StatusActive,
					LastRefreshedAt: now, NextWarmAt: now, CreatedAt: now, UpdatedAt: now}).Error
				if (i == 0) != (err == nil) || (i == 1) != models.IsUniqueViolation(err) {
					t.Fatalf("insert %d: %v (unique violation: %v)", i, err, models.IsUniqueViolation(err))
				}
			}
		})
	}
}

// Replicas starting together migrate once between them.
func TestConcurrentMigrationOnPostgres(t *testing.T) {
	url := pgtest.NewDatabase(t)
	var wg sync.WaitGroup
	total := make(chan int, 4)
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			db, err := models.Open(url, "", models.Options{})
			if err != nil {
				t.Error(err)
				return
			}
			defer db.Close()
			applied, err := db.Migrate(context.Background())
			if err != nil {
				t.Error(err)
			}
			total <- len(applied)
		}()
	}
	wg.Wait()
	close(total)
	sum := 0
	for n := range total {
		sum += n
	}
	all, _ := models.Migrations(models.Postgres)
	if sum != len(all) {
		t.Fatalf("replicas applied %d migrations in all, want %d", sum, len(all))
	}
}

func TestRedactURL(t *testing.T) {
	got := models.RedactURL("postgres://app:hunter2@db.internal:5432/tw?sslmode=require")
	if got != "postgres://app:xxxxx@db.internal:5432/tw?sslmode=require" {
		t.Fatal(got)
	}
}

func TestPurgeEventsKeepsRecentAndKeptKinds(t *testing.T) {
	for _, dialect := range []models.Dialect{models.SQLite, models.Postgres} {
		t.Run(string(dialect), func(t *testing.T) {
			db := testkit.MigratedDB(t, dialect)
			now := time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC)
			var evs []models.Event
			for i := range 12001 { // more than two batches
				evs = append(evs, models.Event{Kind: "warmed", CreatedAt: now.Add(-400*24*time.Hour + time.Duration(i)*time.Second)})
			}
			evs = append(evs, models.Event{Kind: "app_paused", CreatedAt: now.Add(-500 * 24 * time.Hour)},
				models.Event{Kind: "warmed", CreatedAt: now.Add(-time.Hour)})
			if err := rawdb.Gorm(db).CreateInBatches(&evs, 1000).Error; err != nil {
				t.Fatal(err)
			}
			n, err := models.PurgeEvents(context.Background(), db, now.Add(-365*24*time.Hour), []string{"app_paused"})
			if err != nil || n != 12001 {
				t.Fatalf("purged %d, %v; want 12001", n, err)
			}
			var left []string
			rawdb.Gorm(db).Model(&models.Event{}).Order("id").Pluck("kind", &left)
			if len(left) != 2 || left[0] != "app_paused" || left[1] != "warmed" {
				t.Fatalf("left %v, want the kept kind and the recent event", left)
			}
		})
	}
}
