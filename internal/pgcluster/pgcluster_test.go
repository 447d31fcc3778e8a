package pgcluster

import (
	"context"
	"errors"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

func startOrSkip(t *testing.T, o Options) *Cluster {
	t.Helper()
	if _, err := FindBin(); errors.Is(err, ErrNoBinaries) {
		if os.Getenv("CI") == "true" {
			t.Fatalf("CI=true but %v", err)
		}
		t.Skip(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c, err := Start(ctx, o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Stop)
	return c
}

func TestStartWriteCrashRestartRead(t *testing.T) {
	c := startOrSkip(t, Options{Settings: map[string]string{"fsync": "off", "application_name": "it's quoted"}})
	if n := len(c.sock) + len("/.s.PGSQL.65535"); n >= 100 {
		t.Fatalf("socket path %d bytes long", n)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if err := c.CreateDatabase(ctx, "pgcluster_test"); err != nil {
		t.Fatal(err)
	}
	url := c.URL("pgcluster_test")
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Exec(ctx, "CREATE TABLE t (v text); INSERT INTO t VALUES ('kept')"); err != nil {
		t.Fatal(err)
	}
	var fsync string
	if err := conn.QueryRow(ctx, "SHOW fsync").Scan(&fsync); err != nil || fsync != "off" {
		t.Fatalf("fsync = %q, %v; want off", fsync, err)
	}
	port := c.Port()
	if err := c.Restart(ctx, "immediate"); err != nil {
		t.Fatal(err)
	}
	if c.Port() != port {
		t.Fatalf("port changed: %d -> %d", port, c.Port())
	}
	// The old connection was cut by the crash.
	if err := conn.Ping(ctx); err == nil {
		t.Fatal("connection survived an immediate restart")
	}
	conn.Close(ctx)
	conn, err = pgx.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	var v string
	if err := conn.QueryRow(ctx, "SELECT v FROM t").Scan(&v); err != nil || v != "kept" {
		t.Fatalf("after restart: %q, %v", v, err)
	}
	// PostmasterPID names the parent of our backend.
	pm, err := c.PostmasterPID()
	if err != nil {
		t.Fatal(err)
	}
	var backend int
	if err := conn.QueryRow(ctx, "SELECT pg_backend_pid()").Scan(&backend); err != nil {
		t.Fatal(err)
	}
	st, err := os.ReadFile("/proc/" + strconv.Itoa(backend) + "/stat")
	if err == nil { // Linux
		f := strings.Fields(string(st[strings.LastIndexByte(string(st), ')')+1:]))
		if len(f) < 2 || f[1] != strconv.Itoa(pm) {
			t.Fatalf("backend %d's parent is %v, PostmasterPID %d", backend, f, pm)
		}
	}
	dir := c.Dir()
	c.Stop()
	c.Stop()
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Fatalf("temp dir %s still there: %v", dir, err)
	}
}

func TestOptionStringQuotes(t *testing.T) {
	got := optionString(map[string]string{"b": "x y", "a": "it's"})
	want := `-c 'a=it'\''s' -c 'b=x y'`
	if got != want {
		t.Fatalf("got %s want %s", got, want)
	}
	if strings.Count(got, "-c") != 2 {
		t.Fatal(got)
	}
}
