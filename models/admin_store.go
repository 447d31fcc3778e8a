package models

import (
	"context"
	"strings"
	"time"

	"gorm.io/gorm"
)

// The operators' queries (package admin): listings, a connection's recent
// events, the fleet summary, and the audit events of admin actions.

// ConnectionFilter selects connections; zero fields select everything.
type ConnectionFilter struct {
	Status string
	OrgID  string
	Owner  string
	// Stale, when set, keeps connections whose idle budget is below a
	// bound: for each group of orgs of one idle TTL, those last refreshed
	// before its cutoff.
	Stale []StaleCutoff
	// Search keeps connections whose user's name, username or email, or
	// whose org's name, contains it (case-insensitive).
	Search string
	// AuthorizedBefore keeps connections last authorized before it.
	AuthorizedBefore *time.Time
}

// likeEscaper makes a search string a literal LIKE pattern (ESCAPE '\').
var likeEscaper = strings.NewReplacer(`\`, `\\`, `%`, `\%`, `_`, `\_`)

// StaleCutoff is the refresh time before which a connection of Scope has
// less idle budget than asked.
type StaleCutoff struct {
	Scope  OrgScope
	Before time.Time
}

// ConnectionOrder is the order of a page of connections.
type ConnectionOrder int

const (
	// ByCreated orders by (created_at, id): connections created while
	// someone pages land after the cursor, so none is skipped or repeated.
	ByCreated ConnectionOrder = iota
	// ByLastRefreshed orders by (last_refreshed_at, id): least idle budget
	// first. A connection refreshed while someone pages moves to the end.
	ByLastRefreshed
)

// Position is where a page ended: the ordering time of its last
// connection (created_at or last_refreshed_at) and its ID.
type Position struct {
	At time.Time
	ID string
}

// PageConnections returns up to limit connections matching f, in order,
// after the position after (nil: from the start).
func (d *DB) PageConnections(ctx context.Context, f ConnectionFilter, order ConnectionOrder, after *Position, limit int) ([]Connection, error) {
	col := "created_at"
	if order == ByLastRefreshed {
		col = "last_refreshed_at"
	}
	var out []Connection
	err := d.RetryRead(ctx, func() error {
		q := d.gorm.WithContext(ctx)
		if f.Status != "" {
			q = q.Where("status = ?", f.Status)
		}
		if f.OrgID != "" {
			q = q.Where("org_id = ?", f.OrgID)
		}
		if f.Owner != "" {
			q = q.Where("owner = ?", f.Owner)
		}
		if len(f.Stale) > 0 {
			stale := d.gorm.WithContext(ctx)
			for i, c := range f.Stale {
				one := c.Scope.apply(d.gorm.WithContext(ctx), "org_id").Where("last_refreshed_at < ?", c.Before.UTC())
				if i == 0 {
					stale = stale.Where(one)
				} else {
					stale = stale.Or(one)
				}
			}
			q = q.Where(stale)
		}
		if f.Search != "" {
			pat := "%" + likeEscaper.Replace(strings.ToLower(f.Search)) + "%"
			q = q.Where(`LOWER(user_name) LIKE ? ESCAPE '\' OR LOWER(user_username) LIKE ? ESCAPE '\' OR LOWER(user_email) LIKE ? ESCAPE '\' OR LOWER(org_name) LIKE ? ESCAPE '\'`,
				pat, pat, pat, pat)
		}
		if f.AuthorizedBefore != nil {
			q = q.Where("authorized_at < ?", f.AuthorizedBefore.UTC())
		}
		if after != nil {
			q = q.Where(col+" > ? OR ("+col+" = ? AND id > ?)", after.At.UTC(), after.At.UTC(), after.ID)
		}
		out = nil
		return q.Order(col + ", id").Limit(limit).Find(&out).Error
	})
	return out, err
}

