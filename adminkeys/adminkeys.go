// Package adminkeys issues and checks the API keys of the admin API. Only a
// SHA-256 of each key is stored: a key is 256 random bits, so a plain hash
// is enough (nothing to brute-force), and looking a key up by its hash
// never compares secret bytes one by one.
package adminkeys

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"regexp"
	"strings"
	"time"

	"github.com/google/uuid"

	"github.com/tokenwarm/tokenwarm/errs"
	"github.com/tokenwarm/tokenwarm/models"
)

// KeyPrefix starts every admin key, so scanners and humans recognise one.
const KeyPrefix = "twa_"

// lastUsedGranularity limits last_used_at writes to one a minute per key.
const lastUsedGranularity = time.Minute

// The package's errors are errs.Error.
type (
	Error = errs.Error
	Code  = errs.Code
)

// Error codes of the package.
const (
	// CodeInvalidKey: the key is missing, unknown or revoked. Callers must
	// not tell these apart to the presenter.
	CodeInvalidKey = errs.InvalidKey
	CodeNotFound   = errs.NotFound
	CodeNameTaken  = errs.NameTaken
	CodeBadName    = errs.InvalidName
	CodeInternal   = errs.Internal
)

// ErrorCode returns the code of an error (errs.CodeOf).
func ErrorCode(err error) Code { return errs.CodeOf(err) }

func dbErr(err error) error {
	code := CodeInternal
	if errs.IsUnavailable(err) {
		code = errs.Unavailable
	}
	return &Error{Code: code, Message: "database error", Err: err}
}

// Key is an admin key as stored: never the key itself.
type Key struct {
	ID   string
	Name string
	// Prefix is the key's first 8 characters, to tell keys apart.
	Prefix     string
	CreatedAt  time.Time
	LastUsedAt *time.Time
	RevokedAt  *time.Time
}

func keyOf(r *models.AdminKey) *Key {
	return &Key{ID: r.ID, Name: r.Name, Prefix: r.Prefix, CreatedAt: r.CreatedAt, LastUsedAt: r.LastUsedAt, RevokedAt: r.RevokedAt}
}

// Storage is what the store needs of the database; *models.DB implements
// it.
type Storage interface {
	CreateAdminKey(ctx context.Context, k models.AdminKey) error
	AdminKeyByHash(ctx context.Context, hash string) (*models.AdminKey, error)
	TouchAdminKey(ctx context.Context, id string, now, usedBefore time.Time) error
	RevokeAdminKey(ctx context.Context, name string, now time.Time) error
	LiveAdminKey(ctx context.Context, id string) (*models.AdminKey, error)
	ListAdminKeys(ctx context.Context) ([]models.AdminKey, error)
}

// Store keeps admin keys in the database.
type Store struct {
	db  Storage
	now func() time.Time
}

// New returns a store; now may be nil (wall clock).
func New(db Storage, now func() time.Time) *Store {
	if now == nil {
		now = time.Now
	}
	return &Store{db: db, now: now}
}

var validName = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$`)

// Create makes a key named name and returns it. It is the only time the key
// exists outside the caller's hands.
func (s *Store) Create(ctx context.Context, name string) (string, error) {
	if !validName.MatchString(name) {
		return "", &Error{Code: CodeBadName, Message: "a key name is 1 to 64 letters, digits, '.', '_' or '-', starting with a letter or digit"}
	}
	var secret [32]byte
	if _, err := rand.Read(secret[:]); err != nil {
		return "", &Error{Code: CodeInternal, Message: "no randomness", Err: err}
	}
	key := KeyPrefix + base64.RawURLEncoding.EncodeToString(secret[:])
	r := models.AdminKey{ID: uuid.NewString(), Name: name, KeyHash: hash(key), Prefix: key[:8], CreatedAt: s.now().UTC()}
	err := s.db.CreateAdminKey(ctx, r)
	if errors.Is(err, models.ErrAdminKeyNameTaken) {
		return "", &Error{Code: CodeNameTaken, Message: fmt.Sprintf("an admin key named %q exists (revoked keys keep their name)", name)}
	}
	if err != nil {
		return "", dbErr(err)
	}
	return key, nil
}

// Authenticate returns the live key that key is. Missing, malformed,
// unknown and revoked keys all fail with CodeInvalidKey; any other error
// (CodeInternal) means the key could not be checked.
func (s *Store) Authenticate(ctx context.Context, key string) (*Key, error) {
	invalid := &Error{Code: CodeInvalidKey, Message: "invalid admin key"}
	if !strings.HasPrefix(key, KeyPrefix) || len(key) > 128 {
		return nil, invalid
	}
	h := hash(key)
	// Retried once on a fresh connection when the database dropped it, so
	// a database restart does not fail requests.
	r, err := s.db.AdminKeyByHash(ctx, h)
	if errors.Is(err, models.ErrNotFound) {
		return nil, invalid
	}
	if err != nil {
		return nil, dbErr(err)
	}
	if subtle.ConstantTimeCompare([]byte(r.KeyHash), []byte(h)) != 1 || r.RevokedAt != nil {
		return nil, invalid
	}
	now := s.now().UTC()
	if r.LastUsedAt == nil || now.Sub(*r.LastUsedAt) >= lastUsedGranularity {
		// Conditioned, so a burst of requests writes once.
		if err := s.db.TouchAdminKey(ctx, r.ID, now, now.Add(-lastUsedGranularity)); err != nil {
			return nil, dbErr(err)
		}
		r.LastUsedAt = &now
	}
	return keyOf(r), nil
}

// Revoke ends the key named name. Revoking a revoked key is not an error.
func (s *Store) Revoke(ctx context.Context, name string) error {
	err := s.db.RevokeAdminKey(ctx, name, s.now().UTC())
	if errors.Is(err, models.ErrNotFound) {
		return &Error{Code: CodeNotFound, Message: fmt.Sprintf("no admin key named %q", name)}
	}
	if err != nil {
		return dbErr(err)
	}
	return nil
}

// Live returns the key with this ID if it exists and is not revoked;
// otherwise an error with CodeNotFound (CodeInternal: it could not be
// checked).
func (s *Store) Live(ctx context.Context, id string) (*Key, error) {
	r, err := s.db.LiveAdminKey(ctx, id)
	if errors.Is(err, models.ErrNotFound) {
		return nil, &Error{Code: CodeNotFound, Message: "no live admin key with this ID"}
	}
	if err != nil {
		return nil, dbErr(err)
	}
	return keyOf(r), nil
}

// List returns every key, revoked ones included, oldest first.
func (s *Store) List(ctx context.Context) ([]Key, error) {
	rs, err := s.db.ListAdminKeys(ctx)
	if err != nil {
		return nil, dbErr(err)
	}
	out := make([]Key, 0, len(rs))
	for i := range rs {
		out = append(out, *keyOf(&rs[i]))
	}
	return out, nil
}

func hash(key string) string {
	sum := sha256.Sum256([]byte(key))
	return hex.EncodeToString(sum[:])
}
