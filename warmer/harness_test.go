package warmer_test

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"sync"
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
	"github.com/tokenwarm/tokenwarm/warmer"
)

const (
	testClientID     = "test-client"
	testClientSecret = "test-secret"
	sessionTimeout   = 2 * time.Hour
)

var start = time.Date(2026, 3, 1, 9, 0, 0, 0, time.UTC)

// env is one test world: a database, the emulator on a real port, a fake
// clock shared by the emulator, the vaults and the warmers, captured logs.
type env struct {
	t       testing.TB
	dialect models.Dialect
	pgURL   string
	dataDir string
	clk     *clock.Fake
	emu     *emulator.Server
	emuURL  string
	ring    *seal.Ring
	logs    *testkit.SyncBuffer
	log     *slog.Logger
	db      *models.DB // the test's own view of the database
	// setup is the vault connections are created through.
	setup *vault.Vault
}

func newEnv(t testing.TB, dialect models.Dialect) *env {
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
	e.ring, _ = seal.ParseRing(key)
	e.log = slog.New(slog.NewTextHandler(e.logs, &slog.HandlerOptions{Level: slog.LevelInfo}))
	e.emu = emulator.New(emulator.Config{ClientID: testClientID, ClientSecret: testClientSecret,
		Clock: e.clk, SessionTimeout: sessionTimeout, AutoApprove: true})
	srv := httptest.NewServer(e.emu)
	t.Cleanup(srv.Close)
	e.emuURL = srv.URL
	e.db = e.openDB()
	if _, err := e.db.Migrate(context.Background()); err != nil {
		t.Fatal(err)
	}
	e.setup = e.vaultOn(e.db, vault.Config{Worker: "setup"})
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
	return db
}

func (e *env) sfClient() *salesforce.Client {
	return &salesforce.Client{HTTP: &http.Client{}, ClientID: testClientID, ClientSecret: testClientSecret,
		RedirectURI: "http://127.0.0.1/callback", Timeout: 5 * time.Second, SessionTimeout: sessionTimeout, Clock: e.clk}
}

func (e *env) vaultOn(db *models.DB, cfg vault.Config) *vault.Vault {
	return vault.New(db, e.ring, e.sfClient(), e.clk, e.log, cfg)
}

// replica is one tokenwarm process: its own pool, vault and warmer.
type replica struct {
	vault  *vault.Vault
	warmer *warmer.Warmer
}

func (e *env) replica(name string, cfg warmer.Config) replica {
	db := e.db
	if e.dialect == models.Postgres {
		db = e.openDB()
	}
	v := e.vaultOn(db, vault.Config{Worker: name})
	w := warmer.New(v, e.clk, e.log, cfg)
	e.t.Cleanup(func() { <-w.Stop().Done() })
	return replica{vault: v, warmer: w}
}

// connect runs the PKCE web-server flow against the emulator for username
// and stores the result.
func (e *env) connect(username string) string {
	e.t.Helper()
	id, err := e.tryConnect(username)
	if err != nil {
		e.t.Fatal(err)
	}
	return id
}

func (e *env) tryConnect(username string) (string, error) {
	return testkit.Connect(e.emuURL, e.sfClient(), e.setup, username)
}

// connectMany creates n connections, a few at a time.
func (e *env) connectMany(n int) []string {
	e.t.Helper()
	ids := make([]string, n)
	errs := make(chan error, n)
	next := make(chan int)
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for i := range next {
				id, err := e.tryConnect(fmt.Sprintf("user%d@example.com", i))
				if err != nil {
					errs <- err
					continue
				}
				ids[i] = id
			}
		})
	}
	for i := range n {
		next <- i
	}
	close(next)
	wg.Wait()
	close(errs)
	for err := range errs {
		e.t.Fatal(err)
	}
	return ids
}

func (e *env) conn(id string) models.Connection {
	e.t.Helper()
	var c models.Connection
	if err := e.db.Gorm.Where("id = ?", id).Take(&c).Error; err != nil {
		e.t.Fatal(err)
	}
	return c
}

func (e *env) conns() []models.Connection {
	e.t.Helper()
	var cs []models.Connection
	if err := e.db.Gorm.Order("id").Find(&cs).Error; err != nil {
		e.t.Fatal(err)
	}
	return cs
}

// eventsOf returns events of these kinds, in order per connection.
func (e *env) eventsOf(kinds ...string) []models.Event {
	e.t.Helper()
	var evs []models.Event
	if err := e.db.Gorm.Where("kind IN ?", kinds).Order("connection_id, created_at, id").Find(&evs).Error; err != nil {
		e.t.Fatal(err)
	}
	return evs
}

func (e *env) countEvents(kind string) int64 {
	e.t.Helper()
	var n int64
	if err := e.db.Gorm.Model(&models.Event{}).Where("kind = ?", kind).Count(&n).Error; err != nil {
		e.t.Fatal(err)
	}
	return n
}

// checkTokensInSync is what every refresh must leave behind: for each
// connection, the refresh token we store is the one Salesforce considers
// current, so nothing was rotated upstream and lost.
func (e *env) checkTokensInSync() {
	e.t.Helper()
	for _, c := range e.conns() {
		stored, err := e.setup.OpenRefresh(&c)
		if err != nil {
			e.t.Fatal(err)
		}
		current, ok := e.emu.CurrentRefreshToken(c.OrgID, c.UserID)
		if !ok || current != stored {
			e.t.Fatalf("connection %s: stored refresh token is not Salesforce's current one (chain alive: %v)", c.ID, ok)
		}
	}
}

// runAll runs one pass of every replica at once, as replicas on one cron
// schedule would.
func runAll(t *testing.T, rs []replica) []warmer.Pass {
	t.Helper()
	passes := make([]warmer.Pass, len(rs))
	errs := make([]error, len(rs))
	var wg sync.WaitGroup
	for i, r := range rs {
		wg.Go(func() { passes[i], errs[i] = r.warmer.RunOnce(context.Background()) })
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	return passes
}

// checkNoTokenLeaks is invariant I7: no token the emulator issued appears
// in the logs or, unsealed, in the database.
func (e *env) checkNoTokenLeaks() {
	tokens := e.emu.IssuedTokens()
	if len(tokens) == 0 {
		return
	}
	testkit.AssertNoTokens(e.t, tokens, map[string]string{
		"logs":     e.logs.String(),
		"database": testkit.DumpDatabase(e.t, e.db, e.pgURL, e.dataDir),
	})
}

func dialects(t *testing.T, fn func(t *testing.T, dialect models.Dialect)) { testkit.Dialects(t, fn) }

func waitFor(t *testing.T, what string, d time.Duration, cond func() bool) {
	t.Helper()
	testkit.WaitFor(t, what, d, cond)
}
