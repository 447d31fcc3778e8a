package seal

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
)

func mustRing(t *testing.T, specs ...string) *Ring {
	t.Helper()
	r, err := ParseRing(strings.Join(specs, ","))
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func mustKey(t *testing.T, kid string) string {
	t.Helper()
	k, err := GenerateKey(kid)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func TestSealOpenRoundTripAndBinding(t *testing.T) {
	r := mustRing(t, mustKey(t, "k1"))
	const secret = "5Aep861_a_refresh_token_value"
	s, err := r.Seal(secret, "conn-1|refresh")
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(s, secret) || !strings.HasPrefix(s, "v1.k1.") {
		t.Fatalf("sealed value %q leaks plaintext or has the wrong prefix", s)
	}
	got, err := r.Open(s, "conn-1|refresh")
	if err != nil || got != secret {
		t.Fatalf("Open = %q, %v", got, err)
	}
	for _, ad := range []string{"conn-2|refresh", "conn-1|access", ""} {
		if _, err := r.Open(s, ad); !errors.Is(err, ErrOpen) {
			t.Errorf("Open with ad %q: err = %v, want ErrOpen", ad, err)
		}
	}
	tampered := s[:len(s)-2] + "AA"
	if tampered == s {
		tampered = s[:len(s)-2] + "BB"
	}
	if _, err := r.Open(tampered, "conn-1|refresh"); !errors.Is(err, ErrOpen) {
		t.Errorf("tampered value opened: %v", err)
	}
	s2, _ := r.Seal(secret, "conn-1|refresh")
	if s2 == s {
		t.Error("two seals of one value are identical: nonce reuse")
	}
}

func TestRingRotation(t *testing.T) {
	old := mustKey(t, "old")
	oldRing := mustRing(t, old)
	s, _ := oldRing.Seal("tok", "ad")

	rotated := mustRing(t, mustKey(t, "new"), old)
	if got, err := rotated.Open(s, "ad"); err != nil || got != "tok" {
		t.Fatalf("rotated ring cannot open old value: %q %v", got, err)
	}
	s2, _ := rotated.Seal("tok", "ad")
	if kid, _ := KeyID(s2); kid != "new" {
		t.Fatalf("rotated ring sealed with %q, want new", kid)
	}
	if _, err := oldRing.Open(s2, "ad"); !errors.Is(err, ErrOpen) {
		t.Fatalf("old ring opened a value sealed by a key it lacks: %v", err)
	}
}

func TestParseRingErrorsNeverEchoKeys(t *testing.T) {
	cases := map[string]string{
		"no colon":  "justsomebase64value",
		"short key": "k1:c2hvcnQ",
		"bad kid":   "k 1:" + strings.Repeat("A", 43),
		"not b64":   "k1:!!!!notbase64!!!!",
		"empty":     "",
		"dup":       "k1:" + strings.Repeat("A", 43) + ",k1:" + strings.Repeat("B", 43),
	}
	for name, spec := range cases {
		_, err := ParseRing(spec)
		if err == nil {
			t.Errorf("%s: accepted", name)
			continue
		}
		if _, secret, ok := strings.Cut(spec, ":"); ok && len(secret) > 8 && strings.Contains(err.Error(), secret) {
			t.Errorf("%s: error echoes the key: %v", name, err)
		}
	}
}

func TestEmptyStaysEmpty(t *testing.T) {
	r := mustRing(t, mustKey(t, "k1"))
	s, err := r.Seal("", "ad")
	if err != nil || s != "" {
		t.Fatalf("Seal(\"\") = %q, %v", s, err)
	}
	if p, err := r.Open("", "ad"); err != nil || p != "" {
		t.Fatalf("Open(\"\") = %q, %v", p, err)
	}
}

func TestLoadOrCreateKeyFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "sub", "seal.key")
	r1, created, err := LoadOrCreateKeyFile(path)
	if err != nil || !created {
		t.Fatalf("first load: created=%v err=%v", created, err)
	}
	s, _ := r1.Seal("x", "ad")
	r2, created, err := LoadOrCreateKeyFile(path)
	if err != nil || created {
		t.Fatalf("second load: created=%v err=%v", created, err)
	}
	if got, err := r2.Open(s, "ad"); err != nil || got != "x" {
		t.Fatalf("reloaded key cannot open: %q %v", got, err)
	}
}

