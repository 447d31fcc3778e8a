package main

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/tokenwarm/tokenwarm/emulator"
	"github.com/tokenwarm/tokenwarm/internal/pgtest"
	"github.com/tokenwarm/tokenwarm/internal/rawdb"
	"github.com/tokenwarm/tokenwarm/internal/testkit"
	"github.com/tokenwarm/tokenwarm/models"
	"github.com/tokenwarm/tokenwarm/seal"
)

// Acceptance d: docs/RUNBOOK-KEY-ROTATION.md, step by step, against two
// replicas of the real binary on Postgres behind a balancer, while every
// user pulls with rejected_token (each pull a refresh at the emulator) and
// rotates its device refresh token the whole time:
//
//  1. a new seal key last in TOKENWARM_SEAL_KEYS, rolling restart, then
//     first, rolling restart; a new device JWT signing key
//     (rotate-signing-key);
//  2. reseal while the servers run;
//  3. once reseal's "drop after" time has passed, the old key dropped,
//     rolling restart.
//
// No pull or device refresh fails, Salesforce never sees a stale token,
// every connection ends with a token that works at the emulator; what was
// issued before the rotation keeps working after the old key is gone: a
// device session left untouched, a retry of a device refresh token inside
// the reuse interval (its successor was sealed under the old key), an
// authorization started before and finished after (its PKCE verifier was
// sealed under the old key); the re-auth link and admin UI session issued
// before work until the old key is dropped and have expired by then (the
// runbook's wait, with short TTLs here), those issued after work after it.
// Finally nothing in the database is sealed under the old key: every
// sealed column opens with a ring holding only the new one, and no text
// column anywhere holds a value of the old key.
func TestKeyRotationRunbook(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary and runs two servers")
	}
	pgURL := pgtest.NewDatabase(t)
	dir := t.TempDir()
	bin := filepath.Join(dir, "tokenwarm")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}

	emu := emulator.New(emulator.Config{ClientID: testkit.ClientID, ClientSecret: testkit.ClientSecret, AutoApprove: true})
	emuSrv := httptest.NewServer(emu)
	defer emuSrv.Close()

	const app = "com.example.app:/rotation"
	lb := &balancer{}
	lbSrv := httptest.NewServer(lb.proxy())
	defer lbSrv.Close()
	oldKeys := strings.TrimSpace(runBin(t, bin, nil, "keygen", "old1"))
	base := []string{"PATH=" + os.Getenv("PATH"), "HOME=" + dir,
		"DATABASE_URL=" + pgURL, "TOKENWARM_PUBLIC_URL=" + lbSrv.URL,
		"SALESFORCE_LOGIN_URL=" + emuSrv.URL, "SALESFORCE_CLIENT_ID=" + testkit.ClientID, "SALESFORCE_CLIENT_SECRET=" + testkit.ClientSecret,
		"TOKENWARM_APP_REDIRECT_URIS=" + app,
		"SALESFORCE_TIMEOUT=5s", "TOKENWARM_LOCK_TIMEOUT=10s", "TOKENWARM_COMMIT_RETRY_BUDGET=5s", "TOKENWARM_SHUTDOWN_TIMEOUT=20s",
		"TOKENWARM_RATE_LIMIT_SESSION_RPS=0", "TOKENWARM_RATE_LIMIT_IP_RPS=0",
		// Short lifetimes, so the runbook's waits fit in a test.
		"TOKENWARM_DEVICE_TOKEN_TTL=15s", "TOKENWARM_REAUTH_LINK_TTL=15s", "TOKENWARM_ADMIN_SESSION_TTL=15s",
		// Long enough for a successor kept before the rotation to be
		// retried after it.
		"TOKENWARM_DEVICE_REFRESH_REUSE_INTERVAL=5m",
	}
	withKeys := func(keys string) []string { return append(append([]string(nil), base...), "TOKENWARM_SEAL_KEYS="+keys) }
	runBin(t, bin, withKeys(oldKeys), "migrate")
	for i := range 2 {
		lb.reps = append(lb.reps, &rotReplica{bin: bin, addr: freeAddr(t), dataDir: filepath.Join(dir, fmt.Sprint("data", i))})
	}
	t.Cleanup(func() {
		for _, r := range lb.reps {
			r.kill()
		}
	})
	for _, r := range lb.reps {
		r.start(t, withKeys(oldKeys))
	}
	for _, r := range lb.reps {
		r.waitReady(t)
		lb.setIn(r, true)
	}

	// Before the rotation: users, an untouched device session, a kept
	// successor, an authorization in progress, an admin session and a
	// re-auth link, all sealed or signed under the old keys.
	users := make([]*rotUser, 4)
	for i := range users {
		s := finishFlow(t, startFlow(t, lbSrv.URL, app, fmt.Sprintf("rot%d@example.com", i)), app)
		users[i] = &rotUser{name: fmt.Sprintf("rot%d@example.com", i), conn: s.ConnectionIDs[0], access: s.AccessToken, refresh: s.RefreshToken}
	}
	untouched := finishFlow(t, startFlow(t, lbSrv.URL, app, "untouched@example.com"), app)
	probe := finishFlow(t, startFlow(t, lbSrv.URL, app, "probe@example.com"), app)
	kept := finishFlow(t, startFlow(t, lbSrv.URL, app, "kept@example.com"), app)
	keptNext := deviceRefresh(t, lbSrv.URL, kept.RefreshToken)
	inProgress := startFlow(t, lbSrv.URL, app, "in-progress@example.com")
	inProgress.step(t) // to the emulator: the pending authorization is stored
	if !strings.HasPrefix(inProgress.next, emuSrv.URL) {
		t.Fatalf("the flow went to %s, not to the emulator", inProgress.next)
	}
	adminKey := strings.TrimSpace(runBin(t, bin, withKeys(oldKeys), "admin-key", "create", "ops"))
	cookieBefore := adminLogin(t, lbSrv.URL, adminKey)
	linkBefore := reauthLink(t, lbSrv.URL, adminKey, users[0].conn)

	// The load: every user pulls with rejected_token (a refresh each time)
	// and rotates its device refresh token, on whichever replica the
	// balancer picks, for the whole rotation.
	ctx, stopLoad := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	var failures atomic.Int64
	var failMu sync.Mutex
	var failed []string
	for _, u := range users {
		wg.Go(func() {
			for i := 0; ctx.Err() == nil; i++ {
				if err := u.pullOnce(lbSrv.URL); err != nil {
					failures.Add(1)
					failMu.Lock()
					failed = append(failed, err.Error())
					failMu.Unlock()
				}
				if i%3 == 2 {
					if err := u.refreshOnce(lbSrv.URL); err != nil {
						failures.Add(1)
						failMu.Lock()
						failed = append(failed, err.Error())
						failMu.Unlock()
					}
				}
				time.Sleep(20 * time.Millisecond)
			}
		})
	}
	loadStopped := false
	stop := func() {
		if !loadStopped {
			loadStopped = true
			stopLoad()
			wg.Wait()
		}
	}
	defer stop()
	started := time.Now()
	waitUntil(t, "load", func() bool { return emu.Stats().Refreshes > 20 })

	// Step 1: the new key last (every replica opens it), rolling restart;
	// then first (every replica seals with it), rolling restart.
	newKey := strings.TrimSpace(runBin(t, bin, nil, "keygen", "new2"))
	lb.rollingRestart(t, withKeys(oldKeys+","+newKey))
	both := newKey + "," + oldKeys
	lb.rollingRestart(t, withKeys(both))
	t.Logf("step 1 (new key last, then first; two rolling restarts) done at %s", time.Since(started).Round(time.Millisecond))
	if st := adminPage(t, lbSrv.URL, cookieBefore); st != http.StatusOK {
		t.Fatalf("the admin session of the old key, during the rotation: %d", st)
	}
	checkReauthLink(t, lbSrv.URL, linkBefore, emuSrv.URL, true)
	// The device signing key too: the new key is published at once and
	// signs once every replica verifies it (within two key cache ages, 5 s
	// each with a 15 s token TTL); the old one verifies until its tokens
	// have expired, then retires by itself.
	kidsBefore := jwksKids(t, lbSrv.URL)
	users[0].mu.Lock()
	jwtBefore := users[0].access // signed by the old signing key
	users[0].mu.Unlock()
	out := runBin(t, bin, withKeys(both), "rotate-signing-key")
	m := regexp.MustCompile(`new signing key "([^"]+)"[\s\S]*verify until (\S+)`).FindStringSubmatch(out)
	if m == nil || len(kidsBefore) != 1 {
		t.Fatalf("rotate-signing-key printed %q (keys before %v)", out, kidsBefore)
	}
	newKid := m[1]
	retireAt, err := time.Parse(time.RFC3339, m[2])
	if err != nil {
		t.Fatal(err)
	}
	if kids := jwksKids(t, lbSrv.URL); len(kids) != 2 || kids[0] != newKid || kids[1] != kidsBefore[0] {
		t.Fatalf("JWKS after rotate-signing-key: %v, want [%s %s]", kids, newKid, kidsBefore[0])
	}
	if st, _, _ := pull(lbSrv.URL, jwtBefore, users[0].conn, ""); st != http.StatusOK {
		t.Fatalf("a device JWT of the old signing key after the rotation: %d", st)
	}
	waitUntil(t, "new device JWTs signed by the new key", func() bool {
		probe = deviceRefresh(t, lbSrv.URL, probe.RefreshToken)
		return jwtKid(t, probe.AccessToken) == newKid
	})

	// Step 2: reseal while the servers run and refresh.
	out = runBin(t, bin, withKeys(both), "reseal")
	t.Logf("step 2 (reseal) at %s:\n%s", time.Since(started).Round(time.Millisecond), out)
	m = regexp.MustCompile(`drop key\(s\) "old1" after (\S+):`).FindStringSubmatch(out)
	if m == nil || !strings.Contains(out, `nothing stored is sealed under key(s) "old1" any more`) ||
		!regexp.MustCompile(`resealed under key "new2": [1-9]\d* connection\(s\), 1 signing key\(s\), [1-9]\d* pending authorization\(s\), [1-9]\d* kept device refresh successor\(s\)`).MatchString(out) {
		t.Fatalf("reseal printed %q", out)
	}
	dropAfter, err := time.Parse(time.RFC3339, m[1])
	if err != nil {
		t.Fatal(err)
	}

	// Step 3: once the stateless values of the old key have expired, drop
	// it, rolling restart.
	time.Sleep(time.Until(dropAfter.Add(time.Second)))
	// Issued now, under the new key: they must survive the drop.
	cookieAfter := adminLogin(t, lbSrv.URL, adminKey)
	linkAfter := reauthLink(t, lbSrv.URL, adminKey, users[1].conn)
	lb.rollingRestart(t, withKeys(newKey))
	t.Logf("step 3 (old key dropped, rolling restart) done at %s", time.Since(started).Round(time.Millisecond))
	time.Sleep(time.Second) // a little load on the new ring alone
	stop()
	if n := failures.Load(); n > 0 {
		t.Fatalf("%d pulls or device refreshes failed during the rotation, e.g. %v", n, failed[:min(len(failed), 5)])
	}

	// What was issued before the rotation works after it.
	if st := adminPage(t, lbSrv.URL, cookieAfter); st != http.StatusOK {
		t.Fatalf("an admin session of the new key after the drop: %d", st)
	}
	checkReauthLink(t, lbSrv.URL, linkAfter, emuSrv.URL, true)
	// Those of the old key have expired (the runbook's wait): refused
	// either way.
	if st := adminPage(t, lbSrv.URL, cookieBefore); st == http.StatusOK {
		t.Fatal("an admin session older than its TTL still works")
	}
	checkReauthLink(t, lbSrv.URL, linkBefore, emuSrv.URL, false)
	retry := deviceRefresh(t, lbSrv.URL, kept.RefreshToken)
	if retry.RefreshToken != keptNext.RefreshToken {
		t.Fatal("a retry inside the reuse interval did not get the successor kept before the rotation")
	}
	if s := deviceRefresh(t, lbSrv.URL, retry.RefreshToken); s.AccessToken == "" {
		t.Fatal("the kept session after the rotation")
	}
	finished := finishFlow(t, inProgress, app)
	if st, _, _ := pull(lbSrv.URL, finished.AccessToken, finished.ConnectionIDs[0], ""); st != http.StatusOK {
		t.Fatalf("the authorization started before the rotation: pull %d", st)
	}
	time.Sleep(time.Until(retireAt.Add(time.Second)))
	if kids := jwksKids(t, lbSrv.URL); len(kids) != 1 || kids[0] != newKid {
		t.Fatalf("JWKS after the old signing key's retirement: %v, want [%s]", kids, newKid)
	}
	for _, u := range append(users, &rotUser{name: "untouched@example.com", conn: untouched.ConnectionIDs[0], refresh: untouched.RefreshToken}) {
		s := deviceRefresh(t, lbSrv.URL, u.refresh)
		st, tok, err := pull(lbSrv.URL, s.AccessToken, u.conn, u.lastSF)
		if err != nil || st != http.StatusOK || !worksAtEmulator(emuSrv.URL, tok, u.name) {
			t.Fatalf("%s after the rotation: pull %d %v, or its token does not work at the emulator", u.name, st, err)
		}
	}
	st := emu.Stats()
	if st.StalePresentations != 0 || st.ChainsRevoked != 0 || st.ConcurrentPresentations != 0 {
		t.Fatalf("the emulator saw %d stale and %d concurrent presentations, %d chains revoked", st.StalePresentations, st.ConcurrentPresentations, st.ChainsRevoked)
	}
	t.Logf("%d refreshes at the emulator during %s, no failure", st.Refreshes, time.Since(started).Round(time.Millisecond))

	// Nothing in the database is sealed under the old key.
	assertSealedOnlyUnder(t, pgURL, newKey, "old1")
}

