package handlers_test

import (
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"

	"github.com/tokenwarm/tokenwarm/devices"
	"github.com/tokenwarm/tokenwarm/handlers"
	"github.com/tokenwarm/tokenwarm/pkce"
	"github.com/tokenwarm/tokenwarm/seal"
)

// An admin UI session works on another replica (or after a restart): its
// ring derives from the same seal keys. A server whose session ring is
// another (the re-auth links' ring, or another label) accepts none.
func TestAdminUISessionAcrossReplicas(t *testing.T) {
	w := newAdminWorld(t)
	id := w.connect("replica@example.com")
	cl := &http.Client{Jar: newJar(t), CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := cl.Get(w.srv.URL + "/admin/login")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	resp, err = cl.PostForm(w.srv.URL+"/admin/login", url.Values{"key": {w.key}, "csrf": {between(string(b), `name="csrf" value="`, `"`)}})
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	var session *http.Cookie
	for _, c := range resp.Cookies() {
		if c.Name == "tokenwarm_admin" {
			session = c
		}
	}
	if resp.StatusCode != http.StatusSeeOther || session == nil {
		t.Fatalf("login: %d, cookie %v", resp.StatusCode, session)
	}

	// replica serves the same database with sessions sealed under ring.
	replica := func(sessions handlers.Sealer) http.Handler {
		dev := devices.New(w.db, w.ring, w.devClock, devices.Config{Issuer: w.srv.URL})
		api := handlers.NewAPI(handlers.APIConfig{PublicURL: w.srv.URL, LoginURL: w.emuSrv.URL, ClientID: "cid", AdminStore: w.db, AllowAnyLoginHost: true,
			AdminSessions: sessions}, slog.New(slog.DiscardHandler), w.vault, dev, pkce.NewStore(w.db, w.ring, w.sfClock, 0), w.sf, w.ring, w.sfClock.Now)
		return handlers.New(handlers.Deps{Log: slog.New(slog.DiscardHandler), Ready: readyAlways{}, API: api})
	}
	get := func(h http.Handler) *httptest.ResponseRecorder {
		req := httptest.NewRequest(http.MethodGet, w.srv.URL+"/admin/connections/"+id, nil)
		req.AddCookie(session)
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		return rec
	}
	derive := func(label string) *seal.Ring {
		r, err := w.ring.Derive(label)
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	if rec := get(replica(derive("tokenwarm admin session v1"))); rec.Code != http.StatusOK || !strings.Contains(rec.Body.String(), id) {
		t.Fatalf("another replica: %d", rec.Code)
	}
	for name, ring := range map[string]*seal.Ring{"the re-auth ring": w.ring, "another label": derive("something else")} {
		if rec := get(replica(ring)); rec.Code != http.StatusSeeOther || rec.Header().Get("Location") != "/admin/login" {
			t.Fatalf("a server whose session ring is %s accepted the session: %d", name, rec.Code)
		}
	}
}
