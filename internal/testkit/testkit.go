// Package testkit holds what the tests of several packages share: log
// capture, connecting through the emulator's PKCE flow, the token-leak
// scan of logs and raw database dumps, and condition waits.
package testkit

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tokenwarm/tokenwarm/internal/pgtest"
	"github.com/tokenwarm/tokenwarm/models"
	"github.com/tokenwarm/tokenwarm/pkce"
	"github.com/tokenwarm/tokenwarm/salesforce"
	"github.com/tokenwarm/tokenwarm/vault"
)

// SyncBuffer collects log output from many goroutines.
type SyncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *SyncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *SyncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// Connect runs the PKCE web-server flow for username against the emulator
// at emuURL (which must auto-approve), exchanges the code with sf and
// stores the result through v. It returns the connection ID.
func Connect(emuURL string, sf *salesforce.Client, v *vault.Vault, username string) (string, error) {
	tok, err := Authorize(emuURL, sf, username)
	if err != nil {
		return "", err
	}
	c, err := v.Connect(context.Background(), emuURL, tok.OrgID+"/"+tok.UserID, tok, "")
	if err != nil {
		return "", err
	}
	return c.Connection.ID, nil
}

// Authorize runs the PKCE web-server flow against the emulator for username
// and returns the exchanged tokens without storing them.
func Authorize(emuURL string, sf *salesforce.Client, username string) (*salesforce.Token, error) {
	verifier := pkce.NewVerifier()
	q := url.Values{
		"response_type": {"code"}, "client_id": {sf.ClientID}, "redirect_uri": {sf.RedirectURI},
		"state": {"s"}, "scope": {"api refresh_token"}, "code_challenge": {pkce.S256(verifier)},
		"code_challenge_method": {"S256"}, "login_hint": {username},
	}
	noFollow := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := noFollow.Get(emuURL + "/services/oauth2/authorize?" + q.Encode())
	if err != nil {
		return nil, err
	}
	resp.Body.Close()
	loc, err := url.Parse(resp.Header.Get("Location"))
	if err != nil || loc.Query().Get("code") == "" {
		return nil, fmt.Errorf("authorize did not redirect with a code: %d %q", resp.StatusCode, resp.Header.Get("Location"))
	}
	return sf.Exchange(context.Background(), emuURL, loc.Query().Get("code"), verifier)
}

// AssertNoTokens is invariant I7's check: none of the issued tokens appears
// in any of the texts (named by where they come from).
func AssertNoTokens(t testing.TB, issued []string, texts map[string]string) {
	t.Helper()
	for where, text := range texts {
		if ContainsToken(issued, text) {
			t.Errorf("a token appears in the %s", where)
		}
	}
}

// ContainsToken reports whether text contains one of the issued tokens.
// Every emulator token has a fixed prefix and a length per kind, so it
// looks at prefix hits instead of searching for each of tens of thousands
// of tokens.
func ContainsToken(issued []string, text string) bool {
	known := map[string]bool{}
	lengths := map[string]map[int]bool{}
	for _, tok := range issued {
		known[tok] = true
		p := tokenPrefix(tok)
		if lengths[p] == nil {
			lengths[p] = map[int]bool{}
		}
		lengths[p][len(tok)] = true
	}
	for prefix, ns := range lengths {
		for rest := text; ; {
			i := strings.Index(rest, prefix)
			if i < 0 {
				break
			}
			for n := range ns {
				if i+n <= len(rest) && known[rest[i:i+n]] {
					return true
				}
			}
			rest = rest[i+len(prefix):]
		}
	}
	return false
}

// tokenPrefix is the fixed head of an emulator token: the org ID and "!"
// for access tokens, a constant for refresh tokens and codes.
func tokenPrefix(tok string) string {
	if i := strings.IndexByte(tok, '!'); i > 0 {
		return tok[:i+1]
	}
	for _, p := range []string{"5Aep861", "aPrx"} {
		if strings.HasPrefix(tok, p) {
			return p
		}
	}
	return tok[:min(len(tok), 8)]
}

