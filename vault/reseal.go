package vault

import (
	"context"
	"fmt"
	"log/slog"

	"gorm.io/gorm"
	"gorm.io/gorm/clause"

	"github.com/tokenwarm/tokenwarm/models"
	"github.com/tokenwarm/tokenwarm/seal"
)

// Reseal rewrites every sealed token not sealed under the ring's active key.
// Each row is rewritten under its own row lock, so it is safe to run while
// servers refresh. It returns how many connections it rewrote.
func Reseal(ctx context.Context, db *models.DB, ring *seal.Ring, log *slog.Logger) (int, error) {
	const batch = 200
	active := ring.ActiveKeyID()
	rewritten, after := 0, ""
	for {
		var ids []string
		q := db.Gorm.WithContext(ctx).Model(&models.Connection{}).Order("id").Limit(batch)
		if after != "" {
			q = q.Where("id > ?", after)
		}
		if err := q.Pluck("id", &ids).Error; err != nil {
			return rewritten, err
		}
		if len(ids) == 0 {
			return rewritten, nil
		}
		after = ids[len(ids)-1]
		for _, id := range ids {
			changed, err := resealOne(ctx, db, ring, active, id)
			if err != nil {
				return rewritten, fmt.Errorf("connection %s: %w", id, err)
			}
			if changed {
				rewritten++
			}
		}
		if log != nil {
			log.Info("reseal progress", "rewritten", rewritten, "last_id", after)
		}
	}
}

func resealOne(ctx context.Context, db *models.DB, ring *seal.Ring, active, id string) (bool, error) {
	changed := false
	err := db.Gorm.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		q := tx.Where("id = ?", id)
		if db.Dialect == models.Postgres {
			q = q.Clauses(clause.Locking{Strength: "NO KEY UPDATE"})
		}
		var c models.Connection
		if err := q.Take(&c).Error; err != nil {
			return err
		}
		update := map[string]any{}
		for col, f := range map[string]struct{ sealed, ad string }{
			"refresh_token_sealed": {c.RefreshTokenSealed, adRefresh(id)},
			"access_token_sealed":  {c.AccessTokenSealed, adAccess(id)},
		} {
			if kid, ok := seal.KeyID(f.sealed); !ok || kid == active {
				continue
			}
			plain, err := ring.Open(f.sealed, f.ad)
			if err != nil {
				return err
			}
			resealed, err := ring.Seal(plain, f.ad)
			if err != nil {
				return err
			}
			update[col] = resealed
		}
		if len(update) == 0 {
			return nil
		}
		changed = true
		return tx.Model(&models.Connection{}).Where("id = ?", id).Updates(update).Error
	})
	return changed, err
}
