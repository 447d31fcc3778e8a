// Package seal encrypts tokens at rest with AES-256-GCM under a key ring.
//
// A sealed value reads "v1.<kid>.<base64url(nonce|ciphertext)>". The key ID
// lets keys rotate: the first key of the ring seals, every key opens, and a
// reseal pass moves old values to the active key. The associated data binds a
// value to the record and field it belongs to, so a sealed refresh token
// copied into another connection's row, or into the access-token column,
// fails to open instead of being used.
package seal

import (
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/hkdf"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
)

const (
	version = "v1"
	keySize = 32
)

// ErrOpen is returned when a sealed value cannot be opened: unknown key ID,
// wrong associated data, or tampering. It never carries the value.
var ErrOpen = errors.New("seal: cannot open sealed value")

var kidPattern = regexp.MustCompile(`^[A-Za-z0-9_-]{1,32}$`)

// Key is one AES-256 key with its ID.
type Key struct {
	ID     string
	Secret []byte
}

// Ring seals with its first key and opens with any of them.
type Ring struct {
	active string
	aeads  map[string]cipher.AEAD
	order  []string
	// secrets are kept for Derive only.
	secrets map[string][]byte
}

// NewRing builds a ring; keys[0] is the active key.
func NewRing(keys ...Key) (*Ring, error) {
	if len(keys) == 0 {
		return nil, errors.New("seal: key ring is empty")
	}
	r := &Ring{active: keys[0].ID, aeads: make(map[string]cipher.AEAD, len(keys)), secrets: make(map[string][]byte, len(keys))}
	for _, k := range keys {
		if !kidPattern.MatchString(k.ID) {
			return nil, fmt.Errorf("seal: key ID %q must be 1-32 characters of [A-Za-z0-9_-]", k.ID)
		}
		if len(k.Secret) != keySize {
			return nil, fmt.Errorf("seal: key %q is %d bytes, want %d", k.ID, len(k.Secret), keySize)
		}
		if _, dup := r.aeads[k.ID]; dup {
			return nil, fmt.Errorf("seal: key ID %q appears twice", k.ID)
		}
		block, err := aes.NewCipher(k.Secret)
		if err != nil {
			return nil, fmt.Errorf("seal: key %q: %w", k.ID, err)
		}
		aead, err := cipher.NewGCM(block)
		if err != nil {
			return nil, fmt.Errorf("seal: key %q: %w", k.ID, err)
		}
		r.aeads[k.ID] = aead
		r.secrets[k.ID] = append([]byte(nil), k.Secret...)
		r.order = append(r.order, k.ID)
	}
	return r, nil
}

// ParseRing reads a ring from "kid:base64key[,kid:base64key...]". The key may
// be standard or URL-safe base64, padded or not, and must decode to 32 bytes.
// Error messages name the key ID, never the key.
func ParseRing(spec string) (*Ring, error) {
	var keys []Key
	for _, part := range strings.Split(spec, ",") {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		kid, enc, ok := strings.Cut(part, ":")
		if !ok {
			return nil, errors.New("seal: each key must read kid:base64key")
		}
		secret, err := decodeKey(enc)
		if err != nil {
			return nil, fmt.Errorf("seal: key %q is not valid base64", kid)
		}
		keys = append(keys, Key{ID: kid, Secret: secret})
	}
	return NewRing(keys...)
}

func decodeKey(s string) ([]byte, error) {
	s = strings.TrimRight(strings.TrimSpace(s), "=")
	if b, err := base64.RawStdEncoding.DecodeString(s); err == nil {
		return b, nil
	}
	return base64.RawURLEncoding.DecodeString(s)
}

// GenerateKey returns a fresh random key in ParseRing's format.
func GenerateKey(kid string) (string, error) {
	secret := make([]byte, keySize)
	if _, err := rand.Read(secret); err != nil {
		return "", err
	}
	return kid + ":" + base64.RawURLEncoding.EncodeToString(secret), nil
}

// LoadOrCreateKeyFile returns the ring stored at path, creating the file with
// a new random key (mode 0600) when it does not exist. created reports whether
// it did.
func LoadOrCreateKeyFile(path string) (r *Ring, created bool, err error) {
	b, err := os.ReadFile(path)
	if err == nil {
		r, err := ParseRing(string(b))
		return r, false, err
	}
	if !errors.Is(err, os.ErrNotExist) {
		return nil, false, err
	}
	spec, err := GenerateKey("dev1")
	if err != nil {
		return nil, false, err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, false, err
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return nil, false, err
	}
	if _, err := f.WriteString(spec + "\n"); err != nil {
		f.Close()
		return nil, false, err
	}
	if err := f.Close(); err != nil {
		return nil, false, err
	}
	r, err = ParseRing(spec)
	return r, true, err
}

