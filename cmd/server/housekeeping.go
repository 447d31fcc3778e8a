package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/tokenwarm/tokenwarm/models"
	"github.com/tokenwarm/tokenwarm/warmer"
)

// housekeepEvery is how often each replica deletes finished rows. The
// deletes are idempotent, so replicas doing it at once only repeat work.
const housekeepEvery = "@every 1h"

// purged counts what one housekeeping run deleted.
type purged struct {
	pending    int64
	devices    models.PurgedDevices
	successors int64
	webhooks   int64
	events     int64
}

func (p purged) String() string {
	return fmt.Sprintf("%d pending authorization(s), %d handoff code(s), %d device session(s), %d rotated device refresh token(s), %d expired kept successor(s), %d webhook delivery(ies), %d event(s)",
		p.pending, p.devices.HandoffCodes, p.devices.Sessions, p.devices.RotatedTokens, p.successors, p.webhooks, p.events)
}

// housekeep deletes what can no longer be used: pending authorizations an
// hour after they expired, and after TOKENWARM_RETENTION used handoff
// codes, dead device sessions, rotated device refresh tokens and finished
// webhook deliveries; events after TOKENWARM_EVENT_RETENTION. It also
// erases the sealed successors kept for device refresh retries whose reuse
// interval has passed. Connections are never deleted here.
func housekeep(ctx context.Context, cfg *Config, db *models.DB, now time.Time) (purged, error) {
	var p purged
	var errs []error
	var err error
	p.pending, err = db.PurgePending(ctx, now.Add(-time.Hour))
	errs = append(errs, err)
	p.devices, err = db.PurgeDeviceRecords(ctx, now.Add(-cfg.Retention))
	errs = append(errs, err)
	p.successors, err = db.EraseExpiredDeviceSuccessors(ctx, now)
	errs = append(errs, err)
	p.webhooks, err = db.PurgeWebhookDeliveries(ctx, now.Add(-cfg.Retention))
	errs = append(errs, err)
	// The app-wide pause is read back from the event log: never purged.
	p.events, err = models.PurgeEvents(ctx, db, now.Add(-cfg.EventRetention), []string{warmer.EventAppPaused, warmer.EventAppResumed})
	errs = append(errs, err)
	return p, errors.Join(errs...)
}

// housekeepJob deletes finished rows once; the server runs it every
// housekeepEvery.
func housekeepJob(cfg *Config, db *models.DB, log *slog.Logger) func(ctx context.Context) {
	return func(ctx context.Context) {
		p, err := housekeep(ctx, cfg, db, time.Now())
		if err != nil && ctx.Err() == nil {
			log.Warn("housekeeping failed", "err", err)
		}
		log.Debug("housekeeping", "deleted", p.String())
	}
}