// ConnectionEvents returns the n most recent events of a connection, the
// newest first.
func (d *DB) ConnectionEvents(ctx context.Context, connectionID string, n int) ([]Event, error) {
	var out []Event
	err := d.RetryRead(ctx, func() error {
		out = nil
		return d.gorm.WithContext(ctx).Where("connection_id = ?", connectionID).Order("id DESC").Limit(n).Find(&out).Error
	})
	return out, err
}

// SummaryQuery says what the fleet summary looks at.
type SummaryQuery struct {
	// AtRiskBefore: active connections last refreshed before it are at risk.
	AtRiskBefore time.Time
	// ConfigErrorsSince and ConfigErrors: the most recent configuration
	// errors since then, at most that many.
	ConfigErrorsSince time.Time
	ConfigErrors      int
}

// Summary is the state of the fleet.
type Summary struct {
	// ByStatus counts connections by status (every status present).
	ByStatus map[string]int64
	// OldestActiveRefresh is the least recent last refresh of an active
	// connection (nil without active connections).
	OldestActiveRefresh *time.Time
	// AtRisk counts active connections last refreshed before AtRiskBefore.
	AtRisk int64
	// ConfigErrors are the most recent configuration-error events, newest
	// first.
	ConfigErrors []Event
}

// AdminSummary counts connections by status and finds the ones at risk.
func (d *DB) AdminSummary(ctx context.Context, q SummaryQuery) (*Summary, error) {
	var s *Summary
	err := d.RetryRead(ctx, func() error {
		s = &Summary{ByStatus: map[string]int64{StatusActive: 0, StatusNeedsReauth: 0, StatusRevoked: 0}}
		db := d.gorm.WithContext(ctx)
		var counts []struct {
			Status string
			N      int64
		}
		if err := db.Model(&Connection{}).Select("status, count(*) AS n").Group("status").Scan(&counts).Error; err != nil {
			return err
		}
		for _, c := range counts {
			s.ByStatus[c.Status] = c.N
		}
		var oldest []Connection
		if err := db.Where("status = ?", StatusActive).Order("last_refreshed_at").Limit(1).Find(&oldest).Error; err != nil {
			return err
		}
		if len(oldest) == 1 {
			at := oldest[0].LastRefreshedAt
			s.OldestActiveRefresh = &at
		}
		if err := db.Model(&Connection{}).Where("status = ? AND last_refreshed_at < ?", StatusActive, q.AtRiskBefore.UTC()).
			Count(&s.AtRisk).Error; err != nil {
			return err
		}
		return db.Where("kind = ? AND created_at >= ?", EventConfigError, q.ConfigErrorsSince.UTC()).
			Order("id DESC").Limit(q.ConfigErrors).Find(&s.ConfigErrors).Error
	})
	if err != nil {
		return nil, err
	}
	return s, nil
}

// RecordAdminEvent stores the audit event of an admin action, with its
// webhook deliveries, in one transaction (RecordEvents).
func (d *DB) RecordAdminEvent(ctx context.Context, ev Event) error {
	return d.RecordEvents(ctx, []Event{ev})
}

// EraseIdentity erases the personal data of a connection's user (name,
// username, email) and stores ev, its audit event, in one transaction.
// The org's name is not personal and stays. ErrNotFound when there is no
// such connection.
func (d *DB) EraseIdentity(ctx context.Context, id string, ev Event) (*Connection, error) {
	var c Connection
	err := d.gorm.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		res := tx.Model(&Connection{}).Where("id = ?", id).
			Updates(map[string]any{"user_name": "", "user_username": "", "user_email": "", "updated_at": ev.CreatedAt.UTC()})
		if res.Error != nil {
			return res.Error
		}
		if res.RowsAffected == 0 {
			return ErrNotFound
		}
		if err := tx.Where("id = ?", id).Take(&c).Error; err != nil {
			return err
		}
		_, err := d.insertEvents(tx, []Event{ev})
		return err
	})
	if err != nil {
		return nil, err
	}
	return &c, nil
}
