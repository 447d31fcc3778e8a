package devices

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"time"

	"github.com/tokenwarm/tokenwarm/models"
)

const (
	algEdDSA = "EdDSA"
	// keyCacheMaxAge bounds how long a replica signs with a key another
	// replica has superseded, and verifies with one it has retired; with
	// short access tokens it is a tenth of their lifetime (keyCacheAge).
	keyCacheMaxAge = time.Minute
	// keyReloadMinInterval keeps tokens with made-up key IDs from costing a
	// database query each.
	keyReloadMinInterval = 5 * time.Second
)

// keyCacheAge is how long a replica uses its cached key set: a minute, or
// a tenth of the access-token lifetime when that is shorter (at least
// keyReloadMinInterval), so that a rotation reaches every replica well
// within the lifetime of the tokens it signs.
func (s *Service) keyCacheAge() time.Duration {
	return min(keyCacheMaxAge, max(keyReloadMinInterval, s.cfg.AccessTTL/10))
}

// keySet is an immutable snapshot of the keys that are not retired.
type keySet struct {
	public    map[string]ed25519.PublicKey
	signerKid string
	signer    ed25519.PrivateKey
	loadedAt  time.Time
}

// JWKS is a JSON Web Key Set (RFC 7517) of the keys that verify access
// tokens.
type JWKS struct {
	Keys []JWK `json:"keys"`
}

// JWK is one Ed25519 public key (RFC 8037).
type JWK struct {
	Kty string `json:"kty"`
	Crv string `json:"crv"`
	X   string `json:"x"`
	Kid string `json:"kid"`
	Alg string `json:"alg"`
	Use string `json:"use"`
}

func sealAD(kid string) string { return "signing_key|" + kid }

// EnsureSigningKey creates a signing key unless one is active. Replicas
// starting together create one key between them.
func (s *Service) EnsureSigningKey(ctx context.Context) error {
	k, err := s.newKey(s.now())
	if err == nil {
		_, err = s.db.AddFirstSigningKey(ctx, k)
	}
	if err != nil {
		return fmt.Errorf("devices: ensure signing key: %w", err)
	}
	_, err = s.reload(ctx, nil, true)
	return err
}

// RotateSigningKey adds a key to the JWKS at once, which signs from one
// key cache age on (a minute at most; by then every replica verifies its
// tokens), on every replica within two. Every older key keeps verifying,
// and stays in the JWKS, until retireAt: the access-token lifetime after
// the last replica stopped signing with it, when every token it signed has
// expired; it retires by itself then.
func (s *Service) RotateSigningKey(ctx context.Context) (kid string, retireAt time.Time, err error) {
	now := s.now()
	retireAt = now.Add(s.cfg.AccessTTL + 2*s.keyCacheAge())
	k, err := s.newKey(now)
	if err == nil {
		// The newest key signs: the store makes the new one strictly newest
		// even when the clock has not moved.
		err = s.db.AddNewestSigningKey(ctx, k, retireAt)
	}
	if err != nil {
		return "", time.Time{}, fmt.Errorf("devices: rotate signing key: %w", err)
	}
	if _, err := s.reload(ctx, nil, true); err != nil {
		return "", time.Time{}, err
	}
	return k.Kid, retireAt, nil
}

// RetireSigningKey stops a key from verifying. The key that currently signs
// cannot be retired: rotate first.
func (s *Service) RetireSigningKey(ctx context.Context, kid string) error {
	err := s.db.RetireSigningKey(ctx, kid, s.now())
	switch {
	case errors.Is(err, models.ErrNotFound):
		return newErr(ErrNotFound, "no such signing key")
	case errors.Is(err, models.ErrSigningKeyInUse):
		return newErr(ErrInvalidRequest, "the signing key in use cannot be retired; rotate first")
	case err != nil:
		return fmt.Errorf("devices: retire signing key: %w", err)
	}
	_, err = s.reload(ctx, nil, true)
	return err
}

// JWKS returns the public keys that verify access tokens, newest first.
func (s *Service) JWKS(ctx context.Context) (JWKS, error) {
	rows, err := s.activeKeys(ctx)
	if err != nil {
		return JWKS{}, fmt.Errorf("devices: load signing keys: %w", err)
	}
	out := JWKS{Keys: make([]JWK, 0, len(rows))}
	for _, r := range rows {
		out.Keys = append(out.Keys, JWK{Kty: "OKP", Crv: "Ed25519", X: r.PublicKey, Kid: r.Kid, Alg: algEdDSA, Use: "sig"})
	}
	return out, nil
}

// activeKeys returns the EdDSA keys that are not retired, newest first.
func (s *Service) activeKeys(ctx context.Context) ([]models.SigningKey, error) {
	all, err := s.db.ActiveSigningKeys(ctx, s.now())
	if err != nil {
		return nil, err
	}
	rows := all[:0:0]
	for _, k := range all {
		if k.Alg == algEdDSA {
			rows = append(rows, k)
		}
	}
	return rows, nil
}

