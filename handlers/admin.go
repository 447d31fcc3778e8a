package handlers

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/labstack/echo/v4"
	"gorm.io/gorm"

	"github.com/tokenwarm/tokenwarm/adminkeys"
	"github.com/tokenwarm/tokenwarm/models"
	"github.com/tokenwarm/tokenwarm/salesforce"
	"github.com/tokenwarm/tokenwarm/vault"
)

// Audit event kinds of admin actions (a revocation records models.EventRevoked).
const (
	eventAdminRefresh    = "admin_refresh"
	eventAdminReauthLink = "admin_reauth_link"
)

const (
	adminKeyCtx         = "admin_key"
	adminPageDefault    = 50
	adminPageMax        = 200
	adminEventsShown    = 50
	adminIdleWarning    = 7 * 24 * time.Hour
	adminConfigErrorAge = 7 * 24 * time.Hour
	adminConfigErrors   = 20
)

// admin is the operators' API under /admin/v1. It acts through the vault
// (the one refresh path) and the same Salesforce client as the flow, and
// never answers a token.
type admin struct {
	api  *API
	keys *adminkeys.Store
}

func newAdmin(a *API) *admin {
	return &admin{api: a, keys: adminkeys.New(a.vault.DB(), a.now)}
}

// requireKey lets only live admin keys in. Missing, wrong and revoked keys
// get the same answer, so nothing tells them apart. A key that could not be
// checked (the database did not answer) gets 503 service_unavailable.
func (ad *admin) requireKey(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		denied := newProblem(http.StatusUnauthorized, "unauthorized", "a valid admin key is required")
		scheme, tok, ok := strings.Cut(c.Request().Header.Get("Authorization"), " ")
		if !ok || !strings.EqualFold(scheme, "Bearer") {
			return denied
		}
		k, err := ad.keys.Authenticate(c.Request().Context(), strings.TrimSpace(tok))
		if adminkeys.ErrorCode(err) == adminkeys.CodeInvalidKey {
			return denied
		}
		if err != nil {
			return unavailable(err)
		}
		c.Set(adminKeyCtx, k)
		return next(c)
	}
}

func adminKeyName(c echo.Context) string {
	k, _ := c.Get(adminKeyCtx).(*adminkeys.Key)
	if k == nil {
		return ""
	}
	return k.Name
}

type adminConnectionView struct {
	ID                  string    `json:"id"`
	OrgID               string    `json:"org_id"`
	UserID              string    `json:"user_id"`
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
}

func (ad *admin) view(cn *models.Connection) adminConnectionView {
	idleExpires := cn.LastRefreshedAt.Add(idleTTL).UTC()
	return adminConnectionView{ID: cn.ID, OrgID: cn.OrgID, UserID: cn.UserID, Owner: cn.Owner, LoginURL: cn.LoginURL,
		InstanceURL: cn.InstanceURL, Status: cn.Status, ReauthReason: cn.ReauthReason, LastRefreshedAt: cn.LastRefreshedAt.UTC(),
		IdleExpiresAt: idleExpires, IdleBudgetSeconds: max(0, int64(idleExpires.Sub(ad.api.now()).Seconds())),
		NextWarmAt: cn.NextWarmAt.UTC(), ConsecutiveFailures: cn.ConsecutiveFailures, LastErrorCode: cn.LastErrorCode,
		CreatedAt: cn.CreatedAt.UTC()}
}

type adminEventView struct {
	ConnectionID string    `json:"connection_id,omitempty"`
	Kind         string    `json:"kind"`
	Cause        string    `json:"cause,omitempty"`
	Worker       string    `json:"worker,omitempty"`
	HTTPStatus   int       `json:"http_status,omitempty"`
	ErrorCode    string    `json:"error_code,omitempty"`
	Detail       string    `json:"detail,omitempty"`
	CreatedAt    time.Time `json:"created_at"`
}

func eventView(e *models.Event, withConnection bool) adminEventView {
	v := adminEventView{Kind: e.Kind, Cause: e.Cause, Worker: e.Worker, HTTPStatus: e.HTTPStatus, ErrorCode: e.ErrorCode,
		Detail: e.Detail, CreatedAt: e.CreatedAt.UTC()}
	if withConnection && e.ConnectionID != nil {
		v.ConnectionID = *e.ConnectionID
	}
	return v
}

// pageCursor is the position after the last connection of a page: the
// ordering time (created_at for the API, so connections created meanwhile
// land after the cursor and none is skipped or repeated) and the id.
type pageCursor struct {
	At time.Time
	ID string
}

func (p pageCursor) encode() string {
	return base64.RawURLEncoding.EncodeToString([]byte(p.At.UTC().Format(time.RFC3339Nano) + "|" + p.ID))
}

func decodeCursor(s string) (pageCursor, bool) {
	b, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil {
		return pageCursor{}, false
	}
	ts, id, ok := strings.Cut(string(b), "|")
	t, err := time.Parse(time.RFC3339Nano, ts)
	if !ok || err != nil || !validUUID(id) {
		return pageCursor{}, false
	}
	return pageCursor{At: t, ID: id}, true
}