// DumpDatabase returns the raw database: pg_dump output on Postgres (rows
// as JSON if pg_dump is missing), the SQLite file and its WAL otherwise.
func DumpDatabase(t testing.TB, db *models.DB, pgURL, dataDir string) string {
	t.Helper()
	if db.Dialect == models.SQLite {
		var all []byte
		for _, name := range []string{"tokenwarm.db", "tokenwarm.db-wal"} {
			if b, err := os.ReadFile(filepath.Join(dataDir, name)); err == nil {
				all = append(all, b...)
			}
		}
		if len(all) == 0 {
			t.Fatal("empty SQLite dump")
		}
		return string(all)
	}
	if pgDump := pgtest.PGDump(); pgDump != "" {
		out, err := exec.Command(pgDump, "--data-only", pgURL).Output()
		if err == nil {
			return string(out)
		}
		t.Logf("pg_dump failed (%v); falling back to SELECT", err)
	}
	var b strings.Builder
	for _, table := range []string{"connections", "events", "refresh_attempts"} {
		rows, err := db.SQL().Query("SELECT row_to_json(x)::text FROM " + table + " x")
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

// Dialects runs a test on embedded SQLite and on real Postgres.
func Dialects(t *testing.T, fn func(t *testing.T, dialect models.Dialect)) {
	t.Run("sqlite", func(t *testing.T) { fn(t, models.SQLite) })
	t.Run("postgres", func(t *testing.T) { fn(t, models.Postgres) })
}

// Backend is where a test's data lives: a dialect and, for Postgres, the
// PgBouncer in front of it (PoolerEnv names its URL's environment variable,
// pgtest.EnvPgBouncerURL or pgtest.EnvPgBouncerSmallURL; empty = direct).
// Behind PgBouncer the pools use models.PoolerTransaction.
type Backend struct {
	Dialect   models.Dialect
	PoolerEnv string
}

// SmallPgBouncer is Postgres behind the PgBouncer whose pool (3 server
// connections per database) is smaller than two replicas' demand.
var SmallPgBouncer = Backend{Dialect: models.Postgres, PoolerEnv: pgtest.EnvPgBouncerSmallURL}

// Backends runs a test on embedded SQLite, on real Postgres, and on the
// same Postgres through PgBouncer in transaction pooling mode (skipped
// outside CI when scripts/test did not start one, failed in CI).
func Backends(t *testing.T, fn func(t *testing.T, b Backend)) {
	t.Run("sqlite", func(t *testing.T) { fn(t, Backend{Dialect: models.SQLite}) })
	t.Run("postgres", func(t *testing.T) { fn(t, Backend{Dialect: models.Postgres}) })
	t.Run("pgbouncer", func(t *testing.T) {
		fn(t, Backend{Dialect: models.Postgres, PoolerEnv: pgtest.EnvPgBouncerURL})
	})
}

// WaitFor polls cond until it holds or the deadline passes.
func WaitFor(t testing.TB, what string, d time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// MigratedDB opens a fresh, migrated database of the dialect (a new
// Postgres database, or a SQLite file in a temporary directory), closed
// when the test ends.
func MigratedDB(t testing.TB, dialect models.Dialect) *models.DB {
	t.Helper()
	url := ""
	if dialect == models.Postgres {
		url = pgtest.NewDatabase(t)
	}
	db, err := models.Open(url, t.TempDir(), models.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	if _, err := db.Migrate(context.Background()); err != nil {
		t.Fatal(err)
	}
	return db
}

// Concurrently runs fn(0), …, fn(n-1) in n goroutines released together,
// and waits for all of them: the shape of every race test.
func Concurrently(n int, fn func(i int)) {
	start := make(chan struct{})
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			<-start
			fn(i)
		})
	}
	close(start)
	wg.Wait()
}
