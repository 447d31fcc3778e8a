package models_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/tokenwarm/tokenwarm/internal/rawdb"
	"github.com/tokenwarm/tokenwarm/internal/testkit"
	"github.com/tokenwarm/tokenwarm/models"
)

// LockForRefresh sets its transaction's settings in the statement that
// takes the row lock: they must be in force for that lock's wait (a row
// held elsewhere times out under lock_timeout, not the server's default of
// waiting forever) and for the rest of the transaction (its commit is
// synchronous even on this test server, whose default is off).
func TestLockForRefreshSettings(t *testing.T) {
	ctx := context.Background()
	db := testkit.MigratedDB(t, models.Postgres)
	now := time.Now().UTC()
	id := "bbbbbbbb-bbbb-4bbb-8bbb-bbbbbbbbbbb7"
	c := models.Connection{ID: id, Owner: "o/u", OrgID: "o", UserID: "u", LoginURL: "https://login.example",
		Status: models.StatusActive, LastRefreshedAt: now, NextWarmAt: now, CreatedAt: now, UpdatedAt: now}
	if err := rawdb.Gorm(db).Create(&c).Error; err != nil {
		t.Fatal(err)
	}

	holder := rawdb.Gorm(db).Begin()
	if err := holder.Exec("SELECT 1 FROM connections WHERE id = ? FOR UPDATE", id).Error; err != nil {
		t.Fatal(err)
	}
	waitCtx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	start := time.Now()
	_, err := db.LockForRefresh(waitCtx, id, 300*time.Millisecond, 7*time.Second)
	waited := time.Since(start)
	holder.Rollback()
	if !errors.Is(err, models.ErrLockTimeout) || waited > 10*time.Second {
		t.Fatalf("lock of a row held elsewhere: %v after %v, want ErrLockTimeout after about 300ms", err, waited)
	}

	l, err := db.LockForRefresh(ctx, id, 300*time.Millisecond, 7*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Release()
	for name, want := range map[string]string{"lock_timeout": "300ms", "idle_in_transaction_session_timeout": "7s", "synchronous_commit": "on"} {
		if got, err := l.Setting(name); err != nil || got != want {
			t.Errorf("%s in the lock's transaction = %q (%v), want %q", name, got, err, want)
		}
	}
	if l.Conn.ID != id {
		t.Errorf("locked %q", l.Conn.ID)
	}
}
