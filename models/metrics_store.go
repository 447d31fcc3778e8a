package models

import (
	"context"
	"time"
)

// Fleet-wide readings for the metrics gauges (package metrics). Each is one
// cheap query, read at scrape time, so every replica reports the same truth.

// ConnectionCountsByStatus counts connections by status; a status without
// connections is absent.
func (d *DB) ConnectionCountsByStatus(ctx context.Context) (map[string]int64, error) {
	var rows []struct {
		Status string
		N      int64
	}
	if err := d.gorm.WithContext(ctx).Raw("SELECT status, count(*) AS n FROM connections GROUP BY status").Scan(&rows).Error; err != nil {
		return nil, err
	}
	out := make(map[string]int64, len(rows))
	for _, r := range rows {
		out[r.Status] = r.N
	}
	return out, nil
}

// OldestActiveRefresh is the least recent last refresh among active
// connections (the one nearest to Salesforce's idle TTL); ok is false when
// no connection is active.
func (d *DB) OldestActiveRefresh(ctx context.Context) (oldest time.Time, ok bool, err error) {
	var ts []time.Time
	err = d.gorm.WithContext(ctx).Table("connections").Where("status = ?", StatusActive).
		Order("last_refreshed_at").Limit(1).Pluck("last_refreshed_at", &ts).Error
	if err != nil || len(ts) == 0 {
		return time.Time{}, false, err
	}
	return ts[0], true, nil
}

// CountDueForWarm counts active connections due for warming at now.
func (d *DB) CountDueForWarm(ctx context.Context, now time.Time) (int64, error) {
	var n int64
	err := d.gorm.WithContext(ctx).Table("connections").Where("status = ? AND next_warm_at <= ?", StatusActive, now.UTC()).Count(&n).Error
	return n, err
}
