package models

import (
	"context"
	"time"

	"gorm.io/gorm"
)

// PendingAuthorization is an authorization in progress (package pkce): the
// state only as its SHA-256, tokenwarm's PKCE verifier sealed.
type PendingAuthorization struct {
	StateHash      string `gorm:"primaryKey"`
	Purpose        string
	ConnectionID   *string
	VerifierSealed string
	LoginURL       string
	AppRedirectURI string
	AppChallenge   string
	AppState       string
	// ClientID is the app client that started the authorization
	// (migration 0008); empty for the legacy flow.
	ClientID  string
	CreatedAt time.Time
	ExpiresAt time.Time
	UsedAt    *time.Time
}

// TableName pins the table name.
func (PendingAuthorization) TableName() string { return "pending_authorizations" }

// SavePending stores a pending authorization.
func (d *DB) SavePending(ctx context.Context, p PendingAuthorization) error {
	return d.gorm.WithContext(ctx).Create(&p).Error
}

// TakePending spends the pending authorization of stateHash and returns
// it: single use, across pools and replicas (a conditional update decides).
// A state that is unknown, already taken or expired at now is ErrNotFound,
// all three alike.
func (d *DB) TakePending(ctx context.Context, stateHash string, now time.Time) (*PendingAuthorization, error) {
	now = now.UTC()
	var p PendingAuthorization
	err := d.gorm.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		res := tx.Model(&PendingAuthorization{}).Where("state_hash = ? AND used_at IS NULL AND expires_at > ?", stateHash, now).
			Update("used_at", now)
		if res.Error != nil {
			return res.Error
		}
		if res.RowsAffected != 1 {
			return ErrNotFound
		}
		p = PendingAuthorization{}
		return tx.Where("state_hash = ?", stateHash).Take(&p).Error
	})
	if err != nil {
		return nil, err
	}
	return &p, nil
}

// PurgePending deletes pending authorizations that expired before cutoff.
func (d *DB) PurgePending(ctx context.Context, cutoff time.Time) (int64, error) {
	res := d.gorm.WithContext(ctx).Where("expires_at < ?", cutoff.UTC()).Delete(&PendingAuthorization{})
	return res.RowsAffected, res.Error
}
