package devices

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/google/uuid"

	"github.com/tokenwarm/tokenwarm/models"
)

// Tokens is what a device receives when a session starts or refreshes.
type Tokens struct {
	AccessToken  string
	TokenType    string // always "Bearer"
	ExpiresIn    int    // seconds until AccessToken expires
	RefreshToken string
	SessionID    string
	Owner        string
	// ConnectionIDs are the owner's connections when the session started
	// from a code (StartSession), read with it in one transaction.
	ConnectionIDs []string
}

// Reasons recorded on revoked sessions.
const (
	ReasonRefreshReuse  = models.DeviceRevokedReuse
	ReasonIdleExpired   = models.DeviceRevokedIdleExpired
	ReasonClientRevoked = "revoked by client"
)

// maxLabelLen bounds the free-text device label.
const maxLabelLen = 200

// CreateSession starts a session of owner on a device.
func (s *Service) CreateSession(ctx context.Context, owner, deviceLabel string) (*Tokens, error) {
	if owner == "" {
		return nil, newErr(ErrInvalidRequest, "owner is required")
	}
	if len(deviceLabel) > maxLabelLen {
		return nil, newErr(ErrInvalidRequest, fmt.Sprintf("device label is longer than %d bytes", maxLabelLen))
	}
	// Fetched before the transaction: on SQLite a key load inside it would
	// wait for the one connection the transaction holds.
	ks, err := s.signer(ctx)
	if err != nil {
		return nil, err
	}
	now := s.now()
	sess := models.DeviceSession{
		ID: uuid.NewString(), Owner: owner, DeviceLabel: deviceLabel, Generation: 1,
		CreatedAt: now, LastUsedAt: now, IdleExpiresAt: now.Add(s.cfg.RefreshIdleTTL),
	}
	refresh := newSecret(refreshPrefix)
	access, err := s.accessToken(ks, owner, sess.ID, now)
	if err != nil {
		return nil, err
	}
	if err := s.db.CreateDeviceSession(ctx, sess, hashSecret(refresh)); err != nil {
		return nil, fmt.Errorf("devices: create session: %w", err)
	}
	return s.tokens(access, refresh, &sess), nil
}

// Refresh trades a refresh token for a new access token and a new refresh
// token. The presented token is spent: presenting it again is reuse, which
// revokes the session, and so does losing a race against another
// presentation of it. Within the reuse interval, while its successor is
// unused, presenting it again (or losing that race) instead answers the
// same successor with a fresh access token.
func (s *Service) Refresh(ctx context.Context, refreshToken string) (*Tokens, error) {
	if !wellFormed(refreshToken, refreshPrefix) {
		return nil, newErr(ErrInvalidGrant, "unknown refresh token")
	}
	ks, err := s.signer(ctx)
	if err != nil {
		return nil, err
	}
	now := s.now()
	next := newSecret(refreshPrefix)
	// One transaction spends the token and stores its successor; a refusal
	// that revoked the session (reuse, idle expiry) is committed first.
	var keep models.DeviceReuse
	if s.cfg.RefreshReuseInterval > 0 {
		keep = models.DeviceReuse{Until: now.Add(s.cfg.RefreshReuseInterval), Seal: func(sessionID string, generation int64) (string, error) {
			return s.ring.Seal(next, successorAD(sessionID, generation))
		}}
	}
	sess, reissued, err := s.db.RotateDeviceRefreshToken(ctx, hashSecret(refreshToken), hashSecret(next), now, now.Add(s.cfg.RefreshIdleTTL), keep)
	switch {
	case errors.Is(err, models.ErrNotFound):
		return nil, newErr(ErrInvalidGrant, "unknown refresh token")
	case errors.Is(err, models.ErrDeviceTokenReuse):
		if s.cfg.OnReuse != nil {
			s.cfg.OnReuse()
		}
		return nil, newErr(ErrRefreshReuse, "session revoked")
	case errors.Is(err, models.ErrDeviceSessionRevoked):
		return nil, newErr(ErrInvalidGrant, "session revoked")
	case errors.Is(err, models.ErrDeviceSessionExpired):
		return nil, newErr(ErrInvalidGrant, "session expired")
	case err != nil:
		return nil, fmt.Errorf("devices: refresh: %w", err)
	}
	if reissued != "" {
		// A retry within the reuse interval: the session's current token,
		// kept sealed for it.
		if next, err = s.ring.Open(reissued, successorAD(sess.ID, sess.Generation)); err != nil {
			return nil, fmt.Errorf("devices: refresh: open the kept successor: %w", err)
		}
	}
	access, err := s.accessToken(ks, sess.Owner, sess.ID, now)
	if err != nil {
		return nil, fmt.Errorf("devices: refresh: %w", err)
	}
	return s.tokens(access, next, sess), nil
}

