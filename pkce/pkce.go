// Package pkce implements RFC 7636 Proof Key for Code Exchange with the S256
// method only; "plain" is refused because it protects nothing against an
// attacker who can read the authorization request.
package pkce

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"errors"
)

// MethodS256 is the only challenge method accepted.
const MethodS256 = "S256"

// Errors of verifier and challenge checks.
var (
	ErrVerifierFormat = errors.New("pkce: code_verifier must be 43-128 characters of [A-Za-z0-9-._~]")
	ErrMethod         = errors.New("pkce: code_challenge_method must be S256")
	ErrChallenge      = errors.New("pkce: code_challenge must be 43 base64url characters")
	ErrMismatch       = errors.New("pkce: code_verifier does not match code_challenge")
)

// NewVerifier returns a verifier of 43 characters carrying 256 random bits.
func NewVerifier() string {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		panic("pkce: crypto/rand failed: " + err.Error())
	}
	return base64.RawURLEncoding.EncodeToString(b)
}

// S256 returns BASE64URL(SHA256(verifier)) without padding.
func S256(verifier string) string {
	sum := sha256.Sum256([]byte(verifier))
	return base64.RawURLEncoding.EncodeToString(sum[:])
}

// ValidVerifier checks a verifier's length and alphabet.
func ValidVerifier(v string) error {
	if len(v) < 43 || len(v) > 128 {
		return ErrVerifierFormat
	}
	for i := 0; i < len(v); i++ {
		if !unreserved(v[i]) {
			return ErrVerifierFormat
		}
	}
	return nil
}

// ValidChallenge checks a challenge and its method.
func ValidChallenge(challenge, method string) error {
	if method != MethodS256 {
		return ErrMethod
	}
	if len(challenge) != 43 {
		return ErrChallenge
	}
	if _, err := base64.RawURLEncoding.DecodeString(challenge); err != nil {
		return ErrChallenge
	}
	return nil
}

// Verify checks a verifier against an S256 challenge in constant time.
func Verify(verifier, challenge string) error {
	if err := ValidVerifier(verifier); err != nil {
		return err
	}
	if subtle.ConstantTimeCompare([]byte(S256(verifier)), []byte(challenge)) != 1 {
		return ErrMismatch
	}
	return nil
}

func unreserved(c byte) bool {
	return c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z' || c >= '0' && c <= '9' ||
		c == '-' || c == '.' || c == '_' || c == '~'
}
