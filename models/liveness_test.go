package models_test

import (
	"context"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/stdlib"

	"github.com/tokenwarm/tokenwarm/internal/rawdb"
	"github.com/tokenwarm/tokenwarm/internal/testkit"
	"github.com/tokenwarm/tokenwarm/models"
)

// A pooled connection idle for seconds is handed out without a ping (a
// pull stays one round trip on a quiet replica), unless the server spoke
// or hung up meanwhile, or it has been idle for long; and a pool whose
// every connection the server terminated answers the next query without
// an error.
func TestPooledConnectionLiveness(t *testing.T) {
	ctx := context.Background()
	db := testkit.MigratedDB(t, models.Postgres)
	conn, err := db.SQL().Conn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var pc *pgx.Conn
	if err := conn.Raw(func(dc any) error { pc = dc.(*stdlib.Conn).Conn(); return nil }); err != nil {
		t.Fatal(err)
	}
	ask := func(idle time.Duration) bool {
		return models.ShouldPing(ctx, stdlib.ShouldPingParams{Conn: pc, IdleDuration: idle})
	}
	if ask(5 * time.Second) {
		t.Error("a live connection idle for 5s would be pinged")
	}
	if !ask(2 * time.Minute) {
		t.Error("a connection idle for 2 minutes would not be pinged")
	}
	pid := pc.PgConn().PID()
	if err := rawdb.Gorm(db).Exec("SELECT pg_terminate_backend(?)", pid).Error; err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for !ask(5*time.Second) && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if !ask(5 * time.Second) {
		t.Error("a connection whose backend was terminated would be handed out without a ping")
	}
	conn.Close()

	// Every pooled connection terminated by the server: the next queries
	// get fresh ones, without an error.
	hold := func() error {
		var held []interface{ Close() error }
		defer func() {
			for _, c := range held {
				c.Close()
			}
		}()
		for range 4 {
			c, err := db.SQL().Conn(ctx)
			if err != nil {
				return err
			}
			held = append(held, c)
			if _, err := c.ExecContext(ctx, "SELECT 1"); err != nil {
				return err
			}
		}
		return nil
	}
	if err := hold(); err != nil { // four connections in the pool
		t.Fatal(err)
	}
	// One connection held out of the pool terminates all the others and
	// watches them go: a backend leaves pg_stat_activity when it exits,
	// after it sent its FATAL message.
	watch, err := db.SQL().Conn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer watch.Close()
	others := "FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()"
	var killed int
	if err := watch.QueryRowContext(ctx, "SELECT count(pg_terminate_backend(pid)) "+others).Scan(&killed); err != nil || killed < 3 {
		t.Fatalf("terminated %d backends (%v), want at least 3", killed, err)
	}
	left := -1
	for deadline := time.Now().Add(5 * time.Second); left != 0 && time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		if err := watch.QueryRowContext(ctx, "SELECT count(*) "+others).Scan(&left); err != nil {
			t.Fatal(err)
		}
	}
	if left != 0 {
		t.Fatalf("%d terminated backends still running", left)
	}
	if err := hold(); err != nil {
		t.Fatalf("queries after the server terminated the pool's connections: %v", err)
	}
}
