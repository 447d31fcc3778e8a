package admin

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/tokenwarm/tokenwarm/internal/text"
	"github.com/tokenwarm/tokenwarm/models"
	"github.com/tokenwarm/tokenwarm/vault"
)

// ListQuery selects connections for ListConnections. Zero fields select
// everything.
type ListQuery struct {
	Status string
	OrgID  string
	Owner  string
	// IdleBudgetBelowDays keeps connections with less idle budget than
	// that many days (0 to MaxIdleBudgetDays).
	IdleBudgetBelowDays *int
	// Search keeps connections whose user's name, username or email, or
	// org's name, contains it (case-insensitive; at most MaxSearch
	// characters).
	Search string
	// ReauthSoon keeps active connections that reach the refresh-token
	// maximum age within the warning window (needs the policy).
	ReauthSoon bool
	// Cursor is the NextCursor of the previous page.
	Cursor string
	// Limit is the page size (1 to MaxPageSize; DefaultPageSize if 0).
	Limit int
}

// Page is one page of connections.
type Page struct {
	Connections []Connection `json:"connections"`
	// NextCursor continues after this page; empty on the last one.
	NextCursor string `json:"next_cursor,omitempty"`
}

// ListConnections pages through every connection by (created_at, id):
// connections created while paging appear on later pages, and none is
// skipped or repeated.
func (s *Service) ListConnections(ctx context.Context, q ListQuery) (*Page, error) {
	limit := q.Limit
	if limit == 0 {
		limit = DefaultPageSize
	}
	if limit < 1 || limit > MaxPageSize {
		return nil, &InvalidError{Field: "limit", Message: LimitRule}
	}
	if q.Status != "" && !validStatus(q.Status) {
		return nil, &InvalidError{Field: "status", Message: StatusRule}
	}
	f := models.ConnectionFilter{Status: q.Status, OrgID: q.OrgID, Owner: q.Owner}
	if err := s.search(&f, q.Search); err != nil {
		return nil, err
	}
	if q.ReauthSoon {
		if s.cfg.RefreshMaxAge <= 0 {
			return nil, &InvalidError{Field: "reauth_soon", Message: ReauthSoonRule}
		}
		s.reauthSoon(&f)
	}
	if n := q.IdleBudgetBelowDays; n != nil {
		if *n < 0 || *n > MaxIdleBudgetDays {
			return nil, &InvalidError{Field: "idle_budget_below_days", Message: IdleBudgetDaysRule}
		}
		// Idle budget below n days: last refreshed before now - TTL + n
		// days, with each org's TTL.
		f.Stale = s.staleBefore(ctx, s.cfg.Now().UTC(), time.Duration(*n)*24*time.Hour)
	}
	var after *models.Position
	if q.Cursor != "" {
		p, ok := decodePosition(q.Cursor)
		if !ok {
			return nil, &InvalidError{Field: "cursor", Message: CursorRule}
		}
		after = &p
	}
	conns, err := s.d.Store.PageConnections(ctx, f, models.ByCreated, after, limit+1)
	if err != nil {
		return nil, fmt.Errorf("admin: list connections: %w", err)
	}
	page := &Page{}
	if len(conns) > limit {
		conns = conns[:limit]
		last := conns[limit-1]
		page.NextCursor = encodePosition(models.Position{At: last.CreatedAt, ID: last.ID})
	}
	page.Connections = s.views(s.ttls(ctx), conns)
	return page, nil
}

// Table is one page of the connections table, least idle budget first.
type Table struct {
	Connections []Connection
	// After is the position to continue from; empty on the last page.
	After string
}

// TableByIdleBudget pages through the connections of a status ("" for
// all) by (last_refreshed_at, id), TablePageSize at a time, after the
// position after ("" for the first page). A connection refreshed while
// someone pages moves to the end: it may show twice, never not at all.
func (s *Service) TableByIdleBudget(ctx context.Context, status, search, after string) (*Table, error) {
	if status != "" && !validStatus(status) {
		return nil, &InvalidError{Field: "status", Message: StatusRule}
	}
	f := models.ConnectionFilter{Status: status}
	if err := s.search(&f, search); err != nil {
		return nil, err
	}
	var pos *models.Position
	if after != "" {
		p, ok := decodePosition(after)
		if !ok {
			return nil, &InvalidError{Field: "after", Message: "is not a position from a previous page"}
		}
		pos = &p
	}
	conns, err := s.d.Store.PageConnections(ctx, f, models.ByLastRefreshed, pos, TablePageSize+1)
	if err != nil {
		return nil, fmt.Errorf("admin: connections table: %w", err)
	}
	t := &Table{}
	if len(conns) > TablePageSize {
		conns = conns[:TablePageSize]
		last := conns[len(conns)-1]
		t.After = encodePosition(models.Position{At: last.LastRefreshedAt, ID: last.ID})
	}
	t.Connections = s.views(s.ttls(ctx), conns)
	return t, nil
}

