package main

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/tokenwarm/tokenwarm/emulator"
	"github.com/tokenwarm/tokenwarm/internal/pgtest"
	"github.com/tokenwarm/tokenwarm/internal/testkit"
	"github.com/tokenwarm/tokenwarm/seal"
)

// Acceptance a2: a database restored from an older backup kills no grant.
// Real processes on Postgres: users connect through the real flow at an
// emulator that rotates refresh tokens and revokes a chain on reuse; the
// database is backed up with pg_dump; some connections are refreshed (their
// backed-up tokens are now stale); the fleet stops; the backup is restored
// with pg_restore. The restarted server detects the restore from its
// memory of the database's history and refuses to refresh blind (pulls
// answer 503, the warmer presents nothing although every connection is
// due); `tokenwarm restore` runs next to it; then the warmer runs. Zero
// reuse presentations at the emulator, the stale connections are
// rotation_lost / needs_reauth, the untouched ones keep working.
func TestRestoreFromAnOlderBackupPresentsNoStaleToken(t *testing.T) {
	dbURL := pgtest.NewDatabase(t)
	pgDump := pgtest.PGDump()
	pgRestore := ""
	if pgDump != "" {
		pgRestore = filepath.Join(filepath.Dir(pgDump), "pg_restore")
	}
	if _, err := os.Stat(pgRestore); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("pg_dump/pg_restore not found (%q): run through ./scripts/test", pgDump)
		}
		t.Skip("pg_dump/pg_restore not found; run through ./scripts/test")
	}
	emu := emulator.New(emulator.Config{ClientID: testkit.ClientID, ClientSecret: testkit.ClientSecret, AutoApprove: true})
	emuSrv := httptest.NewServer(emu)
	defer emuSrv.Close()

	const secret = "whsec-restore-0123456789"
	var hookMu sync.Mutex
	hooks := map[string]int{}
	receiver := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var ev struct {
			Type string `json:"type"`
		}
		_ = json.NewDecoder(r.Body).Decode(&ev)
		hookMu.Lock()
		hooks[ev.Type]++
		hookMu.Unlock()
	}))
	defer receiver.Close()
	hookCount := func(typ string) int {
		hookMu.Lock()
		defer hookMu.Unlock()
		return hooks[typ]
	}

	key, err := seal.GenerateKey("k1")
	if err != nil {
		t.Fatal(err)
	}
	const app = "com.example.app:/callback"
	env := map[string]string{"DATABASE_URL": dbURL, "TOKENWARM_SEAL_KEYS": key, "TOKENWARM_DATA_DIR": t.TempDir(),
		"TOKENWARM_ADDR": freeAddr(t), "SALESFORCE_LOGIN_URL": emuSrv.URL, "SALESFORCE_CLIENT_ID": testkit.ClientID,
		"SALESFORCE_CLIENT_SECRET": testkit.ClientSecret, "TOKENWARM_APP_REDIRECT_URIS": app,
		"SALESFORCE_TIMEOUT": "10s", "TOKENWARM_LOCK_TIMEOUT": "20s", "TOKENWARM_COMMIT_RETRY_BUDGET": "5s",
		"TOKENWARM_SHUTDOWN_TIMEOUT": "40s", "TOKENWARM_WARM_SCHEDULE": "@every 1s", "TOKENWARM_RESTORE_CHECK_INTERVAL": "1s",
		"TOKENWARM_WEBHOOK_URLS": receiver.URL, "TOKENWARM_WEBHOOK_SECRET": secret}

	// 1. Six users connect and pull once.
	srv := startServerProcess(t, env)
	// first is the access token stored at the backup, token the newest.
	type user struct{ device, id, first, token string }
	users := make([]*user, 6)
	for i := range users {
		device, id := appConnect(t, srv.base, app, "restore"+string(rune('a'+i))+"@example.com")
		status, tok, err := pull(srv.base, device, id, "")
		if err != nil || status != 200 {
			t.Fatalf("first pull of user %d: %d %v", i, status, err)
		}
		users[i] = &user{device, id, tok, tok}
	}
	stale, untouched := users[:3], users[3:]

	// 2. The backup.
	dump := filepath.Join(t.TempDir(), "tokenwarm.dump")
	if out, err := exec.Command(pgDump, "-Fc", "-f", dump, dbURL).CombinedOutput(); err != nil {
		t.Fatalf("pg_dump: %v\n%s", err, out)
	}

	// 3. Half the connections refresh: Salesforce rotates their refresh
	// tokens, so the backup's are stale now.
	for _, u := range stale {
		status, tok, err := pull(srv.base, u.device, u.id, u.token)
		if err != nil || status != 200 || tok == u.token {
			t.Fatalf("refreshing pull: %d %v", status, err)
		}
		u.token = tok
	}
	rotated := emu.Stats().Refreshes
	if rotated != 3 {
		t.Fatalf("%d rotations before the restore, want 3", rotated)
	}

	// 4. The fleet stops; the database is restored from the backup.
	stopProcess(t, srv)
	restoreDatabase(t, dbURL, pgRestore, dump)

	// 5. The server detects the restore and refuses to refresh blind,
	// although every connection is due and some pulls need a refresh.
	emu.ResetStats()
	srv = startServerProcess(t, env)
	waitUntil(t, "the restore alert", func() bool {
		return strings.Contains(srv.logs.String(), "ALERT: the database was restored from a backup")
	})
	if n := queryInt(t, dbURL, "SELECT count(*) FROM events WHERE kind = 'restore_detected' AND connection_id IS NULL"); n != 1 {
		t.Fatalf("%d restore_detected events, want 1", n)
	}
	execSQL(t, dbURL, "UPDATE connections SET next_warm_at = now() - interval '1 second'")
	for _, u := range users {
		status, body := pullBody(t, srv.base, u.device, u.id, u.first)
		if status != http.StatusServiceUnavailable || !strings.Contains(body, "restored from a backup") {
			t.Fatalf("a pull needing a refresh during the hold: %d %s", status, body)
		}
	}
	// Three warm passes (one a second) find everything due and present
	// nothing.
	passes := func() int {
		m := regexp.MustCompile(`(?m)^tokenwarm_warm_passes_total (\d+)`).FindStringSubmatch(metricsText(t, srv.base))
		if m == nil {
			return -1
		}
		n, _ := strconv.Atoi(m[1])
		return n
	}
	held := passes()
	waitUntil(t, "three warm passes during the hold", func() bool { return passes() >= held+3 })
	if st := emu.Stats(); st.TokenCalls != 0 || st.Introspections != 0 {
		t.Fatalf("while held: %d token calls, %d introspections; want none", st.TokenCalls, st.Introspections)
	}
	waitUntil(t, "the app.restore_detected webhook", func() bool { return hookCount("app.restore_detected") == 1 })
	if m := metricsText(t, srv.base); !strings.Contains(m, "tokenwarm_restore_hold 1") {
		t.Fatal("the metrics do not show the restore hold")
	}

	// 6. tokenwarm restore, next to the running server.
	out := runSubcommand(t, env, "restore")
	if !strings.Contains(out, "checked 6 active connection(s): 3 still active, 3 rotation_lost") {
		t.Fatalf("restore output:\n%s", out)
	}

	// 7. The warmer runs again: it refreshes the untouched connections
	// (all due) and never presents a stale token.
	waitUntil(t, "the warmer to refresh the three live connections", func() bool { return emu.Stats().Refreshes >= 3 })
	for _, u := range untouched {
		status, tok, err := pull(srv.base, u.device, u.id, u.token)
		if err != nil || status != 200 || tok == u.token {
			t.Fatalf("an untouched connection after the restore: %d %v", status, err)
		}
		useAtSalesforce(t, emuSrv.URL, tok)
	}
	for _, u := range stale {
		status, body := pullBody(t, srv.base, u.device, u.id, "")
		if status != http.StatusConflict || !strings.Contains(body, "reauth_required") || !strings.Contains(body, "rotation_lost") {
			t.Fatalf("a connection whose token was rotated after the backup: %d %s", status, body)
		}
	}
	waitUntil(t, "three connection.needs_reauth webhooks", func() bool { return hookCount("connection.needs_reauth") == 3 })
	st := emu.Stats()
	if st.StalePresentations != 0 || st.ChainsRevoked != 0 || st.CallsAfterDead != 0 {
		t.Fatalf("reuse at Salesforce: %d stale presentations, %d chains revoked, %d calls after dead", st.StalePresentations, st.ChainsRevoked, st.CallsAfterDead)
	}
	if st.RefreshIntrospections != 6 {
		t.Fatalf("%d refresh-token introspections, want 6 (one per active connection)", st.RefreshIntrospections)
	}
	if n := queryInt(t, dbURL, "SELECT count(*) FROM connections WHERE status = 'needs_reauth' AND reauth_reason LIKE 'rotation_lost%'"); n != 3 {
		t.Fatalf("%d connections rotation_lost, want 3", n)
	}
	if m := metricsText(t, srv.base); !strings.Contains(m, "tokenwarm_restore_hold 0") {
		t.Fatal("the metrics still show the restore hold")
	}
	if !strings.Contains(srv.logs.String(), "refreshes resume") {
		t.Fatalf("the server did not resume:\n%s", srv.logs.String())
	}
	testkit.AssertNoTokens(t, emu.IssuedTokens(), map[string]string{"server logs": srv.logs.String(), "restore output": out})
}

