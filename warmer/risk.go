package warmer

import (
	"context"
	"fmt"
	"time"

	"github.com/tokenwarm/tokenwarm/models"
)

// sweepIdleRisk records one idle_expiry_risk event for each active
// connection whose idle budget fell under RiskThreshold and that has none
// since its last successful refresh, in bounded batches. On Postgres one
// replica sweeps at a time (the others skip this pass), so a crossing is
// reported once.
// Sweeps are the warmer's bookkeeping queries.
type Sweeps interface {
	RecordIdleRisks(ctx context.Context, cutoff time.Time, kind string, n int, event func(models.IdleRisk) models.Event) ([]models.IdleRisk, error)
	WarmGauges(ctx context.Context, now time.Time) (backlog int64, oldest time.Time, err error)
}

func (w *Warmer) sweepIdleRisk(ctx context.Context, p *pass) error {
	now := w.clock.Now().UTC()
	cutoff := now.Add(-(IdleTTL - w.cfg.RiskThreshold))
	for ctx.Err() == nil {
		found, err := w.store.RecordIdleRisks(ctx, cutoff, EventIdleExpiryRisk, w.cfg.BatchSize, func(c models.IdleRisk) models.Event {
			id := c.ID
			budget := IdleTTL - now.Sub(c.LastRefreshedAt)
			return w.event(&id, EventIdleExpiryRisk, 0, "",
				fmt.Sprintf("idle budget %s left: last successful refresh %s", budget.Round(time.Minute), c.LastRefreshedAt.UTC().Format(time.RFC3339)))
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