// newKey generates a key pair with the private key sealed. Its ID is the
// RFC 7638 thumbprint of the public key.
func (s *Service) newKey(created time.Time) (models.SigningKey, error) {
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return models.SigningKey{}, err
	}
	x := base64.RawURLEncoding.EncodeToString(pub)
	sum := sha256.Sum256([]byte(`{"crv":"Ed25519","kty":"OKP","x":"` + x + `"}`))
	kid := base64.RawURLEncoding.EncodeToString(sum[:])
	sealed, err := s.ring.Seal(base64.RawURLEncoding.EncodeToString(priv.Seed()), sealAD(kid))
	if err != nil {
		return models.SigningKey{}, err
	}
	return models.SigningKey{Kid: kid, Alg: algEdDSA, PrivateSealed: sealed, PublicKey: x, CreatedAt: created}, nil
}

// currentKeys returns the cached key set, reloading it when it is too old.
func (s *Service) currentKeys(ctx context.Context) (*keySet, error) {
	ks := s.keys.Load()
	if ks != nil {
		age := s.now().Sub(ks.loadedAt)
		if age >= 0 && age < s.keyCacheAge() {
			return ks, nil
		}
	}
	return s.reload(ctx, ks, false)
}

// reloadAllowed says whether a miss in ks may trigger a reload.
func (s *Service) reloadAllowed(ks *keySet) bool {
	age := s.now().Sub(ks.loadedAt)
	return age < 0 || age >= keyReloadMinInterval
}

// reload loads the key set from the database. Unless forced, it returns
// the set another goroutine stored while this one waited instead of
// loading again.
func (s *Service) reload(ctx context.Context, seen *keySet, force bool) (*keySet, error) {
	s.loadMu.Lock()
	defer s.loadMu.Unlock()
	if cur := s.keys.Load(); !force && cur != seen {
		return cur, nil
	}
	ks, err := s.loadKeys(ctx)
	if err != nil {
		return nil, fmt.Errorf("devices: load signing keys: %w", err)
	}
	s.keys.Store(ks)
	return ks, nil
}

func (s *Service) loadKeys(ctx context.Context) (*keySet, error) {
	rows, err := s.activeKeys(ctx)
	if err != nil {
		return nil, err
	}
	ks := &keySet{public: make(map[string]ed25519.PublicKey, len(rows)), loadedAt: s.now()}
	for _, r := range rows {
		pub, err := base64.RawURLEncoding.DecodeString(r.PublicKey)
		if err != nil || len(pub) != ed25519.PublicKeySize {
			return nil, fmt.Errorf("signing key %s: malformed public key", r.Kid)
		}
		ks.public[r.Kid] = ed25519.PublicKey(pub)
	}
	if len(rows) == 0 {
		return ks, nil
	}
	// The newest key signs once every replica knows it: a key younger
	// than the cache age may be unknown to a replica that loaded its keys
	// before the key was added, and would refuse its tokens. Until then
	// the newest older key signs (the oldest when all are that young; the
	// first key signs at once).
	signer := rows[len(rows)-1]
	for _, r := range rows {
		if !r.CreatedAt.Add(s.keyCacheAge()).After(ks.loadedAt) {
			signer = r
			break
		}
	}
	encoded, err := s.ring.Open(signer.PrivateSealed, sealAD(signer.Kid))
	if err != nil {
		return nil, fmt.Errorf("signing key %s: %w", signer.Kid, err)
	}
	seed, err := base64.RawURLEncoding.DecodeString(encoded)
	if err != nil || len(seed) != ed25519.SeedSize {
		return nil, fmt.Errorf("signing key %s: malformed private key", signer.Kid)
	}
	priv := ed25519.NewKeyFromSeed(seed)
	if !bytes.Equal(priv.Public().(ed25519.PublicKey), ks.public[signer.Kid]) {
		return nil, fmt.Errorf("signing key %s: private key does not match public key", signer.Kid)
	}
	ks.signerKid, ks.signer = signer.Kid, priv
	return ks, nil
}

// publicKey returns the key that verifies tokens of kid, or nil when kid is
// unknown. An unknown kid reloads the keys (at most every few seconds):
// another replica may have rotated.
func (s *Service) publicKey(ctx context.Context, kid string) (ed25519.PublicKey, error) {
	ks, err := s.currentKeys(ctx)
	if err != nil {
		return nil, err
	}
	if k, ok := ks.public[kid]; ok {
		return k, nil
	}
	if !s.reloadAllowed(ks) {
		return nil, nil
	}
	if ks, err = s.reload(ctx, ks, false); err != nil {
		return nil, err
	}
	return ks.public[kid], nil
}

// signer returns the key that signs new access tokens.
func (s *Service) signer(ctx context.Context) (*keySet, error) {
	ks, err := s.currentKeys(ctx)
	if err != nil {
		return nil, err
	}
	if ks.signer == nil && s.reloadAllowed(ks) {
		if ks, err = s.reload(ctx, ks, false); err != nil {
			return nil, err
		}
	}
	if ks.signer == nil {
		return nil, errors.New("devices: no active signing key (EnsureSigningKey has not run)")
	}
	return ks, nil
}
