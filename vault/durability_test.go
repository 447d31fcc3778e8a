package vault_test

import (
	"context"
	"github.com/tokenwarm/tokenwarm/internal/rawdb"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/tokenwarm/tokenwarm/clock"
	"github.com/tokenwarm/tokenwarm/emulator"
	"github.com/tokenwarm/tokenwarm/internal/pgtest"
	"github.com/tokenwarm/tokenwarm/internal/testkit"
	"github.com/tokenwarm/tokenwarm/models"
	"github.com/tokenwarm/tokenwarm/seal"
	"github.com/tokenwarm/tokenwarm/vault"
)

// Finding 2, Postgres side: a server configured with synchronous_commit =
// off acknowledges commits before they reach the WAL on disk; a crash then
// loses them. Every transaction that stores a refresh token sets
// synchronous_commit itself, so a rotation survives a crash restart of
// such a server (pg_ctl restart -m immediate) right after the commit, while
// an ordinary write made just after it is lost (which shows the crash
// really drops unflushed commits).
func TestRotationSurvivesACrashOfAnAsyncCommitServer(t *testing.T) {
	cluster, url := pgtest.AsyncCommitCluster(t, "durability")
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	open := func() *models.DB {
		db, err := models.Open(url, "", models.Options{MaxOpenConns: 4})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { db.Close() })
		return db
	}
	db := open()
	if _, err := db.Migrate(ctx); err != nil {
		t.Fatal(err)
	}
	key, _ := seal.GenerateKey("k1")
	ring, _ := seal.ParseRing(key)
	clk := clock.NewFake(time.Date(2026, 3, 1, 9, 0, 0, 0, time.UTC))
	emu := emulator.New(emulator.Config{ClientID: testkit.ClientID, ClientSecret: testkit.ClientSecret, Clock: clk, AutoApprove: true})
	srv := httptest.NewServer(emu)
	defer srv.Close()
	w := &testkit.World{Clock: clk}
	sf := w.SFClient()
	v := vault.New(db, ring, sf, clk, nil, vault.Config{})
	id, err := testkit.Connect(srv.URL, sf, v, "durable@example.com")
	if err != nil {
		t.Fatal(err)
	}

	for round := range 3 {
		clk.Advance(testkit.SessionTimeout)
		if _, err := v.Access(ctx, id, vault.Request{Cause: vault.CauseWarm, Force: true}); err != nil {
			t.Fatal(err)
		}
		cid := id
		if err := rawdb.Gorm(db).Create(&models.Event{ConnectionID: &cid, Kind: "async_probe", CreatedAt: clk.Now()}).Error; err != nil {
			t.Fatal(err)
		}
		if err := cluster.Restart(ctx, "immediate"); err != nil {
			t.Fatal(err)
		}
		db = open()
		v = vault.New(db, ring, sf, clk, nil, vault.Config{})
		var c models.Connection
		if err := rawdb.Gorm(db).Where("id = ?", id).Take(&c).Error; err != nil {
			t.Fatal(err)
		}
		stored, err := v.OpenRefresh(&c)
		if err != nil {
			t.Fatal(err)
		}
		if cur, ok := emu.CurrentRefreshToken(c.OrgID, c.UserID); !ok || cur != stored {
			t.Fatalf("round %d: the rotation committed before the crash is gone", round)
		}
		var probes int64
		rawdb.Gorm(db).Model(&models.Event{}).Where("kind = ?", "async_probe").Count(&probes)
		if probes != 0 {
			t.Fatalf("round %d: an asynchronous commit survived the crash, so this test cannot tell durable from not", round)
		}
	}
	if st := emu.Stats(); st.StalePresentations != 0 || st.Refreshes != 3 {
		t.Fatalf("stale %d refreshes %d", st.StalePresentations, st.Refreshes)
	}
}

// Every connection of a pool commits synchronously, also outside the vault
// (device sessions, handoff codes), whatever the server's default.
func TestPoolCommitsSynchronously(t *testing.T) {
	e := newEnv(t, models.Postgres)
	db := e.openDB()
	if err := rawdb.Gorm(db).Exec("ALTER DATABASE " + currentDatabase(t, db) + " SET synchronous_commit = off").Error; err != nil {
		t.Fatal(err)
	}
	fresh := e.openDB()
	var setting string
	if err := rawdb.Gorm(fresh).Raw("SHOW synchronous_commit").Scan(&setting).Error; err != nil {
		t.Fatal(err)
	}
	if setting != "on" {
		t.Fatalf("synchronous_commit = %q on a pool connection, want on", setting)
	}
}

func currentDatabase(t *testing.T, db *models.DB) string {
	t.Helper()
	var name string
	if err := rawdb.Gorm(db).Raw("SELECT quote_ident(current_database())").Scan(&name).Error; err != nil {
		t.Fatal(err)
	}
	return name
}
