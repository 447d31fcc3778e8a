package devices

import (
	"context"
	"errors"
	"fmt"

	"github.com/google/uuid"

	"github.com/tokenwarm/tokenwarm/models"
	"github.com/tokenwarm/tokenwarm/pkce"
)

// Handoff is what a handoff code stands for.
type Handoff struct {
	ConnectionID   string
	Owner          string
	AppRedirectURI string
	// ClientID is the app client (TOKENWARM_APP_CLIENTS) the code was
	// issued to; empty for the legacy flow, which names none.
	ClientID string
}

// IssueHandoff returns a one-time code that, together with the verifier of
// appChallenge, starts a device session for owner (the legacy flow, with
// no client). Only the code's SHA-256 is stored.
func (s *Service) IssueHandoff(ctx context.Context, connectionID, owner, appChallenge, appRedirectURI string) (string, error) {
	return s.IssueHandoffFor(ctx, Handoff{ConnectionID: connectionID, Owner: owner, AppRedirectURI: appRedirectURI}, appChallenge)
}

// IssueHandoffFor is IssueHandoff for h, bound to h's client when it
// names one: only that client can redeem the code.
func (s *Service) IssueHandoffFor(ctx context.Context, h Handoff, appChallenge string) (string, error) {
	connectionID, owner, appRedirectURI := h.ConnectionID, h.Owner, h.AppRedirectURI
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
		AppChallenge: appChallenge, AppRedirectURI: appRedirectURI, ClientID: h.ClientID,
		CreatedAt: now, ExpiresAt: now.Add(s.cfg.HandoffTTL),
	}
	if err := s.db.CreateHandoffCode(ctx, row); err != nil {
		return "", fmt.Errorf("devices: issue handoff: %w", err)
	}
	return code, nil
}

// RedeemHandoff spends a handoff code without starting a session (the
// demo pages). Every attempt spends it, a wrong verifier included, so
// whoever intercepted a code gets one guess. An app's code is traded with
// StartSession instead, which spends it with the session it starts.
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
	return &Handoff{ConnectionID: row.ConnectionID, Owner: row.Owner, AppRedirectURI: row.AppRedirectURI, ClientID: row.ClientID}, nil
}

// SessionRequest is a handoff (authorization) code presented at the token
// endpoint, with what the client said about itself.
type SessionRequest struct {
	Code, CodeVerifier string
	// RedirectURI, when not empty, must be the one the code was issued
	// for; RequireRedirectURI makes it mandatory (grant_type
	// authorization_code, RFC 6749 section 4.1.3).
	RedirectURI        string
	RequireRedirectURI bool
	// ClientID is the presenting client (empty: none named). A code issued
	// to a client is redeemed by that client only, and a code issued to
	// none by a caller that names none.
	ClientID    string
	DeviceLabel string
}

// StartSession trades a handoff code for a device session. The code is
// spent in the transaction that stores the session: if the session cannot
// be stored the code still works. Every refused attempt (wrong verifier,
// client or redirect URI) spends the code, so whoever intercepted one gets
// one guess.
func (s *Service) StartSession(ctx context.Context, r SessionRequest) (*Tokens, *Handoff, error) {
	if !wellFormed(r.Code, handoffPrefix) {
		return nil, nil, newErr(ErrInvalidGrant, "unknown code")
	}
	if r.RequireRedirectURI && r.RedirectURI == "" {
		return nil, nil, newErr(ErrInvalidRequest, "redirect_uri is required")
	}
	if len(r.DeviceLabel) > maxLabelLen {
		return nil, nil, newErr(ErrInvalidRequest, fmt.Sprintf("device label is longer than %d bytes", maxLabelLen))
	}
	// Fetched before the transaction: on SQLite a key load inside it would
	// wait for the one connection the transaction holds.
	ks, err := s.signer(ctx)
	if err != nil {
		return nil, nil, err
	}
	now := s.now()
	refresh := newSecret(refreshPrefix)
	var access string
	var h *Handoff
	var sess models.DeviceSession
	ids, err := s.db.StartDeviceSessionFromHandoff(ctx, hashSecret(r.Code), now, func(c models.HandoffCode) (models.DeviceSession, string, error) {
		switch {
		case !now.Before(c.ExpiresAt):
			return sess, "", newErr(ErrInvalidGrant, "code expired")
		case pkce.Verify(r.CodeVerifier, c.AppChallenge) != nil:
			return sess, "", newErr(ErrInvalidGrant, "wrong code verifier")
		case r.ClientID != c.ClientID:
			return sess, "", newErr(ErrWrongClient, "code was not issued to this client")
		case r.RedirectURI != "" && r.RedirectURI != c.AppRedirectURI:
			return sess, "", newErr(ErrInvalidGrant, "redirect_uri does not match the authorization request")
		}
		sess = models.DeviceSession{
			ID: uuid.NewString(), Owner: c.Owner, DeviceLabel: r.DeviceLabel, Generation: 1, ClientID: c.ClientID,
			CreatedAt: now, LastUsedAt: now, IdleExpiresAt: now.Add(s.cfg.RefreshIdleTTL),
		}
		var err error
		if access, err = s.accessToken(ks, c.Owner, sess.ID, now); err != nil {
			return sess, "", err
		}
		h = &Handoff{ConnectionID: c.ConnectionID, Owner: c.Owner, AppRedirectURI: c.AppRedirectURI, ClientID: c.ClientID}
		return sess, hashSecret(refresh), nil
	})
	switch {
	case errors.Is(err, models.ErrNotFound):
		return nil, nil, newErr(ErrInvalidGrant, "unknown code")
	case errors.Is(err, models.ErrHandoffCodeUsed):
		return nil, nil, newErr(ErrInvalidGrant, "code already used")
	case errors.Is(err, ErrInvalidGrant):
		return nil, nil, err
	case err != nil:
		return nil, nil, fmt.Errorf("devices: start session: %w", err)
	}
	toks := s.tokens(access, refresh, &sess)
	toks.ConnectionIDs = ids
	return toks, h, nil
}
