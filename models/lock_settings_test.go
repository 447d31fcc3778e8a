package models_test

import (
	"context"
	"errors"
	"reflect"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

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
	db, id := oneConnection(t, "bbbbbbbb-bbbb-4bbb-8bbb-bbbbbbbbbbb7")

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

// On Postgres the row lock's read is decoded by hand from an explicit
// column list: every field must come back as gorm reads it, with and
// without an attempt marker, with times set and NULL.
func TestLockForRefreshReadsEveryColumn(t *testing.T) {
	ctx := context.Background()
	db := testkit.MigratedDB(t, models.Postgres)
	at := distinctTime
	full := distinctConnection("bbbbbbbb-bbbb-4bbb-8bbb-bbbbbbbbbbc1", "00Dx", "005x")
	bare := models.Connection{ID: "bbbbbbbb-bbbb-4bbb-8bbb-bbbbbbbbbbc2", Owner: "00Dy/005y", OrgID: "00Dy", UserID: "005y", LoginURL: "https://login.example",
		Status: models.StatusActive, LastRefreshedAt: at(3), NextWarmAt: at(4), CreatedAt: at(8), UpdatedAt: at(9)}
	for _, c := range []*models.Connection{&full, &bare} {
		if err := rawdb.Gorm(db).Create(c).Error; err != nil {
			t.Fatal(err)
		}
	}
	alerted := at(10)
	marker := models.RefreshAttempt{ConnectionID: full.ID, AttemptID: "attempt-1", Worker: "host-1", RotationCount: 7,
		StartedAt: time.Now().UTC().Add(-time.Second).Truncate(time.Microsecond), LeaseUntil: time.Now().UTC().Add(time.Hour).Truncate(time.Microsecond),
		Protocol: models.RefreshProtocol, State: models.AttemptPresenting, AlertedAt: &alerted}
	if err := rawdb.Gorm(db).Create(&marker).Error; err != nil {
		t.Fatal(err)
	}

	for _, c := range []models.Connection{full, bare} {
		l, err := db.LockForRefresh(ctx, c.ID, time.Second, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		want, err := db.Connection(ctx, c.ID)
		if err != nil {
			t.Fatal(err)
		}
		got, viaGorm := reflect.ValueOf(l.Conn), reflect.ValueOf(*want)
		for i := range got.NumField() {
			if g, w := got.Field(i).Interface(), viaGorm.Field(i).Interface(); !sameValue(g, w) {
				t.Errorf("%s of %s: lock read %v, gorm %v", got.Type().Field(i).Name, c.ID, g, w)
			}
		}
		if c.ID == bare.ID {
			if l.Prior != nil {
				t.Errorf("a connection without a marker has a prior attempt: %+v", *l.Prior)
			}
		} else {
			p := l.Prior
			if p == nil || !p.Live || p.ConnectionID != marker.ConnectionID || p.AttemptID != marker.AttemptID || p.Worker != marker.Worker ||
				p.RotationCount != marker.RotationCount || !p.StartedAt.Equal(marker.StartedAt) || !p.LeaseUntil.Equal(marker.LeaseUntil) ||
				p.State != marker.State || p.AlertedAt == nil || !p.AlertedAt.Equal(*marker.AlertedAt) {
				t.Errorf("prior attempt read %+v, want %+v (live)", p, marker)
			}
		}
		l.Release()
	}
	if n := db.SQL().Stats().InUse; n != 0 {
		t.Errorf("%d pooled connections still in use after the locks were released", n)
	}
}

// The lock's transaction is run by hand: a COMMIT that the server turns
// into a rollback (a statement in the transaction failed and its error was
// dropped) must be an error, never a stored outcome, and the connection
// must go back to the pool usable.
func TestLockStoreCommitThatRolledBackIsAnError(t *testing.T) {
	ctx := context.Background()
	db, id := oneConnection(t, "bbbbbbbb-bbbb-4bbb-8bbb-bbbbbbbbbbc3")
	store := func(code string, hook func(n int, tx *models.Tx) error) error {
		l, err := db.LockForRefresh(ctx, id, time.Second, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		defer l.Release()
		return l.Store(ctx, models.RefreshWrite{Marker: models.KeepPriorMarker, Update: map[string]any{"last_error_code": code}, BeforeCommit: hook})
	}
	err := store("lost", func(_ int, tx *models.Tx) error {
		_ = tx.Exec("SELECT 1/0") // fails; the transaction is aborted, and the error is dropped
		return nil
	})
	if !errors.Is(err, pgx.ErrTxCommitRollback) {
		t.Fatalf("store after a failed statement: %v, want %v", err, pgx.ErrTxCommitRollback)
	}
	if got, err := db.Connection(ctx, id); err != nil || got.LastErrorCode != "" {
		t.Fatalf("the rolled-back store left last_error_code %q (%v)", got.LastErrorCode, err)
	}
	if err := store("kept", nil); err != nil {
		t.Fatalf("the next store: %v", err)
	}
	if got, err := db.Connection(ctx, id); err != nil || got.LastErrorCode != "kept" {
		t.Fatalf("the next store left last_error_code %q (%v), want kept", got.LastErrorCode, err)
	}
	if n := db.SQL().Stats().InUse; n != 0 {
		t.Errorf("%d pooled connections still in use", n)
	}
}

// oneConnection is a migrated Postgres database holding one active
// connection.
func oneConnection(t *testing.T, id string) (*models.DB, string) {
	db := testkit.MigratedDB(t, models.Postgres)
	now := time.Now().UTC()
	c := models.Connection{ID: id, Owner: "o/u", OrgID: "o", UserID: "u", LoginURL: "https://login.example",
		Status: models.StatusActive, LastRefreshedAt: now, NextWarmAt: now, CreatedAt: now, UpdatedAt: now}
	if err := rawdb.Gorm(db).Create(&c).Error; err != nil {
		t.Fatal(err)
	}
	return db, id
}

// A COMMIT that is never sent (the lock's context ended just before it)
// leaves no transaction open: the row lock is gone at once, and nothing of
// the store was committed.
func TestLockCommitNotSentReleasesTheRow(t *testing.T) {
	ctx := context.Background()
	db, id := oneConnection(t, "bbbbbbbb-bbbb-4bbb-8bbb-bbbbbbbbbbc4")
	lockCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	l, err := db.LockForRefresh(lockCtx, id, time.Second, 30*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	// A connection of its own, outside the pool's reuse, to watch the
	// server: the pool would discard a connection left in a transaction
	// only when it next handed it out.
	watch, err := db.SQL().Conn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer watch.Close()
	err = l.Store(ctx, models.RefreshWrite{Marker: models.KeepPriorMarker, Update: map[string]any{"last_error_code": "lost"},
		BeforeCommit: func(int, *models.Tx) error { cancel(); return nil }})
	l.Release()
	if err == nil {
		t.Fatal("a store whose COMMIT was never sent succeeded")
	}
	open := -1
	for deadline := time.Now().Add(3 * time.Second); open != 0 && time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if err := watch.QueryRowContext(ctx, `SELECT count(*) FROM pg_stat_activity
			WHERE datname = current_database() AND state LIKE 'idle in transaction%'`).Scan(&open); err != nil {
			t.Fatal(err)
		}
	}
	if open != 0 {
		t.Fatalf("%d sessions still idle in a transaction after a COMMIT that was not sent", open)
	}
	again, err := db.LockForRefresh(ctx, id, 300*time.Millisecond, 5*time.Second)
	if err != nil {
		t.Fatalf("the row is still locked after a COMMIT that was not sent: %v", err)
	}
	again.Release()
	if got, err := db.Connection(ctx, id); err != nil || got.LastErrorCode != "" {
		t.Fatalf("last_error_code %q (%v) after a COMMIT that was not sent", got.LastErrorCode, err)
	}
	if n := db.SQL().Stats().InUse; n != 1 { // watch
		t.Errorf("%d pooled connections in use, want only the watching one", n)
	}
}
