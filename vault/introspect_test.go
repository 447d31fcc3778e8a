package vault_test

import (
	"context"
	"testing"
	"time"

	"github.com/tokenwarm/tokenwarm/internal/testkit"
	"github.com/tokenwarm/tokenwarm/models"
	"github.com/tokenwarm/tokenwarm/vault"
)

// With introspection on, the access token's expiry comes from Salesforce,
// not from the configured session timeout.
func TestExpiryLearnedFromIntrospection(t *testing.T) {
	e := newEnv(t, models.SQLite)
	sf := e.SFClient()
	sf.UseIntrospection = true
	sf.SessionTimeout = 10 * time.Minute // deliberately wrong: the emulator's is 2h
	v := vault.New(e.openDB(), e.Ring, sf, e.Clock, e.Log, vault.Config{})
	id := e.connect(v, "introspect@example.com")
	e.Clock.Advance(3 * time.Hour)
	at, err := v.GetAccessToken(context.Background(), id, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	if got := at.ExpiresAt.Sub(at.IssuedAt); got < testkit.SessionTimeout-time.Second || got > testkit.SessionTimeout+time.Second {
		t.Fatalf("lifetime %v, want the emulator's %v", got, testkit.SessionTimeout)
	}
	if e.Emu.Stats().Introspections == 0 {
		t.Fatal("no introspection call")
	}
}
