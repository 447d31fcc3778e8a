package models

import (
	"context"
	"time"

	"gorm.io/gorm"
	"gorm.io/gorm/clause"
)

// The warmer's queries: claims of due connections, their release, the
// app-wide pause state and the idle-risk sweep.

// Advisory lock keys (7216000001 serialises migrations).
const (
	pauseLockKey = 7216000101
	riskLockKey  = 7216000102
	// reauthSoonLockKey: one replica at a time records reauth_soon events.
	reauthSoonLockKey = 7216000103
)

// Claimed is a connection a warmer holds under a lease.
type Claimed struct {
	ID string
	// LastRefreshedAt as claimed: the vault skips the refresh if someone
	// refreshed the connection after it.
	LastRefreshedAt time.Time
	// NextWarmAt before the lease, given back if the connection is released
	// unwarmed.
	NextWarmAt time.Time
	// Lease is the next_warm_at the claim wrote; a row that no longer holds
	// it was refreshed or backed off by someone else.
	Lease time.Time
}

// due selects connections to warm now. The status is written out, not
// bound, so Postgres can use the partial index connections_warm_due. A
// connection still in backoff after a failure is left to its backoff: the
// vault would refuse to call Salesforce for it anyway.
const due = "status = 'active' AND next_warm_at <= ? AND (next_attempt_at IS NULL OR next_attempt_at <= ?)"

// probeable selects any active connection not in backoff, for a probe
// while nothing is due.
const probeable = "status = 'active' AND (next_attempt_at IS NULL OR next_attempt_at <= ?)"

// ClaimDue takes up to n due connections (any active one not in backoff,
// for dueOnly false), earliest due first, and pushes their next_warm_at
// out to now+lease in one short transaction. On Postgres rows locked by
// another replica's claim (or by a refresh in progress) are skipped rather
// than waited for; embedded SQLite has one process and one writer, so a
// plain claim is enough.
func (d *DB) ClaimDue(ctx context.Context, n int, dueOnly bool, now time.Time, lease time.Duration) ([]Claimed, error) {
	now = now.UTC()
	// Truncated to what Postgres stores, so the lease can be recognised
	// later by equality.
	until := now.Add(lease).Truncate(time.Microsecond)
	var out []Claimed
	err := d.gorm.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		var rows []Connection
		if err := d.claimQuery(tx, n, dueOnly, now).Find(&rows).Error; err != nil || len(rows) == 0 {
			return err
		}
		ids := make([]string, len(rows))
		out = make([]Claimed, len(rows))
		for i, r := range rows {
			ids[i] = r.ID
			out[i] = Claimed{ID: r.ID, LastRefreshedAt: r.LastRefreshedAt, NextWarmAt: r.NextWarmAt, Lease: until}
		}
		// Exec, not Update: the lease is bookkeeping, not a change of the
		// connection, so updated_at stays.
		return tx.Exec(claimLeaseSQL, until, ids).Error
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// claimQuery is ClaimDue's select: the partial index connections_warm_due
// in next_warm_at order, stopped after n rows.
func (d *DB) claimQuery(tx *gorm.DB, n int, dueOnly bool, now time.Time) *gorm.DB {
	q := tx.Model(&Connection{}).Select("id", "last_refreshed_at", "next_warm_at")
	if dueOnly {
		q = q.Where(due, now, now)
	} else {
		q = q.Where(probeable, now)
	}
	q = q.Order("next_warm_at").Limit(n)
	if d.Dialect == Postgres {
		q = q.Clauses(clause.Locking{Strength: clause.LockingStrengthUpdate, Options: clause.LockingOptionsSkipLocked})
	}
	return q
}

// claimLeaseSQL writes the lease of claimed connections (parameters: the
// lease, the IDs).
const claimLeaseSQL = "UPDATE connections SET next_warm_at = ? WHERE id IN ?"

// ReleaseClaim gives a connection claimed but not warmed its old
// next_warm_at back, so any replica can take it at once. A connection whose
// next_warm_at is no longer the lease was refreshed by someone else and is
// left alone.
func (d *DB) ReleaseClaim(ctx context.Context, c Claimed) error {
	return d.gorm.WithContext(ctx).Exec("UPDATE connections SET next_warm_at = ? WHERE id = ? AND next_warm_at = ?",
		c.NextWarmAt, c.ID, c.Lease).Error
}

// RetryWarmLater makes a claimed connection whose warm did not go through
// come due again at retryAt or at the end of its backoff, whichever is
// later, if the row still holds exactly the claim's lease (a row that does
// not was refreshed or backed off past it, and that write wins).
func (d *DB) RetryWarmLater(ctx context.Context, c Claimed, retryAt time.Time) error {
	greatest := "MAX" // SQLite's scalar max
	if d.Dialect == Postgres {
		greatest = "GREATEST"
	}
	retryAt = retryAt.UTC()
	return d.gorm.WithContext(ctx).Exec("UPDATE connections SET next_warm_at = "+greatest+"(COALESCE(next_attempt_at, ?), ?) WHERE id = ? AND next_warm_at = ?",
		retryAt, retryAt, c.ID, c.Lease).Error
}

// LatestAppEvent returns the kind of the newest app-level event (no
// connection) among kinds, or "".
func (d *DB) LatestAppEvent(ctx context.Context, kinds []string) (string, error) {
	return latestAppEvent(d.gorm.WithContext(ctx), kinds)
}

func latestAppEvent(db *gorm.DB, kinds []string) (string, error) {
	var got []string
	err := db.Model(&Event{}).Where("connection_id IS NULL AND kind IN ?", kinds).
		Order("id DESC").Limit(1).Pluck("kind", &got).Error
	if err != nil || len(got) == 0 {
		return "", err
	}
	return got[0], nil
}

// RecordAppEvent stores ev (with its webhook deliveries) if want holds for
// the kind of the newest app-level event among kinds, atomically across
// replicas, and reports whether it did.
func (d *DB) RecordAppEvent(ctx context.Context, ev Event, kinds []string, want func(latest string) bool) (bool, error) {
	recorded := false
	err := d.gorm.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		if d.Dialect == Postgres {
			if err := tx.Exec("SELECT pg_advisory_xact_lock(?)", pauseLockKey).Error; err != nil {
				return err
			}
		}
		latest, err := latestAppEvent(tx, kinds)
		if err != nil || !want(latest) {
			return err
		}
		recorded = true
		_, err = d.insertEvents(tx, []Event{ev})
		return err
	})
	return recorded && err == nil, err
}

