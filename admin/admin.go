// Package admin is what operators can see and do: list connections, look at
// one with its recent events, refresh it now, hand out a re-authorization
// link, revoke it, and summarise the fleet. The admin API and the admin UI
// (package handlers) both use it and only render its values. Every action
// is audited as an event with cause admin that names the key (never the
// key). Errors are vault.Error codes or *InvalidError; storage failures are
// returned wrapped, as they are (handlers decides what each means in HTTP).
package admin

import (
	"context"
	"time"

	"github.com/tokenwarm/tokenwarm/models"
	"github.com/tokenwarm/tokenwarm/vault"
)

// Store holds what operators look at (implemented by *models.DB).
type Store interface {
	PageConnections(ctx context.Context, f models.ConnectionFilter, order models.ConnectionOrder, after *models.Position, limit int) ([]models.Connection, error)
	ConnectionEvents(ctx context.Context, connectionID string, n int) ([]models.Event, error)
	AdminSummary(ctx context.Context, q models.SummaryQuery) (*models.Summary, error)
	Connection(ctx context.Context, id string) (*models.Connection, error)
}

// Auditor stores the audit event of an action (implemented by *models.DB,
// with the event's webhook deliveries in the same transaction).
type Auditor interface {
	RecordAdminEvent(ctx context.Context, ev models.Event) error
}

// Vault is the one refresh path (implemented by *vault.Vault): actions on
// tokens go through it alone.
type Vault interface {
	Access(ctx context.Context, id string, req vault.Request) (*vault.AccessToken, error)
	Revoke(ctx context.Context, id, cause, detail string, revoke func(ctx context.Context, loginURL, refreshToken string) error) (*models.Connection, error)
}

// Revoker revokes a refresh token at Salesforce (*salesforce.Client).
type Revoker interface {
	Revoke(ctx context.Context, loginURL, refreshToken string) error
}

// ReauthLinks makes the signed, expiring links that re-authorize a
// connection.
type ReauthLinks interface {
	ReauthLink(connectionID string) (url string, expires time.Time, err error)
}

// Config tunes the service.
type Config struct {
	// Worker names this process in audit events.
	Worker string
	// IdleTTL is the default idle lifetime of a refresh token (30 days if
	// 0); orgs may have their own.
	IdleTTL time.Duration
	// ValidateIdleTTL refuses an org TTL the warm schedule cannot keep up
	// with; nil accepts any positive TTL.
	ValidateIdleTTL func(time.Duration) error
	// Now is the clock (time.Now if nil).
	Now func() time.Time
	// RefreshMaxAge is the org's "expire refresh token after N" policy
	// (SALESFORCE_REFRESH_MAX_AGE; 0: none). With it, views show when each
	// grant ends and the overview lists those ending within ReauthSoon.
	RefreshMaxAge time.Duration
	// ReauthSoon is how far ahead (default 7 days).
	ReauthSoon time.Duration
}

// Orgs holds the per-org settings (implemented by *models.DB).
type Orgs interface {
	IdleTTLs(ctx context.Context, def time.Duration) (models.IdleTTLs, error)
	SetOrgIdleTTL(ctx context.Context, orgID string, ttl time.Duration, now time.Time) error
	OldestRefresh(ctx context.Context, scope models.OrgScope) (time.Time, error)
	CountActiveRefreshedBefore(ctx context.Context, scope models.OrgScope, before time.Time) (int64, error)
}

// Eraser erases a user's personal data with its audit event (implemented
// by *models.DB).
type Eraser interface {
	EraseIdentity(ctx context.Context, id string, ev models.Event) (*models.Connection, error)
}

// Deps are what the service acts through.
type Deps struct {
	Store   Store
	Orgs    Orgs
	Auditor Auditor
	Vault   Vault
	Revoker Revoker
	Links   ReauthLinks
	Eraser  Eraser
}

// Service is the operators' view of the fleet and their actions on it.
type Service struct {
	d   Deps
	cfg Config
}