func (ad *admin) listConnections(c echo.Context) error {
	q := c.QueryParams()
	db := ad.api.vault.DB().Gorm.WithContext(c.Request().Context())
	limit := adminPageDefault
	if s := q.Get("limit"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 || n > adminPageMax {
			return newFieldProblem("invalid_parameter", "limit", fmt.Sprintf("must be an integer from 1 to %d", adminPageMax))
		}
		limit = n
	}
	if s := q.Get("status"); s != "" {
		if s != models.StatusActive && s != models.StatusNeedsReauth && s != models.StatusRevoked {
			return newFieldProblem("invalid_parameter", "status", "must be active, needs_reauth or revoked")
		}
		db = db.Where("status = ?", s)
	}
	if s := q.Get("org_id"); s != "" {
		db = db.Where("org_id = ?", s)
	}
	if s := q.Get("owner"); s != "" {
		db = db.Where("owner = ?", s)
	}
	if s := q.Get("idle_budget_below_days"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 0 || n > 3650 {
			return newFieldProblem("invalid_parameter", "idle_budget_below_days", "must be an integer number of days from 0 to 3650")
		}
		// Idle budget below n days: last refreshed before now - 30d + n days.
		db = db.Where("last_refreshed_at < ?", ad.api.now().UTC().Add(-idleTTL).Add(time.Duration(n)*24*time.Hour))
	}
	if s := q.Get("cursor"); s != "" {
		cur, ok := decodeCursor(s)
		if !ok {
			return newFieldProblem("invalid_parameter", "cursor", "is not a cursor from a previous page")
		}
		db = db.Where("created_at > ? OR (created_at = ? AND id > ?)", cur.At, cur.At, cur.ID)
	}
	var conns []models.Connection
	if err := db.Order("created_at, id").Limit(limit + 1).Find(&conns).Error; err != nil {
		return err
	}
	out := map[string]any{}
	if len(conns) > limit {
		conns = conns[:limit]
		last := conns[limit-1]
		out["next_cursor"] = pageCursor{At: last.CreatedAt, ID: last.ID}.encode()
	}
	views := make([]adminConnectionView, 0, len(conns))
	for i := range conns {
		views = append(views, ad.view(&conns[i]))
	}
	out["connections"] = views
	return c.JSON(http.StatusOK, out)
}

// connection loads the connection of the path; malformed IDs are 404 too.
func (ad *admin) connection(c echo.Context) (*models.Connection, error) {
	id := c.Param("id")
	if !validUUID(id) {
		return nil, newProblem(http.StatusNotFound, "not_found", "no such connection")
	}
	return ad.api.vault.DB().Connection(c.Request().Context(), strings.ToLower(id))
}

func (ad *admin) getConnection(c echo.Context) error {
	cn, err := ad.connection(c)
	if err != nil {
		return err
	}
	var evs []models.Event
	if err := ad.api.vault.DB().Gorm.WithContext(c.Request().Context()).Where("connection_id = ?", cn.ID).
		Order("id DESC").Limit(adminEventsShown).Find(&evs).Error; err != nil {
		return err
	}
	events := make([]adminEventView, 0, len(evs))
	for i := range evs {
		events = append(events, eventView(&evs[i], false))
	}
	return c.JSON(http.StatusOK, map[string]any{"connection": ad.view(cn), "events": events})
}

// audit records an admin action on a connection, naming the key (never
// the key itself).
func (ad *admin) audit(ctx context.Context, tx *gorm.DB, connectionID, kind, detail string) error {
	if tx == nil {
		tx = ad.api.vault.DB().Gorm
	}
	cid := connectionID
	ev := models.Event{ConnectionID: &cid, Kind: kind, Cause: vault.CauseAdmin, Worker: ad.api.vault.Config().Worker,
		Detail: detail, CreatedAt: ad.api.now().UTC()}
	if err := tx.WithContext(ctx).Create(&ev).Error; err != nil {
		return err
	}
	if ad.api.cfg.OnEvents != nil {
		return ad.api.cfg.OnEvents(tx, []models.Event{ev})
	}
	return nil
}

// refresh forces one refresh through the vault, ignoring backoff.
func (ad *admin) refresh(c echo.Context) error {
	ctx := c.Request().Context()
	cn, err := ad.connection(c)
	if err != nil {
		return err
	}
	_, err = ad.api.vault.Access(ctx, cn.ID, vault.Request{Cause: vault.CauseAdmin, Force: true, IgnoreBackoff: true})
	outcome := "ok"
	if err != nil {
		outcome = string(vault.ErrorCode(err))
	}
	if aerr := ad.audit(ctx, nil, cn.ID, eventAdminRefresh, fmt.Sprintf("forced refresh by admin key %q: %s", adminKeyName(c), outcome)); aerr != nil {
		return aerr
	}
	if err != nil {
		if vault.ErrorCode(err) == vault.CodeReauthRequired {
			p := toProblem(err)
			p.ReauthURL = ad.api.ReauthURL(cn.ID)
			return &problemError{p: p}
		}
		return err
	}
	if cn, err = ad.api.vault.DB().Connection(ctx, cn.ID); err != nil {
		return err
	}
	return c.JSON(http.StatusOK, ad.view(cn))
}