// Derive returns a ring for another purpose, named by label: each key is
// replaced by HKDF-SHA256 of it with label as the info, under the same key
// ID. What one ring seals the other cannot open, so a value made for one
// purpose is never accepted for another; and every process with the same
// keys derives the same ring, so its values work across replicas and
// restarts, and rotate with the ring.
func (r *Ring) Derive(label string) (*Ring, error) {
	if label == "" {
		return nil, errors.New("seal: a derived ring needs a label")
	}
	keys := make([]Key, 0, len(r.order))
	for _, id := range r.order {
		secret, err := hkdf.Key(sha256.New, r.secrets[id], nil, label, keySize)
		if err != nil {
			return nil, fmt.Errorf("seal: derive from key %q: %w", id, err)
		}
		keys = append(keys, Key{ID: id, Secret: secret})
	}
	return NewRing(keys...)
}

// ActiveKeyID is the ID of the key that seals.
func (r *Ring) ActiveKeyID() string { return r.active }

// KeyIDs lists the ring's key IDs, active first.
func (r *Ring) KeyIDs() []string { return append([]string(nil), r.order...) }

// Seal encrypts plaintext bound to ad. An empty plaintext seals to "" so
// absent tokens stay absent.
func (r *Ring) Seal(plaintext string, ad string) (string, error) {
	if plaintext == "" {
		return "", nil
	}
	aead := r.aeads[r.active]
	nonce := make([]byte, aead.NonceSize(), aead.NonceSize()+len(plaintext)+aead.Overhead())
	if _, err := rand.Read(nonce); err != nil {
		return "", err
	}
	out := aead.Seal(nonce, nonce, []byte(plaintext), []byte(ad))
	return version + "." + r.active + "." + base64.RawURLEncoding.EncodeToString(out), nil
}

// Open decrypts a value sealed with Seal under the same ad.
func (r *Ring) Open(sealed string, ad string) (string, error) {
	if sealed == "" {
		return "", nil
	}
	kid, ok := KeyID(sealed)
	if !ok {
		return "", ErrOpen
	}
	aead, ok := r.aeads[kid]
	if !ok {
		return "", fmt.Errorf("%w: key %q is not in the ring", ErrOpen, kid)
	}
	raw, err := base64.RawURLEncoding.DecodeString(sealed[len(version)+1+len(kid)+1:])
	if err != nil || len(raw) < aead.NonceSize()+aead.Overhead() {
		return "", ErrOpen
	}
	pt, err := aead.Open(nil, raw[:aead.NonceSize()], raw[aead.NonceSize():], []byte(ad))
	if err != nil {
		return "", ErrOpen
	}
	return string(pt), nil
}

// Reseal returns sealed re-encrypted under the active key, and true, when
// it is sealed under another key of the ring; an empty value or one already
// under the active key comes back as is, with false. A value under a key
// the ring does not hold fails with ErrOpen.
func (r *Ring) Reseal(sealed, ad string) (string, bool, error) {
	if sealed == "" {
		return "", false, nil
	}
	if kid, ok := KeyID(sealed); ok && kid == r.active {
		return sealed, false, nil
	}
	plain, err := r.Open(sealed, ad)
	if err != nil {
		return "", false, err
	}
	out, err := r.Seal(plain, ad)
	if err != nil {
		return "", false, err
	}
	return out, true, nil
}

// Stored is one sealed value kept in a store, for ResealAll.
type Stored struct {
	// Key identifies the value in its store, and orders the pages.
	Key    string
	Sealed string
	AD     string
	// Name is what errors call the value (Key may be a secret's hash).
	Name string
}

// ResealAll moves every value of a store to the active key. page returns
// up to n values with a key after after, in key order; swap replaces the
// value of key by new only if it still reads old (a compare-and-swap, so
// a value its owner changed or erased meanwhile is left alone) and reports
// whether it did. ResealAll returns how many values it replaced and how
// many it missed because they changed meanwhile. Errors never carry a
// value.
func (r *Ring) ResealAll(ctx context.Context, page func(ctx context.Context, after string, n int) ([]Stored, error),
	swap func(ctx context.Context, key, old, new string) (bool, error)) (replaced, missed int, err error) {
	const batch = 200
	after := ""
	for {
		vals, err := page(ctx, after, batch)
		if err != nil || len(vals) == 0 {
			return replaced, missed, err
		}
		after = vals[len(vals)-1].Key
		for _, v := range vals {
			out, changed, err := r.Reseal(v.Sealed, v.AD)
			if err != nil {
				return replaced, missed, fmt.Errorf("%s: %w", v.Name, err)
			}
			if !changed {
				continue
			}
			ok, err := swap(ctx, v.Key, v.Sealed, out)
			if err != nil {
				return replaced, missed, fmt.Errorf("%s: %w", v.Name, err)
			}
			if ok {
				replaced++
			} else {
				missed++
			}
		}
	}
}

// KeyID returns the key ID a sealed value was sealed with.
func KeyID(sealed string) (string, bool) {
	parts := strings.SplitN(sealed, ".", 3)
	if len(parts) != 3 || parts[0] != version {
		return "", false
	}
	return parts[1], true
}