// stopProcess stops a server process with SIGTERM and waits for it.
func stopProcess(t *testing.T, s *signalledServer) {
	t.Helper()
	if err := s.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-s.done:
		if err != nil {
			t.Fatalf("server exit: %v\n%s", err, s.logs.String())
		}
	case <-time.After(60 * time.Second):
		t.Fatal("server did not exit after SIGTERM")
	}
	s.done <- nil // for the cleanup
}

// runSubcommand runs tokenwarm with args as a process and returns its
// output (stdout and stderr).
func runSubcommand(t *testing.T, env map[string]string, args ...string) string {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^TestHelperServerProcess$", "-test.count=1")
	cmd.Env = append(os.Environ(), "TW_SERVER_PROCESS=1", "TW_SERVER_ARGS="+strings.Join(args, " "))
	for k, v := range env {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("tokenwarm %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// restoreDatabase drops the database and restores it from a pg_dump
// archive, as an operator does.
func restoreDatabase(t *testing.T, dbURL, pgRestore, dump string) {
	t.Helper()
	u, err := url.Parse(dbURL)
	if err != nil {
		t.Fatal(err)
	}
	name := strings.TrimPrefix(u.Path, "/")
	admin := *u
	admin.Path = "/postgres"
	execSQL(t, admin.String(), "DROP DATABASE "+pgx.Identifier{name}.Sanitize()+" WITH (FORCE)")
	execSQL(t, admin.String(), "CREATE DATABASE "+pgx.Identifier{name}.Sanitize())
	if out, err := exec.Command(pgRestore, "--no-owner", "-d", dbURL, dump).CombinedOutput(); err != nil {
		t.Fatalf("pg_restore: %v\n%s", err, out)
	}
}

func execSQL(t *testing.T, dbURL, sql string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, dbURL)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	if _, err := conn.Exec(ctx, sql); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
}

func queryInt(t *testing.T, dbURL, sql string) int64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, dbURL)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	var n int64
	if err := conn.QueryRow(ctx, sql).Scan(&n); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
	return n
}

// pullBody is a pull that returns the status and the body.
func pullBody(t *testing.T, base, device, connID, rejected string) (int, string) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, base+"/v1/connections/"+connID+"/access-token?rejected_token="+url.QueryEscape(rejected), nil)
	req.Header.Set("Authorization", "Bearer "+device)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// useAtSalesforce calls the emulator's REST API with an access token.
func useAtSalesforce(t *testing.T, emuURL, token string) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, emuURL+"/services/data/v62.0/", nil)
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("the pulled access token does not work at Salesforce: %d", resp.StatusCode)
	}
}

func metricsText(t *testing.T, base string) string {
	t.Helper()
	resp, err := http.Get(base + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}
