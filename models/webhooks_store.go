package models

import (
	"context"
	"time"

	"gorm.io/gorm"
	"gorm.io/gorm/clause"
)

// The webhook outbox (package webhooks): rows are written with the events
// they announce (RecordEvents, or EnqueueDeliveries), claimed by
// dispatchers under a lease, and marked delivered, rescheduled or failed.

// deliveryGivenUp is the next_attempt_at of rows given up on, so that no
// claim takes them again while they stay visible as undelivered.
var deliveryGivenUp = time.Date(9999, 12, 31, 0, 0, 0, 0, time.UTC)

// leaseTime is a lease as the database keeps it (microseconds, UTC), so the
// conditional updates recognise it by equality.
func leaseTime(t time.Time) time.Time { return t.UTC().Truncate(time.Microsecond) }

// EnqueueDeliveries stores outbox rows. A row whose (event ID, endpoint)
// is already stored is skipped: enqueueing an event twice is a no-op.
func (d *DB) EnqueueDeliveries(ctx context.Context, rows []WebhookDelivery) error {
	if len(rows) == 0 {
		return nil
	}
	rows = append([]WebhookDelivery(nil), rows...)
	return d.gorm.WithContext(ctx).Clauses(clause.OnConflict{DoNothing: true}).Create(&rows).Error
}

// ClaimDueDeliveries takes up to n undelivered rows due by dueBy, oldest
// due first, and pushes their next attempt out to leaseUntil in one short
// transaction, so other dispatchers leave them alone until then. On
// Postgres rows another dispatcher is claiming are skipped, not waited for
// (FOR UPDATE SKIP LOCKED); on SQLite transactions start IMMEDIATE, so
// claims are serialised anyway. The rows are returned as they were before
// the claim (NextAttemptAt is the time they were due).
func (d *DB) ClaimDueDeliveries(ctx context.Context, n int, dueBy, leaseUntil time.Time) ([]WebhookDelivery, error) {
	var rows []WebhookDelivery
	err := d.gorm.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		rows = nil
		q := tx.Where("delivered_at IS NULL AND next_attempt_at <= ?", dueBy.UTC()).Order("next_attempt_at").Limit(n)
		if d.Dialect == Postgres {
			q = q.Clauses(clause.Locking{Strength: clause.LockingStrengthUpdate, Options: clause.LockingOptionsSkipLocked})
		}
		if err := q.Find(&rows).Error; err != nil {
			return err
		}
		if len(rows) == 0 {
			return nil
		}
		ids := make([]int64, len(rows))
		for i, r := range rows {
			ids[i] = r.ID
		}
		return tx.Model(&WebhookDelivery{}).Where("id IN ?", ids).Update("next_attempt_at", leaseTime(leaseUntil)).Error
	})
	if err != nil {
		return nil, err
	}
	return rows, nil
}

// MarkDelivered records a delivery that went through at at, after attempts
// attempts in all. It needs no lease: a delivery that happened wins.
func (d *DB) MarkDelivered(ctx context.Context, id int64, at time.Time, attempts int) error {
	return d.gorm.WithContext(ctx).Model(&WebhookDelivery{}).Where("id = ? AND delivered_at IS NULL", id).
		Updates(map[string]any{"delivered_at": at.UTC(), "attempts": attempts, "last_error": ""}).Error
}

// RescheduleDelivery sets the next attempt of a claimed row, its attempt
// count and last error, only while the claim's lease still holds: if it
// lapsed, another dispatcher owns the row and its outcome wins.
func (d *DB) RescheduleDelivery(ctx context.Context, id int64, lease, next time.Time, attempts int, lastError string) error {
	return d.gorm.WithContext(ctx).Model(&WebhookDelivery{}).
		Where("id = ? AND delivered_at IS NULL AND next_attempt_at = ?", id, leaseTime(lease)).
		Updates(map[string]any{"next_attempt_at": next.UTC(), "attempts": attempts, "last_error": lastError}).Error
}

// MarkDeliveryFailed gives a claimed row up for good (kept undelivered with
// its last error, never claimed again, purged after retention), only while
// the claim's lease still holds.
func (d *DB) MarkDeliveryFailed(ctx context.Context, id int64, lease time.Time, attempts int, lastError string) error {
	return d.RescheduleDelivery(ctx, id, lease, deliveryGivenUp, attempts, lastError)
}

// PurgeWebhookDeliveries deletes outbox rows that are finished and older
// than cutoff: delivered, or given up on (their event stays in the event
// log). Rows still being retried are never deleted.
func (d *DB) PurgeWebhookDeliveries(ctx context.Context, cutoff time.Time) (int64, error) {
	cutoff = cutoff.UTC()
	res := d.gorm.WithContext(ctx).
		Where("delivered_at < ? OR (delivered_at IS NULL AND next_attempt_at = ? AND created_at < ?)", cutoff, deliveryGivenUp, cutoff).
		Delete(&WebhookDelivery{})
	return res.RowsAffected, res.Error
}
