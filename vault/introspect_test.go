package vault_test

import (
	"context"
	"testing"
	"time"

	"github.com/tokenwarm/tokenwarm/models"
	"github.com/tokenwarm/tokenwarm/vault"
)

// With introspection on, the access token's expiry comes from Salesforce,
// not from the configured session timeout.
func TestExpiryLearnedFromIntrospection(t *testing.T) {
	e := newEnv(t, models.SQLite)
	sf := e.sfClient()
	sf.UseIntrospection = true
	sf.SessionTimeout = 10 * time.Minute // deliberately wrong: the emulator's is 2h
	v := vault.New(e.openDB(), e.ring, sf, e.clk, e.log, vault.Config{})
	id := e.connect(v, "introspect@example.com")
	e.clk.Advance(3 * time.Hour)
	at, err := v.GetAccessToken(context.Background(), id, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	if got := at.ExpiresAt.Sub(at.IssuedAt); got < sessionTimeout-time.Second || got > sessionTimeout+time.Second {
		t.Fatalf("lifetime %v, want the emulator's %v", got, sessionTimeout)
	}
	if e.emu.Stats().Introspections == 0 {
		t.Fatal("no introspection call")
	}
}
