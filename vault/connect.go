package vault

import (
	"context"
	"fmt"

	"github.com/google/uuid"

	"github.com/tokenwarm/tokenwarm/models"
	"github.com/tokenwarm/tokenwarm/salesforce"
)

// Connected is the result of storing a fresh authorization.
type Connected struct {
	Connection *View
	// Reauthorized reports that an existing connection (same org and user)
	// took the new grant and kept its ID.
	Reauthorized bool
	// replaced is the refresh token the new grant replaced, revoked once
	// the new one is committed.
	replaced string
}

// Connect stores tokens from a completed authorization, upserting by
// (org, user) so a re-authorization keeps the connection ID. expect, when
// not empty, is the connection a re-authorization link was made for: a
// grant of anybody else is refused (CodeWrongUser). Tokens never leave the
// vault: a refused or unstorable grant is revoked at Salesforce, and so is
// the refresh token a re-authorization replaced, once the new one is
// committed (Salesforce allows five approvals per user and app).
func (v *Vault) Connect(ctx context.Context, loginURL, owner string, tok *salesforce.Token, expect string) (*Connected, error) {
	if tok.OrgID == "" || tok.UserID == "" || tok.RefreshToken == "" {
		return nil, newErr(CodeInternal, "authorization result lacks identity or refresh token")
	}
	if expect != "" {
		c, err := v.load(ctx, expect)
		if err != nil || c.OrgID != tok.OrgID || c.UserID != tok.UserID {
			v.revokeQuietly(loginURL, tok.RefreshToken)
			if err != nil && ErrorCode(err) != CodeNotFound {
				return nil, err
			}
			return nil, newErr(CodeWrongUser, "signed in as a different Salesforce user than the one of this connection")
		}
	}
	out, err := v.connect(ctx, loginURL, owner, tok)
	if err != nil && models.IsUniqueViolation(err) {
		// Another first-time connect of the same (org, user) inserted the
		// row between our look and our insert: ours is a re-authorization.
		out, err = v.connect(ctx, loginURL, owner, tok)
	}
	if err != nil {
		v.revokeQuietly(loginURL, tok.RefreshToken)
		return nil, &Error{Code: CodeInternal, Message: "could not store the connection", Err: err}
	}
	if out.replaced != "" && out.replaced != tok.RefreshToken {
		v.revokeQuietly(out.Connection.LoginURL, out.replaced)
	}
	return out, nil
}

// revokeQuietly revokes a token nobody will use again; a failure is logged,
// never returned (the grant it belonged to is settled either way).
func (v *Vault) revokeQuietly(loginURL, token string) {
	ctx, cancel := context.WithTimeout(context.Background(), v.cfg.UpstreamTimeout)
	defer cancel()
	if err := v.sf.Revoke(ctx, loginURL, token); err != nil {
		v.log.Warn("revoking a replaced or refused Salesforce token failed", "err", err)
	}
}

func (v *Vault) connect(ctx context.Context, loginURL, owner string, tok *salesforce.Token) (*Connected, error) {
	now := v.clock.Now().UTC()
	var out Connected
	stored, _, err := v.store.UpsertGrant(ctx, models.Grant{OrgID: tok.OrgID, UserID: tok.UserID,
		Build: func(existing *models.Connection) (models.Connection, models.Event, error) {
			id := uuid.NewString()
			if existing != nil {
				id = existing.ID
				if old, err := v.OpenRefresh(existing); err == nil {
					out.replaced = old
				}
			}
			sealedRefresh, err := v.SealRefresh(id, tok.RefreshToken)
			if err != nil {
				return models.Connection{}, models.Event{}, err
			}
			sealedAccess, err := v.SealAccess(id, tok.AccessToken)
			if err != nil {
				return models.Connection{}, models.Event{}, err
			}
			issued, expires := tok.IssuedAt.UTC(), tok.ExpiresAt.UTC()
			c := models.Connection{
				ID: id, Owner: owner, OrgID: tok.OrgID, UserID: tok.UserID, LoginURL: loginURL,
				InstanceURL: tok.InstanceURL, IdentityURL: tok.IdentityURL, Scopes: tok.Scope,
				Status: models.StatusActive, RefreshTokenSealed: sealedRefresh, AccessTokenSealed: sealedAccess,
				AccessTokenIssuedAt: &issued, AccessTokenExpiresAt: &expires,
				LastRefreshedAt: now, NextWarmAt: v.NextWarm(now), CreatedAt: now, UpdatedAt: now,
			}
			kind := models.EventConnected
			if existing != nil {
				kind = models.EventReauthorized
				c.CreatedAt = existing.CreatedAt
				// Any earlier attempt's late write is fenced off.
				c.RotationCount = existing.RotationCount + 1
			}
			out.Reauthorized = existing != nil
			return c, v.event(id, kind, "", 0, "", fmt.Sprintf("org %s user %s", tok.OrgID, tok.UserID)), nil
		}})
	if err != nil {
		return nil, err
	}
	out.Connection = v.view(ctx, stored)
	return &out, nil
}
