// Package pgtest provides helpers for tests that need a real PostgreSQL
// server. The server is a throwaway cluster started by ./scripts/test, which
// exports TOKENWARM_TEST_POSTGRES_URL (and TOKENWARM_TEST_PG_BIN /
// TOKENWARM_TEST_PG_DUMP) before running go test.
package pgtest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"net/url"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/tokenwarm/tokenwarm/internal/pgcluster"
)

const (
	// EnvURL is the environment variable holding the base Postgres URL.
	EnvURL = "TOKENWARM_TEST_POSTGRES_URL"
	// EnvPGDump is the environment variable holding the pg_dump path.
	EnvPGDump = "TOKENWARM_TEST_PG_DUMP"
	// EnvPGBin is the environment variable holding the server binaries dir.
	EnvPGBin = "TOKENWARM_TEST_PG_BIN"
	// EnvPgBouncerURL holds the URL of a PgBouncer in transaction pooling
	// mode in front of the same server, with a roomy pool per database.
	EnvPgBouncerURL = "TOKENWARM_TEST_PGBOUNCER_URL"
	// EnvPgBouncerSmallURL holds the URL of a second such PgBouncer whose
	// pool per database (3 server connections) is smaller than two
	// replicas' combined demand.
	EnvPgBouncerSmallURL = "TOKENWARM_TEST_PGBOUNCER_SMALL_URL"
)

// URL returns the base Postgres URL from TOKENWARM_TEST_POSTGRES_URL.
// When unset: if the CI env var is non-empty it calls t.Fatal (Postgres tests
// must never be silently skipped in CI); otherwise it calls t.Skip with a
// message telling to run ./scripts/test.
func URL(t testing.TB) string {
	t.Helper()
	return fromEnv(t, EnvURL, "a throwaway PostgreSQL")
}

func fromEnv(t testing.TB, env, what string) string {
	t.Helper()
	u := os.Getenv(env)
	if u != "" {
		return u
	}
	if os.Getenv("CI") != "" {
		t.Fatalf("%s is not set but CI is: these tests must not be skipped in CI; run the suite via ./scripts/test", env)
	}
	t.Skipf("%s is not set; run ./scripts/test to start %s and run these tests", env, what)
	return ""
}

// NewDatabaseBehind creates a database like NewDatabase and returns its URL
// through the PgBouncer named by env (EnvPgBouncerURL or
// EnvPgBouncerSmallURL), which reaches every database of the server, and
// its direct URL. The database gets synchronous_commit = on as its own
// default, as docs/POOLERS.md asks (the test server's default is off, and
// no start-up parameter passes the pooler). It skips or fails like URL
// when env is unset.
func NewDatabaseBehind(t testing.TB, env string) (pooled, direct string) {
	t.Helper()
	base := fromEnv(t, env, "PgBouncer in front of a throwaway PostgreSQL")
	direct = NewDatabase(t)
	u, err := url.Parse(direct)
	if err != nil {
		t.Fatal(err)
	}
	name := u.Path[1:]
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := exec1(ctx, URL(t), "ALTER DATABASE "+pgx.Identifier{name}.Sanitize()+" SET synchronous_commit = on"); err != nil {
		t.Fatalf("pgtest: set synchronous_commit of %s: %v", name, err)
	}
	if pooled, err = withDatabase(base, name); err != nil {
		t.Fatalf("pgtest: parse %s: %v", env, err)
	}
	return pooled, direct
}

// NewDatabase creates a fresh, uniquely named empty database on the server
// from URL, registers a t.Cleanup that drops it (WITH (FORCE)), and returns
// its URL.
func NewDatabase(t testing.TB) string {
	t.Helper()
	base := URL(t)

	name := "t_" + randomHex(t, 8)
	dbURL, err := withDatabase(base, name)
	if err != nil {
		t.Fatalf("pgtest: parse %s: %v", EnvURL, err)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := exec1(ctx, base, "CREATE DATABASE "+pgx.Identifier{name}.Sanitize()); err != nil {
		t.Fatalf("pgtest: create database %s: %v", name, err)
	}

	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := exec1(ctx, base, "DROP DATABASE IF EXISTS "+pgx.Identifier{name}.Sanitize()+" WITH (FORCE)"); err != nil {
			t.Errorf("pgtest: drop database %s: %v", name, err)
		}
	})
	return dbURL
}

// PGDump returns the path of pg_dump from TOKENWARM_TEST_PG_DUMP or PATH,
// or "" if none is found.
func PGDump() string {
	if p := os.Getenv(EnvPGDump); p != "" {
		return p
	}
	if p, err := exec.LookPath("pg_dump"); err == nil {
		return p
	}
	return ""
}

// exec1 runs a single statement over a short-lived connection.
func exec1(ctx context.Context, connURL, sql string) error {
	conn, err := pgx.Connect(ctx, connURL)
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	_, err = conn.Exec(ctx, sql)
	return err
}

// withDatabase returns base with its database name replaced by name.
func withDatabase(base, name string) (string, error) {
	u, err := url.Parse(base)
	if err != nil {
		return "", err
	}
	u.Path = "/" + name
	u.RawPath = ""
	return u.String(), nil
}

func randomHex(t testing.TB, n int) string {
	t.Helper()
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatalf("pgtest: random name: %v", err)
	}
	return hex.EncodeToString(b)
}

// Cluster starts a throwaway PostgreSQL cluster of its own (for tests that
// restart, crash or restore the server), stopped when the test ends. With
// no server binaries it fails under CI and skips otherwise.
func Cluster(t testing.TB, o pgcluster.Options) *pgcluster.Cluster {
	t.Helper()
	if _, err := pgcluster.FindBin(); errors.Is(err, pgcluster.ErrNoBinaries) {
		if os.Getenv("CI") != "" {
			t.Fatalf("CI is set but %v", err)
		}
		t.Skip(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	c, err := pgcluster.Start(ctx, o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Stop)
	return c
}

// AsyncCommitCluster starts a cluster that acknowledges commits before
// they reach the WAL (synchronous_commit = off, the WAL writer flushing
// only every 10 s), so that a crash restart loses them, creates database
// dbname on it, and returns the cluster and that database's URL, whose
// pool asks for asynchronous commits too (as a pooler that drops start-up
// parameters would leave it): only a transaction's own setting makes its
// commit durable.
func AsyncCommitCluster(t testing.TB, dbname string) (*pgcluster.Cluster, string) {
	t.Helper()
	c := Cluster(t, pgcluster.Options{Settings: map[string]string{
		"synchronous_commit": "off", "wal_writer_delay": "10000ms", "fsync": "off",
	}})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := c.CreateDatabase(ctx, dbname); err != nil {
		t.Fatal(err)
	}
	u := c.URL(dbname)
	if strings.Contains(u, "?") {
		return c, u + "&synchronous_commit=off"
	}
	return c, u + "?synchronous_commit=off"
}
