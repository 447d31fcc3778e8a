package warmer

import (
	"context"
	"time"

	"gorm.io/gorm/clause"

	"github.com/tokenwarm/tokenwarm/models"
)

// due selects connections to warm now. The status is written out, not
// bound, so Postgres can use the partial index connections_warm_due. A
// connection still in backoff after a failure is left to its backoff: the
// vault would refuse to call Salesforce for it anyway.
const due = "status = 'active' AND next_warm_at <= ? AND (next_attempt_at IS NULL OR next_attempt_at <= ?)"

// probeable selects any active connection not in backoff, for a probe
// while nothing is due.
const probeable = "status = 'active' AND (next_attempt_at IS NULL OR next_attempt_at <= ?)"

// claimed is a connection this warmer holds under a lease.
type claimed struct {
	ID string
	// LastRefreshedAt as claimed: the vault skips the refresh if someone
	// refreshed the connection after it.
	LastRefreshedAt time.Time
	// NextWarmAt before the lease, given back if the connection is released
	// unwarmed.
	NextWarmAt time.Time
	lease      time.Time
}

// claim takes up to n due connections (any active one not in backoff, for
// dueOnly false), earliest due first, and pushes their
// next_warm_at out by the lease in one short transaction. On Postgres rows
// locked by another replica's claim (or by a refresh in progress) are
// skipped rather than waited for; embedded SQLite has one process and one
// writer, so a plain claim is enough.
func (w *Warmer) claim(ctx context.Context, n int, dueOnly bool) ([]claimed, error) {
	now := w.clock.Now().UTC()
	// Truncated to what Postgres stores, so the lease can be recognised
	// later by equality.
	lease := now.Add(w.cfg.Lease).Truncate(time.Microsecond)

	tx := w.db.Gorm.WithContext(ctx).Begin()
	if tx.Error != nil {
		return nil, tx.Error
	}
	defer tx.Rollback()
	q := tx.Model(&models.Connection{}).Select("id", "last_refreshed_at", "next_warm_at")
	if dueOnly {
		q = q.Where(due, now, now)
	} else {
		q = q.Where(probeable, now)
	}
	q = q.Order("next_warm_at").Limit(n)
	if w.db.Dialect == models.Postgres {
		q = q.Clauses(clause.Locking{Strength: clause.LockingStrengthUpdate, Options: clause.LockingOptionsSkipLocked})
	}
	var rows []models.Connection
	if err := q.Find(&rows).Error; err != nil {
		return nil, err
	}
	if len(rows) == 0 {
		return nil, nil
	}
	ids := make([]string, len(rows))
	out := make([]claimed, len(rows))
	for i, r := range rows {
		ids[i] = r.ID
		out[i] = claimed{ID: r.ID, LastRefreshedAt: r.LastRefreshedAt, NextWarmAt: r.NextWarmAt, lease: lease}
	}
	// Exec, not Update: the lease is bookkeeping, not a change of the
	// connection, so updated_at stays.
	if err := tx.Exec("UPDATE connections SET next_warm_at = ? WHERE id IN ?", lease, ids).Error; err != nil {
		return nil, err
	}
	return out, tx.Commit().Error
}

// release gives connections claimed but not warmed back their old
// next_warm_at, so any replica can take them at once. A connection whose
// next_warm_at is no longer our lease was refreshed by someone else and is
// left alone.
func (w *Warmer) release(ctx context.Context, cs ...claimed) {
	if len(cs) == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	for _, c := range cs {
		err := w.db.Gorm.WithContext(ctx).Exec("UPDATE connections SET next_warm_at = ? WHERE id = ? AND next_warm_at = ?",
			c.NextWarmAt, c.ID, c.lease).Error
		if err != nil {
			// The lease runs out by itself; the connection is only late.
			w.log.Warn("could not release a claimed connection", "connection_id", c.ID, "err", err)
		}
	}
}

// retryLater sets a connection whose warm did not go through to come due
// again after its backoff (next_attempt_at, when the vault set one) or
// after wait, whichever is later.
//
// The vault writes next_warm_at on every outcome it records, but on a
// failure it only ever moves it later, and what it sees is our lease: a
// short backoff would leave the lease in place. When the vault did not
// write at all (lock timeout, an earlier attempt still settling) the lease
// is all there is. Either way the row still holds exactly our lease; a row
// that does not was refreshed or backed off past it, and that write wins.
func (w *Warmer) retryLater(ctx context.Context, c claimed, wait time.Duration) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	retryAt := w.clock.Now().UTC().Add(wait)
	greatest := "MAX" // SQLite's scalar max
	if w.db.Dialect == models.Postgres {
		greatest = "GREATEST"
	}
	err := w.db.Gorm.WithContext(ctx).Exec("UPDATE connections SET next_warm_at = "+greatest+"(COALESCE(next_attempt_at, ?), ?) WHERE id = ? AND next_warm_at = ?",
		retryAt, retryAt, c.ID, c.lease).Error
	if err != nil {
		w.log.Warn("could not schedule a warm retry; the claim lease stands", "connection_id", c.ID, "err", err)
	}
}
