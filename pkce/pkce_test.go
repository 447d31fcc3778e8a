package pkce

import (
	"errors"
	"strings"
	"testing"
)

func TestRFC7636AppendixB(t *testing.T) {
	// The example pair from RFC 7636, Appendix B.
	const verifier = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"
	const challenge = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
	if got := S256(verifier); got != challenge {
		t.Fatalf("S256 = %q, want %q", got, challenge)
	}
	if err := Verify(verifier, challenge); err != nil {
		t.Fatal(err)
	}
}

func TestNewVerifierIsValidAndUnique(t *testing.T) {
	seen := map[string]bool{}
	for range 100 {
		v := NewVerifier()
		if err := ValidVerifier(v); err != nil {
			t.Fatalf("NewVerifier() = %q: %v", v, err)
		}
		if seen[v] {
			t.Fatal("duplicate verifier")
		}
		seen[v] = true
	}
}

func TestValidation(t *testing.T) {
	good := NewVerifier()
	cases := []struct {
		name, verifier, challenge, method string
		want                              error
	}{
		{"ok", good, S256(good), "S256", nil},
		{"plain refused", good, good, "plain", ErrMethod},
		{"missing method", good, S256(good), "", ErrMethod},
		{"short verifier", strings.Repeat("a", 42), S256(strings.Repeat("a", 42)), "S256", ErrVerifierFormat},
		{"long verifier", strings.Repeat("a", 129), S256(strings.Repeat("a", 129)), "S256", ErrVerifierFormat},
		{"bad character", strings.Repeat("a", 42) + "+", S256(strings.Repeat("a", 42) + "+"), "S256", ErrVerifierFormat},
		{"wrong verifier", NewVerifier(), S256(good), "S256", ErrMismatch},
		{"bad challenge", good, "short", "S256", ErrChallenge},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			err := ValidChallenge(tc.challenge, tc.method)
			if err == nil {
				err = Verify(tc.verifier, tc.challenge)
			}
			if !errors.Is(err, tc.want) {
				t.Fatalf("err = %v, want %v", err, tc.want)
			}
		})
	}
}
