package devices_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"github.com/tokenwarm/tokenwarm/internal/rawdb"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/google/uuid"

	"github.com/tokenwarm/tokenwarm/clock"
	"github.com/tokenwarm/tokenwarm/devices"
	"github.com/tokenwarm/tokenwarm/internal/pgtest"
	"github.com/tokenwarm/tokenwarm/internal/testkit"
	"github.com/tokenwarm/tokenwarm/models"
	"github.com/tokenwarm/tokenwarm/pkce"
	"github.com/tokenwarm/tokenwarm/seal"
)

const (
	issuer   = "https://tokenwarm.test"
	audience = "tokenwarm-device"
	// Durations of the package's key cache (keys.go).
	keyReloadMinInterval = 5 * time.Second
	keyCacheMaxAge       = time.Minute
)

var ctx = context.Background()

// world is one database with a service on it and a fake clock.
type world struct {
	t       testing.TB
	dialect models.Dialect
	pgURL   string
	db      *models.DB
	ring    *seal.Ring
	spec    string // the ring as TOKENWARM_SEAL_KEYS
	clk     *clock.Fake
	svc     *devices.Service
}

func forEachDialect(t *testing.T, fn func(t *testing.T, w *world)) {
	forEachDialectBare(t, func(t *testing.T, d models.Dialect) { fn(t, newWorld(t, d)) })
}

func forEachDialectBare(t *testing.T, fn func(t *testing.T, d models.Dialect)) {
	for _, d := range []models.Dialect{models.SQLite, models.Postgres} {
		t.Run(string(d), func(t *testing.T) { fn(t, d) })
	}
}

// newWorld returns a migrated database whose service has a signing key.
func newWorld(t testing.TB, d models.Dialect) *world {
	t.Helper()
	w := newBareWorld(t, d)
	if err := w.svc.EnsureSigningKey(ctx); err != nil {
		t.Fatal(err)
	}
	return w
}

