package testkit

import (
	"log/slog"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/tokenwarm/tokenwarm/clock"
	"github.com/tokenwarm/tokenwarm/emulator"
	"github.com/tokenwarm/tokenwarm/internal/pgtest"
	"github.com/tokenwarm/tokenwarm/models"
	"github.com/tokenwarm/tokenwarm/salesforce"
	"github.com/tokenwarm/tokenwarm/seal"
)

// The connected app the emulator of a World knows.
const (
	ClientID       = "test-client"
	ClientSecret   = "test-secret"
	SessionTimeout = 2 * time.Hour
)

// World is what the vault and warmer test harnesses share: a migrated
// database of one dialect, a key ring, the emulator on a real port with a
// fake clock, and captured logs. When the test ends it checks invariant
// I7: no token the emulator issued is in the logs or, unsealed, in the
// database.
type World struct {
	T       testing.TB
	Dialect models.Dialect
	PGURL   string // Postgres only: what the World's pools connect to
	// DirectURL is the database itself, not through a pooler (Postgres
	// only; equal to PGURL unless the World is behind PgBouncer).
	DirectURL string
	// Pooler is what the pools are told stands in between.
	Pooler   models.Pooler
	DataDir  string // SQLite only
	Clock    *clock.Fake
	Emu      *emulator.Server
	EmuURL   string
	RingSpec string
	Ring     *seal.Ring
	Logs     *SyncBuffer
	Log      *slog.Logger
	// DB is the first pool, the one the leak check dumps.
	DB *models.DB
}

// NewWorld builds a World whose clock starts at start and whose logs keep
// records from level up.
func NewWorld(t testing.TB, dialect models.Dialect, start time.Time, level slog.Level) *World {
	t.Helper()
	return newWorld(t, dialect, "", start, level)
}

// NewWorldOn builds a World on backend b: b.Dialect, and behind PgBouncer
// when b.PoolerEnv is set.
func NewWorldOn(t testing.TB, b Backend, start time.Time, level slog.Level) *World {
	t.Helper()
	return newWorld(t, b.Dialect, b.PoolerEnv, start, level)
}

func newWorld(t testing.TB, dialect models.Dialect, poolerEnv string, start time.Time, level slog.Level) *World {
	t.Helper()
	w := &World{T: t, Dialect: dialect, Clock: clock.NewFake(start), Logs: &SyncBuffer{}, Pooler: models.PoolerNone}
	switch {
	case dialect == models.Postgres && poolerEnv != "":
		w.PGURL, w.DirectURL = pgtest.NewDatabaseBehind(t, poolerEnv)
		w.Pooler = models.PoolerTransaction
	case dialect == models.Postgres:
		w.PGURL = pgtest.NewDatabase(t)
		w.DirectURL = w.PGURL
	default:
		w.DataDir = t.TempDir()
	}
	key, err := seal.GenerateKey("test1")
	if err != nil {
		t.Fatal(err)
	}
	w.RingSpec = key
	if w.Ring, err = seal.ParseRing(key); err != nil {
		t.Fatal(err)
	}
	w.Log = slog.New(slog.NewTextHandler(w.Logs, &slog.HandlerOptions{Level: level}))
	w.Emu = emulator.New(emulator.Config{ClientID: ClientID, ClientSecret: ClientSecret,
		Clock: w.Clock, SessionTimeout: SessionTimeout, AutoApprove: true})
	srv := httptest.NewServer(w.Emu)
	t.Cleanup(srv.Close)
	w.EmuURL = srv.URL
	w.DB = w.OpenDB()
	if _, err := w.DB.Migrate(t.Context()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(w.checkNoTokenLeaks)
	return w
}

// OpenDB opens an independent pool (Postgres: another replica) or another
// pool on the one SQLite file.
func (w *World) OpenDB() *models.DB {
	w.T.Helper()
	db, err := models.Open(w.PGURL, w.DataDir, models.Options{MaxOpenConns: 20, Pooler: w.Pooler})
	if err != nil {
		w.T.Fatal(err)
	}
	w.T.Cleanup(func() { db.Close() })
	return db
}

// SFClient is a Salesforce client of the World's connected app.
func (w *World) SFClient() *salesforce.Client {
	return &salesforce.Client{HTTP: &http.Client{}, ClientID: ClientID, ClientSecret: ClientSecret,
		RedirectURI: "http://127.0.0.1/callback", Timeout: 5 * time.Second, SessionTimeout: SessionTimeout, Clock: w.Clock}
}

func (w *World) checkNoTokenLeaks() {
	tokens := w.Emu.IssuedTokens()
	if len(tokens) == 0 {
		return
	}
	AssertNoTokens(w.T, tokens, map[string]string{
		"logs":          w.Logs.String(),
		"database dump": DumpDatabase(w.T, w.DB, w.DirectURL, w.DataDir),
	})
}