// IdleRisk is an active connection whose idle budget ran low.
type IdleRisk struct {
	ID              string
	LastRefreshedAt time.Time
}

// RecordIdleRisks finds up to n active connections last refreshed before
// cutoff that have no event of kind since that refresh, oldest first, and
// stores the event event(c) makes for each (with webhook deliveries), in
// one transaction. On Postgres one replica sweeps at a time; the others
// find nothing.
func (d *DB) RecordIdleRisks(ctx context.Context, scope OrgScope, cutoff time.Time, kind string, n int, event func(IdleRisk) Event) ([]IdleRisk, error) {
	rows, err := d.recordOnce(ctx, scope, "last_refreshed_at", cutoff, kind, n, riskLockKey, func(c Connection) Event {
		return event(IdleRisk{ID: c.ID, LastRefreshedAt: c.LastRefreshedAt})
	})
	var found []IdleRisk
	for _, r := range rows {
		found = append(found, IdleRisk{ID: r.ID, LastRefreshedAt: r.LastRefreshedAt})
	}
	return found, err
}

// ReauthDue is an active connection whose last authorization is old enough
// to reach the org's refresh-token maximum age soon.
type ReauthDue struct {
	ID           string
	AuthorizedAt time.Time
}

// RecordReauthSoon finds up to n active connections last authorized before
// cutoff that have no event of kind since that authorization, oldest
// first, and stores event(c) for each (with webhook deliveries) in one
// transaction: one event per authorization. On Postgres one replica sweeps
// at a time; the others find nothing.
func (d *DB) RecordReauthSoon(ctx context.Context, cutoff time.Time, kind string, n int, event func(ReauthDue) Event) ([]ReauthDue, error) {
	rows, err := d.recordOnce(ctx, OrgScope{}, "authorized_at", cutoff, kind, n, reauthSoonLockKey, func(c Connection) Event {
		return event(reauthDue(c))
	})
	var found []ReauthDue
	for _, r := range rows {
		found = append(found, reauthDue(r))
	}
	return found, err
}

func reauthDue(c Connection) ReauthDue {
	d := ReauthDue{ID: c.ID}
	if c.AuthorizedAt != nil {
		d.AuthorizedAt = *c.AuthorizedAt
	}
	return d
}

// recordOnce stores event(c) for up to n active connections of scope whose
// time column col is before cutoff and that have no event of kind since
// that time, oldest first, under the advisory lock lockKey on Postgres
// (held by another replica: nothing is found).
func (d *DB) recordOnce(ctx context.Context, scope OrgScope, col string, cutoff time.Time, kind string, n int, lockKey int64, event func(Connection) Event) ([]Connection, error) {
	var rows []Connection
	err := d.gorm.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		rows = nil
		if d.Dialect == Postgres {
			var got bool
			if err := tx.Raw("SELECT pg_try_advisory_xact_lock(?)", lockKey).Scan(&got).Error; err != nil || !got {
				return err
			}
		}
		err := scope.apply(tx.Model(&Connection{}), "org_id").Select("id", col).
			Where("status = 'active' AND "+col+" < ?", cutoff.UTC()).
			Where("NOT EXISTS (SELECT 1 FROM events e WHERE e.connection_id = connections.id AND e.kind = ? AND e.created_at >= connections."+col+")", kind).
			Order(col).Limit(n).Find(&rows).Error
		if err != nil || len(rows) == 0 {
			return err
		}
		evs := make([]Event, len(rows))
		for i, r := range rows {
			evs[i] = event(r)
		}
		_, err = d.insertEvents(tx, evs)
		return err
	})
	if err != nil {
		return nil, err
	}
	return rows, nil
}

// WarmBacklog counts the active connections due at now.
func (d *DB) WarmBacklog(ctx context.Context, now time.Time) (int64, error) {
	var n int64
	err := d.gorm.WithContext(ctx).Model(&Connection{}).Where("status = 'active' AND next_warm_at <= ?", now.UTC()).Count(&n).Error
	return n, err
}

// OldestRefresh returns the oldest last successful refresh among the active
// connections of scope, zero when there are none.
func (d *DB) OldestRefresh(ctx context.Context, scope OrgScope) (time.Time, error) {
	// ORDER BY ... LIMIT 1 rather than MIN(): SQLite hands back an
	// aggregate of a datetime column as text.
	var ts []time.Time
	err := scope.apply(d.gorm.WithContext(ctx).Model(&Connection{}), "org_id").Where("status = 'active'").
		Order("last_refreshed_at").Limit(1).Pluck("last_refreshed_at", &ts).Error
	if err != nil || len(ts) == 0 {
		return time.Time{}, err
	}
	return ts[0], nil
}
