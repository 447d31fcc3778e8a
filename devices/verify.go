package devices

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/google/uuid"

	"github.com/tokenwarm/tokenwarm/models"
)

const (
	// accessTokenType is the "typ" header of access tokens (RFC 9068); it
	// keeps any other JWT signed with the same key from passing as one.
	accessTokenType = "at+jwt"
	// leeway absorbs clock skew between replicas.
	leeway = 30 * time.Second
	// maxTokenLen is far above a real token and bounds the work a
	// garbage Authorization header can cause.
	maxTokenLen = 4096
)

// Claims are the verified claims of an access token.
type Claims struct {
	Subject   string // the owner
	SessionID string
	ID        string // jti
	Issuer    string
	Audience  []string
	ExpiresAt time.Time
	IssuedAt  time.Time
}

// accessClaims is the JWT payload: registered claims plus the session ID.
type accessClaims struct {
	jwt.RegisteredClaims
	SessionID string `json:"sid"`
}

// Validate requires the claims every access token carries; the jwt parser
// calls it after its own checks.
func (c *accessClaims) Validate() error {
	if c.Subject == "" || c.SessionID == "" || c.ID == "" || c.IssuedAt == nil {
		return jwt.ErrTokenRequiredClaimMissing
	}
	return nil
}

// accessToken signs an access token of a session.
func (s *Service) accessToken(ks *keySet, owner, sessionID string, now time.Time) (string, error) {
	jti := make([]byte, 16)
	_, _ = rand.Read(jti)
	c := accessClaims{
		RegisteredClaims: jwt.RegisteredClaims{
			Issuer:    s.cfg.Issuer,
			Subject:   owner,
			Audience:  jwt.ClaimStrings{s.cfg.Audience},
			ExpiresAt: jwt.NewNumericDate(now.Add(s.cfg.AccessTTL)),
			NotBefore: jwt.NewNumericDate(now),
			IssuedAt:  jwt.NewNumericDate(now),
			ID:        base64.RawURLEncoding.EncodeToString(jti),
		},
		SessionID: sessionID,
	}
	t := jwt.NewWithClaims(jwt.SigningMethodEdDSA, c)
	t.Header["kid"] = ks.signerKid
	t.Header["typ"] = accessTokenType
	signed, err := t.SignedString(ks.signer)
	if err != nil {
		return "", fmt.Errorf("devices: sign access token: %w", err)
	}
	return signed, nil
}

// errRejected stops the jwt parser after the key function chose a reason.
var errRejected = errors.New("rejected")

// Verify checks an access token (the bearer value without "Bearer ") and
// that its session is not revoked. A token that does not pass is an
// ErrInvalidToken; any other error means the check could not be made.
func (s *Service) Verify(ctx context.Context, bearer string) (*Claims, error) {
	claims, err := s.VerifySignature(ctx, bearer)
	if err != nil {
		return nil, err
	}
	// An idempotent read: retried once on a fresh connection when the
	// database dropped it, so a database restart does not fail requests.
	sess, err := s.db.DeviceSessionForVerify(ctx, claims.SessionID)
	if errors.Is(err, models.ErrNotFound) {
		return nil, newErr(ErrInvalidToken, "unknown session")
	}
	if err != nil {
		return nil, fmt.Errorf("devices: load session: %w", err)
	}
	if err := claims.CheckSession(sess.Owner, sess.RevokedAt); err != nil {
		return nil, err
	}
	return claims, nil
}

// CheckSession applies the session rules to a token's session as read
// from the database: it must not be revoked and must belong to the token's
// subject. A caller that verified only the signature (VerifySignature)
// must read the session in the same request and check it with this.
func (c *Claims) CheckSession(owner string, revokedAt *time.Time) error {
	if revokedAt != nil {
		return newErr(ErrInvalidToken, "session revoked")
	}
	if owner != c.Subject {
		return newErr(ErrInvalidToken, "subject does not match session")
	}
	return nil
}

// UnknownSession is the error for a token whose session does not exist.
func UnknownSession() error { return newErr(ErrInvalidToken, "unknown session") }