func (ad *admin) reauthLink(c echo.Context) error {
	cn, err := ad.connection(c)
	if err != nil {
		return err
	}
	if cn.Status == models.StatusRevoked {
		return vaultRevoked()
	}
	link, exp, err := ad.api.reauth.link(ad.api.cfg.PublicURL, cn.ID)
	if err != nil {
		return err
	}
	detail := fmt.Sprintf("re-authorization link issued by admin key %q, valid until %s", adminKeyName(c), exp.Format(time.RFC3339))
	if err := ad.audit(c.Request().Context(), nil, cn.ID, eventAdminReauthLink, detail); err != nil {
		return err
	}
	c.Response().Header().Set("Cache-Control", "no-store")
	return c.JSON(http.StatusOK, map[string]any{"url": link, "expires_at": exp})
}

func vaultRevoked() error {
	return &vault.Error{Code: vault.CodeRevoked, Message: "the connection was revoked"}
}

// revoke revokes the connection's refresh token at Salesforce and marks the
// connection revoked, through the vault, under the lock refreshes take.
// Revoking a revoked connection does nothing.
func (ad *admin) revoke(c echo.Context) error {
	// Detached: a caller hanging up must not split the Salesforce
	// revocation from storing it.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(c.Request().Context()), 30*time.Second)
	defer cancel()
	cn, err := ad.connection(c)
	if err != nil {
		return err
	}
	if cn.Status != models.StatusRevoked {
		detail := fmt.Sprintf("revoked by admin key %q", adminKeyName(c))
		cn, err = ad.api.vault.Revoke(ctx, cn.ID, vault.CauseAdmin, detail, ad.api.sf.Revoke)
		if err != nil && !vault.IsVaultError(err) {
			return upstreamProblem(err)
		}
		if err != nil {
			return err
		}
	}
	return c.JSON(http.StatusOK, ad.view(cn))
}

// upstreamProblem says why Salesforce did not confirm a revocation; the
// connection is left as it was, so the admin can retry.
func upstreamProblem(err error) error {
	var se *salesforce.Error
	if errors.As(err, &se) && (se.Class == salesforce.Config || se.Class == salesforce.Restricted) {
		return newProblem(http.StatusServiceUnavailable, string(vault.CodeUpstreamConfig), "Salesforce refused tokenwarm's client credentials or IP address")
	}
	return &problemError{p: Problem{Status: http.StatusServiceUnavailable, Code: string(vault.CodeUpstreamUnavailable),
		Title: http.StatusText(http.StatusServiceUnavailable), Detail: "Salesforce did not confirm the revocation; retry", RetryAfter: 30}}
}

type adminSummary struct {
	Total                int64            `json:"total"`
	ByStatus             map[string]int64 `json:"by_status"`
	MinIdleBudgetSeconds *int64           `json:"min_idle_budget_seconds,omitempty"`
	IdleBudgetUnder7Days int64            `json:"idle_budget_under_7_days"`
	RecentConfigErrors   []adminEventView `json:"recent_config_errors"`
}

// summary counts connections by status and shows the ones at risk. Idle
// budgets count active connections only: the others are not warmed.
func (ad *admin) summary(c echo.Context) error {
	db := ad.api.vault.DB().Gorm.WithContext(c.Request().Context())
	now := ad.api.now().UTC()
	out := adminSummary{ByStatus: map[string]int64{models.StatusActive: 0, models.StatusNeedsReauth: 0, models.StatusRevoked: 0}}
	var counts []struct {
		Status string
		N      int64
	}
	if err := db.Model(&models.Connection{}).Select("status, count(*) AS n").Group("status").Scan(&counts).Error; err != nil {
		return err
	}
	for _, s := range counts {
		out.ByStatus[s.Status] = s.N
		out.Total += s.N
	}
	var oldest []models.Connection
	if err := db.Where("status = ?", models.StatusActive).Order("last_refreshed_at").Limit(1).Find(&oldest).Error; err != nil {
		return err
	}
	if len(oldest) == 1 {
		budget := ad.view(&oldest[0]).IdleBudgetSeconds
		out.MinIdleBudgetSeconds = &budget
	}
	if err := db.Model(&models.Connection{}).Where("status = ? AND last_refreshed_at < ?", models.StatusActive, now.Add(-idleTTL+adminIdleWarning)).
		Count(&out.IdleBudgetUnder7Days).Error; err != nil {
		return err
	}
	var evs []models.Event
	if err := db.Where("kind = ? AND created_at >= ?", models.EventConfigError, now.Add(-adminConfigErrorAge)).
		Order("id DESC").Limit(adminConfigErrors).Find(&evs).Error; err != nil {
		return err
	}
	out.RecentConfigErrors = make([]adminEventView, 0, len(evs))
	for i := range evs {
		out.RecentConfigErrors = append(out.RecentConfigErrors, eventView(&evs[i], true))
	}
	return c.JSON(http.StatusOK, out)
}
