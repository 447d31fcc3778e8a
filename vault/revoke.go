package vault

import (
	"context"
	"errors"
	"time"

	"gorm.io/gorm"

	"github.com/tokenwarm/tokenwarm/models"
)

// Revoke ends a connection for good. Under the lock refreshes take (so no
// refresh can rotate the token meanwhile), revoke is called with the
// stored refresh token; only if it succeeds is the connection marked
// revoked, its tokens cleared and an event written, in one transaction.
// A failure of revoke is returned as it is and changes nothing. Revoking a
// revoked connection calls nothing. While another worker's attempt holds
// the token (its lease runs), revocation waits: that worker may be about to
// store a new token. The revocation moves the rotation count and removes
// any marker, so a late write of an earlier attempt is fenced off.
func (v *Vault) Revoke(ctx context.Context, id, cause, detail string, revoke func(ctx context.Context, loginURL, refreshToken string) error) (*models.Connection, error) {
	row, err := v.lock(ctx, id)
	if err != nil {
		return nil, err
	}
	defer row.release()
	c := row.conn
	if c.Status == models.StatusRevoked {
		return &c, nil
	}
	if row.prior != nil && row.prior.live {
		return nil, &Error{Code: CodeUpstreamUnavailable, Message: "a refresh of this connection is still settling; retry", RetryAfter: time.Second}
	}
	if c.RefreshTokenSealed != "" {
		tok, err := v.OpenRefresh(&c)
		if err != nil {
			return nil, &Error{Code: CodeInternal, Message: "stored refresh token cannot be opened (wrong key ring?)", cause: err}
		}
		if err := revoke(ctx, c.LoginURL, tok); err != nil {
			return nil, err
		}
	}
	now := v.clock.Now().UTC()
	write := func(tx *gorm.DB) error {
		u := tx.Model(&models.Connection{}).Where("id = ? AND rotation_count = ?", id, c.RotationCount).Updates(map[string]any{
			"status": models.StatusRevoked, "refresh_token_sealed": "", "access_token_sealed": "",
			"access_token_issued_at": nil, "access_token_expires_at": nil, "next_attempt_at": nil, "updated_at": now,
			"rotation_count": c.RotationCount + 1,
		})
		if u.Error != nil {
			return u.Error
		}
		if u.RowsAffected != 1 {
			return &fencedError{"the connection changed while it was being revoked"}
		}
		evs := []models.Event{v.event(id, models.EventRevoked, cause, 0, "", detail)}
		if err := tx.Create(&evs).Error; err != nil {
			return err
		}
		// Salesforce is no longer holding anything for this connection.
		if err := tx.Where("connection_id = ?", id).Delete(&models.RefreshAttempt{}).Error; err != nil {
			return err
		}
		if v.cfg.OnEvents != nil {
			if err := v.cfg.OnEvents(tx, evs); err != nil {
				return err
			}
		}
		return tx.Commit().Error
	}
	if row.tx != nil {
		err = write(row.tx)
		row.release()
	} else {
		err = v.inTx(ctx, func(tx *gorm.DB) error {
			if err := tx.Where("connection_id = ? AND lease_until > ?", id, v.now(0)).Take(&models.RefreshAttempt{}).Error; err == nil {
				return &fencedError{"a refresh attempt started meanwhile"}
			}
			return write(tx)
		})
	}
	if err != nil {
		return nil, &Error{Code: CodeInternal, Message: "Salesforce revoked the token but the connection could not be marked revoked; revoke again", cause: err}
	}
	c.Status, c.RefreshTokenSealed, c.AccessTokenSealed, c.RotationCount = models.StatusRevoked, "", "", c.RotationCount+1
	c.AccessTokenIssuedAt, c.AccessTokenExpiresAt, c.NextAttemptAt, c.UpdatedAt = nil, nil, nil, now
	return &c, nil
}

// IsVaultError reports whether err came from the vault itself (as opposed
// to a caller-supplied function such as Revoke's).
func IsVaultError(err error) bool {
	var e *Error
	return errors.As(err, &e)
}
