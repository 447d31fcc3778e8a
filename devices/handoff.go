package devices

import (
	"context"
	"errors"
	"fmt"

	"github.com/google/uuid"

	"github.com/tokenwarm/tokenwarm/models"
	"github.com/tokenwarm/tokenwarm/pkce"
)

// Handoff is what a redeemed handoff code stood for.
type Handoff struct {
	ConnectionID   string
	Owner          string
	AppRedirectURI string
}

// IssueHandoff returns a one-time code that, together with the verifier of
// appChallenge, starts a device session for owner. Only the code's SHA-256
// is stored.
func (s *Service) IssueHandoff(ctx context.Context, connectionID, owner, appChallenge, appRedirectURI string) (string, error) {
	if err := pkce.ValidChallenge(appChallenge, pkce.MethodS256); err != nil {
		return "", newErr(ErrInvalidRequest, "code_challenge must be an S256 challenge")
	}
	if id, err := uuid.Parse(connectionID); err != nil || id.String() != connectionID {
		return "", newErr(ErrInvalidRequest, "malformed connection id")
	}
	if owner == "" || appRedirectURI == "" {
		return "", newErr(ErrInvalidRequest, "owner and redirect URI are required")
	}
	code := newSecret(handoffPrefix)
	now := s.now()
	row := models.HandoffCode{
		CodeHash: hashSecret(code), ConnectionID: connectionID, Owner: owner,
		AppChallenge: appChallenge, AppRedirectURI: appRedirectURI,
		CreatedAt: now, ExpiresAt: now.Add(s.cfg.HandoffTTL),
	}
	if err := s.db.CreateHandoffCode(ctx, row); err != nil {
		return "", fmt.Errorf("devices: issue handoff: %w", err)
	}
	return code, nil
}

// RedeemHandoff spends a handoff code. Every attempt spends it, a wrong
// verifier included, so whoever intercepted a code gets one guess.
func (s *Service) RedeemHandoff(ctx context.Context, code, codeVerifier string) (*Handoff, error) {
	if !wellFormed(code, handoffPrefix) {
		return nil, newErr(ErrInvalidGrant, "unknown code")
	}
	now := s.now()
	// Spent by the first attempt; the read after the spend is retried once
	// on a fresh connection, so its failure does not cost the user the code.
	row, spentNow, err := s.db.SpendHandoffCode(ctx, hashSecret(code), now)
	if errors.Is(err, models.ErrNotFound) {
		return nil, newErr(ErrInvalidGrant, "unknown code")
	}
	if err != nil {
		return nil, fmt.Errorf("devices: redeem handoff: %w", err)
	}
	switch {
	case !spentNow:
		return nil, newErr(ErrInvalidGrant, "code already used")
	case !now.Before(row.ExpiresAt):
		return nil, newErr(ErrInvalidGrant, "code expired")
	case pkce.Verify(codeVerifier, row.AppChallenge) != nil:
		return nil, newErr(ErrInvalidGrant, "wrong code verifier")
	}
	return &Handoff{ConnectionID: row.ConnectionID, Owner: row.Owner, AppRedirectURI: row.AppRedirectURI}, nil
}