// newBareWorld returns a migrated database without signing keys.
func newBareWorld(t testing.TB, d models.Dialect) *world {
	t.Helper()
	w := &world{t: t, dialect: d, clk: clock.NewFake(time.Date(2026, 3, 1, 9, 0, 0, 0, time.UTC))}
	dir := t.TempDir()
	if d == models.Postgres {
		w.pgURL = pgtest.NewDatabase(t)
	}
	db, err := models.Open(w.pgURL, dir, models.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	if _, err := db.Migrate(ctx); err != nil {
		t.Fatal(err)
	}
	w.db = db
	spec, err := seal.GenerateKey("test1")
	if err != nil {
		t.Fatal(err)
	}
	w.spec = spec
	if w.ring, err = seal.ParseRing(spec); err != nil {
		t.Fatal(err)
	}
	w.svc = w.service(db)
	return w
}

func (w *world) service(db *models.DB) *devices.Service {
	return devices.New(db, w.ring, w.clk, devices.Config{Issuer: issuer})
}

// replicaDB is an independent pool on Postgres (another replica); SQLite is
// single-process, so there it is the same database.
func (w *world) replicaDB() *models.DB {
	w.t.Helper()
	if w.dialect != models.Postgres {
		return w.db
	}
	db, err := models.Open(w.pgURL, "", models.Options{})
	if err != nil {
		w.t.Fatal(err)
	}
	w.t.Cleanup(func() { db.Close() })
	return db
}

func (w *world) session(owner string) *devices.Tokens {
	w.t.Helper()
	tok, err := w.svc.CreateSession(ctx, owner, "Pixel 9")
	if err != nil {
		w.t.Fatal(err)
	}
	return tok
}

// sessionRow is the stored state of a session.
type sessionRow struct {
	Generation    int64
	IdleExpiresAt time.Time
	RevokedAt     *time.Time
	RevokeReason  string
}

func (w *world) sessionRow(id string) sessionRow {
	w.t.Helper()
	var r sessionRow
	if err := rawdb.Gorm(w.db).Table("device_sessions").Where("id = ?", id).Take(&r).Error; err != nil {
		w.t.Fatal(err)
	}
	return r
}

// privateKey opens a signing key the way the service does, so tests can
// sign tokens that differ from a real one in a single aspect.
func (w *world) privateKey(kid string) ed25519.PrivateKey {
	w.t.Helper()
	var sealed string
	if err := rawdb.Gorm(w.db).Raw("SELECT private_sealed FROM signing_keys WHERE kid = ?", kid).Scan(&sealed).Error; err != nil {
		w.t.Fatal(err)
	}
	enc, err := w.ring.Open(sealed, "signing_key|"+kid)
	if err != nil {
		w.t.Fatal(err)
	}
	seed, err := base64.RawURLEncoding.DecodeString(enc)
	if err != nil {
		w.t.Fatal(err)
	}
	return ed25519.NewKeyFromSeed(seed)
}

// connection stores a connection for handoff codes to point at.
func (w *world) connection() string {
	w.t.Helper()
	now := w.clk.Now()
	c := models.Connection{ID: uuid.NewString(), Owner: "alice", OrgID: "00D" + uuid.NewString()[:8], UserID: "005x",
		LoginURL: "https://login.example", Status: models.StatusActive, LastRefreshedAt: now, NextWarmAt: now,
		CreatedAt: now, UpdatedAt: now}
	if err := rawdb.Gorm(w.db).Create(&c).Error; err != nil {
		w.t.Fatal(err)
	}
	return c.ID
}

func header(t testing.TB, token string) map[string]any {
	t.Helper()
	tok, _, err := jwt.NewParser().ParseUnverified(token, jwt.MapClaims{})
	if err != nil {
		t.Fatal(err)
	}
	return tok.Header
}

func kidOf(t testing.TB, token string) string {
	t.Helper()
	kid, _ := header(t, token)["kid"].(string)
	return kid
}

// wantErr checks the kind and reason of err and that it leaks no secret.
func wantErr(t testing.TB, err, kind error, reason string, secrets ...string) {
	t.Helper()
	if !errors.Is(err, kind) {
		t.Fatalf("err = %v, want %v", err, kind)
	}
	var e *devices.Error
	if !errors.As(err, &e) {
		t.Fatalf("err %v is not a *devices.Error", err)
	}
	if reason != "" && e.Message != reason {
		t.Fatalf("reason = %q, want %q", e.Message, reason)
	}
	for _, s := range secrets {
		if s != "" && strings.Contains(err.Error(), s) {
			t.Fatalf("error %q contains a secret", err)
		}
	}
}

func sha256Hex(s string) string {
	sum := sha256.Sum256([]byte(s))
	return hex.EncodeToString(sum[:])
}

func TestCreateSessionAndVerify(t *testing.T) {
	forEachDialect(t, func(t *testing.T, w *world) {
		tok := w.session("alice")
		if tok.TokenType != "Bearer" || tok.ExpiresIn != 900 || tok.Owner != "alice" {
			t.Fatalf("tokens = %+v", tok)
		}
		if !strings.HasPrefix(tok.RefreshToken, "twr_") || len(tok.RefreshToken) != 4+43 {
			t.Fatalf("refresh token %q is not twr_ + 256 bits", tok.RefreshToken)
		}
		if _, err := uuid.Parse(tok.SessionID); err != nil {
			t.Fatalf("session id %q: %v", tok.SessionID, err)
		}
		h := header(t, tok.AccessToken)
		if h["alg"] != "EdDSA" || h["typ"] != "at+jwt" || h["kid"] == "" {
			t.Fatalf("header = %v", h)
		}
		c, err := w.svc.Verify(ctx, tok.AccessToken)
		if err != nil {
			t.Fatal(err)
		}
		now := w.clk.Now()
		if c.Subject != "alice" || c.SessionID != tok.SessionID || c.ID == "" || c.Issuer != issuer ||
			!slices.Equal(c.Audience, []string{audience}) || !c.IssuedAt.Equal(now) || !c.ExpiresAt.Equal(now.Add(15*time.Minute)) {
			t.Fatalf("claims = %+v", c)
		}
		var hashes []string
		if err := rawdb.Gorm(w.db).Raw("SELECT token_hash FROM device_refresh_tokens WHERE session_id = ?", tok.SessionID).Scan(&hashes).Error; err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(hashes, []string{sha256Hex(tok.RefreshToken)}) {
			t.Fatalf("stored %v, want only the SHA-256 of the refresh token", hashes)
		}
		if _, err := w.svc.CreateSession(ctx, "", "x"); !errors.Is(err, devices.ErrInvalidRequest) {
			t.Fatalf("empty owner: %v", err)
		}
	})
}

func TestRefreshRotatesAndReuseRevokesTheFamily(t *testing.T) {
	forEachDialect(t, func(t *testing.T, w *world) {
		first := w.session("alice")
		w.clk.Advance(time.Minute)
		second, err := w.svc.Refresh(ctx, first.RefreshToken)
		if err != nil {
			t.Fatal(err)
		}
		if second.RefreshToken == first.RefreshToken || second.SessionID != first.SessionID || second.Owner != "alice" {
			t.Fatalf("refresh returned %+v", second)
		}
		if _, err := w.svc.Verify(ctx, second.AccessToken); err != nil {
			t.Fatal(err)
		}
		if g := w.sessionRow(first.SessionID).Generation; g != 2 {
			t.Fatalf("generation = %d, want 2", g)
		}
		third, err := w.svc.Refresh(ctx, second.RefreshToken)
		if err != nil {
			t.Fatal(err)
		}

		// The first token again: reuse, the family dies.
		_, err = w.svc.Refresh(ctx, first.RefreshToken)
		wantErr(t, err, devices.ErrRefreshReuse, "", first.RefreshToken)
		if !errors.Is(err, devices.ErrInvalidGrant) {
			t.Fatalf("reuse is not an invalid grant: %v", err)
		}
		row := w.sessionRow(first.SessionID)
		if row.RevokedAt == nil || row.RevokeReason != "refresh token reuse" {
			t.Fatalf("session after reuse = %+v", row)
		}
		_, err = w.svc.Refresh(ctx, third.RefreshToken)
		wantErr(t, err, devices.ErrInvalidGrant, "session revoked", third.RefreshToken)
		if errors.Is(err, devices.ErrRefreshReuse) {
			t.Fatal("the current token of a revoked session is not reuse")
		}
		for _, access := range []string{second.AccessToken, third.AccessToken} {
			_, err := w.svc.Verify(ctx, access)
			wantErr(t, err, devices.ErrInvalidToken, "session revoked", access)
		}
	})
}

func TestRefreshRefusesUnknownTokens(t *testing.T) {
	forEachDialect(t, func(t *testing.T, w *world) {
		w.session("alice")
		for _, tok := range []string{"", "garbage", "twr_", "twr_" + strings.Repeat("A", 43), "twh_" + strings.Repeat("A", 43)} {
			_, err := w.svc.Refresh(ctx, tok)
			wantErr(t, err, devices.ErrInvalidGrant, "unknown refresh token", tok)
		}
	})
}

// Parallel presentations of one token from two replicas: exactly one wins,
// and the others look like what they are, a stolen-token race.
func TestConcurrentRefreshOfOneToken(t *testing.T) {
	forEachDialect(t, func(t *testing.T, w *world) {
		tok := w.session("alice")
		replicas := []*devices.Service{w.svc, w.service(w.replicaDB())}
		const n = 20
		results := make([]*devices.Tokens, n)
		errs := make([]error, n)
		start := make(chan struct{})
		var wg sync.WaitGroup
		for i := range n {
			wg.Go(func() {
				<-start
				results[i], errs[i] = replicas[i%2].Refresh(ctx, tok.RefreshToken)
			})
		}
		close(start)
		wg.Wait()
		var winner *devices.Tokens
		for i, err := range errs {
			if err == nil {
				if winner != nil {
					t.Fatal("two refreshes of one token succeeded")
				}
				winner = results[i]
				continue
			}
			wantErr(t, err, devices.ErrRefreshReuse, "", tok.RefreshToken)
		}
		if winner == nil {
			t.Fatal("no refresh succeeded")
		}
		if row := w.sessionRow(tok.SessionID); row.RevokeReason != "refresh token reuse" {
			t.Fatalf("session = %+v, want revoked for reuse", row)
		}
		_, err := w.svc.Refresh(ctx, winner.RefreshToken)
		wantErr(t, err, devices.ErrInvalidGrant, "session revoked")
	})
}

// reuseInterval is the reuse interval of the services of the reuse tests:
// the server's default.
const reuseInterval = 30 * time.Second

// reuseReplicas are two services with the reuse interval on independent
// pools (two replicas on Postgres; one SQLite database).
func (w *world) reuseReplicas() [2]*devices.Service {
	cfg := devices.Config{Issuer: issuer, RefreshReuseInterval: reuseInterval}
	return [2]*devices.Service{devices.New(w.db, w.ring, w.clk, cfg), devices.New(w.replicaDB(), w.ring, w.clk, cfg)}
}

// keptSuccessor is what the database keeps of a token's successor.
func (w *world) keptSuccessor(refreshToken string) string {
	w.t.Helper()
	var kept []string
	if err := rawdb.Gorm(w.db).Table("device_refresh_tokens").Where("token_hash = ?", sha256Hex(refreshToken)).Pluck("successor_sealed", &kept).Error; err != nil || len(kept) != 1 {
		w.t.Fatalf("kept successor: %v, %d rows", err, len(kept))
	}
	return kept[0]
}

// A refresh whose answer was lost, retried on another replica inside the
// reuse interval, gets the same successor and a fresh access token; once
// the successor is used the retry is reuse again.
func TestRefreshRetryInsideTheReuseInterval(t *testing.T) {
	forEachDialect(t, func(t *testing.T, w *world) {
		r := w.reuseReplicas()
		a, b := r[0], r[1]
		first := w.session("alice")
		second, err := a.Refresh(ctx, first.RefreshToken)
		if err != nil {
			t.Fatal(err)
		}
		kept := w.keptSuccessor(first.RefreshToken)
		if kept == "" || strings.Contains(kept, second.RefreshToken) || strings.Contains(kept, second.RefreshToken[4:]) {
			t.Fatalf("the successor is not kept sealed: %q", kept)
		}
		w.clk.Advance(reuseInterval - time.Second)
		retry, err := b.Refresh(ctx, first.RefreshToken)
		if err != nil {
			t.Fatalf("retry inside the interval: %v", err)
		}
		if retry.RefreshToken != second.RefreshToken || retry.SessionID != first.SessionID || retry.Owner != "alice" || retry.AccessToken == second.AccessToken {
			t.Fatalf("retry = %+v, want the same successor with a fresh access token", retry)
		}
		if _, err := b.Verify(ctx, retry.AccessToken); err != nil {
			t.Fatal(err)
		}
		if row := w.sessionRow(first.SessionID); row.Generation != 2 || row.RevokedAt != nil {
			t.Fatalf("session after the retry %+v", row)
		}
		// The successor's first use erases the kept copy; the predecessor
		// is now reuse, inside the interval or not.
		third, err := b.Refresh(ctx, second.RefreshToken)
		if err != nil {
			t.Fatal(err)
		}
		if kept := w.keptSuccessor(first.RefreshToken); kept != "" {
			t.Fatal("the successor stays kept after its use")
		}
		_, err = a.Refresh(ctx, first.RefreshToken)
		wantErr(t, err, devices.ErrRefreshReuse, "", first.RefreshToken, second.RefreshToken)
		if row := w.sessionRow(first.SessionID); row.RevokeReason != "refresh token reuse" {
			t.Fatalf("session %+v, want revoked for reuse", row)
		}
		_, err = a.Refresh(ctx, third.RefreshToken)
		wantErr(t, err, devices.ErrInvalidGrant, "session revoked")
		if kept := w.keptSuccessor(second.RefreshToken); kept != "" {
			t.Fatal("a revoked session keeps a successor")
		}
	})
}

// Outside the interval a retry of the predecessor is reuse, as it always
// was, and so is a retry of an older token inside it.
func TestRefreshRetryOutsideTheReuseInterval(t *testing.T) {
	forEachDialect(t, func(t *testing.T, w *world) {
		r := w.reuseReplicas()
		a, b := r[0], r[1]
		first := w.session("alice")
		if _, err := a.Refresh(ctx, first.RefreshToken); err != nil {
			t.Fatal(err)
		}
		w.clk.Advance(reuseInterval)
		_, err := b.Refresh(ctx, first.RefreshToken)
		wantErr(t, err, devices.ErrRefreshReuse, "", first.RefreshToken)
		if row := w.sessionRow(first.SessionID); row.RevokeReason != "refresh token reuse" {
			t.Fatalf("session %+v, want revoked for reuse", row)
		}

		// Two generations back, a second after the rotations: reuse.
		old := w.session("bob")
		mid, err := a.Refresh(ctx, old.RefreshToken)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := b.Refresh(ctx, mid.RefreshToken); err != nil {
			t.Fatal(err)
		}
		w.clk.Advance(time.Second)
		_, err = b.Refresh(ctx, old.RefreshToken)
		wantErr(t, err, devices.ErrRefreshReuse, "", old.RefreshToken)
	})
}

// Concurrent presentations of one token on two replicas inside the
// interval: one rotates, every other one gets that same successor.
func TestConcurrentRetriesGetOneSuccessor(t *testing.T) {
	forEachDialect(t, func(t *testing.T, w *world) {
		replicas := w.reuseReplicas()
		tok := w.session("alice")
		const n = 20
		results := make([]*devices.Tokens, n)
		errs := make([]error, n)
		testkit.Concurrently(n, func(i int) { results[i], errs[i] = replicas[i%2].Refresh(ctx, tok.RefreshToken) })
		for i, err := range errs {
			if err != nil {
				t.Fatalf("presentation %d: %v", i, err)
			}
			if results[i].RefreshToken != results[0].RefreshToken {
				t.Fatalf("presentations got different successors")
			}
		}
		if row := w.sessionRow(tok.SessionID); row.Generation != 2 || row.RevokedAt != nil {
			t.Fatalf("session %+v, want generation 2, live", row)
		}
		if _, err := replicas[1].Refresh(ctx, results[0].RefreshToken); err != nil {
			t.Fatalf("the one successor: %v", err)
		}
	})
}

// Retries racing the successor's first use on the other replica: each gets
// the successor (it came first) or is reuse (it came after); none gets the
// token after it or any token of a revoked session.
func TestRetryRacingTheSuccessorsUse(t *testing.T) {
	forEachDialect(t, func(t *testing.T, w *world) {
		replicas := w.reuseReplicas()
		for range 5 {
			first := w.session("alice")
			second, err := replicas[0].Refresh(ctx, first.RefreshToken)
			if err != nil {
				t.Fatal(err)
			}
			// Goroutine 0 uses the successor; the others retry its predecessor.
			const n = 9
			results := make([]*devices.Tokens, n)
			errs := make([]error, n)
			testkit.Concurrently(n, func(i int) {
				tok := first.RefreshToken
				if i == 0 {
					tok = second.RefreshToken
				}
				results[i], errs[i] = replicas[i%2].Refresh(ctx, tok)
			})
			third, useErr := results[0], errs[0]
			results, errs = results[1:], errs[1:]
			if useErr != nil {
				t.Fatalf("the successor's use: %v", useErr)
			}
			refused := 0
			for i, err := range errs {
				if err != nil {
					wantErr(t, err, devices.ErrRefreshReuse, "", first.RefreshToken)
					refused++
					continue
				}
				if results[i].RefreshToken != second.RefreshToken {
					t.Fatalf("retry %d got a token other than the successor", i)
				}
			}
			row := w.sessionRow(first.SessionID)
			if (refused > 0) != (row.RevokedAt != nil) || row.Generation != 3 {
				t.Fatalf("session %+v after %d refused retries", row, refused)
			}
			if refused == 0 {
				if _, err := replicas[0].Refresh(ctx, third.RefreshToken); err != nil {
					t.Fatal(err)
				}
			}
		}
	})
}

func TestIdleExpirySlidesWithUse(t *testing.T) {
	forEachDialect(t, func(t *testing.T, w *world) {
		const idle = 90 * 24 * time.Hour
		tok := w.session("alice")
		w.clk.Advance(idle - time.Hour)
		tok, err := w.svc.Refresh(ctx, tok.RefreshToken)
		if err != nil {
			t.Fatalf("refresh within the idle TTL: %v", err)
		}
		if got, want := w.sessionRow(tok.SessionID).IdleExpiresAt, w.clk.Now().Add(idle); !got.Equal(want) {
			t.Fatalf("idle expiry = %v, want %v", got, want)
		}
		w.clk.Advance(idle - time.Hour)
		tok, err = w.svc.Refresh(ctx, tok.RefreshToken)
		if err != nil {
			t.Fatalf("refresh after the slide: %v", err)
		}
		w.clk.Advance(idle)
		_, err = w.svc.Refresh(ctx, tok.RefreshToken)
		wantErr(t, err, devices.ErrInvalidGrant, "session expired", tok.RefreshToken)
		if row := w.sessionRow(tok.SessionID); row.RevokedAt == nil || row.RevokeReason != "idle expired" {
			t.Fatalf("session = %+v, want revoked as idle", row)
		}
	})
}

func TestVerifyRejects(t *testing.T) {
	forEachDialect(t, func(t *testing.T, w *world) {
		tok := w.session("alice")
		kid := kidOf(t, tok.AccessToken)
		priv := w.privateKey(kid)
		pub := priv.Public().(ed25519.PublicKey)
		now := w.clk.Now()

		revoked := w.session("bob")
		if err := w.svc.RevokeSession(ctx, revoked.SessionID, "admin"); err != nil {
			t.Fatal(err)
		}

		claims := func(edit func(jwt.MapClaims)) jwt.MapClaims {
			c := jwt.MapClaims{
				"iss": issuer, "aud": []string{audience}, "sub": "alice", "sid": tok.SessionID, "jti": "j1",
				"iat": now.Unix(), "nbf": now.Unix(), "exp": now.Add(15 * time.Minute).Unix(),
			}
			if edit != nil {
				edit(c)
			}
			return c
		}
		sign := func(method jwt.SigningMethod, key any, hdr map[string]any, c jwt.MapClaims) string {
			t.Helper()
			tk := jwt.NewWithClaims(method, c)
			tk.Header["kid"] = kid
			tk.Header["typ"] = "at+jwt"
			for k, v := range hdr {
				if v == nil {
					delete(tk.Header, k)
				} else {
					tk.Header[k] = v
				}
			}
			s, err := tk.SignedString(key)
			if err != nil {
				t.Fatal(err)
			}
			return s
		}
		valid := sign(jwt.SigningMethodEdDSA, priv, nil, claims(nil))
		if _, err := w.svc.Verify(ctx, valid); err != nil {
			t.Fatalf("the unaltered forged token must verify: %v", err)
		}
		withinLeeway := sign(jwt.SigningMethodEdDSA, priv, nil, claims(func(c jwt.MapClaims) {
			c["exp"] = now.Add(-20 * time.Second).Unix()
		}))
		if _, err := w.svc.Verify(ctx, withinLeeway); err != nil {
			t.Fatalf("expired 20s ago is within the leeway: %v", err)
		}

		parts := strings.Split(tok.AccessToken, ".")
		// Flip one bit of the decoded signature, so the tampered token is
		// still well-formed base64url.
		sig, err := base64.RawURLEncoding.DecodeString(parts[2])
		if err != nil {
			t.Fatal(err)
		}
		sig[10] ^= 1
		tamperedSig := parts[0] + "." + parts[1] + "." + base64.RawURLEncoding.EncodeToString(sig)
		tamperedPayload := parts[0] + "." + base64.RawURLEncoding.EncodeToString([]byte(`{"sub":"mallory"}`)) + "." + parts[2]

		otherEd := func() ed25519.PrivateKey {
			_, k, _ := ed25519.GenerateKey(rand.Reader)
			return k
		}()
		ecKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		rsaKey, err := rsa.GenerateKey(rand.Reader, 2048)
		if err != nil {
			t.Fatal(err)
		}
		x := base64.RawURLEncoding.EncodeToString(pub)

		cases := []struct {
			name, token, reason string
		}{
			{"tampered signature", tamperedSig, "invalid signature"},
			{"tampered payload", tamperedPayload, "invalid signature"},
			{"other Ed25519 key under the real kid", sign(jwt.SigningMethodEdDSA, otherEd, nil, claims(nil)), "invalid signature"},
			{"alg none", sign(jwt.SigningMethodNone, jwt.UnsafeAllowNoneSignatureType, nil, claims(nil)), "unsupported algorithm"},
			{"HS256 with the public key as secret", sign(jwt.SigningMethodHS256, []byte(pub), nil, claims(nil)), "unsupported algorithm"},
			{"HS256 with the JWK x as secret", sign(jwt.SigningMethodHS256, []byte(x), nil, claims(nil)), "unsupported algorithm"},
			{"ES256 with another key", sign(jwt.SigningMethodES256, ecKey, nil, claims(nil)), "unsupported algorithm"},
			{"RS256 with another key", sign(jwt.SigningMethodRS256, rsaKey, nil, claims(nil)), "unsupported algorithm"},
			{"unknown kid", sign(jwt.SigningMethodEdDSA, priv, map[string]any{"kid": "nope"}, claims(nil)), "unknown key id"},
			{"missing kid", sign(jwt.SigningMethodEdDSA, priv, map[string]any{"kid": nil}, claims(nil)), "missing key id"},
			{"numeric kid", sign(jwt.SigningMethodEdDSA, priv, map[string]any{"kid": 7}, claims(nil)), "missing key id"},
			{"wrong typ", sign(jwt.SigningMethodEdDSA, priv, map[string]any{"typ": "JWT"}, claims(nil)), "wrong token type"},
			{"expired", sign(jwt.SigningMethodEdDSA, priv, nil, claims(func(c jwt.MapClaims) {
				c["iat"], c["nbf"], c["exp"] = now.Add(-16*time.Minute).Unix(), now.Add(-16*time.Minute).Unix(), now.Add(-time.Minute).Unix()
			})), "token expired"},
			{"nbf in the future", sign(jwt.SigningMethodEdDSA, priv, nil, claims(func(c jwt.MapClaims) {
				c["nbf"] = now.Add(5 * time.Minute).Unix()
			})), "token not valid yet"},
			{"iat in the future", sign(jwt.SigningMethodEdDSA, priv, nil, claims(func(c jwt.MapClaims) {
				c["iat"] = now.Add(5 * time.Minute).Unix()
			})), "token not valid yet"},
			{"wrong iss", sign(jwt.SigningMethodEdDSA, priv, nil, claims(func(c jwt.MapClaims) { c["iss"] = "https://evil.test" })), "wrong issuer"},
			{"wrong aud", sign(jwt.SigningMethodEdDSA, priv, nil, claims(func(c jwt.MapClaims) { c["aud"] = "salesforce" })), "wrong audience"},
			{"missing exp", sign(jwt.SigningMethodEdDSA, priv, nil, claims(func(c jwt.MapClaims) { delete(c, "exp") })), "missing claim"},
			{"missing nbf", sign(jwt.SigningMethodEdDSA, priv, nil, claims(func(c jwt.MapClaims) { delete(c, "nbf") })), "missing claim"},
			{"missing sid", sign(jwt.SigningMethodEdDSA, priv, nil, claims(func(c jwt.MapClaims) { delete(c, "sid") })), "missing claim"},
			{"sid not a string", sign(jwt.SigningMethodEdDSA, priv, nil, claims(func(c jwt.MapClaims) { c["sid"] = 5 })), "malformed token"},
			{"sid not a UUID", sign(jwt.SigningMethodEdDSA, priv, nil, claims(func(c jwt.MapClaims) { c["sid"] = "x' OR 1=1" })), "malformed session id"},
			{"unknown session", sign(jwt.SigningMethodEdDSA, priv, nil, claims(func(c jwt.MapClaims) { c["sid"] = uuid.NewString() })), "unknown session"},
			{"subject of another owner", sign(jwt.SigningMethodEdDSA, priv, nil, claims(func(c jwt.MapClaims) { c["sub"] = "mallory" })), "subject does not match session"},
			{"revoked session", revoked.AccessToken, "session revoked"},
			{"empty", "", "malformed token"},
			{"not a JWT", "not-a-jwt", "malformed token"},
			{"empty segments", "..", "malformed token"},
			{"line break in the signature", valid[:len(valid)-5] + "\n" + valid[len(valid)-5:], "malformed token"},
			{"Bearer prefix", "Bearer " + valid, "malformed token"},
			{"padded signature", valid + "=", "malformed token"},
			{"four segments", valid + ".e30", "malformed token"},
			{"huge", strings.Repeat("a", 5000) + ".e30.e30", "malformed token"},
		}
		for _, tc := range cases {
			t.Run(tc.name, func(t *testing.T) {
				c, err := w.svc.Verify(ctx, tc.token)
				if c != nil {
					t.Fatalf("claims returned with error %v", err)
				}
				wantErr(t, err, devices.ErrInvalidToken, tc.reason, tc.token)
			})
		}
	})
}

func TestAccessTokenExpires(t *testing.T) {
	forEachDialect(t, func(t *testing.T, w *world) {
		tok := w.session("alice")
		w.clk.Advance(15*time.Minute + 29*time.Second)
		if _, err := w.svc.Verify(ctx, tok.AccessToken); err != nil {
			t.Fatalf("expiry is within the leeway: %v", err)
		}
		w.clk.Advance(time.Second)
		_, err := w.svc.Verify(ctx, tok.AccessToken)
		wantErr(t, err, devices.ErrInvalidToken, "token expired")
	})
}

func TestSigningKeyRotation(t *testing.T) {
	forEachDialect(t, func(t *testing.T, w *world) {
		old := w.session("alice")
		kid1 := kidOf(t, old.AccessToken)
		// Another replica that has loaded the keys before the rotation.
		replica := w.service(w.replicaDB())
		if _, err := replica.Verify(ctx, old.AccessToken); err != nil {
			t.Fatal(err)
		}

		kid2, _, err := w.svc.RotateSigningKey(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if kid2 == kid1 {
			t.Fatal("rotation kept the key ID")
		}
		if _, err := w.svc.Verify(ctx, old.AccessToken); err != nil {
			t.Fatalf("token of the old key after rotation: %v", err)
		}
		jwks, err := w.svc.JWKS(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if len(jwks.Keys) != 2 || jwks.Keys[0].Kid != kid2 || jwks.Keys[1].Kid != kid1 {
			t.Fatalf("JWKS = %+v, want [%s %s]", jwks, kid2, kid1)
		}
		// The new key is published at once but signs only once every
		// replica has reloaded its keys and verifies its tokens.
		if got := kidOf(t, w.session("alice").AccessToken); got != kid1 {
			t.Fatalf("a token right after the rotation is signed by %s, want %s", got, kid1)
		}
		if got := kidOf(t, w.session("alice").AccessToken); got != kid1 {
			t.Fatalf("a token right after the rotation is signed by %s, want %s", got, kid1)
		}
		w.clk.Advance(keyCacheMaxAge + time.Second)
		fresh := w.session("alice")
		if got := kidOf(t, fresh.AccessToken); got != kid2 {
			t.Fatalf("new token signed by %s, want %s", got, kid2)
		}
		if _, err := replica.Verify(ctx, fresh.AccessToken); err != nil {
			t.Fatalf("the other replica refuses a token of the new key: %v", err)
		}

		if err := w.svc.RetireSigningKey(ctx, kid2); !errors.Is(err, devices.ErrInvalidRequest) {
			t.Fatalf("retiring the signing key: %v", err)
		}
		if err := w.svc.RetireSigningKey(ctx, "nope"); !errors.Is(err, devices.ErrNotFound) {
			t.Fatalf("retiring an unknown key: %v", err)
		}
		if err := w.svc.RetireSigningKey(ctx, kid1); err != nil {
			t.Fatal(err)
		}
		if err := w.svc.RetireSigningKey(ctx, kid1); err != nil {
			t.Fatalf("retiring twice: %v", err)
		}
		_, err = w.svc.Verify(ctx, old.AccessToken)
		wantErr(t, err, devices.ErrInvalidToken, "unknown key id")
		if _, err := w.svc.Verify(ctx, fresh.AccessToken); err != nil {
			t.Fatal(err)
		}
		jwks, err = w.svc.JWKS(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if len(jwks.Keys) != 1 || jwks.Keys[0].Kid != kid2 {
			t.Fatalf("JWKS after retire = %+v", jwks)
		}
		// Within a minute the replica drops the retired key and signs with
		// the new one.
		w.clk.Advance(keyCacheMaxAge)
		_, err = replica.Verify(ctx, old.AccessToken)
		wantErr(t, err, devices.ErrInvalidToken, "unknown key id")
		byReplica, err := replica.CreateSession(ctx, "alice", "")
		if err != nil {
			t.Fatal(err)
		}
		if got := kidOf(t, byReplica.AccessToken); got != kid2 {
			t.Fatalf("replica signs with %s, want %s", got, kid2)
		}
	})
}

func TestEnsureSigningKeyRace(t *testing.T) {
	forEachDialectBare(t, func(t *testing.T, d models.Dialect) {
		w := newBareWorld(t, d)
		if _, err := w.svc.CreateSession(ctx, "alice", ""); err == nil {
			t.Fatal("a session without a signing key")
		}
		var wg sync.WaitGroup
		errs := make([]error, 6)
		for i := range errs {
			svc := w.service(w.replicaDB())
			wg.Go(func() { errs[i] = svc.EnsureSigningKey(ctx) })
		}
		wg.Wait()
		for _, err := range errs {
			if err != nil {
				t.Fatal(err)
			}
		}
		var n int64
		if err := rawdb.Gorm(w.db).Raw("SELECT count(*) FROM signing_keys").Scan(&n).Error; err != nil {
			t.Fatal(err)
		}
		if n != 1 {
			t.Fatalf("%d signing keys, want 1", n)
		}
		if err := w.svc.EnsureSigningKey(ctx); err != nil {
			t.Fatal(err)
		}
		w.session("alice")
	})
}

func TestSigningKeyIsSealed(t *testing.T) {
	forEachDialect(t, func(t *testing.T, w *world) {
		tok := w.session("alice")
		kid := kidOf(t, tok.AccessToken)
		var sealed string
		if err := rawdb.Gorm(w.db).Raw("SELECT private_sealed FROM signing_keys WHERE kid = ?", kid).Scan(&sealed).Error; err != nil {
			t.Fatal(err)
		}
		if k, ok := seal.KeyID(sealed); !ok || k != "test1" {
			t.Fatalf("private key is not sealed: %.12q...", sealed)
		}
		if _, err := w.ring.Open(sealed, "signing_key|other"); err == nil {
			t.Fatal("the sealed key opens under another key ID")
		}
	})
}

func TestJWKSShape(t *testing.T) {
	forEachDialect(t, func(t *testing.T, w *world) {
		tok := w.session("alice")
		jwks, err := w.svc.JWKS(ctx)
		if err != nil {
			t.Fatal(err)
		}
		b, err := json.Marshal(jwks)
		if err != nil {
			t.Fatal(err)
		}
		var doc map[string][]map[string]string
		if err := json.Unmarshal(b, &doc); err != nil {
			t.Fatalf("%s: %v", b, err)
		}
		if len(doc) != 1 || len(doc["keys"]) != 1 {
			t.Fatalf("JWKS = %s", b)
		}
		k := doc["keys"][0]
		var fields []string
		for f := range k {
			fields = append(fields, f)
		}
		slices.Sort(fields)
		if !slices.Equal(fields, []string{"alg", "crv", "kid", "kty", "use", "x"}) {
			t.Fatalf("key fields = %v", fields)
		}
		if k["kty"] != "OKP" || k["crv"] != "Ed25519" || k["alg"] != "EdDSA" || k["use"] != "sig" || k["kid"] != kidOf(t, tok.AccessToken) {
			t.Fatalf("key = %v", k)
		}
		x, err := base64.RawURLEncoding.DecodeString(k["x"])
		if err != nil || len(x) != ed25519.PublicKeySize {
			t.Fatalf("x = %q: %v", k["x"], err)
		}
		// The kid is the RFC 7638 thumbprint.
		sum := sha256.Sum256([]byte(`{"crv":"Ed25519","kty":"OKP","x":"` + k["x"] + `"}`))
		if k["kid"] != base64.RawURLEncoding.EncodeToString(sum[:]) {
			t.Fatalf("kid %s is not the JWK thumbprint", k["kid"])
		}
		// A third party verifies our token with nothing but the JWKS.
		_, err = jwt.Parse(tok.AccessToken, func(*jwt.Token) (any, error) { return ed25519.PublicKey(x), nil },
			jwt.WithValidMethods([]string{"EdDSA"}), jwt.WithTimeFunc(w.clk.Now), jwt.WithIssuer(issuer), jwt.WithAudience(audience))
		if err != nil {
			t.Fatalf("token does not verify with the published key: %v", err)
		}

		empty, err := newBareWorld(t, w.dialect).svc.JWKS(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if b, _ := json.Marshal(empty); string(b) != `{"keys":[]}` {
			t.Fatalf("empty JWKS = %s", b)
		}
	})
}

func TestRevoke(t *testing.T) {
	forEachDialect(t, func(t *testing.T, w *world) {
		for _, tok := range []string{"", "nope", "twr_" + strings.Repeat("B", 43)} {
			if err := w.svc.RevokeByRefreshToken(ctx, tok); err != nil {
				t.Fatalf("unknown token %q: %v", tok, err)
			}
		}
		tok := w.session("alice")
		if err := w.svc.RevokeByRefreshToken(ctx, tok.RefreshToken); err != nil {
			t.Fatal(err)
		}
		if row := w.sessionRow(tok.SessionID); row.RevokedAt == nil || row.RevokeReason != "revoked by client" {
			t.Fatalf("session = %+v", row)
		}
		_, err := w.svc.Refresh(ctx, tok.RefreshToken)
		wantErr(t, err, devices.ErrInvalidGrant, "session revoked")
		_, err = w.svc.Verify(ctx, tok.AccessToken)
		wantErr(t, err, devices.ErrInvalidToken, "session revoked")
		if err := w.svc.RevokeByRefreshToken(ctx, tok.RefreshToken); err != nil {
			t.Fatalf("revoking twice: %v", err)
		}

		other := w.session("alice")
		if err := w.svc.RevokeSession(ctx, other.SessionID, "lost phone"); err != nil {
			t.Fatal(err)
		}
		if err := w.svc.RevokeSession(ctx, other.SessionID, "again"); err != nil {
			t.Fatal(err)
		}
		if row := w.sessionRow(other.SessionID); row.RevokeReason != "lost phone" {
			t.Fatalf("reason = %q, want the first one", row.RevokeReason)
		}
		for _, id := range []string{uuid.NewString(), "not-a-uuid"} {
			if err := w.svc.RevokeSession(ctx, id, ""); !errors.Is(err, devices.ErrNotFound) {
				t.Fatalf("revoke %q: %v", id, err)
			}
		}
	})
}

func TestHandoff(t *testing.T) {
	forEachDialect(t, func(t *testing.T, w *world) {
		conn := w.connection()
		const redirect = "com.example.app:/oauth/done"
		issue := func(verifier string) string {
			t.Helper()
			code, err := w.svc.IssueHandoff(ctx, conn, "alice", pkce.S256(verifier), redirect)
			if err != nil {
				t.Fatal(err)
			}
			return code
		}

		t.Run("single use", func(t *testing.T) {
			verifier := pkce.NewVerifier()
			code := issue(verifier)
			if !strings.HasPrefix(code, "twh_") || len(code) != 4+43 {
				t.Fatalf("code %q is not twh_ + 256 bits", code)
			}
			var hashes []string
			if err := rawdb.Gorm(w.db).Raw("SELECT code_hash FROM handoff_codes").Scan(&hashes).Error; err != nil {
				t.Fatal(err)
			}
			if !slices.Contains(hashes, sha256Hex(code)) || slices.Contains(hashes, code) {
				t.Fatalf("stored %v, want the SHA-256 of the code only", hashes)
			}
			h, err := w.svc.RedeemHandoff(ctx, code, verifier)
			if err != nil {
				t.Fatal(err)
			}
			if *h != (devices.Handoff{ConnectionID: conn, Owner: "alice", AppRedirectURI: redirect}) {
				t.Fatalf("handoff = %+v", h)
			}
			_, err = w.svc.RedeemHandoff(ctx, code, verifier)
			wantErr(t, err, devices.ErrInvalidGrant, "code already used", code, verifier)
		})

		t.Run("wrong verifier burns the code", func(t *testing.T) {
			verifier := pkce.NewVerifier()
			code := issue(verifier)
			for _, wrong := range []string{pkce.NewVerifier(), "short"} {
				code := code
				if wrong == "short" {
					code = issue(verifier)
				}
				_, err := w.svc.RedeemHandoff(ctx, code, wrong)
				wantErr(t, err, devices.ErrInvalidGrant, "wrong code verifier", code, wrong)
				_, err = w.svc.RedeemHandoff(ctx, code, verifier)
				wantErr(t, err, devices.ErrInvalidGrant, "code already used", code, verifier)
			}
		})

		t.Run("expired", func(t *testing.T) {
			verifier := pkce.NewVerifier()
			code := issue(verifier)
			w.clk.Advance(2 * time.Minute)
			_, err := w.svc.RedeemHandoff(ctx, code, verifier)
			wantErr(t, err, devices.ErrInvalidGrant, "code expired", code, verifier)
		})

		t.Run("unknown", func(t *testing.T) {
			for _, code := range []string{"", "twh_", "twh_" + strings.Repeat("C", 43), "twr_" + strings.Repeat("C", 43)} {
				_, err := w.svc.RedeemHandoff(ctx, code, pkce.NewVerifier())
				wantErr(t, err, devices.ErrInvalidGrant, "unknown code", code)
			}
		})

		t.Run("concurrent redemptions", func(t *testing.T) {
			verifier := pkce.NewVerifier()
			code := issue(verifier)
			var wg sync.WaitGroup
			var mu sync.Mutex
			wins := 0
			for range 10 {
				wg.Go(func() {
					if _, err := w.svc.RedeemHandoff(ctx, code, verifier); err == nil {
						mu.Lock()
						wins++
						mu.Unlock()
					}
				})
			}
			wg.Wait()
			if wins != 1 {
				t.Fatalf("%d redemptions succeeded, want 1", wins)
			}
		})

		t.Run("invalid requests", func(t *testing.T) {
			v := pkce.NewVerifier()
			for name, args := range map[string][4]string{
				"short challenge":        {conn, "alice", "abc", redirect},
				"challenge with padding": {conn, "alice", pkce.S256(v)[:42] + "=", redirect},
				"empty challenge":        {conn, "alice", "", redirect},
				"bad connection id":      {"nope", "alice", pkce.S256(v), redirect},
				"empty owner":            {conn, "", pkce.S256(v), redirect},
				"empty redirect":         {conn, "alice", pkce.S256(v), ""},
			} {
				if _, err := w.svc.IssueHandoff(ctx, args[0], args[1], args[2], args[3]); !errors.Is(err, devices.ErrInvalidRequest) {
					t.Errorf("%s: %v", name, err)
				}
			}
		})
	})
}

// FuzzVerify feeds arbitrary strings to Verify: it must never panic, never
// fail for another reason than an invalid token, and never accept anything
// but the token it issued.
func FuzzVerify(f *testing.F) {
	w := newWorld(f, models.SQLite)
	tok, err := w.svc.CreateSession(ctx, "alice", "")
	if err != nil {
		f.Fatal(err)
	}
	valid := tok.AccessToken
	parts := strings.Split(valid, ".")
	b64 := base64.RawURLEncoding.EncodeToString
	f.Add(valid)
	f.Add(valid + "A")
	f.Add(valid[:len(valid)-1])
	f.Add(parts[0] + "." + parts[1] + ".")
	f.Add(parts[1] + "." + parts[0] + "." + parts[2])
	f.Add(b64([]byte(`{"alg":"none","typ":"at+jwt"}`)) + "." + parts[1] + ".")
	f.Add(b64([]byte(`{"alg":"HS256","typ":"at+jwt","kid":"x"}`)) + "." + parts[1] + "." + parts[2])
	f.Add(parts[0] + "." + b64([]byte(`{"sid":"`+tok.SessionID+`","exp":1e300}`)) + "." + parts[2])
	f.Add(strings.Replace(valid, ".", "..", 1))
	f.Add("")
	f.Add("..")
	f.Fuzz(func(t *testing.T, s string) {
		c, err := w.svc.Verify(ctx, s)
		if err == nil {
			if s != valid || c == nil || c.SessionID != tok.SessionID {
				t.Fatalf("accepted %q", s)
			}
			return
		}
		if c != nil {
			t.Fatal("claims returned with an error")
		}
		if !errors.Is(err, devices.ErrInvalidToken) {
			t.Fatalf("error of another kind: %v", err)
		}
		if len(s) > 8 && strings.Contains(err.Error(), s) {
			t.Fatal("error contains the input")
		}
	})
}

func TestPurgeDeletesOnlyWhatCanNoLongerBeUsed(t *testing.T) {
	forEachDialect(t, func(t *testing.T, w *world) {
		const day = 24 * time.Hour
		conn := w.connection()
		oldCode, err := w.svc.IssueHandoff(ctx, conn, "alice", pkce.S256(pkce.NewVerifier()), "com.example.app:/cb")
		if err != nil {
			t.Fatal(err)
		}
		idle := w.session("idle")
		revoked := w.session("revoked")
		if err := w.svc.RevokeByRefreshToken(ctx, revoked.RefreshToken); err != nil {
			t.Fatal(err)
		}
		live := w.session("live")
		w.clk.Advance(60 * day)
		gen2, err := w.svc.Refresh(ctx, live.RefreshToken)
		if err != nil {
			t.Fatal(err)
		}
		w.clk.Advance(60 * day)
		gen3, err := w.svc.Refresh(ctx, gen2.RefreshToken)
		if err != nil {
			t.Fatal(err)
		}
		w.clk.Advance(5 * day)
		freshVerifier := pkce.NewVerifier()
		freshCode, err := w.svc.IssueHandoff(ctx, conn, "alice", pkce.S256(freshVerifier), "com.example.app:/cb")
		if err != nil {
			t.Fatal(err)
		}

		// Day 125, keeping 30 days: the idle session expired on day 90 and
		// the revoked one died on day 0; live's first token was rotated on
		// day 60, its second on day 120.
		got, err := w.svc.Purge(ctx, w.clk.Now().Add(-30*day))
		if err != nil {
			t.Fatal(err)
		}
		if want := (devices.Purged{HandoffCodes: 1, Sessions: 2, RotatedTokens: 1}); got != want {
			t.Fatalf("purged %+v, want %+v", got, want)
		}
		var orphans int64
		rawdb.Gorm(w.db).Table("device_refresh_tokens").Where("session_id NOT IN (?)", rawdb.Gorm(w.db).Table("device_sessions").Select("id")).Count(&orphans)
		if orphans != 0 {
			t.Fatalf("%d refresh tokens of deleted sessions left", orphans)
		}
		for _, tok := range []string{idle.RefreshToken, revoked.RefreshToken, live.RefreshToken} {
			if _, err := w.svc.Refresh(ctx, tok); !errors.Is(err, devices.ErrInvalidGrant) {
				t.Fatalf("a purged token: %v", err)
			}
		}
		if _, err := w.svc.RedeemHandoff(ctx, oldCode, pkce.NewVerifier()); !errors.Is(err, devices.ErrInvalidGrant) {
			t.Fatalf("a purged handoff code: %v", err)
		}
		if _, err := w.svc.RedeemHandoff(ctx, freshCode, freshVerifier); err != nil {
			t.Fatalf("the fresh handoff code: %v", err)
		}
		// The recently rotated token is still known: its reuse revokes the
		// family, as before the purge.
		_, err = w.svc.Refresh(ctx, gen2.RefreshToken)
		wantErr(t, err, devices.ErrRefreshReuse, "", gen2.RefreshToken)
		if _, err := w.svc.Refresh(ctx, gen3.RefreshToken); !errors.Is(err, devices.ErrInvalidGrant) {
			t.Fatalf("the family survived the reuse: %v", err)
		}
	})
}

// A token whose signature was verified once is not verified again until it
// expires, but its expiry and its key still count: an expired token and a
// token of a retired key fail even when they were verified before.
func TestVerifiedSignaturesStillExpire(t *testing.T) {
	w := newWorld(t, models.SQLite)
	tok := w.session("cache@example.com")
	if _, err := w.svc.Verify(context.Background(), tok.AccessToken); err != nil {
		t.Fatal(err)
	}
	if _, err := w.svc.VerifySignature(context.Background(), tok.AccessToken); err != nil {
		t.Fatalf("second verification: %v", err)
	}
	w.clk.Advance(time.Hour)
	if _, err := w.svc.VerifySignature(context.Background(), tok.AccessToken); !errors.Is(err, devices.ErrInvalidToken) {
		t.Fatalf("an expired token passed from the cache: %v", err)
	}
}