// Detail is a connection with its most recent events, newest first.
type Detail struct {
	Connection Connection `json:"connection"`
	Events     []Event    `json:"events"`
}

// Connection returns a connection and its EventsShown most recent events.
func (s *Service) Connection(ctx context.Context, id string) (*Detail, error) {
	cn, err := s.lookup(ctx, id)
	if err != nil {
		return nil, err
	}
	evs, err := s.d.Store.ConnectionEvents(ctx, cn.ID, EventsShown)
	if err != nil {
		return nil, fmt.Errorf("admin: events of a connection: %w", err)
	}
	return &Detail{Connection: s.view(s.ttls(ctx), cn), Events: eventViews(evs, false)}, nil
}

// lookup loads the connection of an ID; malformed IDs are not found.
func (s *Service) lookup(ctx context.Context, id string) (*models.Connection, error) {
	id, err := connectionID(id)
	if err != nil {
		return nil, err
	}
	return s.load(ctx, id)
}

// load reads a connection, with the vault's error codes.
func (s *Service) load(ctx context.Context, id string) (*models.Connection, error) {
	cn, err := s.d.Store.Connection(ctx, id)
	switch {
	case errors.Is(err, models.ErrNotFound):
		return nil, &vault.Error{Code: vault.CodeNotFound, Message: "no such connection"}
	case models.IsUnavailable(err):
		return nil, &vault.Error{Code: vault.CodeUnavailable, Message: "the database is not answering", RetryAfter: time.Second}
	case err != nil:
		return nil, fmt.Errorf("admin: read connection: %w", err)
	}
	return cn, nil
}

// Summary is the state of the fleet. Idle budgets count active
// connections only: the others are not warmed.
type Summary struct {
	Total                int64            `json:"total"`
	ByStatus             map[string]int64 `json:"by_status"`
	MinIdleBudgetSeconds *int64           `json:"min_idle_budget_seconds,omitempty"`
	IdleBudgetUnder7Days int64            `json:"idle_budget_under_7_days"`
	RecentConfigErrors   []Event          `json:"recent_config_errors"`
}

// Summary counts connections by status and shows the ones at risk.
func (s *Service) Summary(ctx context.Context) (*Summary, error) {
	now := s.cfg.Now().UTC()
	st, err := s.d.Store.AdminSummary(ctx, models.SummaryQuery{AtRiskBefore: s.atRiskBefore(now),
		ConfigErrorsSince: now.Add(-ConfigErrorAge), ConfigErrors: ConfigErrorsShown})
	if err != nil {
		return nil, fmt.Errorf("admin: summary: %w", err)
	}
	out := &Summary{ByStatus: st.ByStatus, IdleBudgetUnder7Days: st.AtRisk, RecentConfigErrors: eventViews(st.ConfigErrors, true)}
	for _, n := range st.ByStatus {
		out.Total += n
	}
	ttls := s.ttls(ctx)
	if len(ttls.ByOrg) == 0 {
		if st.OldestActiveRefresh != nil {
			b := s.budget(st.OldestActiveRefresh.Add(ttls.Default), now)
			out.MinIdleBudgetSeconds = &b
		}
		return out, nil
	}
	// Orgs with their own idle TTL: count and measure each group of one TTL.
	out.IdleBudgetUnder7Days = 0
	for _, g := range ttls.Scopes() {
		n, err := s.d.Orgs.CountActiveRefreshedBefore(ctx, g.Scope, now.Add(-g.TTL+IdleWarning))
		if err != nil {
			return nil, fmt.Errorf("admin: summary: %w", err)
		}
		out.IdleBudgetUnder7Days += n
		oldest, err := s.d.Orgs.OldestRefresh(ctx, g.Scope)
		if err != nil {
			return nil, fmt.Errorf("admin: summary: %w", err)
		}
		if !oldest.IsZero() {
			if b := s.budget(oldest.Add(g.TTL), now); out.MinIdleBudgetSeconds == nil || b < *out.MinIdleBudgetSeconds {
				out.MinIdleBudgetSeconds = &b
			}
		}
	}
	return out, nil
}

