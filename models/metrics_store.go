package models

import (
	"context"
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