// VerifySignature checks an access token's signature and claims, without
// reading its session: the caller must check the session (CheckSession)
// in a read of its own, as the token pull does together with the
// connection, in one statement.
func (s *Service) VerifySignature(ctx context.Context, bearer string) (*Claims, error) {
	if !compactJWS(bearer) {
		return nil, newErr(ErrInvalidToken, "malformed token")
	}
	if c, ok := s.verified.get(bearer, s.clock.Now()); ok {
		// Still signed by a key of the current set: retiring a key ends
		// its tokens at once, as it does for uncached ones.
		if ks, err := s.currentKeys(ctx); err == nil && ks.public[c.kid] != nil {
			claims := c.claims
			return &claims, nil
		}
	}
	var reason string
	var internal error
	keyFunc := func(t *jwt.Token) (any, error) {
		if typ, _ := t.Header["typ"].(string); typ != accessTokenType {
			reason = "wrong token type"
			return nil, errRejected
		}
		kid, _ := t.Header["kid"].(string)
		if kid == "" {
			reason = "missing key id"
			return nil, errRejected
		}
		key, err := s.publicKey(ctx, kid)
		if err != nil {
			internal = err
			return nil, errRejected
		}
		if key == nil {
			reason = "unknown key id"
			return nil, errRejected
		}
		return key, nil
	}
	parser := jwt.NewParser(
		jwt.WithValidMethods([]string{algEdDSA}),
		jwt.WithIssuer(s.cfg.Issuer),
		jwt.WithAudience(s.cfg.Audience),
		jwt.WithExpirationRequired(),
		jwt.WithNotBeforeRequired(),
		jwt.WithIssuedAt(),
		jwt.WithLeeway(leeway),
		jwt.WithTimeFunc(s.clock.Now),
		// One encoding per signature, so no second string passes for a token.
		jwt.WithStrictDecoding(),
	)
	var c accessClaims
	tok, err := parser.ParseWithClaims(bearer, &c, keyFunc)
	if internal != nil {
		return nil, internal
	}
	if err != nil {
		if reason == "" {
			reason = parseFailure(tok, err)
		}
		return nil, newErr(ErrInvalidToken, reason)
	}
	if id, err := uuid.Parse(c.SessionID); err != nil || id.String() != c.SessionID {
		return nil, newErr(ErrInvalidToken, "malformed session id")
	}
	kid, _ := tok.Header["kid"].(string)
	s.verified.put(bearer, cachedClaims{kid: kid, until: c.ExpiresAt.Add(leeway), claims: Claims{
		Subject: c.Subject, SessionID: c.SessionID, ID: c.ID, Issuer: c.Issuer, Audience: []string(c.Audience),
		ExpiresAt: c.ExpiresAt.UTC(), IssuedAt: c.IssuedAt.UTC()}})
	return &Claims{
		Subject:   c.Subject,
		SessionID: c.SessionID,
		ID:        c.ID,
		Issuer:    c.Issuer,
		Audience:  []string(c.Audience),
		ExpiresAt: c.ExpiresAt.UTC(),
		IssuedAt:  c.IssuedAt.UTC(),
	}, nil
}

// compactJWS accepts three base64url segments and nothing else; the base64
// decoder would skip line breaks, which would let altered strings pass.
func compactJWS(s string) bool {
	if len(s) == 0 || len(s) > maxTokenLen {
		return false
	}
	dots := 0
	for i := 0; i < len(s); i++ {
		switch jwsByte[s[i]] {
		case jwsDot:
			dots++
		case jwsOther:
			return false
		}
	}
	return dots == 2
}

// jwsByte classifies every byte for compactJWS (a table: it runs over every
// pull's whole token).
var jwsByte = func() (t [256]uint8) {
	for c := range 256 {
		switch {
		case c == '.':
			t[c] = jwsDot
		case c >= 'A' && c <= 'Z', c >= 'a' && c <= 'z', c >= '0' && c <= '9', c == '-', c == '_':
			t[c] = jwsBase64URL
		default:
			t[c] = jwsOther
		}
	}
	return t
}()

const (
	jwsOther uint8 = iota
	jwsBase64URL
	jwsDot
)

// parseFailure names why the jwt parser refused a token, in words safe to
// show the client.
func parseFailure(tok *jwt.Token, err error) string {
	switch {
	case errors.Is(err, jwt.ErrTokenMalformed):
		return "malformed token"
	case tok == nil || tok.Method == nil || tok.Method.Alg() != algEdDSA:
		return "unsupported algorithm"
	case errors.Is(err, jwt.ErrTokenSignatureInvalid):
		return "invalid signature"
	case errors.Is(err, jwt.ErrTokenRequiredClaimMissing):
		return "missing claim"
	case errors.Is(err, jwt.ErrTokenExpired):
		return "token expired"
	case errors.Is(err, jwt.ErrTokenNotValidYet), errors.Is(err, jwt.ErrTokenUsedBeforeIssued):
		return "token not valid yet"
	case errors.Is(err, jwt.ErrTokenInvalidIssuer):
		return "wrong issuer"
	case errors.Is(err, jwt.ErrTokenInvalidAudience):
		return "wrong audience"
	default:
		return "invalid token"
	}
}

// verifiedCache remembers access tokens whose signature and claims checked
// out, until they expire. Ed25519 verification is the largest CPU cost of a
// token pull, and a token's session is read and checked on every use anyway
// (revocation takes effect at once), so a cached signature changes no
// outcome. Bounded: when full it starts over.
type verifiedCache struct {
	mu sync.Mutex
	m  map[string]cachedClaims
}

type cachedClaims struct {
	claims Claims
	kid    string
	until  time.Time
}

const verifiedCacheSize = 8192

func (v *verifiedCache) get(bearer string, now time.Time) (cachedClaims, bool) {
	v.mu.Lock()
	defer v.mu.Unlock()
	c, ok := v.m[bearer]
	if ok && !now.Before(c.until) {
		delete(v.m, bearer)
		return cachedClaims{}, false
	}
	return c, ok
}

func (v *verifiedCache) put(bearer string, c cachedClaims) {
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.m == nil || len(v.m) >= verifiedCacheSize {
		v.m = make(map[string]cachedClaims, 256)
	}
	v.m[bearer] = c
}
