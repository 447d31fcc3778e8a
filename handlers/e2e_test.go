package handlers_test

import (
	"bytes"
	"context"
	"encoding/json"
	"github.com/tokenwarm/tokenwarm/internal/rawdb"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/labstack/echo/v4"

	"github.com/tokenwarm/tokenwarm/client"
	"github.com/tokenwarm/tokenwarm/clock"
	"github.com/tokenwarm/tokenwarm/devices"
	"github.com/tokenwarm/tokenwarm/emulator"
	"github.com/tokenwarm/tokenwarm/handlers"
	"github.com/tokenwarm/tokenwarm/internal/apitest"
	"github.com/tokenwarm/tokenwarm/internal/pgtest"
	"github.com/tokenwarm/tokenwarm/internal/testkit"
	"github.com/tokenwarm/tokenwarm/models"
	"github.com/tokenwarm/tokenwarm/pkce"
	"github.com/tokenwarm/tokenwarm/salesforce"
	"github.com/tokenwarm/tokenwarm/seal"
	"github.com/tokenwarm/tokenwarm/vault"
)

const appRedirect = "com.acme.app:/oauth/done"

// world is tokenwarm on a real port with the emulator as Salesforce. The
// Salesforce side (emulator, vault) and the device side have separate
// clocks, so Salesforce time can jump past token expiry while device JWTs
// stay valid.
type world struct {
	t        testing.TB
	srv      *httptest.Server
	emuSrv   *httptest.Server
	emu      *emulator.Server
	sfClock  *clock.Fake
	devClock *clock.Fake
	db       *models.DB
	vault    *vault.Vault
	api      *handlers.API
	// strict is the same API without AllowAnyLoginHost, as in production.
	strict    *echo.Echo
	validator *apitest.Validator
	router    *echo.Echo
	http      *http.Client
	// pgURL is the Postgres database (empty on SQLite); logs is
	// tokenwarm's log output.
	pgURL string
	logs  *testkit.SyncBuffer
	// ring is the seal key ring; sf the Salesforce client.
	ring *seal.Ring
	sf   *salesforce.Client
}

func newWorld(t testing.TB, dialect models.Dialect) *world {
	t.Helper()
	return newWorldVia(t, dialect, nil)
}

// newWorldVia is newWorld whose server reaches Postgres at via(pgURL)
// instead, e.g. through a proxy the test can cut.
func newWorldVia(t testing.TB, dialect models.Dialect, via func(pgURL string) string) *world {
	t.Helper()
	return newWorldWith(t, dialect, via, nil)
}

// newWorldWith is newWorldVia whose API configuration mod changes first.
func newWorldWith(t testing.TB, dialect models.Dialect, via func(pgURL string) string, mod func(*handlers.APIConfig)) *world {
	t.Helper()
	w := &world{t: t, sfClock: clock.NewFake(time.Now().UTC()), devClock: clock.NewFake(time.Now().UTC())}
	pgURL := ""
	if dialect == models.Postgres {
		pgURL = pgtest.NewDatabase(t)
	}
	w.pgURL = pgURL
	if via != nil {
		pgURL = via(pgURL)
	}
	db, err := models.Open(pgURL, t.TempDir(), models.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	if _, err := db.Migrate(context.Background()); err != nil {
		t.Fatal(err)
	}
	w.db = db
	key, _ := seal.GenerateKey("e2e")
	ring, _ := seal.ParseRing(key)

	w.emu = emulator.New(emulator.Config{ClientID: "cid", ClientSecret: "csecret", Clock: w.sfClock, AutoApprove: true})
	w.emuSrv = httptest.NewServer(w.emu)
	t.Cleanup(w.emuSrv.Close)

	var router http.Handler
	w.srv = httptest.NewServer(http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) { router.ServeHTTP(rw, r) }))
	t.Cleanup(w.srv.Close)

	logs := &testkit.SyncBuffer{}
	w.logs = logs
	log := slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	t.Cleanup(func() {
		// No Salesforce token, code or verifier the emulator issued may
		// appear in tokenwarm's logs.
		testkit.AssertNoTokens(t, w.emu.IssuedTokens(), map[string]string{"logs": logs.String()})
	})
	sf := &salesforce.Client{HTTP: &http.Client{}, ClientID: "cid", ClientSecret: "csecret",
		RedirectURI: w.srv.URL + "/v1/oauth/callback", Timeout: 5 * time.Second, SessionTimeout: 2 * time.Hour, Clock: w.sfClock}
	w.ring, w.sf = ring, sf
	w.vault = vault.New(db, ring, sf, w.sfClock, log, vault.Config{})
	dev := devices.New(db, ring, w.devClock, devices.Config{Issuer: w.srv.URL})
	if err := dev.EnsureSigningKey(context.Background()); err != nil {
		t.Fatal(err)
	}
	sessions, err := ring.Derive("tokenwarm admin session v1")
	if err != nil {
		t.Fatal(err)
	}
	apiCfg := handlers.APIConfig{PublicURL: w.srv.URL, LoginURL: w.emuSrv.URL, ClientID: "cid", AdminStore: w.db, AppRedirectURIs: []string{appRedirect}, AppClients: testAppClients(t),
		AllowAnyLoginHost: true, AdminSessions: sessions}
	if mod != nil {
		mod(&apiCfg)
	}
	w.api = handlers.NewAPI(apiCfg, log, w.vault, dev, pkce.NewStore(db, ring, w.sfClock, 0), sf, ring, w.sfClock.Now)
	w.router = handlers.New(handlers.Deps{Log: log, Ready: readyAlways{}, API: w.api, Metrics: http.NotFoundHandler()})
	strict := handlers.NewAPI(handlers.APIConfig{PublicURL: w.srv.URL, LoginURL: w.emuSrv.URL, ClientID: "cid", AdminStore: w.db, AppRedirectURIs: []string{appRedirect}, AppClients: testAppClients(t)},
		log, w.vault, dev, pkce.NewStore(db, ring, w.sfClock, 0), sf, ring, w.sfClock.Now)
	w.strict = handlers.New(handlers.Deps{Log: log, Ready: readyAlways{}, API: strict})
	router = w.router

	w.validator = apitest.New(t)
	w.http = &http.Client{
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		Transport:     &onlyHost{host: strings.TrimPrefix(w.srv.URL, "http://"), validated: w.validator.Transport(t, http.DefaultTransport), plain: http.DefaultTransport},
	}
	return w
}