// New makes the service.
func New(d Deps, cfg Config) *Service {
	if cfg.IdleTTL <= 0 {
		cfg.IdleTTL = 30 * 24 * time.Hour
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.ReauthSoon <= 0 {
		cfg.ReauthSoon = 7 * 24 * time.Hour
	}
	return &Service{d: d, cfg: cfg}
}

// Connection statuses.
const (
	StatusActive      = models.StatusActive
	StatusNeedsReauth = models.StatusNeedsReauth
	StatusRevoked     = models.StatusRevoked
)

// Statuses lists every connection status.
func Statuses() []string { return []string{StatusActive, StatusNeedsReauth, StatusRevoked} }

func validStatus(s string) bool {
	return s == StatusActive || s == StatusNeedsReauth || s == StatusRevoked
}

// Limits and windows of the views.
const (
	// DefaultPageSize and MaxPageSize bound ListConnections.
	DefaultPageSize = 50
	MaxPageSize     = 200
	// EventsShown is how many recent events a connection's detail shows.
	EventsShown = 50
	// IdleWarning: active connections with less idle budget are at risk.
	IdleWarning = 7 * 24 * time.Hour
	// ConfigErrorAge and ConfigErrorsShown: the summary's recent
	// configuration errors.
	ConfigErrorAge    = 7 * 24 * time.Hour
	ConfigErrorsShown = 20
	// TablePageSize is the UI table's page (and its overview lists').
	TablePageSize = 200
	// MaxIdleBudgetDays bounds the idle_budget_below_days filter.
	MaxIdleBudgetDays = 3650
)

// Rules of the parameters, as InvalidError messages say them.
const (
	LimitRule          = "must be an integer from 1 to 200"
	StatusRule         = "must be active, needs_reauth or revoked"
	IdleBudgetDaysRule = "must be an integer number of days from 0 to 3650"
	CursorRule         = "is not a cursor from a previous page"
	SearchRule         = "must be at most 100 characters"
	ReauthSoonRule     = "must be true or false; true needs SALESFORCE_REFRESH_MAX_AGE"
)

// MaxSearch bounds a search string.
const MaxSearch = 100

// Connection is a connection as operators see it: never a token. The
// user's name, username and email and the org's name are empty when
// unknown (capture off or failed, or erased).
type Connection struct {
	ID                  string    `json:"id"`
	OrgID               string    `json:"org_id"`
	OrgName             string    `json:"org_name"`
	UserID              string    `json:"user_id"`
	UserName            string    `json:"user_name"`
	Username            string    `json:"username"`
	Email               string    `json:"email"`
	Owner               string    `json:"owner"`
	LoginURL            string    `json:"login_url"`
	InstanceURL         string    `json:"instance_url"`
	Status              string    `json:"status"`
	ReauthReason        string    `json:"reauth_reason,omitempty"`
	LastRefreshedAt     time.Time `json:"last_refreshed_at"`
	IdleExpiresAt       time.Time `json:"idle_expires_at"`
	IdleBudgetSeconds   int64     `json:"idle_budget_seconds"`
	NextWarmAt          time.Time `json:"next_warm_at"`
	ConsecutiveFailures int       `json:"consecutive_failures"`
	LastErrorCode       string    `json:"last_error_code,omitempty"`
	CreatedAt           time.Time `json:"created_at"`
	// AuthorizedAt is the last connect or re-authorization.
	AuthorizedAt time.Time `json:"authorized_at"`
	// ReauthDueAt is when the org's refresh-token maximum age ends the
	// grant (only with SALESFORCE_REFRESH_MAX_AGE); ReauthSoon says it is
	// within TOKENWARM_REAUTH_SOON_DAYS of now.
	ReauthDueAt *time.Time `json:"reauth_due_at,omitempty"`
	ReauthSoon  bool       `json:"reauth_soon"`
}

// Label is how a person names the connection: the user's name, else the
// username, else the owner.
func (c Connection) Label() string {
	switch {
	case c.UserName != "":
		return c.UserName
	case c.Username != "":
		return c.Username
	}
	return c.Owner
}

// Org is the org's name, else its ID.
func (c Connection) Org() string {
	if c.OrgName != "" {
		return c.OrgName
	}
	return c.OrgID
}

// Event is one line of an audit trail. ConnectionID is set only where
// events of several connections are shown together.
type Event struct {
	ConnectionID string    `json:"connection_id,omitempty"`
	Kind         string    `json:"kind"`
	Cause        string    `json:"cause,omitempty"`
	Worker       string    `json:"worker,omitempty"`
	HTTPStatus   int       `json:"http_status,omitempty"`
	ErrorCode    string    `json:"error_code,omitempty"`
	Detail       string    `json:"detail,omitempty"`
	CreatedAt    time.Time `json:"created_at"`
}

func (s *Service) view(ttls models.IdleTTLs, cn *models.Connection) Connection {
	ttl := ttls.For(cn.OrgID)
	idleExpires := cn.LastRefreshedAt.Add(ttl).UTC()
	v := Connection{ID: cn.ID, OrgID: cn.OrgID, OrgName: cn.OrgName, UserID: cn.UserID, UserName: cn.UserName,
		Username: cn.UserUsername, Email: cn.UserEmail, Owner: cn.Owner, LoginURL: cn.LoginURL,
		InstanceURL: cn.InstanceURL, Status: cn.Status, ReauthReason: cn.ReauthReason, LastRefreshedAt: cn.LastRefreshedAt.UTC(),
		IdleExpiresAt: idleExpires, IdleBudgetSeconds: max(0, int64(idleExpires.Sub(s.cfg.Now()).Seconds())),
		NextWarmAt: cn.NextWarmAt.UTC(), ConsecutiveFailures: cn.ConsecutiveFailures, LastErrorCode: cn.LastErrorCode,
		CreatedAt: cn.CreatedAt.UTC(), AuthorizedAt: authorizedAt(cn)}
	if s.cfg.RefreshMaxAge > 0 {
		due := v.AuthorizedAt.Add(s.cfg.RefreshMaxAge)
		v.ReauthDueAt = &due
		v.ReauthSoon = cn.Status == StatusActive && due.Before(s.cfg.Now().Add(s.cfg.ReauthSoon))
	}
	return v
}

// authorizedAt is the last authorization; rows that predate its column
// count from their creation.
func authorizedAt(cn *models.Connection) time.Time {
	if cn.AuthorizedAt != nil {
		return cn.AuthorizedAt.UTC()
	}
	return cn.CreatedAt.UTC()
}

func (s *Service) views(ttls models.IdleTTLs, conns []models.Connection) []Connection {
	out := make([]Connection, 0, len(conns))
	for i := range conns {
		out = append(out, s.view(ttls, &conns[i]))
	}
	return out
}

// ttls reads each org's refresh-token idle TTL; if that fails, views show
// the default (a view is information, never a reason to fail).
func (s *Service) ttls(ctx context.Context) models.IdleTTLs {
	if s.d.Orgs == nil {
		return models.IdleTTLs{Default: s.cfg.IdleTTL}
	}
	ttls, err := s.d.Orgs.IdleTTLs(ctx, s.cfg.IdleTTL)
	if err != nil {
		return models.IdleTTLs{Default: s.cfg.IdleTTL}
	}
	return ttls
}

func eventView(e *models.Event, withConnection bool) Event {
	v := Event{Kind: e.Kind, Cause: e.Cause, Worker: e.Worker, HTTPStatus: e.HTTPStatus, ErrorCode: e.ErrorCode,
		Detail: e.Detail, CreatedAt: e.CreatedAt.UTC()}
	if withConnection && e.ConnectionID != nil {
		v.ConnectionID = *e.ConnectionID
	}
	return v
}

func eventViews(evs []models.Event, withConnection bool) []Event {
	out := make([]Event, 0, len(evs))
	for i := range evs {
		out = append(out, eventView(&evs[i], withConnection))
	}
	return out
}
