package devices

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/google/uuid"
	"gorm.io/gorm"
	"gorm.io/gorm/clause"

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
}

// Reasons recorded on revoked sessions.
const (
	ReasonRefreshReuse  = "refresh token reuse"
	ReasonIdleExpired   = "idle expired"
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
	sess := deviceSession{
		ID: uuid.NewString(), Owner: owner, DeviceLabel: deviceLabel, Generation: 1,
		CreatedAt: now, LastUsedAt: now, IdleExpiresAt: now.Add(s.cfg.RefreshIdleTTL),
	}
	refresh := newSecret(refreshPrefix)
	access, err := s.accessToken(ks, owner, sess.ID, now)
	if err != nil {
		return nil, err
	}
	err = s.db.Gorm.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		if err := tx.Create(&sess).Error; err != nil {
			return err
		}
		return tx.Create(&deviceRefreshToken{TokenHash: hashSecret(refresh), SessionID: sess.ID, Generation: 1, CreatedAt: now}).Error
	})
	if err != nil {
		return nil, fmt.Errorf("devices: create session: %w", err)
	}
	return s.tokens(access, refresh, &sess), nil
}

// Refresh trades a refresh token for a new access token and a new refresh
// token. The presented token is spent: presenting it again is reuse, which
// revokes the session, and so does losing a race against another
// presentation of it.
func (s *Service) Refresh(ctx context.Context, refreshToken string) (*Tokens, error) {
	if !wellFormed(refreshToken, refreshPrefix) {
		return nil, newErr(ErrInvalidGrant, "unknown refresh token")
	}
	ks, err := s.signer(ctx)
	if err != nil {
		return nil, err
	}
	hash := hashSecret(refreshToken)
	var out *Tokens
	// refusal is returned after commit: a revocation must be kept.
	var refusal error
	err = s.db.Gorm.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		var tok deviceRefreshToken
		err := tx.Where("token_hash = ?", hash).Take(&tok).Error
		if errors.Is(err, gorm.ErrRecordNotFound) {
			refusal = newErr(ErrInvalidGrant, "unknown refresh token")
			return nil
		}
		if err != nil {
			return err
		}
		// Refreshes of one session queue on this lock (Postgres; on SQLite
		// the transaction holds the only connection). NO KEY UPDATE, not
		// UPDATE, so inserting a child token does not wait for it.
		q := tx.Where("id = ?", tok.SessionID)
		if s.db.Dialect == models.Postgres {
			q = q.Clauses(clause.Locking{Strength: "NO KEY UPDATE"})
		}
		var sess deviceSession
		if err := q.Take(&sess).Error; err != nil {
			return err
		}
		// Read again under the lock: the winner of a race has rotated it.
		if err := tx.Where("token_hash = ?", hash).Take(&tok).Error; err != nil {
			return err
		}
		now := s.now()
		reuse := func() error {
			refusal = newErr(ErrRefreshReuse, "session revoked")
			_, err := revokeSession(tx, sess.ID, ReasonRefreshReuse, now)
			return err
		}
		switch {
		case tok.RotatedAt != nil:
			return reuse()
		case sess.RevokedAt != nil:
			refusal = newErr(ErrInvalidGrant, "session revoked")
			return nil
		case !now.Before(sess.IdleExpiresAt):
			refusal = newErr(ErrInvalidGrant, "session expired")
			_, err := revokeSession(tx, sess.ID, ReasonIdleExpired, now)
			return err
		}
		// Conditional updates decide the race even without the lock.
		res := tx.Model(&deviceRefreshToken{}).Where("token_hash = ? AND rotated_at IS NULL", hash).Update("rotated_at", now)
		if res.Error != nil {
			return res.Error
		}
		if res.RowsAffected != 1 {
			return reuse()
		}
		res = tx.Model(&deviceSession{}).Where("id = ? AND generation = ? AND revoked_at IS NULL", sess.ID, tok.Generation).
			Updates(map[string]any{"generation": tok.Generation + 1, "last_used_at": now, "idle_expires_at": now.Add(s.cfg.RefreshIdleTTL)})
		if res.Error != nil {
			return res.Error
		}
		if res.RowsAffected != 1 {
			return reuse()
		}
		next := newSecret(refreshPrefix)
		if err := tx.Create(&deviceRefreshToken{TokenHash: hashSecret(next), SessionID: sess.ID, Generation: tok.Generation + 1, CreatedAt: now}).Error; err != nil {
			return err
		}
		access, err := s.accessToken(ks, sess.Owner, sess.ID, now)
		if err != nil {
			return err
		}
		out = s.tokens(access, next, &sess)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("devices: refresh: %w", err)
	}
	if refusal != nil {
		return nil, refusal
	}
	return out, nil
}

// RevokeByRefreshToken ends the session of a refresh token (RFC 7009): any
// token of the family, current or rotated, will do. An unknown token is not
// an error.
func (s *Service) RevokeByRefreshToken(ctx context.Context, refreshToken string) error {
	if !wellFormed(refreshToken, refreshPrefix) {
		return nil
	}
	db := s.db.Gorm.WithContext(ctx)
	var tok deviceRefreshToken
	err := db.Where("token_hash = ?", hashSecret(refreshToken)).Take(&tok).Error
	if errors.Is(err, gorm.ErrRecordNotFound) {
		return nil
	}
	if err == nil {
		_, err = revokeSession(db, tok.SessionID, ReasonClientRevoked, s.now())
	}
	if err != nil {
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
	db := s.db.Gorm.WithContext(ctx)
	revoked, err := revokeSession(db, sessionID, reason, s.now())
	if err != nil {
		return fmt.Errorf("devices: revoke session: %w", err)
	}
	if revoked {
		return nil
	}
	var n int64
	if err := db.Model(&deviceSession{}).Where("id = ?", sessionID).Count(&n).Error; err != nil {
		return fmt.Errorf("devices: revoke session: %w", err)
	}
	if n == 0 {
		return newErr(ErrNotFound, "no such session")
	}
	return nil
}

// revokeSession revokes a session unless it already is, and reports
// whether it did.
func revokeSession(db *gorm.DB, id, reason string, now time.Time) (bool, error) {
	res := db.Model(&deviceSession{}).Where("id = ? AND revoked_at IS NULL", id).
		Updates(map[string]any{"revoked_at": now, "revoke_reason": reason})
	return res.RowsAffected == 1, res.Error
}

func (s *Service) tokens(access, refresh string, sess *deviceSession) *Tokens {
	return &Tokens{
		AccessToken:  access,
		TokenType:    "Bearer",
		ExpiresIn:    int(s.cfg.AccessTTL / time.Second),
		RefreshToken: refresh,
		SessionID:    sess.ID,
		Owner:        sess.Owner,
	}
}
