package vault_test

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tokenwarm/tokenwarm/clock"
	"github.com/tokenwarm/tokenwarm/emulator"
	"github.com/tokenwarm/tokenwarm/internal/pgtest"
	"github.com/tokenwarm/tokenwarm/models"
	"github.com/tokenwarm/tokenwarm/pkce"
	"github.com/tokenwarm/tokenwarm/salesforce"
	"github.com/tokenwarm/tokenwarm/seal"
	"github.com/tokenwarm/tokenwarm/vault"
)

const (
	testClientID     = "test-client"
	testClientSecret = "test-secret"
	sessionTimeout   = 2 * time.Hour
)

// syncBuffer collects log output from many goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

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
	logs     *syncBuffer
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
	e := &env{t: t, dialect: dialect, clk: clock.NewFake(start), logs: &syncBuffer{}}
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
	sf := e.sfClient()
	verifier := pkce.NewVerifier()
	q := url.Values{
		"response_type": {"code"}, "client_id": {testClientID}, "redirect_uri": {sf.RedirectURI},
		"state": {"s"}, "scope": {"api refresh_token"}, "code_challenge": {pkce.S256(verifier)},
		"code_challenge_method": {"S256"}, "login_hint": {username},
	}
	noFollow := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := noFollow.Get(e.emuURL + "/services/oauth2/authorize?" + q.Encode())
	if err != nil {
		e.t.Fatal(err)
	}
	resp.Body.Close()
	loc, err := url.Parse(resp.Header.Get("Location"))
	if err != nil || loc.Query().Get("code") == "" {
		e.t.Fatalf("authorize did not redirect with a code: %d %q", resp.StatusCode, resp.Header.Get("Location"))
	}
	tok, err := sf.Exchange(context.Background(), e.emuURL, loc.Query().Get("code"), verifier)
	if err != nil {
		e.t.Fatal(err)
	}
	c, err := v.Connect(context.Background(), e.emuURL, tok.OrgID+"/"+tok.UserID, tok)
	if err != nil {
		e.t.Fatal(err)
	}
	return c.Connection.ID
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
	t := e.t
	tokens := e.emu.IssuedTokens()
	if len(tokens) == 0 {
		return
	}
	logs := e.logs.String()
	dump := e.dumpDatabase()
	for _, tok := range tokens {
		if strings.Contains(logs, tok) {
			t.Errorf("a token appears in the logs")
			return
		}
		if strings.Contains(dump, tok) {
			t.Errorf("a token appears in plaintext in the database dump")
			return
		}
	}
}

// dumpDatabase returns the raw database: pg_dump output on Postgres, the
// SQLite file's bytes (and its WAL) on SQLite.
func (e *env) dumpDatabase() string {
	t := e.t
	if e.dialect == models.SQLite {
		var all []byte
		for _, name := range []string{"tokenwarm.db", "tokenwarm.db-wal"} {
			b, err := os.ReadFile(filepath.Join(e.dataDir, name))
			if err == nil {
				all = append(all, b...)
			}
		}
		if len(all) == 0 {
			t.Fatal("empty SQLite dump")
		}
		return string(all)
	}
	if pgDump := pgtest.PGDump(); pgDump != "" {
		out, err := exec.Command(pgDump, "--data-only", e.pgURL).Output()
		if err == nil {
			return string(out)
		}
		t.Logf("pg_dump failed (%v); falling back to SELECT", err)
	}
	var b strings.Builder
	for _, table := range []string{"connections", "events", "refresh_attempts"} {
		rows, err := e.dbs[0].SQL().Query("SELECT row_to_json(x)::text FROM " + table + " x")
		if err != nil {
			t.Fatal(err)
		}
		for rows.Next() {
			var s string
			_ = rows.Scan(&s)
			b.WriteString(s)
		}
		rows.Close()
	}
	return b.String()
}

// dialects runs a test on embedded SQLite and on real Postgres.
func dialects(t *testing.T, fn func(t *testing.T, dialect models.Dialect)) {
	t.Run("sqlite", func(t *testing.T) { fn(t, models.SQLite) })
	t.Run("postgres", func(t *testing.T) { fn(t, models.Postgres) })
}

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t *testing.T, what string, d time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
