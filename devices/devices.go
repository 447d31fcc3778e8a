// Package devices holds the sessions of mobile devices with tokenwarm
// (docs/ARCHITECTURE.md). A device never sees a Salesforce refresh
// token: it holds a short-lived access JWT signed with tokenwarm's own
// Ed25519 keys and an opaque device refresh token that rotates on every use.
//
// A session is one token family. Every refresh token it ever had stays
// recorded (only its SHA-256), so presenting one that was already rotated is
// recognised as reuse and revokes the whole family: either the thief or the
// owner is then holding a dead token, and the owner signs in again. The one
// exception is the reuse interval (Config.RefreshReuseInterval): the
// immediate predecessor of an unused token, presented again shortly after
// it was rotated, gets that same token again (kept sealed meanwhile), so a
// refresh whose answer a flaky network lost can be retried. Rotation
// is decided by a row lock on the session (Postgres) and a conditional update
// of the token, so of two racing presentations of one token exactly one wins.
//
// The one-time handoff (authorization) code that ends the browser part of
// the login also lives here: it is bound to the app's PKCE challenge, client
// and redirect URI, and burns on first use, even a refused one; it is spent
// in the transaction that stores the session it starts, so a failure of
// ours leaves it usable.
package devices

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tokenwarm/tokenwarm/clock"
	"github.com/tokenwarm/tokenwarm/seal"
)

// Config tunes device sessions. Zero values take the defaults.
type Config struct {
	// Issuer is the "iss" of access tokens, e.g. tokenwarm's public URL.
	// Default "tokenwarm".
	Issuer string
	// Audience is the "aud" of access tokens. Default "tokenwarm-device".
	Audience string
	// AccessTTL is the lifetime of an access token. Default 15m.
	AccessTTL time.Duration
	// RefreshIdleTTL ends a session that has not refreshed for this long;
	// each refresh slides it. Default 90 days.
	RefreshIdleTTL time.Duration
	// HandoffTTL is the lifetime of a handoff code. Default 2m.
	HandoffTTL time.Duration
	// RefreshReuseInterval is how long a rotated refresh token may be
	// presented again and get the same successor, while that successor is
	// unused (a retry whose answer was lost). Zero disables it: every
	// presentation of a rotated token is reuse. The server's default is
	// 30s; at most MaxRefreshReuseInterval.
	RefreshReuseInterval time.Duration
	// OnReuse, when set, is told of each presentation of a rotated refresh
	// token that revoked its session (for metrics), after the revocation
	// committed.
	OnReuse func()
}

// MaxRefreshReuseInterval bounds Config.RefreshReuseInterval: the window in
// which a stolen predecessor is worth its successor.
const MaxRefreshReuseInterval = 5 * time.Minute

func (c *Config) defaults() {
	if c.Issuer == "" {
		c.Issuer = "tokenwarm"
	}
	if c.Audience == "" {
		c.Audience = "tokenwarm-device"
	}
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	def(&c.AccessTTL, 15*time.Minute)
	def(&c.RefreshIdleTTL, 90*24*time.Hour)
	def(&c.HandoffTTL, 2*time.Minute)
	c.RefreshReuseInterval = min(max(c.RefreshReuseInterval, 0), MaxRefreshReuseInterval)
}

// Service issues, rotates, verifies and revokes device sessions.
type Service struct {
	db    Store
	ring  *seal.Ring
	clock clock.Clock
	cfg   Config

	// keys is the cached key set; loadMu lets one goroutine load at a time.
	keys   atomic.Pointer[keySet]
	loadMu sync.Mutex
	// verified caches tokens whose signature checked out.
	verified verifiedCache
}

// New returns a Service. The database must be migrated; call
// EnsureSigningKey once at start-up before issuing tokens.
func New(db Store, ring *seal.Ring, clk clock.Clock, cfg Config) *Service {
	cfg.defaults()
	return &Service{db: db, ring: ring, clock: clk, cfg: cfg}
}

// now is the injected time in UTC at the precision both databases keep.
func (s *Service) now() time.Time {
	return s.clock.Now().UTC().Truncate(time.Microsecond)
}

// Token formats: a prefix that tells what a leaked string is, then 256
// random bits in base64url.
const (
	refreshPrefix = "twr_"
	handoffPrefix = "twh_"
	randomBytes   = 32
)

var randomLen = base64.RawURLEncoding.EncodedLen(randomBytes)

func newSecret(prefix string) string {
	b := make([]byte, randomBytes)
	_, _ = rand.Read(b) // crypto/rand.Read never fails (it crashes the program instead)
	return prefix + base64.RawURLEncoding.EncodeToString(b)
}

// wellFormed reports whether s looks like a secret of newSecret(prefix);
// anything else is rejected without a database round trip.
func wellFormed(s, prefix string) bool {
	if len(s) != len(prefix)+randomLen || s[:len(prefix)] != prefix {
		return false
	}
	_, err := base64.RawURLEncoding.Strict().DecodeString(s[len(prefix):])
	return err == nil
}

// hashSecret is what the database keeps instead of a secret.
func hashSecret(s string) string {
	sum := sha256.Sum256([]byte(s))
	return hex.EncodeToString(sum[:])
}
