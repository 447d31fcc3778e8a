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
// Sweeps find connections running out of idle budget; each org's idle TTL
// counts.
type Sweeps interface {
	IdleTTLs(ctx context.Context, def time.Duration) (models.IdleTTLs, error)
	RecordIdleRisks(ctx context.Context, scope models.OrgScope, cutoff time.Time, kind string, n int, event func(models.IdleRisk) models.Event) ([]models.IdleRisk, error)
	RecordReauthSoon(ctx context.Context, cutoff time.Time, kind string, n int, event func(models.ReauthDue) models.Event) ([]models.ReauthDue, error)
}

// Gauges are the warmer's measurements.
type Gauges interface {
	WarmBacklog(ctx context.Context, now time.Time) (int64, error)
	OldestRefresh(ctx context.Context, scope models.OrgScope) (time.Time, error)
}

func (w *Warmer) sweepIdleRisk(ctx context.Context, p *pass) error {
	ttls, err := w.store.IdleTTLs(ctx, w.idleTTL)
	if err != nil {
		return fmt.Errorf("idle risk sweep: %w", err)
	}
	for _, g := range ttls.Scopes() {
		if err := w.sweepScope(ctx, p, g); err != nil {
			return err
		}
	}
	return nil
}

// sweepScope sweeps the orgs of one idle TTL.
func (w *Warmer) sweepScope(ctx context.Context, p *pass, g models.ScopedTTL) error {
	now := w.clock.Now().UTC()
	cutoff := now.Add(-(g.TTL - w.cfg.RiskThreshold))
	for ctx.Err() == nil {
		found, err := w.store.RecordIdleRisks(ctx, g.Scope, cutoff, EventIdleExpiryRisk, w.cfg.BatchSize, func(c models.IdleRisk) models.Event {
			id := c.ID
			budget := g.TTL - now.Sub(c.LastRefreshedAt)
			return w.event(&id, EventIdleExpiryRisk, 0, "",
				fmt.Sprintf("idle budget %s left of %s: last successful refresh %s", budget.Round(time.Minute), g.TTL, c.LastRefreshedAt.UTC().Format(time.RFC3339)))
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
		w.log.Error("ALERT: connections are running out of idle budget without a successful refresh; Salesforce kills a refresh token unused for its idle TTL",
			"connections", n, "smallest_budget", (g.TTL - now.Sub(found[0].LastRefreshedAt)).Round(time.Minute),
			"first_connection_id", found[0].ID, "threshold", w.cfg.RiskThreshold, "idle_ttl", g.TTL)
		if len(found) < w.cfg.BatchSize {
			return nil
		}
	}
	return ctx.Err()
}

// sweepReauthSoon records one reauth_soon event (and webhook) for each
// active connection that reaches the refresh-token maximum age
// (RefreshMaxAge) within ReauthSoon, once per authorization: warming
// cannot beat that policy, only the user can, by re-authorizing. Nothing
// without the policy.
func (w *Warmer) sweepReauthSoon(ctx context.Context) error {
	if w.cfg.RefreshMaxAge <= 0 {
		return nil
	}
	now := w.clock.Now().UTC()
	cutoff := now.Add(-(w.cfg.RefreshMaxAge - w.cfg.ReauthSoon))
	for ctx.Err() == nil {
		found, err := w.store.RecordReauthSoon(ctx, cutoff, models.EventReauthSoon, w.cfg.BatchSize, func(c models.ReauthDue) models.Event {
			id := c.ID
			due := c.AuthorizedAt.Add(w.cfg.RefreshMaxAge).UTC()
			return w.event(&id, models.EventReauthSoon, 0, "",
				fmt.Sprintf("the refresh token expires %s (%s after the authorization of %s, the org's maximum age): ask the user to re-authorize",
					due.Format(time.RFC3339), w.cfg.RefreshMaxAge, c.AuthorizedAt.UTC().Format(time.RFC3339)))
		})
		if err != nil {
			return fmt.Errorf("reauth soon sweep: %w", err)
		}
		if len(found) == 0 {
			return nil
		}
		w.statsMu.Lock()
		w.stats.ReauthSoonEvents += int64(len(found))
		w.statsMu.Unlock()
		w.log.Warn("connections reach the refresh-token maximum age soon; their users must re-authorize",
			"connections", len(found), "first_connection_id", found[0].ID, "max_age", w.cfg.RefreshMaxAge, "ahead", w.cfg.ReauthSoon)
		if len(found) < w.cfg.BatchSize {
			return nil
		}
	}
	return ctx.Err()
}
