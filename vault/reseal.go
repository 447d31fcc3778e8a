package vault

import (
	"context"
	"fmt"
	"log/slog"

	"github.com/tokenwarm/tokenwarm/models"
	"github.com/tokenwarm/tokenwarm/seal"
)

// Reseal rewrites every sealed token not sealed under the ring's active key.
// Each row is rewritten under its own row lock, so it is safe to run while
// servers refresh. It returns how many connections it rewrote.
func Reseal(ctx context.Context, db Resealer, ring *seal.Ring, log *slog.Logger) (int, error) {
	const batch = 200
	rewritten, after := 0, ""
	for {
		ids, err := db.ConnectionIDsAfter(ctx, after, batch)
		if err != nil {
			return rewritten, err
		}
		if len(ids) == 0 {
			return rewritten, nil
		}
		after = ids[len(ids)-1]
		for _, id := range ids {
			changed, err := db.RewriteSealed(ctx, id, func(c *models.Connection) (map[string]any, error) {
				return resealColumns(c, ring)
			})
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

// Resealer pages through connections and rewrites their sealed columns
// under their row lock; *models.DB is one.
type Resealer interface {
	ConnectionIDsAfter(ctx context.Context, after string, n int) ([]string, error)
	RewriteSealed(ctx context.Context, id string, update func(c *models.Connection) (map[string]any, error)) (bool, error)
}

// resealColumns returns the sealed columns of c not sealed under the
// active key, sealed under it.
func resealColumns(c *models.Connection, ring *seal.Ring) (map[string]any, error) {
	update := map[string]any{}
	for col, f := range map[string]struct{ sealed, ad string }{
		"refresh_token_sealed": {c.RefreshTokenSealed, adRefresh(c.ID)},
		"access_token_sealed":  {c.AccessTokenSealed, adAccess(c.ID)},
	} {
		resealed, changed, err := ring.Reseal(f.sealed, f.ad)
		if err != nil {
			return nil, err
		}
		if !changed {
			continue
		}
		update[col] = resealed
	}
	return update, nil
}