// A derived ring is the same in every process with the same keys, opens
// nothing of its parent's (nor the parent anything of its), and rotates
// with the parent's keys.
func TestDeriveSeparatesPurposes(t *testing.T) {
	k1, k2 := mustKey(t, "k1"), mustKey(t, "k2")
	parent := mustRing(t, k1)
	a, err := parent.Derive("purpose a")
	if err != nil {
		t.Fatal(err)
	}
	again, _ := mustRing(t, k1).Derive("purpose a")
	other, _ := parent.Derive("purpose b")
	s, err := a.Seal("value", "ad")
	if err != nil {
		t.Fatal(err)
	}
	if got, err := again.Open(s, "ad"); err != nil || got != "value" {
		t.Fatalf("the same keys derive another ring: %q %v", got, err)
	}
	if _, err := parent.Open(s, "ad"); err == nil {
		t.Fatal("the parent ring opens a derived ring's value")
	}
	if _, err := other.Open(s, "ad"); err == nil {
		t.Fatal("a ring derived with another label opens the value")
	}
	ps, _ := parent.Seal("value", "ad")
	if _, err := a.Open(ps, "ad"); err == nil {
		t.Fatal("a derived ring opens its parent's value")
	}
	rotated, _ := mustRing(t, k2, k1).Derive("purpose a")
	if got, err := rotated.Open(s, "ad"); err != nil || got != "value" || rotated.ActiveKeyID() != "k2" {
		t.Fatalf("after rotation: %q %v (active %s)", got, err, rotated.ActiveKeyID())
	}
	if _, err := parent.Derive(""); err == nil {
		t.Fatal("derived without a label")
	}
}

// ResealAll moves every value not under the active key to it, page after
// page, leaves the active key's values alone, and does not overwrite a
// value its owner changed meanwhile (the swap misses).
func TestResealAllMovesOldValuesBySwap(t *testing.T) {
	k1, k2 := mustKey(t, "k1"), mustKey(t, "k2")
	old, rotated := mustRing(t, k1), mustRing(t, k2, k1)
	store := map[string]string{}
	var keys []string
	for i := range 450 {
		key := fmt.Sprintf("%04d", i)
		r := old
		if i%3 == 0 {
			r = rotated // already under the active key
		}
		s, err := r.Seal("secret "+key, "ad|"+key)
		if err != nil {
			t.Fatal(err)
		}
		store[key], keys = s, append(keys, key)
	}
	page := func(_ context.Context, after string, n int) ([]Stored, error) {
		var out []Stored
		for _, k := range keys {
			if k > after && len(out) < n {
				out = append(out, Stored{Key: k, Sealed: store[k], AD: "ad|" + k, Name: "value " + k})
			}
		}
		return out, nil
	}
	swaps := 0
	swap := func(_ context.Context, key, oldVal, newVal string) (bool, error) {
		swaps++
		if key == "0001" { // its owner rewrote it meanwhile
			return false, nil
		}
		if store[key] != oldVal {
			t.Fatalf("swap of %s from a value that is not stored", key)
		}
		store[key] = newVal
		return true, nil
	}
	replaced, missed, err := rotated.ResealAll(context.Background(), page, swap)
	if err != nil || replaced != 299 || missed != 1 || swaps != 300 {
		t.Fatalf("ResealAll = %d replaced, %d missed, %v (%d swaps); want 299, 1", replaced, missed, err, swaps)
	}
	onlyNew := mustRing(t, k2)
	for _, k := range keys {
		if k == "0001" {
			continue
		}
		if got, err := onlyNew.Open(store[k], "ad|"+k); err != nil || got != "secret "+k {
			t.Fatalf("%s after ResealAll: %q %v", k, got, err)
		}
	}
	// A value under a key the ring does not hold: an error naming the
	// value, never its content.
	store["0002"], _ = mustRing(t, mustKey(t, "gone")).Seal("secret 0002", "ad|0002")
	_, _, err = rotated.ResealAll(context.Background(), page, swap)
	if !errors.Is(err, ErrOpen) || !strings.Contains(err.Error(), "value 0002") || strings.Contains(err.Error(), "secret") {
		t.Fatalf("ResealAll over a value of an unknown key: %v", err)
	}
}
