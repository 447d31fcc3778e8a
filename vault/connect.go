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
	Connection *models.Connection
	// Reauthorized reports that an existing connection (same org and user)
	// took the new grant and kept its ID.
	Reauthorized bool
	// ReplacedRefreshToken is the refresh token the new grant replaced. The
	// caller revokes it at Salesforce after this commit (five approvals per
	// user per connected app).
	ReplacedRefreshToken string
}

// Connect stores tokens from a completed authorization, upserting by
// (org, user) so a re-authorization keeps the connection ID.
func (v *Vault) Connect(ctx context.Context, loginURL, owner string, tok *salesforce.Token) (*Connected, error) {
	if tok.OrgID == "" || tok.UserID == "" || tok.RefreshToken == "" {
		return nil, newErr(CodeInternal, "authorization result lacks identity or refresh token")
	}
	out, err := v.connect(ctx, loginURL, owner, tok)
	if err != nil && models.IsUniqueViolation(err) {
		// Another first-time connect of the same (org, user) inserted the
		// row between our look and our insert: ours is a re-authorization.
		out, err = v.connect(ctx, loginURL, owner, tok)
	}
	if err != nil {
		return nil, &Error{Code: CodeInternal, Message: "could not store the connection", cause: err}
	}
	return out, nil
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
					out.ReplacedRefreshToken = old
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
	out.Connection = stored
	return &out, nil
}
