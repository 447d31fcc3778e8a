package warmer

import (
	"context"
	"fmt"
	"time"

	"gorm.io/gorm"

	"github.com/tokenwarm/tokenwarm/models"
)

// sweepIdleRisk records one idle_expiry_risk event for each active
// connection whose idle budget fell under RiskThreshold and that has none
// since its last successful refresh, in bounded batches. On Postgres one
// replica sweeps at a time (the others skip this pass), so a crossing is
// reported once.
func (w *Warmer) sweepIdleRisk(ctx context.Context, p *pass) error {
	now := w.clock.Now().UTC()
	cutoff := now.Add(-(IdleTTL - w.cfg.RiskThreshold))
	for ctx.Err() == nil {
		var found []models.Connection
		err := w.db.Gorm.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
			if w.db.Dialect == models.Postgres {
				var got bool
				if err := tx.Raw("SELECT pg_try_advisory_xact_lock(?)", riskLockKey).Scan(&got).Error; err != nil || !got {
					return err
				}
			}
			err := tx.Model(&models.Connection{}).Select("id", "last_refreshed_at").
				Where("status = 'active' AND last_refreshed_at < ?", cutoff).
				Where("NOT EXISTS (SELECT 1 FROM events e WHERE e.connection_id = connections.id AND e.kind = ? AND e.created_at >= connections.last_refreshed_at)", EventIdleExpiryRisk).
				Order("last_refreshed_at").Limit(w.cfg.BatchSize).Find(&found).Error
			if err != nil || len(found) == 0 {
				return err
			}
			evs := make([]models.Event, len(found))
			for i, c := range found {
				id := c.ID
				budget := IdleTTL - now.Sub(c.LastRefreshedAt)
				evs[i] = w.event(&id, EventIdleExpiryRisk, 0, "",
					fmt.Sprintf("idle budget %s left: last successful refresh %s", budget.Round(time.Minute), c.LastRefreshedAt.UTC().Format(time.RFC3339)))
			}
			if err := tx.Create(&evs).Error; err != nil {
				return err
			}
			return w.onEvents(tx, evs)
		})
		if err != nil {
			return fmt.Errorf("idle risk sweep: %w", err)
		}
		if len(found) == 0 {
			return nil
		}
		n := int64(len(found))
		p.mu.Lock()
		p.IdleRiskEvents += n
		p.mu.Unlock()
		w.statsMu.Lock()
		w.stats.IdleRiskEvents += n
		w.statsMu.Unlock()
		w.log.Error("ALERT: connections are running out of idle budget without a successful refresh; Salesforce kills a refresh token unused for 30 days",
			"connections", n, "smallest_budget", (IdleTTL - now.Sub(found[0].LastRefreshedAt)).Round(time.Minute),
			"first_connection_id", found[0].ID, "threshold", w.cfg.RiskThreshold)
		if len(found) < w.cfg.BatchSize {
			return nil
		}
	}
	return ctx.Err()
}
