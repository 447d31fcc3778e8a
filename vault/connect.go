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
	who := v.identify(ctx, loginURL, tok)
	out, err := v.connect(ctx, loginURL, owner, tok, who)
	if err != nil && models.IsUniqueViolation(err) {
		// Another first-time connect of the same (org, user) inserted the
		// row between our look and our insert: ours is a re-authorization.
		out, err = v.connect(ctx, loginURL, owner, tok, who)
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

// Identifier learns who a fresh grant belongs to (*salesforce.Client).
type Identifier interface {
	Identity(ctx context.Context, loginURL string, tok *salesforce.Token) (*salesforce.Identity, error)
}

// identify asks Salesforce who a fresh grant belongs to, unless capture is
// off or the client cannot. It never fails a connect: what it learned is
// returned (nil if nothing), a failure is logged without tokens.
func (v *Vault) identify(ctx context.Context, loginURL string, tok *salesforce.Token) *salesforce.Identity {
	f, ok := v.sf.(Identifier)
	if v.cfg.SkipIdentity || !ok {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, v.cfg.UpstreamTimeout)
	defer cancel()
	who, err := f.Identity(ctx, loginURL, tok)
	if err != nil {
		v.log.Warn("could not learn all of who a new grant belongs to; connecting with what is known",
			"org_id", tok.OrgID, "user_id", tok.UserID, "err", err)
	}
	return who
}

// withIdentity sets who c belongs to: what who learned, else what existing
// had (a failed capture at re-authorization keeps the earlier values).
func withIdentity(c *models.Connection, who *salesforce.Identity, existing *models.Connection) {
	if existing != nil {
		c.UserName, c.UserUsername, c.UserEmail, c.OrgName = existing.UserName, existing.UserUsername, existing.UserEmail, existing.OrgName
	}
	if who == nil {
		return
	}
	set := func(dst *string, v string) {
		if v != "" {
			*dst = v
		}
	}
	set(&c.UserName, who.Name)
	set(&c.UserUsername, who.Username)
	set(&c.UserEmail, who.Email)
	set(&c.OrgName, who.OrgName)
}

func (v *Vault) connect(ctx context.Context, loginURL, owner string, tok *salesforce.Token, who *salesforce.Identity) (*Connected, error) {
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
				AuthorizedAt: &now,
			}
			withIdentity(&c, who, existing)
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
