package devices

import (
	"bytes"
	"cmp"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"slices"
	"time"

	"gorm.io/gorm"
	"gorm.io/gorm/clause"

	"github.com/tokenwarm/tokenwarm/models"
)

const (
	algEdDSA = "EdDSA"
	// signingKeysLock serialises key changes of replicas (advisory lock;
	// models uses 7216000001 for migrations).
	signingKeysLock = 7216000002
	// keyCacheMaxAge bounds how long a replica signs with a key another
	// replica has superseded, and verifies with one it has retired.
	keyCacheMaxAge = time.Minute
	// keyReloadMinInterval keeps tokens with made-up key IDs from costing a
	// database query each.
	keyReloadMinInterval = 5 * time.Second
)

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
	err := s.db.Gorm.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		if err := s.lockKeys(tx); err != nil {
			return err
		}
		var n int64
		if err := tx.Model(&signingKey{}).Where("retired_at IS NULL").Count(&n).Error; err != nil {
			return err
		}
		if n > 0 {
			return nil
		}
		_, err := s.insertKey(tx, s.now())
		return err
	})
	if err != nil {
		return fmt.Errorf("devices: ensure signing key: %w", err)
	}
	_, err = s.reload(ctx, nil, true)
	return err
}

// RotateSigningKey creates a key that signs from now on (on other replicas
// within a minute). Older keys keep verifying until retired; retire one only
// once the tokens it signed have expired (AccessTTL plus a minute).
func (s *Service) RotateSigningKey(ctx context.Context) (string, error) {
	var kid string
	err := s.db.Gorm.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		if err := s.lockKeys(tx); err != nil {
			return err
		}
		var all []signingKey
		if err := tx.Find(&all).Error; err != nil {
			return err
		}
		// The newest key signs, so the new one must be strictly newest even
		// when the clock has not moved.
		created := s.now()
		for _, k := range all {
			if !created.After(k.CreatedAt) {
				created = k.CreatedAt.UTC().Add(time.Microsecond)
			}
		}
		var err error
		kid, err = s.insertKey(tx, created)
		return err
	})
	if err != nil {
		return "", fmt.Errorf("devices: rotate signing key: %w", err)
	}
	if _, err := s.reload(ctx, nil, true); err != nil {
		return "", err
	}
	return kid, nil
}

// RetireSigningKey stops a key from verifying. The key that currently signs
// cannot be retired: rotate first.
func (s *Service) RetireSigningKey(ctx context.Context, kid string) error {
	err := s.db.Gorm.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		if err := s.lockKeys(tx); err != nil {
			return err
		}
		var active []signingKey
		if err := tx.Where("retired_at IS NULL").Find(&active).Error; err != nil {
			return err
		}
		if i := slices.IndexFunc(active, func(k signingKey) bool { return k.Kid == kid }); i < 0 {
			var n int64
			if err := tx.Model(&signingKey{}).Where("kid = ?", kid).Count(&n).Error; err != nil {
				return err
			}
			if n == 0 {
				return newErr(ErrNotFound, "no such signing key")
			}
			return nil // already retired
		}
		if newest(active).Kid == kid {
			return newErr(ErrInvalidRequest, "the signing key in use cannot be retired; rotate first")
		}
		return tx.Model(&signingKey{}).Where("kid = ? AND retired_at IS NULL", kid).Update("retired_at", s.now()).Error
	})
	if err != nil {
		var e *Error
		if errors.As(err, &e) {
			return err
		}
		return fmt.Errorf("devices: retire signing key: %w", err)
	}
	_, err = s.reload(ctx, nil, true)
	return err
}

// JWKS returns the public keys that verify access tokens, newest first.
func (s *Service) JWKS(ctx context.Context) (JWKS, error) {
	var rows []signingKey
	if err := s.db.Gorm.WithContext(ctx).Where("retired_at IS NULL AND alg = ?", algEdDSA).Find(&rows).Error; err != nil {
		return JWKS{}, fmt.Errorf("devices: load signing keys: %w", err)
	}
	sortNewestFirst(rows)
	out := JWKS{Keys: make([]JWK, 0, len(rows))}
	for _, r := range rows {
		out.Keys = append(out.Keys, JWK{Kty: "OKP", Crv: "Ed25519", X: r.PublicKey, Kid: r.Kid, Alg: algEdDSA, Use: "sig"})
	}
	return out, nil
}

func (s *Service) lockKeys(tx *gorm.DB) error {
	if s.db.Dialect != models.Postgres {
		return nil // SQLite: the transaction holds the only connection
	}
	return tx.Exec("SELECT pg_advisory_xact_lock(?)", signingKeysLock).Error
}

// insertKey generates a key pair and stores it with the private key sealed.
// Its ID is the RFC 7638 thumbprint of the public key.
func (s *Service) insertKey(tx *gorm.DB, created time.Time) (string, error) {
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return "", err
	}
	x := base64.RawURLEncoding.EncodeToString(pub)
	sum := sha256.Sum256([]byte(`{"crv":"Ed25519","kty":"OKP","x":"` + x + `"}`))
	kid := base64.RawURLEncoding.EncodeToString(sum[:])
	sealed, err := s.ring.Seal(base64.RawURLEncoding.EncodeToString(priv.Seed()), sealAD(kid))
	if err != nil {
		return "", err
	}
	row := signingKey{Kid: kid, Alg: algEdDSA, PrivateSealed: sealed, PublicKey: x, CreatedAt: created}
	if err := tx.Clauses(clause.OnConflict{DoNothing: true}).Create(&row).Error; err != nil {
		return "", err
	}
	return kid, nil
}

// currentKeys returns the cached key set, reloading it when it is too old.
func (s *Service) currentKeys(ctx context.Context) (*keySet, error) {
	ks := s.keys.Load()
	if ks != nil {
		age := s.now().Sub(ks.loadedAt)
		if age >= 0 && age < keyCacheMaxAge {
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
	var rows []signingKey
	if err := s.db.Gorm.WithContext(ctx).Where("retired_at IS NULL AND alg = ?", algEdDSA).Find(&rows).Error; err != nil {
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
	signer := newest(rows)
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

// newest is the key that signs: the most recently created, ties broken by
// kid so that every replica picks the same one.
func newest(keys []signingKey) signingKey {
	return slices.MaxFunc(keys, compareAge)
}

func sortNewestFirst(keys []signingKey) {
	slices.SortFunc(keys, func(a, b signingKey) int { return compareAge(b, a) })
}

func compareAge(a, b signingKey) int {
	if c := a.CreatedAt.Compare(b.CreatedAt); c != 0 {
		return c
	}
	return cmp.Compare(a.Kid, b.Kid)
}
