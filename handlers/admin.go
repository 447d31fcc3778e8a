package handlers

import (
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/tokenwarm/tokenwarm/admin"
	"github.com/tokenwarm/tokenwarm/adminkeys"
	"github.com/tokenwarm/tokenwarm/vault"
)

const adminKeyCtx = "admin_key"

// adminAPI is the operators' API under /admin/v1: it checks the key, reads
// the request, and renders the admin service's values and errors. The
// service acts through the vault (the one refresh path) and never answers
// a token.
type adminAPI struct {
	api  *API
	keys *adminkeys.Store
	svc  *admin.Service
}

func newAdminAPI(a *API) *adminAPI {
	return &adminAPI{api: a, keys: adminkeys.New(a.cfg.AdminStore, a.now), svc: a.admin}
}

// AdminStore is what the admin API and UI keep in the database: the admin
// service's queries and audit, per-org settings, and admin keys.
type AdminStore interface {
	admin.Store
	admin.Orgs
	admin.Auditor
	admin.Eraser
	adminkeys.Storage
}

// newAdminService wires the admin service to the API's vault, store,
// Salesforce client and re-auth links.
func newAdminService(a *API) *admin.Service {
	db := a.cfg.AdminStore
	return admin.New(admin.Deps{Store: db, Orgs: db, Auditor: db, Vault: a.vault, Revoker: a.sf, Links: reauthLinks{a}, Eraser: db},
		admin.Config{Worker: a.vault.Config().Worker, IdleTTL: a.vault.Config().IdleTTL, ValidateIdleTTL: a.cfg.ValidateOrgIdleTTL, Now: a.now,
			RefreshMaxAge: a.cfg.RefreshMaxAge, ReauthSoon: a.cfg.ReauthSoon})
}

// reauthLinks makes the admin service's re-authorization links.
type reauthLinks struct{ a *API }

func (l reauthLinks) ReauthLink(connectionID string) (string, time.Time, error) {
	return l.a.reauth.link(l.a.cfg.PublicURL, connectionID)
}

// requireKey lets only live admin keys in. Missing, wrong and revoked keys
// get the same answer, so nothing tells them apart. A key that could not be
// checked (the database did not answer) gets 503 service_unavailable.
func (ad *adminAPI) requireKey(next echo.HandlerFunc) echo.HandlerFunc {
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

// adminKeyName is the name of the request's admin key (never the key).
func adminKeyName(c echo.Context) string {
	k, _ := c.Get(adminKeyCtx).(*adminkeys.Key)
	if k == nil {
		return ""
	}
	return k.Name
}

// adminProblem renders the admin service's parameter errors; every other
// error renders as itself (vault codes, storage failures).
func adminProblem(err error) error {
	var ie *admin.InvalidError
	if errors.As(err, &ie) {
		return newFieldProblem("invalid_parameter", ie.Field, ie.Message)
	}
	return err
}

func (ad *adminAPI) listConnections(c echo.Context) error {
	q := c.QueryParams()
	lq := admin.ListQuery{Status: q.Get("status"), OrgID: q.Get("org_id"), Owner: q.Get("owner"), Search: q.Get("q"), Cursor: q.Get("cursor")}
	switch q.Get("reauth_soon") {
	case "", "false":
	case "true":
		lq.ReauthSoon = true
	default:
		return newFieldProblem("invalid_parameter", "reauth_soon", admin.ReauthSoonRule)
	}
	if s := q.Get("limit"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 {
			return newFieldProblem("invalid_parameter", "limit", admin.LimitRule)
		}
		lq.Limit = n
	}
	if s := q.Get("idle_budget_below_days"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil {
			return newFieldProblem("invalid_parameter", "idle_budget_below_days", admin.IdleBudgetDaysRule)
		}
		lq.IdleBudgetBelowDays = &n
	}
	page, err := ad.svc.ListConnections(c.Request().Context(), lq)
	if err != nil {
		return adminProblem(err)
	}
	return c.JSON(http.StatusOK, page)
}

func (ad *adminAPI) getConnection(c echo.Context) error {
	d, err := ad.svc.Connection(c.Request().Context(), c.Param("id"))
	if err != nil {
		return adminProblem(err)
	}
	return c.JSON(http.StatusOK, d)
}

// refresh forces one refresh through the vault, ignoring backoff. A dead
// connection's 409 carries a re-auth link.
func (ad *adminAPI) refresh(c echo.Context) error {
	cn, err := ad.svc.Refresh(c.Request().Context(), c.Param("id"), adminKeyName(c))
	var failed *admin.RefreshError
	if errors.As(err, &failed) && vault.ErrorCode(failed.Err) == vault.CodeReauthRequired {
		p := toProblem(failed.Err)
		p.ReauthURL = ad.api.ReauthURL(strings.ToLower(c.Param("id")))
		return &problemError{p: p}
	}
	if err != nil {
		return adminProblem(err)
	}
	return c.JSON(http.StatusOK, cn)
}

func (ad *adminAPI) reauthLink(c echo.Context) error {
	link, err := ad.svc.ReauthLink(c.Request().Context(), c.Param("id"), adminKeyName(c))
	if err != nil {
		return adminProblem(err)
	}
	c.Response().Header().Set("Cache-Control", "no-store")
	return c.JSON(http.StatusOK, link)
}

// revoke revokes the connection at Salesforce, then marks it revoked;
// revoking a revoked connection does nothing.
func (ad *adminAPI) revoke(c echo.Context) error {
	cn, err := ad.svc.Revoke(c.Request().Context(), c.Param("id"), adminKeyName(c))
	if err != nil {
		return adminProblem(err)
	}
	return c.JSON(http.StatusOK, cn)
}

// eraseIdentity erases the personal data of the connection's user.
func (ad *adminAPI) eraseIdentity(c echo.Context) error {
	cn, err := ad.svc.EraseIdentity(c.Request().Context(), c.Param("id"), adminKeyName(c))
	if err != nil {
		return adminProblem(err)
	}
	return c.JSON(http.StatusOK, cn)
}

func (ad *adminAPI) summary(c echo.Context) error {
	s, err := ad.svc.Summary(c.Request().Context())
	if err != nil {
		return adminProblem(err)
	}
	return c.JSON(http.StatusOK, s)
}

func (ad *adminAPI) listOrgs(c echo.Context) error {
	o, err := ad.svc.Orgs(c.Request().Context())
	if err != nil {
		return adminProblem(err)
	}
	return c.JSON(http.StatusOK, o)
}

// setOrgIdleTTL records the refresh-token idle TTL an org's admin set for
// the connected app; 0 goes back to the default.
func (ad *adminAPI) setOrgIdleTTL(c echo.Context) error {
	var body struct {
		Seconds *int64 `json:"refresh_idle_ttl_seconds"`
	}
	dec := json.NewDecoder(io.LimitReader(c.Request().Body, 4096))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&body); err != nil || body.Seconds == nil {
		return newFieldProblem("invalid_parameter", "refresh_idle_ttl_seconds", "is required: a JSON body {\"refresh_idle_ttl_seconds\": N}")
	}
	if *body.Seconds < 0 || *body.Seconds > int64(10*365*24*3600) {
		return newFieldProblem("invalid_parameter", "refresh_idle_ttl_seconds", "must be 0 (the default) or a number of seconds up to ten years")
	}
	o, err := ad.svc.SetOrgIdleTTL(c.Request().Context(), c.Param("org_id"), time.Duration(*body.Seconds)*time.Second, adminKeyName(c))
	if err != nil {
		return adminProblem(err)
	}
	return c.JSON(http.StatusOK, o)
}
