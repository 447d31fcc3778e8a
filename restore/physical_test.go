package restore_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/tokenwarm/tokenwarm/internal/pgcluster"
	"github.com/tokenwarm/tokenwarm/internal/pgtest"
	"github.com/tokenwarm/tokenwarm/models"
	"github.com/tokenwarm/tokenwarm/restore"
)

// A physical backup (pg_basebackup) restored into the cluster — same
// system identifier, same timeline, nothing Postgres itself would flag —
// is recognised as a restore: the incarnation is data and comes back with
// the point in history it had.
func TestGuardTellsAPhysicalRestore(t *testing.T) {
	c := pgtest.Cluster(t, pgcluster.Options{Settings: map[string]string{"fsync": "off"}})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if err := c.CreateDatabase(ctx, "tw"); err != nil {
		t.Fatal(err)
	}
	open := func() *models.DB {
		db, err := models.Open(c.URL("tw"), "", models.Options{MaxOpenConns: 4})
		if err != nil {
			t.Fatal(err)
		}
		return db
	}
	db := open()
	if _, err := db.Migrate(ctx); err != nil {
		t.Fatal(err)
	}
	// The replica's pool is replaced after the restart.
	pool := &swappable{db}
	g := restore.NewGuard(pool, t.TempDir(), nil, nil, "r1")
	check(t, g)
	check(t, g)
	backup, err := c.BaseBackup(ctx)
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(2 * time.Millisecond)
	check(t, g) // the fleet goes on after the backup
	db.Close()

	if err := c.RestoreBaseBackup(ctx, backup); err != nil {
		t.Fatal(err)
	}
	db = open()
	defer db.Close()
	pool.DB = db
	g2 := restore.NewGuard(db, "", nil, nil, "r1")
	check(t, g2) // no memory: learns, holds nothing
	if g2.HoldReason() != "" {
		t.Fatalf("a replica without memory held: %q", g2.HoldReason())
	}
	if err := g.Check(ctx); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(g.HoldReason(), "restored from a backup") {
		t.Fatalf("a physical restore went unnoticed: %q", g.HoldReason())
	}
	check(t, g2)
	if g2.HoldReason() == "" {
		t.Fatal("the hold is not shared through the database")
	}
	inc, err := db.ReadIncarnation(ctx)
	if err != nil || inc.RestoreState != models.RestoreRequired {
		t.Fatalf("incarnation after a physical restore: %+v %v", inc, err)
	}
}

type swappable struct{ *models.DB }

// A server running with asynchronous commits loses acknowledged commits in
// a crash; an advance of the generation is not one of them (it commits
// with synchronous_commit = on, like a stored rotation), so a crash
// restart is never taken for a restore.
func TestGuardSurvivesACrashOfAnAsyncCommitServer(t *testing.T) {
	c, url := pgtest.AsyncCommitCluster(t, "tw")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	db, err := models.Open(url, "", models.Options{MaxOpenConns: 4})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if _, err := db.Migrate(ctx); err != nil {
		t.Fatal(err)
	}
	if err := c.Restart(ctx, "fast"); err != nil { // the migration is flushed
		t.Fatal(err)
	}
	db.DiscardIdle()
	g := restore.NewGuard(db, t.TempDir(), nil, nil, "r1")
	check(t, g)
	check(t, g) // advances
	if err := c.Restart(ctx, "immediate"); err != nil {
		t.Fatal(err)
	}
	db.DiscardIdle()
	for range 3 { // the pool may hand out a connection the crash cut
		if err = g.Check(ctx); err == nil {
			break
		}
	}
	if err != nil || g.HoldReason() != "" {
		t.Fatalf("after a crash restart: %v, hold %q", err, g.HoldReason())
	}
}