// successorAD binds a kept successor to its session and generation: it
// opens only as the current token of that session.
func successorAD(sessionID string, generation int64) string {
	return fmt.Sprintf("device_refresh_successor:%s:%d", sessionID, generation)
}

// RevokeByRefreshToken ends the session of a refresh token (RFC 7009): any
// token of the family, current or rotated, will do. An unknown token is not
// an error.
func (s *Service) RevokeByRefreshToken(ctx context.Context, refreshToken string) error {
	if !wellFormed(refreshToken, refreshPrefix) {
		return nil
	}
	err := s.db.RevokeDeviceFamily(ctx, hashSecret(refreshToken), ReasonClientRevoked, s.now())
	if errors.Is(err, models.ErrNotFound) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("devices: revoke: %w", err)
	}
	return nil
}

// CheckRefreshClient refuses (ErrWrongClient) a refresh token of a session
// started by another client than clientID, before the token is spent. An
// unknown token passes: Refresh refuses it.
func (s *Service) CheckRefreshClient(ctx context.Context, refreshToken, clientID string) error {
	if !wellFormed(refreshToken, refreshPrefix) {
		return nil
	}
	sess, err := s.db.DeviceSessionOfRefreshToken(ctx, hashSecret(refreshToken))
	if errors.Is(err, models.ErrNotFound) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("devices: refresh client: %w", err)
	}
	if sess.ClientID != clientID {
		return newErr(ErrWrongClient, "refresh token was not issued to this client")
	}
	return nil
}

// Revoke ends the session of a device token (RFC 7009): a refresh token
// of the session, current or rotated, or a valid access token. Unknown,
// invalid and already revoked tokens are not an error. clientID, when not
// empty, must be the client the session was started by (ErrWrongClient,
// nothing revoked).
func (s *Service) Revoke(ctx context.Context, token, clientID string) error {
	var sess *models.DeviceSession
	var err error
	switch {
	case wellFormed(token, refreshPrefix):
		sess, err = s.db.DeviceSessionOfRefreshToken(ctx, hashSecret(token))
	case compactJWS(token):
		claims, verr := s.VerifySignature(ctx, token)
		if errors.Is(verr, ErrInvalidToken) {
			return nil
		}
		if verr != nil {
			return verr
		}
		sess, err = s.db.DeviceSessionForVerify(ctx, claims.SessionID)
		if err == nil && claims.CheckSession(sess.Owner, nil) != nil {
			return nil
		}
	default:
		return nil
	}
	if errors.Is(err, models.ErrNotFound) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("devices: revoke: %w", err)
	}
	if clientID != "" && sess.ClientID != clientID {
		return newErr(ErrWrongClient, "token was not issued to this client")
	}
	if sess.RevokedAt != nil {
		return nil
	}
	err = s.db.RevokeDeviceSession(ctx, sess.ID, ReasonClientRevoked, s.now())
	if err != nil && !errors.Is(err, models.ErrNotFound) {
		return fmt.Errorf("devices: revoke: %w", err)
	}
	return nil
}

// RevokeSession ends a session. Revoking a revoked session is a no-op that
// keeps the first reason.
func (s *Service) RevokeSession(ctx context.Context, sessionID, reason string) error {
	if id, err := uuid.Parse(sessionID); err != nil || id.String() != sessionID {
		return newErr(ErrNotFound, "no such session")
	}
	if reason == "" {
		reason = "revoked"
	}
	err := s.db.RevokeDeviceSession(ctx, sessionID, reason, s.now())
	if errors.Is(err, models.ErrNotFound) {
		return newErr(ErrNotFound, "no such session")
	}
	if err != nil {
		return fmt.Errorf("devices: revoke session: %w", err)
	}
	return nil
}

func (s *Service) tokens(access, refresh string, sess *models.DeviceSession) *Tokens {
	return &Tokens{
		AccessToken:  access,
		TokenType:    "Bearer",
		ExpiresIn:    int(s.cfg.AccessTTL / time.Second),
		RefreshToken: refresh,
		SessionID:    sess.ID,
		Owner:        sess.Owner,
	}
}
