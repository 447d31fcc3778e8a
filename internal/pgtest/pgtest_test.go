package pgtest

import (
	"context"
	"net/url"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

func TestNewDatabase(t *testing.T) {
	base := URL(t)

	var name string
	t.Run("create", func(t *testing.T) {
		dbURL := NewDatabase(t)

		u, err := url.Parse(dbURL)
		if err != nil {
			t.Fatalf("parse %q: %v", dbURL, err)
		}
		name = strings.TrimPrefix(u.Path, "/")
		if !regexp.MustCompile(`^t_[0-9a-f]{16}$`).MatchString(name) {
			t.Fatalf("database name %q is not t_ + 16 hex chars", name)
		}

		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		conn, err := pgx.Connect(ctx, dbURL)
		if err != nil {
			t.Fatalf("connect %s: %v", dbURL, err)
		}
		// Deliberately left open until cleanup: the drop must use FORCE.
		t.Cleanup(func() { conn.Close(context.Background()) })

		var one int
		if err := conn.QueryRow(ctx, "SELECT 1").Scan(&one); err != nil || one != 1 {
			t.Fatalf("SELECT 1 = %d, %v", one, err)
		}
		var current string
		if err := conn.QueryRow(ctx, "SELECT current_database()").Scan(&current); err != nil {
			t.Fatal(err)
		}
		if current != name {
			t.Fatalf("current_database() = %q, want %q", current, name)
		}
	})
	if name == "" {
		t.Fatal("subtest did not create a database")
	}

	// The subtest's cleanup has run by now: the database must be gone.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, base)
	if err != nil {
		t.Fatalf("connect base: %v", err)
	}
	defer conn.Close(context.Background())
	var n int
	if err := conn.QueryRow(ctx, "SELECT count(*) FROM pg_database WHERE datname = $1", name).Scan(&n); err != nil {
		t.Fatal(err)
	}
	if n != 0 {
		t.Fatalf("database %s still exists after cleanup", name)
	}
}

func TestNewDatabaseUnique(t *testing.T) {
	a, b := NewDatabase(t), NewDatabase(t)
	if a == b {
		t.Fatalf("NewDatabase returned the same URL twice: %s", a)
	}
}

func TestPGDump(t *testing.T) {
	if os.Getenv(EnvPGDump) == "" {
		if os.Getenv("CI") != "" {
			t.Fatalf("%s not set: scripts/test sets it, and the leak scans need pg_dump", EnvPGDump)
		}
		t.Skipf("%s not set", EnvPGDump)
	}
	p := PGDump()
	st, err := os.Stat(p)
	if err != nil {
		t.Fatalf("PGDump() = %q: %v", p, err)
	}
	if st.Mode()&0o111 == 0 {
		t.Fatalf("PGDump() = %q is not executable", p)
	}
}
