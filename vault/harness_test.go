package vault_test

import (
	"fmt"
	"github.com/tokenwarm/tokenwarm/internal/rawdb"
	"log/slog"
	"testing"
	"time"

	"github.com/tokenwarm/tokenwarm/internal/testkit"
	"github.com/tokenwarm/tokenwarm/models"
	"github.com/tokenwarm/tokenwarm/vault"
)

// env is one test world (testkit.World: database, emulator, fake clock,
// captured logs, leak check) and the pools the test opened on it.
type env struct {
	*testkit.World
	dbs []*models.DB
}

func newEnv(t *testing.T, dialect models.Dialect) *env {
	t.Helper()
	return newEnvAt(t, dialect, time.Date(2026, 3, 1, 9, 0, 0, 0, time.UTC))
}

// newEnvOn is newEnv on a backend (Postgres behind PgBouncer among them).
func newEnvOn(t *testing.T, b testkit.Backend) *env {
	t.Helper()
	w := testkit.NewWorldOn(t, b, time.Date(2026, 3, 1, 9, 0, 0, 0, time.UTC), slog.LevelDebug)
	return &env{World: w, dbs: []*models.DB{w.DB}}
}

// newEnvAt starts the fake clock at start (tests with other processes that
// use the real clock start it at the real time).
func newEnvAt(t *testing.T, dialect models.Dialect, start time.Time) *env {
	t.Helper()
	w := testkit.NewWorld(t, dialect, start, slog.LevelDebug)
	return &env{World: w, dbs: []*models.DB{w.DB}}
}

// openDB opens an independent pool (Postgres) or another on the SQLite file.
func (e *env) openDB() *models.DB {
	db := e.OpenDB()
	e.dbs = append(e.dbs, db)
	return db
}

func (e *env) vault(cfg vault.Config) *vault.Vault {
	return e.vaultOn(e.openDB(), cfg)
}

func (e *env) vaultOn(db *models.DB, cfg vault.Config) *vault.Vault {
	if cfg.Worker == "" {
		cfg.Worker = fmt.Sprintf("w%d", len(e.dbs))
	}
	return vault.New(db, e.Ring, e.SFClient(), e.Clock, e.Log, cfg)
}

// connect runs the PKCE web-server flow against the emulator for username
// and stores the result through v.
func (e *env) connect(v *vault.Vault, username string) string {
	e.T.Helper()
	id, err := testkit.Connect(e.EmuURL, e.SFClient(), v, username)
	if err != nil {
		e.T.Fatal(err)
	}
	return id
}

func (e *env) conn(id string) models.Connection {
	e.T.Helper()
	var c models.Connection
	if err := rawdb.Gorm(e.dbs[0]).Where("id = ?", id).Take(&c).Error; err != nil {
		e.T.Fatal(err)
	}
	return c
}

func (e *env) events(id string) []models.Event {
	e.T.Helper()
	var evs []models.Event
	if err := rawdb.Gorm(e.dbs[0]).Where("connection_id = ?", id).Order("id").Find(&evs).Error; err != nil {
		e.T.Fatal(err)
	}
	return evs
}

func (e *env) storedRefreshToken(id string) string {
	e.T.Helper()
	c := e.conn(id)
	v := vault.New(e.dbs[0], e.Ring, nil, e.Clock, nil, vault.Config{})
	tok, err := v.OpenRefresh(&c)
	if err != nil {
		e.T.Fatal(err)
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

func dialects(t *testing.T, fn func(t *testing.T, dialect models.Dialect)) { testkit.Dialects(t, fn) }

// backends runs fn on SQLite, Postgres and Postgres behind PgBouncer in
// transaction pooling mode.
func backends(t *testing.T, fn func(t *testing.T, b testkit.Backend)) { testkit.Backends(t, fn) }

func waitFor(t *testing.T, what string, d time.Duration, cond func() bool) {
	t.Helper()
	testkit.WaitFor(t, what, d, cond)
}
