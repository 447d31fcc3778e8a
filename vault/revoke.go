package vault

import (
	"context"
	"errors"

	"gorm.io/gorm"

	"github.com/tokenwarm/tokenwarm/models"
)

// Revoke ends a connection for good. Under the lock refreshes take (so no
// refresh can rotate the token meanwhile), revoke is called with the
// stored refresh token; only if it succeeds is the connection marked
// revoked, its tokens cleared and an event written, in one transaction.
// A failure of revoke is returned as it is and changes nothing. Revoking a
// revoked connection calls nothing.
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
		if err := tx.Model(&models.Connection{}).Where("id = ?", id).Updates(map[string]any{
			"status": models.StatusRevoked, "refresh_token_sealed": "", "access_token_sealed": "",
			"access_token_issued_at": nil, "access_token_expires_at": nil, "next_attempt_at": nil, "updated_at": now,
		}).Error; err != nil {
			return err
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
		err = v.inTx(ctx, write)
	}
	if err != nil {
		return nil, &Error{Code: CodeInternal, Message: "Salesforce revoked the token but the connection could not be marked revoked; revoke again", cause: err}
	}
	c.Status, c.RefreshTokenSealed, c.AccessTokenSealed = models.StatusRevoked, "", ""
	c.AccessTokenIssuedAt, c.AccessTokenExpiresAt, c.NextAttemptAt, c.UpdatedAt = nil, nil, nil, now
	return &c, nil
}

// IsVaultError reports whether err came from the vault itself (as opposed
// to a caller-supplied function such as Revoke's).
func IsVaultError(err error) bool {
	var e *Error
	return errors.As(err, &e)
}