type readyAlways struct{}

func (readyAlways) Ready(context.Context) error { return nil }

// onlyHost validates tokenwarm's responses against openapi.yaml and passes
// the emulator's through.
type onlyHost struct {
	host             string
	validated, plain http.RoundTripper
}

func (o *onlyHost) RoundTrip(r *http.Request) (*http.Response, error) {
	if r.URL.Host == o.host {
		return o.validated.RoundTrip(r)
	}
	return o.plain.RoundTrip(r)
}

func (w *world) get(path, bearer string) (*http.Response, []byte) {
	w.t.Helper()
	req, _ := http.NewRequest(http.MethodGet, w.url(path), nil)
	if bearer != "" {
		req.Header.Set("Authorization", "Bearer "+bearer)
	}
	return w.do(req)
}

func (w *world) url(path string) string {
	if strings.HasPrefix(path, "http") {
		return path
	}
	return w.srv.URL + path
}

func (w *world) postForm(path string, form url.Values) (*http.Response, []byte) {
	w.t.Helper()
	req, _ := http.NewRequest(http.MethodPost, w.url(path), strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	return w.do(req)
}

func (w *world) do(req *http.Request) (*http.Response, []byte) {
	w.t.Helper()
	resp, err := w.http.Do(req)
	if err != nil {
		w.t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp, body
}

func decode[T any](t testing.TB, body []byte) T {
	t.Helper()
	var v T
	if err := json.NewDecoder(bytes.NewReader(body)).Decode(&v); err != nil {
		t.Fatalf("decode %s: %v", body, err)
	}
	return v
}

type deviceToken struct {
	AccessToken   string   `json:"access_token"`
	TokenType     string   `json:"token_type"`
	ExpiresIn     int      `json:"expires_in"`
	RefreshToken  string   `json:"refresh_token"`
	SessionID     string   `json:"session_id"`
	ConnectionIDs []string `json:"connection_ids"`
}

type problem struct {
	Status    int    `json:"status"`
	Code      string `json:"code"`
	Reason    string `json:"reason"`
	ReauthURL string `json:"reauth_url"`
}

type oauthErr struct {
	Error string `json:"error"`
}

// connectApp runs the app's side of the flow up to the handoff redirect and
// returns the handoff code and the app's verifier.
func (w *world) connectApp(username string, extra url.Values) (code, verifier string) {
	w.t.Helper()
	verifier = pkce.NewVerifier()
	q := url.Values{"app_redirect_uri": {appRedirect}, "code_challenge": {pkce.S256(verifier)},
		"code_challenge_method": {"S256"}, "state": {"app-state-1"}, "login_hint": {username}}
	for k, v := range extra {
		q[k] = v
	}
	loc := w.follow("/v1/oauth/authorize?" + q.Encode())
	if !strings.HasPrefix(loc, appRedirect) {
		w.t.Fatalf("flow ended at %q, not the app", loc)
	}
	u, _ := url.Parse(loc)
	if u.Query().Get("state") != "app-state-1" || u.Query().Get("code") == "" {
		w.t.Fatalf("app redirect %q lacks code or state", loc)
	}
	return u.Query().Get("code"), verifier
}

// follow walks redirects like a browser until one leaves for the app (or a
// page answers), returning the last Location or URL.
func (w *world) follow(start string) string {
	w.t.Helper()
	next := start
	for range 10 {
		resp, body := w.get(next, "")
		if resp.StatusCode == http.StatusOK && strings.HasPrefix(next, w.srv.URL) {
			return "" // a page of tokenwarm's ends the flow
		}
		if resp.StatusCode != http.StatusFound {
			w.t.Fatalf("GET %s = %d %s", next, resp.StatusCode, body)
		}
		loc := resp.Header.Get("Location")
		if !strings.HasPrefix(loc, "http") {
			return loc
		}
		next = loc
	}
	w.t.Fatal("redirect loop")
	return ""
}

func (w *world) session(code, verifier string) deviceToken {
	w.t.Helper()
	resp, body := w.postForm("/v1/device/token", url.Values{"grant_type": {"handoff_code"}, "code": {code}, "code_verifier": {verifier}, "device_label": {"test phone"}})
	if resp.StatusCode != 200 {
		w.t.Fatalf("handoff: %d %s", resp.StatusCode, body)
	}
	return decode[deviceToken](w.t, body)
}

type accessToken struct {
	ConnectionID string    `json:"connection_id"`
	AccessToken  string    `json:"access_token"`
	InstanceURL  string    `json:"instance_url"`
	ExpiresAt    time.Time `json:"expires_at"`
}

func (w *world) pull(id, jwt string, query string) (*http.Response, []byte) {
	return w.get("/v1/connections/"+id+"/access-token"+query, jwt)
}

func (w *world) salesforceREST(accessToken, instance string) int {
	w.t.Helper()
	req, _ := http.NewRequest(http.MethodGet, instance+"/services/data/v62.0/", nil)
	req.Header.Set("Authorization", "Bearer "+accessToken)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		w.t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

// The whole life of a mobile connection, on real Postgres, every response
// checked against openapi.yaml.
func TestEndToEndMobileFlow(t *testing.T) {
	w := newWorld(t, models.Postgres)
	code, verifier := w.connectApp("e2e@example.com", nil)
	dt := w.session(code, verifier)
	if dt.TokenType != "Bearer" || dt.ExpiresIn != 900 || len(dt.ConnectionIDs) != 1 {
		t.Fatalf("device token %+v", dt)
	}
	id := dt.ConnectionIDs[0]

	resp, body := w.pull(id, dt.AccessToken, "")
	if resp.StatusCode != 200 || resp.Header.Get("Cache-Control") != "no-store" {
		t.Fatalf("pull: %d %s", resp.StatusCode, body)
	}
	first := decode[accessToken](t, body)
	if st := w.salesforceREST(first.AccessToken, first.InstanceURL); st != 200 {
		t.Fatalf("Salesforce REST with the pulled token: %d", st)
	}

	w.sfClock.Advance(2*time.Hour + time.Minute)
	if st := w.salesforceREST(first.AccessToken, first.InstanceURL); st != 401 {
		t.Fatalf("expired token still accepted: %d", st)
	}
	// The pull after expiry goes through the client generated from
	// openapi.yaml, as an SDK user's app would.
	sdk, err := client.NewClientWithResponses(w.srv.URL, client.WithHTTPClient(w.http))
	if err != nil {
		t.Fatal(err)
	}
	bearer := func(ctx context.Context, r *http.Request) error {
		r.Header.Set("Authorization", "Bearer "+dt.AccessToken)
		return nil
	}
	minValidity := 600
	res, err := sdk.GetSalesforceAccessTokenWithResponse(context.Background(), uuid.MustParse(id), &client.GetSalesforceAccessTokenParams{MinValidity: &minValidity}, bearer)
	if err != nil || res.JSON200 == nil {
		t.Fatalf("SDK pull after expiry: %v %d %s", err, res.StatusCode(), res.Body)
	}
	second := res.JSON200
	if second.AccessToken == first.AccessToken || w.salesforceREST(second.AccessToken, second.InstanceUrl) != 200 {
		t.Fatal("the pull after expiry did not refresh")
	}
	conn, err := sdk.GetConnectionWithResponse(context.Background(), uuid.MustParse(id), bearer)
	if err != nil || conn.JSON200 == nil || conn.JSON200.Status != client.ConnectionStatusActive {
		t.Fatalf("SDK get connection: %v", err)
	}
	if st := w.emu.Stats(); st.Refreshes != 1 || st.StalePresentations != 0 {
		t.Fatalf("emulator: %+v", st)
	}

	resp, body = w.postForm("/v1/device/token", url.Values{"grant_type": {"refresh_token"}, "refresh_token": {dt.RefreshToken}})
	if resp.StatusCode != 200 {
		t.Fatalf("device refresh: %d %s", resp.StatusCode, body)
	}
	dt2 := decode[deviceToken](t, body)
	if dt2.RefreshToken == dt.RefreshToken || dt2.AccessToken == "" {
		t.Fatal("device refresh token did not rotate")
	}
	resp, body = w.get("/v1/connections", dt2.AccessToken)
	if resp.StatusCode != 200 || !strings.Contains(string(body), id) {
		t.Fatalf("list: %d %s", resp.StatusCode, body)
	}

	resp, body = w.postForm("/v1/device/revoke", url.Values{"token": {dt2.RefreshToken}})
	if resp.StatusCode != 200 {
		t.Fatalf("revoke: %d %s", resp.StatusCode, body)
	}
	resp, body = w.pull(id, dt2.AccessToken, "")
	if resp.StatusCode != 401 || decode[problem](t, body).Code != "unauthorized" || resp.Header.Get("WWW-Authenticate") == "" {
		t.Fatalf("pull after revoke: %d %s", resp.StatusCode, body)
	}
}

// A dead connection comes back through the flow with the same ID; the
// device session keeps working; the replaced refresh token is revoked.
func TestReauthorizationKeepsConnectionAndSession(t *testing.T) {
	w := newWorld(t, models.Postgres)
	code, verifier := w.connectApp("reauth@example.com", nil)
	dt := w.session(code, verifier)
	id := dt.ConnectionIDs[0]
	var c models.Connection
	rawdb.Gorm(w.db).Where("id = ?", id).Take(&c)
	oldRefresh, _ := w.emu.CurrentRefreshToken(c.OrgID, c.UserID)
	w.emu.ExpireChainOf(oldRefresh)
	w.sfClock.Advance(3 * time.Hour)

	resp, body := w.pull(id, dt.AccessToken, "")
	p := decode[problem](t, body)
	if resp.StatusCode != 409 || p.Code != "reauth_required" || p.ReauthURL == "" || p.Reason == "" {
		t.Fatalf("dead connection: %d %s", resp.StatusCode, body)
	}
	// The user opens the link in a browser, as the admin would send it.
	end := w.follow(p.ReauthURL + "&" + url.Values{"login_hint": {"reauth@example.com"}}.Encode())
	if end != "" {
		t.Fatalf("re-auth link ended at %q, want the done page", end)
	}
	resp, body = w.pull(id, dt.AccessToken, "")
	if resp.StatusCode != 200 {
		t.Fatalf("pull after re-authorization: %d %s", resp.StatusCode, body)
	}
	var after models.Connection
	rawdb.Gorm(w.db).Where("id = ?", id).Take(&after)
	if after.Status != models.StatusActive || after.ID != id {
		t.Fatalf("after re-authorization: %+v", after)
	}

	// A second device of the same user connects while the grant is alive:
	// same connection, and the replaced (live) refresh token is revoked so
	// it does not use up one of Salesforce's five approvals.
	live, _ := w.emu.CurrentRefreshToken(c.OrgID, c.UserID)
	code2, verifier2 := w.connectApp("reauth@example.com", nil)
	dt2 := w.session(code2, verifier2)
	if len(dt2.ConnectionIDs) != 1 || dt2.ConnectionIDs[0] != id {
		t.Fatalf("second device got connections %v, want [%s]", dt2.ConnectionIDs, id)
	}
	if w.emu.ChainAlive(live) {
		t.Fatal("the replaced refresh token is still alive at Salesforce")
	}
	if resp, body := w.pull(id, dt.AccessToken, "?min_validity=0"); resp.StatusCode != 200 {
		t.Fatalf("first device after the second connected: %d %s", resp.StatusCode, body)
	}
}
