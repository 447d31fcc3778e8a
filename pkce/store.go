package pkce

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"time"

	"github.com/tokenwarm/tokenwarm/clock"
	"github.com/tokenwarm/tokenwarm/models"
	"github.com/tokenwarm/tokenwarm/seal"
)

// Purpose binds a pending authorization to what it was started for.
type Purpose string

// Purposes of an authorization.
const (
	PurposeConnect Purpose = "connect"
	PurposeReauth  Purpose = "reauth"
)

// ErrStateInvalid is returned for a state that is unknown, already used or
// expired. The three are not told apart, to the caller or to an attacker.
var ErrStateInvalid = errors.New("pkce: authorization state is unknown, used or expired")

// Pending is an authorization in progress.
type Pending struct {
	Purpose Purpose
	// ConnectionID is the connection being re-authorized (PurposeReauth).
	ConnectionID string
	// Verifier is tokenwarm's own PKCE verifier for Salesforce.
	Verifier string
	LoginURL string
	// The app's side: where to send the handoff code, the app's S256
	// challenge for it, and the app's own opaque state.
	AppRedirectURI string
	AppChallenge   string
	AppState       string
	// ClientID is the app client (TOKENWARM_APP_CLIENTS) that started the
	// flow; empty for the legacy flow.
	ClientID string
}

// Storage is what the store needs of the database; *models.DB implements
// it. The stored form keeps the state only as its hash, the verifier
// sealed.
type Storage interface {
	SavePending(ctx context.Context, p models.PendingAuthorization) error
	// TakePending spends a pending authorization once: models.ErrNotFound
	// when it is unknown, already taken or expired.
	TakePending(ctx context.Context, stateHash string, now time.Time) (*models.PendingAuthorization, error)
	PurgePending(ctx context.Context, cutoff time.Time) (int64, error)
	// For Reseal: pages by state hash, and a compare-and-swap.
	PendingAuthorizationsAfter(ctx context.Context, after string, n int) ([]models.PendingAuthorization, error)
	ReplaceSealedVerifier(ctx context.Context, stateHash, old, new string) (bool, error)
}

// Store keeps pending authorizations: single use, expiring.
type Store struct {
	db    Storage
	ring  *seal.Ring
	clock clock.Clock
	ttl   time.Duration
}

// NewStore returns a store whose states expire after ttl (10 minutes if 0).
func NewStore(db Storage, ring *seal.Ring, clk clock.Clock, ttl time.Duration) *Store {
	if ttl <= 0 {
		ttl = 10 * time.Minute
	}
	if clk == nil {
		clk = clock.System{}
	}
	return &Store{db: db, ring: ring, clock: clk, ttl: ttl}
}

// Create stores p and returns its state: 256 random bits, base64url.
func (s *Store) Create(ctx context.Context, p Pending) (string, error) {
	if p.Purpose != PurposeConnect && p.Purpose != PurposeReauth {
		return "", errors.New("pkce: unknown purpose")
	}
	if (p.Purpose == PurposeReauth) != (p.ConnectionID != "") {
		return "", errors.New("pkce: a re-authorization names its connection, and only it does")
	}
	if err := ValidVerifier(p.Verifier); err != nil {
		return "", err
	}
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return "", err
	}
	state := base64.RawURLEncoding.EncodeToString(b)
	h := stateHash(state)
	sealed, err := s.ring.Seal(p.Verifier, verifierAD(h))
	if err != nil {
		return "", err
	}
	now := s.clock.Now().UTC()
	row := models.PendingAuthorization{StateHash: h, Purpose: string(p.Purpose), VerifierSealed: sealed, LoginURL: p.LoginURL,
		AppRedirectURI: p.AppRedirectURI, AppChallenge: p.AppChallenge, AppState: p.AppState, ClientID: p.ClientID,
		CreatedAt: now, ExpiresAt: now.Add(s.ttl)}
	if p.ConnectionID != "" {
		row.ConnectionID = &p.ConnectionID
	}
	if err := s.db.SavePending(ctx, row); err != nil {
		return "", err
	}
	return state, nil
}

// Take consumes a state: the first caller gets the pending authorization,
// every later one (and any caller after expiry) gets ErrStateInvalid.
func (s *Store) Take(ctx context.Context, state string) (*Pending, error) {
	if state == "" || len(state) > 256 {
		return nil, ErrStateInvalid
	}
	h := stateHash(state)
	now := s.clock.Now().UTC()
	row, err := s.db.TakePending(ctx, h, now)
	if errors.Is(err, models.ErrNotFound) {
		return nil, ErrStateInvalid
	}
	if err != nil {
		return nil, err
	}
	verifier, err := s.ring.Open(row.VerifierSealed, verifierAD(h))
	if err != nil {
		return nil, err
	}
	p := &Pending{Purpose: Purpose(row.Purpose), Verifier: verifier, LoginURL: row.LoginURL,
		AppRedirectURI: row.AppRedirectURI, AppChallenge: row.AppChallenge, AppState: row.AppState, ClientID: row.ClientID}
	if row.ConnectionID != nil {
		p.ConnectionID = *row.ConnectionID
	}
	return p, nil
}

func verifierAD(stateHash string) string { return "pending_verifier|" + stateHash }

// Reseal moves the sealed verifier of every stored pending authorization
// (taken and expired ones too, until housekeeping deletes them) to the
// ring's active key, by compare-and-swap, so it runs safely next to the
// servers. It returns how many it replaced and how many changed meanwhile.
func (s *Store) Reseal(ctx context.Context) (replaced, missed int, err error) {
	replaced, missed, err = s.ring.ResealAll(ctx, func(ctx context.Context, after string, n int) ([]seal.Stored, error) {
		rows, err := s.db.PendingAuthorizationsAfter(ctx, after, n)
		vals := make([]seal.Stored, len(rows))
		for i, r := range rows {
			vals[i] = seal.Stored{Key: r.StateHash, Sealed: r.VerifierSealed, AD: verifierAD(r.StateHash), Name: "a pending authorization"}
		}
		return vals, err
	}, s.db.ReplaceSealedVerifier)
	if err != nil {
		err = fmt.Errorf("pkce: reseal: %w", err)
	}
	return replaced, missed, err
}

// Purge deletes pending authorizations that expired before cutoff.
func (s *Store) Purge(ctx context.Context, cutoff time.Time) (int64, error) {
	return s.db.PurgePending(ctx, cutoff)
}

func stateHash(state string) string {
	sum := sha256.Sum256([]byte(state))
	return hex.EncodeToString(sum[:])
}