// rotUser is one app user of the load.
type rotUser struct {
	name, conn string
	mu         sync.Mutex
	access     string
	refresh    string
	lastSF     string
}

// pullOnce pulls with the last token as rejected: a refresh, which must
// answer a new token.
func (u *rotUser) pullOnce(base string) error {
	u.mu.Lock()
	defer u.mu.Unlock()
	req, _ := http.NewRequest(http.MethodGet, base+"/v1/connections/"+u.conn+"/access-token?rejected_token="+url.QueryEscape(u.lastSF), nil)
	req.Header.Set("Authorization", "Bearer "+u.access)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("%s: pull: %v", u.name, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var body struct {
		AccessToken string `json:"access_token"`
	}
	_ = json.Unmarshal(b, &body)
	st, tok := resp.StatusCode, body.AccessToken
	if st != http.StatusOK || tok == "" || tok == u.lastSF {
		return fmt.Errorf("%s at %s: pull %d %.200s", u.name, time.Now().Format("15:04:05.000"), st, b)
	}
	u.lastSF = tok
	return nil
}

// refreshOnce rotates the device refresh token.
func (u *rotUser) refreshOnce(base string) error {
	u.mu.Lock()
	defer u.mu.Unlock()
	s, st, err := tryDeviceRefresh(base, u.refresh)
	if err != nil || st != http.StatusOK || s.AccessToken == "" || s.RefreshToken == "" {
		return fmt.Errorf("%s: device refresh %d %v", u.name, st, err)
	}
	u.access, u.refresh = s.AccessToken, s.RefreshToken
	return nil
}

func tryDeviceRefresh(base, refresh string) (deviceSession, int, error) {
	var s deviceSession
	resp, err := http.PostForm(base+"/v1/device/token", url.Values{"grant_type": {"refresh_token"}, "refresh_token": {refresh}})
	if err != nil {
		return s, 0, err
	}
	defer resp.Body.Close()
	return s, resp.StatusCode, json.NewDecoder(resp.Body).Decode(&s)
}

func deviceRefresh(t *testing.T, base, refresh string) deviceSession {
	t.Helper()
	s, st, err := tryDeviceRefresh(base, refresh)
	if err != nil || st != http.StatusOK {
		t.Fatalf("device refresh: %d %v", st, err)
	}
	return s
}

func jwtKid(t *testing.T, jwt string) string {
	t.Helper()
	var h struct {
		Kid string `json:"kid"`
	}
	parts := strings.Split(jwt, ".")
	b, err := base64.RawURLEncoding.DecodeString(parts[0])
	if err != nil || json.Unmarshal(b, &h) != nil {
		t.Fatalf("malformed JWT header")
	}
	return h.Kid
}

func jwksKids(t *testing.T, base string) []string {
	t.Helper()
	resp, err := http.Get(base + "/.well-known/jwks.json")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var set struct {
		Keys []struct {
			Kid string `json:"kid"`
		} `json:"keys"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&set); err != nil {
		t.Fatal(err)
	}
	var kids []string
	for _, k := range set.Keys {
		kids = append(kids, k.Kid)
	}
	return kids
}

func worksAtEmulator(emuURL, tok, username string) bool {
	req, _ := http.NewRequest(http.MethodGet, emuURL+"/services/oauth2/userinfo", nil)
	req.Header.Set("Authorization", "Bearer "+tok)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return false
	}
	defer resp.Body.Close()
	var info struct {
		PreferredUsername string `json:"preferred_username"`
	}
	return resp.StatusCode == http.StatusOK && json.NewDecoder(resp.Body).Decode(&info) == nil && info.PreferredUsername == username
}

// adminLogin signs in to the admin UI and returns the session cookie.
func adminLogin(t *testing.T, base, key string) string {
	t.Helper()
	resp, err := noFollow.Get(base + "/admin/login")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	pre := cookieValue(resp, adminUILoginCookie)
	m := regexp.MustCompile(`name="csrf" value="([^"]+)"`).FindSubmatch(body)
	if pre == "" || m == nil {
		t.Fatalf("login page: %d, no pre-session cookie or CSRF token", resp.StatusCode)
	}
	req, _ := http.NewRequest(http.MethodPost, base+"/admin/login", strings.NewReader(url.Values{"key": {key}, "csrf": {string(m[1])}}.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.AddCookie(&http.Cookie{Name: adminUILoginCookie, Value: pre})
	resp, err = noFollow.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	c := cookieValue(resp, adminUISessionCookie)
	if resp.StatusCode != http.StatusSeeOther || c == "" {
		t.Fatalf("admin login: %d", resp.StatusCode)
	}
	return c
}

// The admin UI's cookie names (handlers/admin_ui.go).
const (
	adminUISessionCookie = "tokenwarm_admin"
	adminUILoginCookie   = "tokenwarm_admin_login"
)

func cookieValue(resp *http.Response, name string) string {
	for _, c := range resp.Cookies() {
		if c.Name == name {
			return c.Value
		}
	}
	return ""
}

// adminPage returns the status of the admin overview with a session
// cookie: 200 signed in, a redirect to the login page otherwise.
func adminPage(t *testing.T, base, cookie string) int {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, base+"/admin/", nil)
	req.AddCookie(&http.Cookie{Name: adminUISessionCookie, Value: cookie})
	resp, err := noFollow.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

func reauthLink(t *testing.T, base, key, connID string) string {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, base+"/admin/v1/connections/"+connID+"/reauth-link", nil)
	req.Header.Set("Authorization", "Bearer "+key)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var link struct {
		URL string `json:"url"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&link); err != nil || resp.StatusCode != http.StatusOK || link.URL == "" {
		t.Fatalf("reauth-link: %d %v", resp.StatusCode, err)
	}
	return link.URL
}

// checkReauthLink opens a re-auth link: it works when it leads to
// Salesforce's login.
func checkReauthLink(t *testing.T, base, link, emuURL string, works bool) {
	t.Helper()
	resp, err := noFollow.Get(link)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	loc, _ := resp.Location()
	ok := resp.StatusCode == http.StatusFound && loc != nil && strings.HasPrefix(loc.String(), emuURL)
	if ok != works {
		t.Fatalf("re-auth link: %d to %v, want working=%v", resp.StatusCode, loc, works)
	}
}

// assertSealedOnlyUnder opens every sealed column of the database with a
// ring holding only keySpec, and checks that no text column of any table
// holds a value sealed under oldKid.
func assertSealedOnlyUnder(t *testing.T, pgURL, keySpec, oldKid string) {
	t.Helper()
	ring, err := seal.ParseRing(keySpec)
	if err != nil {
		t.Fatal(err)
	}
	db, err := models.Open(pgURL, "", models.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	g := rawdb.Gorm(db)
	var values []struct{ Sealed, AD string }
	for _, q := range []string{
		`SELECT refresh_token_sealed AS sealed, id || '|refresh_token' AS ad FROM connections WHERE refresh_token_sealed <> ''`,
		`SELECT access_token_sealed AS sealed, id || '|access_token' AS ad FROM connections WHERE access_token_sealed <> ''`,
		`SELECT private_sealed AS sealed, 'signing_key|' || kid AS ad FROM signing_keys`,
		`SELECT verifier_sealed AS sealed, 'pending_verifier|' || state_hash AS ad FROM pending_authorizations`,
		`SELECT successor_sealed AS sealed, 'device_refresh_successor:' || session_id || ':' || (generation + 1) AS ad FROM device_refresh_tokens WHERE successor_sealed <> ''`,
	} {
		var rows []struct{ Sealed, AD string }
		if err := g.Raw(q).Scan(&rows).Error; err != nil {
			t.Fatal(err)
		}
		if len(rows) == 0 {
			t.Fatalf("nothing to check: %s", q)
		}
		values = append(values, rows...)
	}
	for _, v := range values {
		if _, err := ring.Open(v.Sealed, v.AD); err != nil {
			kid, _ := seal.KeyID(v.Sealed)
			t.Fatalf("a value (%s) sealed under %q does not open with the new key alone: %v", v.AD, kid, err)
		}
	}
	var cols []struct{ Table, Column string }
	if err := g.Raw(`SELECT table_name AS "table", column_name AS "column" FROM information_schema.columns
		WHERE table_schema = 'public' AND data_type IN ('text', 'character varying')`).Scan(&cols).Error; err != nil {
		t.Fatal(err)
	}
	for _, c := range cols {
		var n int64
		q := fmt.Sprintf(`SELECT count(*) FROM %q WHERE %q LIKE ?`, c.Table, c.Column)
		if err := g.Raw(q, "%v1."+oldKid+".%").Scan(&n).Error; err != nil {
			t.Fatal(err)
		}
		if n > 0 {
			t.Fatalf("%s.%s holds %d value(s) sealed under the dropped key", c.Table, c.Column, n)
		}
	}
	t.Logf("%d sealed values open with the new key alone; %d text columns hold nothing of the old key", len(values), len(cols))
}

// runBin runs a tokenwarm command and returns its stdout.
func runBin(t *testing.T, bin string, env []string, args ...string) string {
	t.Helper()
	cmd := exec.Command(bin, args...)
	cmd.Env = env
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("tokenwarm %s: %v\n%s", strings.Join(args, " "), err, stderr.String())
	}
	return string(out)
}

// rotReplica is one server process, restartable on its address.
type rotReplica struct {
	bin, addr, dataDir string
	mu                 sync.Mutex
	cmd                *exec.Cmd
	done               chan struct{}
	logs               *testkit.SyncBuffer
}

func (r *rotReplica) start(t *testing.T, env []string) {
	t.Helper()
	cmd := exec.Command(r.bin, "serve")
	cmd.Env = append(append([]string(nil), env...), "TOKENWARM_ADDR="+r.addr, "TOKENWARM_DATA_DIR="+r.dataDir)
	logs := &testkit.SyncBuffer{}
	cmd.Stdout, cmd.Stderr = logs, logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	r.mu.Lock()
	r.cmd, r.done, r.logs = cmd, done, logs
	r.mu.Unlock()
}

func (r *rotReplica) waitReady(t *testing.T) {
	t.Helper()
	c := &http.Client{Timeout: 2 * time.Second}
	for deadline := time.Now().Add(30 * time.Second); ; {
		select {
		case <-r.done:
			t.Fatalf("replica %s exited:\n%s", r.addr, r.logs.String())
		default:
		}
		if resp, err := c.Get("http://" + r.addr + "/readyz"); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("replica %s not ready:\n%s", r.addr, r.logs.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// stop ends the process with SIGTERM and waits for its graceful exit.
func (r *rotReplica) stop(t *testing.T) {
	t.Helper()
	_ = r.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-r.done:
	case <-time.After(30 * time.Second):
		t.Fatalf("replica %s did not stop:\n%s", r.addr, r.logs.String())
	}
	if code := r.cmd.ProcessState.ExitCode(); code != 0 {
		t.Fatalf("replica %s exited with %d:\n%s", r.addr, code, r.logs.String())
	}
}

func (r *rotReplica) kill() {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.cmd != nil {
		_ = r.cmd.Process.Kill()
		<-r.done
	}
}

// balancer sends each request to a replica that is in rotation, round
// robin, as a load balancer in front of the replicas does.
type balancer struct {
	mu   sync.Mutex
	reps []*rotReplica
	in   map[*rotReplica]bool
	next int
}

func (b *balancer) setIn(r *rotReplica, in bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.in == nil {
		b.in = map[*rotReplica]bool{}
	}
	b.in[r] = in
}

func (b *balancer) pick() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	for range b.reps {
		b.next++
		if r := b.reps[b.next%len(b.reps)]; b.in[r] {
			return r.addr
		}
	}
	return b.reps[0].addr
}

func (b *balancer) proxy() http.Handler {
	return &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.SetURL(&url.URL{Scheme: "http", Host: b.pick()})
			pr.Out.Host = pr.In.Host
		},
		ErrorLog: log.New(io.Discard, "", 0),
	}
}

// rollingRestart restarts the replicas one at a time with env: each is
// taken out of the balancer, stopped with SIGTERM (it finishes what it
// has in flight), started, and put back once ready.
func (b *balancer) rollingRestart(t *testing.T, env []string) {
	t.Helper()
	for _, r := range b.reps {
		b.setIn(r, false)
		time.Sleep(200 * time.Millisecond) // requests already routed to it arrive
		r.stop(t)
		r.start(t, env)
		r.waitReady(t)
		b.setIn(r, true)
	}
}
