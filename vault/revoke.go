package vault

import (
	"context"
	"errors"
	"time"

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
	row, release, err := v.lock(ctx, id)
	if err != nil {
		return nil, err
	}
	defer release()
	c := row.Conn
	if c.Status == models.StatusRevoked {
		return &c, nil
	}
	if row.Prior != nil && row.Prior.Live {
		return nil, &Error{Code: CodeUpstreamUnavailable, Message: "a refresh of this connection is still settling; retry", RetryAfter: time.Second}
	}
	if c.RefreshTokenSealed != "" {
		tok, err := v.OpenRefresh(&c)
		if err != nil {
			return nil, &Error{Code: CodeInternal, Message: "stored refresh token cannot be opened (wrong key ring?)", Err: err}
		}
		if err := revoke(ctx, c.LoginURL, tok); err != nil {
			return nil, err
		}
	}
	now := v.clock.Now().UTC()
	if err := row.StoreRevocation(ctx, now, []models.Event{v.event(id, models.EventRevoked, cause, 0, "", detail)}); err != nil {
		if models.IsFenced(err) {
			return nil, v.storeError(err)
		}
		return nil, &Error{Code: CodeInternal, Message: "Salesforce revoked the token but the connection could not be marked revoked; revoke again", Err: err}
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
