package models

import (
	"context"
	"sort"
	"time"

	"gorm.io/gorm"
	"gorm.io/gorm/clause"
)

// OrgSetting is one customer org's settings.
type OrgSetting struct {
	OrgID                 string `gorm:"primaryKey"`
	RefreshIdleTTLSeconds int64
	UpdatedAt             time.Time
}

// TableName pins the table name.
func (OrgSetting) TableName() string { return "org_settings" }

// IdleTTLs is the refresh-token idle expiry of every org: Default, or the
// org's own (an org admin may set "expire refresh token if not used for N"
// on the connected app).
type IdleTTLs struct {
	Default time.Duration
	ByOrg   map[string]time.Duration
}

// For returns an org's effective idle TTL.
func (t IdleTTLs) For(orgID string) time.Duration {
	if d, ok := t.ByOrg[orgID]; ok {
		return d
	}
	return t.Default
}

// Overridden lists the orgs with their own TTL, sorted.
func (t IdleTTLs) Overridden() []string {
	out := make([]string, 0, len(t.ByOrg))
	for org := range t.ByOrg {
		out = append(out, org)
	}
	sort.Strings(out)
	return out
}

// IdleTTLs reads every org's idle TTL; def is the default.
func (d *DB) IdleTTLs(ctx context.Context, def time.Duration) (IdleTTLs, error) {
	var rows []OrgSetting
	err := d.RetryRead(ctx, func() error {
		rows = nil
		return d.gorm.WithContext(ctx).Find(&rows).Error
	})
	if err != nil {
		return IdleTTLs{}, err
	}
	t := IdleTTLs{Default: def, ByOrg: make(map[string]time.Duration, len(rows))}
	for _, r := range rows {
		t.ByOrg[r.OrgID] = time.Duration(r.RefreshIdleTTLSeconds) * time.Second
	}
	return t, nil
}

// SetOrgIdleTTL sets an org's idle TTL (whole seconds); zero removes it, so
// the default applies again.
func (d *DB) SetOrgIdleTTL(ctx context.Context, orgID string, ttl time.Duration, now time.Time) error {
	g := d.gorm.WithContext(ctx)
	if ttl <= 0 {
		return g.Where("org_id = ?", orgID).Delete(&OrgSetting{}).Error
	}
	row := OrgSetting{OrgID: orgID, RefreshIdleTTLSeconds: int64(ttl / time.Second), UpdatedAt: now.UTC()}
	return g.Clauses(clause.OnConflict{Columns: []clause.Column{{Name: "org_id"}},
		DoUpdates: clause.AssignmentColumns([]string{"refresh_idle_ttl_seconds", "updated_at"})}).Create(&row).Error
}

// OrgScope limits a query to one org (Only) or to every org but some
// (Except).
type OrgScope struct {
	Only   string
	Except []string
}

func (s OrgScope) apply(q *gorm.DB, column string) *gorm.DB {
	if s.Only != "" {
		return q.Where(column+" = ?", s.Only)
	}
	if len(s.Except) > 0 {
		return q.Where(column+" NOT IN ?", s.Except)
	}
	return q
}

// Scopes splits every org into groups of one idle TTL: the default group
// (every org without an override) and one per overridden org.
func (t IdleTTLs) Scopes() []ScopedTTL {
	over := t.Overridden()
	out := []ScopedTTL{{Scope: OrgScope{Except: over}, TTL: t.Default}}
	for _, org := range over {
		out = append(out, ScopedTTL{Scope: OrgScope{Only: org}, TTL: t.ByOrg[org]})
	}
	return out
}

// ScopedTTL is a group of orgs with one idle TTL.
type ScopedTTL struct {
	Scope OrgScope
	TTL   time.Duration
}

// CountActiveRefreshedBefore counts the active connections of scope last
// refreshed before a time.
func (d *DB) CountActiveRefreshedBefore(ctx context.Context, scope OrgScope, before time.Time) (int64, error) {
	var n int64
	err := scope.apply(d.gorm.WithContext(ctx).Model(&Connection{}), "org_id").
		Where("status = ? AND last_refreshed_at < ?", StatusActive, before.UTC()).Count(&n).Error
	return n, err
}
