package devices_test

import (
	"testing"
	"time"

	"github.com/tokenwarm/tokenwarm/devices"
	"github.com/tokenwarm/tokenwarm/internal/rawdb"
	"github.com/tokenwarm/tokenwarm/seal"
)

// A seal key rotation: once Reseal has run under a ring with a new first
// key, a service holding only the new key signs with the existing signing
// key and verifies the tokens it signed before, nothing in the database
// is sealed under the old key, and a retry inside
// the reuse interval still gets its kept successor.
func TestResealMovesDeviceRecordsToTheNewKey(t *testing.T) {
	forEachDialect(t, func(t *testing.T, w *world) {
		cfg := devices.Config{Issuer: issuer, RefreshReuseInterval: reuseInterval}
		svc := devices.New(w.db, w.ring, w.clk, cfg)
		first := w.session("alice")
		if _, _, err := svc.RotateSigningKey(ctx); err != nil {
			t.Fatal(err)
		}
		second, err := svc.Refresh(ctx, first.RefreshToken)
		if err != nil {
			t.Fatal(err)
		}

		newKey, _ := seal.GenerateKey("test2")
		both, err := seal.ParseRing(newKey + "," + w.spec)
		if err != nil {
			t.Fatal(err)
		}
		got, err := devices.New(w.db, both, w.clk, cfg).Reseal(ctx)
		if err != nil || got.SigningKeys != 2 || got.Successors != 1 || got.Missed != 0 {
			t.Fatalf("Reseal = %+v, %v; want 2 signing keys and 1 successor", got, err)
		}
		if again, err := devices.New(w.db, both, w.clk, cfg).Reseal(ctx); err != nil || again != (devices.Resealed{}) {
			t.Fatalf("second Reseal = %+v, %v", again, err)
		}
		var sealed []string
		g := rawdb.Gorm(w.db)
		if err := g.Table("signing_keys").Pluck("private_sealed", &sealed).Error; err != nil {
			t.Fatal(err)
		}
		var succ []string
		if err := g.Table("device_refresh_tokens").Where("successor_sealed <> ''").Pluck("successor_sealed", &succ).Error; err != nil {
			t.Fatal(err)
		}
		for _, s := range append(sealed, succ...) {
			if kid, _ := seal.KeyID(s); kid != "test2" {
				t.Fatalf("a value stays sealed under %q", kid)
			}
		}

		onlyNew, _ := seal.ParseRing(newKey)
		after := devices.New(w.db, onlyNew, w.clk, cfg)
		if _, err := after.Verify(ctx, second.AccessToken); err != nil {
			t.Fatalf("a token signed before the rotation: %v", err)
		}
		w.clk.Advance(time.Second)
		retry, err := after.Refresh(ctx, first.RefreshToken)
		if err != nil || retry.RefreshToken != second.RefreshToken {
			t.Fatalf("retry inside the reuse interval after the reseal: %v", err)
		}
		if _, err := after.Refresh(ctx, second.RefreshToken); err != nil {
			t.Fatalf("the session after the reseal: %v", err)
		}
	})
}
