package warmer_test

import (
	"context"
	"fmt"
	"github.com/tokenwarm/tokenwarm/internal/rawdb"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/tokenwarm/tokenwarm/internal/testkit"
	"github.com/tokenwarm/tokenwarm/models"
	"github.com/tokenwarm/tokenwarm/vault"
	"github.com/tokenwarm/tokenwarm/warmer"
)

var start = time.Date(2026, 3, 1, 9, 0, 0, 0, time.UTC)

// env is one test world (testkit.World: database, emulator, fake clock
// shared by the vaults and the warmers, captured logs, leak check) and the
// vault connections are created through.
type env struct {
	*testkit.World
	db    *models.DB // the test's own view of the database
	setup *vault.Vault
	// announce, when set, is installed on the pools of replicas made after.
	announce models.Announcer
}

func newEnv(t testing.TB, dialect models.Dialect) *env {
	t.Helper()
	return newEnvOn(t, testkit.Backend{Dialect: dialect})
}

// newEnvOn is newEnv on a backend (Postgres behind PgBouncer among them).
func newEnvOn(t testing.TB, b testkit.Backend) *env {
	t.Helper()
	w := testkit.NewWorldOn(t, b, start, slog.LevelInfo)
	e := &env{World: w, db: w.DB}
	e.setup = e.vaultOn(e.db, vault.Config{Worker: "setup"})
	return e
}

func (e *env) vaultOn(db *models.DB, cfg vault.Config) *vault.Vault {
	return vault.New(db, e.Ring, e.SFClient(), e.Clock, e.Log, cfg)
}

// replica is one tokenwarm process: its own pool, vault and warmer.
type replica struct {
	vault  *vault.Vault
	warmer *warmer.Warmer
}

func (e *env) replica(name string, cfg warmer.Config) replica {
	db := e.db
	if e.Dialect == models.Postgres {
		db = e.OpenDB()
	}
	if e.announce != nil {
		db.SetAnnouncer(e.announce)
	}
	v := e.vaultOn(db, vault.Config{Worker: name})
	w := warmer.New(v, db, e.Clock, e.Log, cfg)
	e.T.Cleanup(func() { <-w.Stop().Done() })
	return replica{vault: v, warmer: w}
}

// connect runs the PKCE web-server flow against the emulator for username
// and stores the result.
func (e *env) connect(username string) string {
	e.T.Helper()
	id, err := e.tryConnect(username)
	if err != nil {
		e.T.Fatal(err)
	}
	return id
}

func (e *env) tryConnect(username string) (string, error) {
	return testkit.Connect(e.EmuURL, e.SFClient(), e.setup, username)
}

// connectMany creates n connections, a few at a time.
func (e *env) connectMany(n int) []string {
	e.T.Helper()
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
		e.T.Fatal(err)
	}
	return ids
}

func (e *env) conn(id string) models.Connection {
	e.T.Helper()
	var c models.Connection
	if err := rawdb.Gorm(e.db).Where("id = ?", id).Take(&c).Error; err != nil {
		e.T.Fatal(err)
	}
	return c
}

func (e *env) conns() []models.Connection {
	e.T.Helper()
	var cs []models.Connection
	if err := rawdb.Gorm(e.db).Order("id").Find(&cs).Error; err != nil {
		e.T.Fatal(err)
	}
	return cs
}

// eventsOf returns events of these kinds, in order per connection.
func (e *env) eventsOf(kinds ...string) []models.Event {
	e.T.Helper()
	var evs []models.Event
	if err := rawdb.Gorm(e.db).Where("kind IN ?", kinds).Order("connection_id, created_at, id").Find(&evs).Error; err != nil {
		e.T.Fatal(err)
	}
	return evs
}

func (e *env) countEvents(kind string) int64 {
	e.T.Helper()
	var n int64
	if err := rawdb.Gorm(e.db).Model(&models.Event{}).Where("kind = ?", kind).Count(&n).Error; err != nil {
		e.T.Fatal(err)
	}
	return n
}

// checkTokensInSync is what every refresh must leave behind: for each
// connection, the refresh token we store is the one Salesforce considers
// current, so nothing was rotated upstream and lost.
func (e *env) checkTokensInSync() {
	e.T.Helper()
	for _, c := range e.conns() {
		stored, err := e.setup.OpenRefresh(&c)
		if err != nil {
			e.T.Fatal(err)
		}
		current, ok := e.Emu.CurrentRefreshToken(c.OrgID, c.UserID)
		if !ok || current != stored {
			e.T.Fatalf("connection %s: stored refresh token is not Salesforce's current one (chain alive: %v)", c.ID, ok)
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

func dialects(t *testing.T, fn func(t *testing.T, dialect models.Dialect)) { testkit.Dialects(t, fn) }

func waitFor(t *testing.T, what string, d time.Duration, cond func() bool) {
	t.Helper()
	testkit.WaitFor(t, what, d, cond)
}

type backend = testkit.Backend

// backends runs fn on SQLite, Postgres and Postgres behind PgBouncer in
// transaction pooling mode.
func backends(t *testing.T, fn func(t *testing.T, b backend)) { testkit.Backends(t, fn) }
