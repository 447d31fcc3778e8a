package vault_test

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/tokenwarm/tokenwarm/clock"
	"github.com/tokenwarm/tokenwarm/emulator"
	"github.com/tokenwarm/tokenwarm/internal/pgtest"
	"github.com/tokenwarm/tokenwarm/internal/testkit"
	"github.com/tokenwarm/tokenwarm/models"
	"github.com/tokenwarm/tokenwarm/salesforce"
	"github.com/tokenwarm/tokenwarm/seal"
	"github.com/tokenwarm/tokenwarm/vault"
)

const (
	testClientID     = "test-client"
	testClientSecret = "test-secret"
	sessionTimeout   = 2 * time.Hour
)

// env is one test world: a database, the emulator on a real port, a fake
// clock shared by the emulator and the vaults, captured logs.
type env struct {
	t        *testing.T
	dialect  models.Dialect
	pgURL    string
	dataDir  string
	clk      *clock.Fake
	emu      *emulator.Server
	emuURL   string
	ringSpec string
	ring     *seal.Ring
	logs     *testkit.SyncBuffer
	log      *slog.Logger
	dbs      []*models.DB
}

func newEnv(t *testing.T, dialect models.Dialect) *env {
	t.Helper()
	return newEnvAt(t, dialect, time.Date(2026, 3, 1, 9, 0, 0, 0, time.UTC))
}

// newEnvAt starts the fake clock at start (tests with other processes that
// use the real clock start it at the real time).
func newEnvAt(t *testing.T, dialect models.Dialect, start time.Time) *env {
	t.Helper()
	e := &env{t: t, dialect: dialect, clk: clock.NewFake(start), logs: &testkit.SyncBuffer{}}
	if dialect == models.Postgres {
		e.pgURL = pgtest.NewDatabase(t)
	} else {
		e.dataDir = t.TempDir()
	}
	key, err := seal.GenerateKey("test1")
	if err != nil {
		t.Fatal(err)
	}
	e.ringSpec = key
	e.ring, _ = seal.ParseRing(key)
	e.log = slog.New(slog.NewTextHandler(e.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	e.emu = emulator.New(emulator.Config{ClientID: testClientID, ClientSecret: testClientSecret,
		Clock: e.clk, SessionTimeout: sessionTimeout, AutoApprove: true})
	srv := httptest.NewServer(e.emu)
	t.Cleanup(srv.Close)
	e.emuURL = srv.URL
	db := e.openDB()
	if _, err := db.Migrate(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.checkNoTokenLeaks)
	return e
}

// openDB opens an independent pool (Postgres) or the one SQLite file.
func (e *env) openDB() *models.DB {
	e.t.Helper()
	db, err := models.Open(e.pgURL, e.dataDir, models.Options{MaxOpenConns: 20})
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(func() { db.Close() })
	e.dbs = append(e.dbs, db)
	return db
}

func (e *env) sfClient() *salesforce.Client {
	return &salesforce.Client{HTTP: &http.Client{}, ClientID: testClientID, ClientSecret: testClientSecret,
		RedirectURI: "http://127.0.0.1/callback", Timeout: 5 * time.Second, SessionTimeout: sessionTimeout, Clock: e.clk}
}

func (e *env) vault(cfg vault.Config) *vault.Vault {
	return e.vaultOn(e.openDB(), cfg)
}

func (e *env) vaultOn(db *models.DB, cfg vault.Config) *vault.Vault {
	if cfg.Worker == "" {
		cfg.Worker = fmt.Sprintf("w%d", len(e.dbs))
	}
	return vault.New(db, e.ring, e.sfClient(), e.clk, e.log, cfg)
}

// connect runs the PKCE web-server flow against the emulator for username
// and stores the result through v.
func (e *env) connect(v *vault.Vault, username string) string {
	e.t.Helper()
	id, err := testkit.Connect(e.emuURL, e.sfClient(), v, username)
	if err != nil {
		e.t.Fatal(err)
	}
	return id
}

func (e *env) conn(id string) models.Connection {
	e.t.Helper()
	var c models.Connection
	if err := e.dbs[0].Gorm.Where("id = ?", id).Take(&c).Error; err != nil {
		e.t.Fatal(err)
	}
	return c
}

func (e *env) events(id string) []models.Event {
	e.t.Helper()
	var evs []models.Event
	if err := e.dbs[0].Gorm.Where("connection_id = ?", id).Order("id").Find(&evs).Error; err != nil {
		e.t.Fatal(err)
	}
	return evs
}

func (e *env) storedRefreshToken(id string) string {
	e.t.Helper()
	c := e.conn(id)
	v := vault.New(e.dbs[0], e.ring, nil, e.clk, nil, vault.Config{})
	tok, err := v.OpenRefresh(&c)
	if err != nil {
		e.t.Fatal(err)
	}
	return tok
}

func eventKinds(evs []models.Event) []string {
	var out []string
	for _, ev := range evs {
		out = append(out, ev.Kind)
	}
	return out
}

// checkNoTokenLeaks is invariant I7: no token the emulator ever issued
// appears in the logs or, unsealed, anywhere in the database.
func (e *env) checkNoTokenLeaks() {
	tokens := e.emu.IssuedTokens()
	if len(tokens) == 0 {
		return
	}
	testkit.AssertNoTokens(e.t, tokens, map[string]string{
		"logs":          e.logs.String(),
		"database dump": testkit.DumpDatabase(e.t, e.dbs[0], e.pgURL, e.dataDir),
	})
}

func dialects(t *testing.T, fn func(t *testing.T, dialect models.Dialect)) { testkit.Dialects(t, fn) }

func waitFor(t *testing.T, what string, d time.Duration, cond func() bool) {
	t.Helper()
	testkit.WaitFor(t, what, d, cond)
}