// budget is the time left, in whole seconds, until expires.
func (s *Service) budget(expires, now time.Time) int64 {
	return max(0, int64(expires.Sub(now).Seconds()))
}

func (s *Service) atRiskBefore(now time.Time) time.Time { return now.Add(-s.cfg.IdleTTL + IdleWarning) }

// staleBefore is the filter of connections with less than budget of idle
// budget left at now, each org counted with its own TTL.
func (s *Service) staleBefore(ctx context.Context, now time.Time, budget time.Duration) []models.StaleCutoff {
	var out []models.StaleCutoff
	for _, g := range s.ttls(ctx).Scopes() {
		out = append(out, models.StaleCutoff{Scope: g.Scope, Before: now.Add(-g.TTL + budget)})
	}
	return out
}

// search adds a search string to f.
func (s *Service) search(f *models.ConnectionFilter, q string) error {
	q = strings.TrimSpace(q)
	if len([]rune(q)) > MaxSearch {
		return &InvalidError{Field: "q", Message: SearchRule}
	}
	f.Search = q
	return nil
}

// reauthSoon narrows f to the active connections that reach the
// refresh-token maximum age within the warning window.
func (s *Service) reauthSoon(f *models.ConnectionFilter) {
	before := s.cfg.Now().UTC().Add(-s.cfg.RefreshMaxAge + s.cfg.ReauthSoon)
	f.Status, f.AuthorizedBefore = StatusActive, &before
}

// Overview is the fleet at a glance: the summary, the active connections
// at risk, those whose refresh-token maximum age ends soon (with the
// policy), and those that need re-authorization (least idle budget first,
// TablePageSize at most).
type Overview struct {
	Summary     Summary
	AtRisk      []Connection
	NeedsReauth []Connection
	// MaxAge reports the refresh-token maximum age policy; ReauthSoon
	// lists the connections it ends within ReauthSoonDays.
	MaxAge         bool
	ReauthSoon     []Connection
	ReauthSoonDays int
}

// Overview returns the fleet at a glance.
func (s *Service) Overview(ctx context.Context) (*Overview, error) {
	sum, err := s.Summary(ctx)
	if err != nil {
		return nil, err
	}
	now := s.cfg.Now().UTC()
	risk, err := s.d.Store.PageConnections(ctx, models.ConnectionFilter{Status: StatusActive, Stale: s.staleBefore(ctx, now, IdleWarning)},
		models.ByLastRefreshed, nil, TablePageSize)
	if err != nil {
		return nil, fmt.Errorf("admin: connections at risk: %w", err)
	}
	dead, err := s.d.Store.PageConnections(ctx, models.ConnectionFilter{Status: StatusNeedsReauth}, models.ByLastRefreshed, nil, TablePageSize)
	if err != nil {
		return nil, fmt.Errorf("admin: connections needing re-authorization: %w", err)
	}
	o := &Overview{Summary: *sum, AtRisk: s.views(s.ttls(ctx), risk), NeedsReauth: s.views(s.ttls(ctx), dead)}
	if s.cfg.RefreshMaxAge > 0 {
		f := models.ConnectionFilter{}
		s.reauthSoon(&f)
		soon, err := s.d.Store.PageConnections(ctx, f, models.ByCreated, nil, TablePageSize)
		if err != nil {
			return nil, fmt.Errorf("admin: connections due for re-authorization: %w", err)
		}
		o.MaxAge, o.ReauthSoon, o.ReauthSoonDays = true, s.views(s.ttls(ctx), soon), int(s.cfg.ReauthSoon/(24*time.Hour))
	}
	return o, nil
}

// A position reads base64url("<RFC 3339 time>|<id>").
func encodePosition(p models.Position) string {
	return base64.RawURLEncoding.EncodeToString([]byte(p.At.UTC().Format(time.RFC3339Nano) + "|" + p.ID))
}

func decodePosition(s string) (models.Position, bool) {
	b, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil {
		return models.Position{}, false
	}
	ts, id, ok := strings.Cut(string(b), "|")
	t, err := time.Parse(time.RFC3339Nano, ts)
	if !ok || err != nil || !text.IsUUID(id) {
		return models.Position{}, false
	}
	return models.Position{At: t, ID: id}, true
}
