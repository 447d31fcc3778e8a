package vault

import (
	"context"
	"errors"
	"fmt"

	"github.com/google/uuid"
	"gorm.io/gorm"
	"gorm.io/gorm/clause"

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
	err := v.db.Gorm.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		if v.db.Dialect == models.Postgres {
			// It stores a new refresh token: durable whatever the server's
			// default.
			if err := tx.Exec("SELECT set_config('synchronous_commit', 'on', true)").Error; err != nil {
				return err
			}
		}
		var existing models.Connection
		q := tx.Where("org_id = ? AND user_id = ?", tok.OrgID, tok.UserID)
		if v.db.Dialect == models.Postgres {
			q = q.Clauses(clause.Locking{Strength: "NO KEY UPDATE"})
		}
		err := q.Take(&existing).Error
		found := err == nil
		if err != nil && !errors.Is(err, gorm.ErrRecordNotFound) {
			return err
		}
		id := uuid.NewString()
		if found {
			id = existing.ID
			old, err := v.OpenRefresh(&existing)
			if err == nil {
				out.ReplacedRefreshToken = old
			}
		}
		sealedRefresh, err := v.SealRefresh(id, tok.RefreshToken)
		if err != nil {
			return err
		}
		sealedAccess, err := v.SealAccess(id, tok.AccessToken)
		if err != nil {
			return err
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
		if found {
			kind = models.EventReauthorized
			c.CreatedAt = existing.CreatedAt
			c.RotationCount = existing.RotationCount + 1
			// Select("*") writes zero values too: failures, errors and the
			// re-auth reason are cleared.
			if err := tx.Model(&models.Connection{}).Where("id = ?", id).Select("*").Updates(&c).Error; err != nil {
				return err
			}
			// Any unfinished attempt was about the replaced token.
			if err := tx.Where("connection_id = ?", id).Delete(&models.RefreshAttempt{}).Error; err != nil {
				return err
			}
		} else if err := tx.Create(&c).Error; err != nil {
			return err
		}
		ev := v.event(id, kind, "", 0, "", fmt.Sprintf("org %s user %s", tok.OrgID, tok.UserID))
		if err := tx.Create(&ev).Error; err != nil {
			return err
		}
		if v.cfg.OnEvents != nil {
			if err := v.cfg.OnEvents(tx, []models.Event{ev}); err != nil {
				return err
			}
		}
		out.Connection, out.Reauthorized = &c, found
		return nil
	})
	if err != nil {
		return nil, err
	}
	return &out, nil
}
