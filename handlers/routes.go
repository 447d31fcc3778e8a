// Package handlers is tokenwarm's HTTP surface (echo). It is the only
// package that decides HTTP status codes.
package handlers

import (
	"context"
	"log/slog"
	"net/http"
	"net/netip"
	"time"

	"github.com/labstack/echo/v4"
	"github.com/labstack/echo/v4/middleware"
)

// Readiness reports whether the service can take traffic.
type Readiness interface {
	Ready(ctx context.Context) error
}

// Deps are what the routes need.
type Deps struct {
	Log   *slog.Logger
	Ready Readiness
	// Metrics serves /metrics when set.
	Metrics http.Handler
	// API is the mobile API and OAuth flow; nil serves health only.
	API *API
	// Mount adds routes served by other handlers (e.g. the built-in
	// emulator in demo mode) under a path prefix.
	Mount map[string]http.Handler
	// RateLimits limit the mobile and OAuth endpoints; the zero value
	// limits nothing.
	RateLimits RateLimits
	// TrustedProxies are the reverse proxies whose X-Forwarded-For names
	// the client IP; with none, the client IP is the socket's address.
	TrustedProxies []netip.Prefix
}

// New builds the router with every route of the API.
func New(d Deps) *echo.Echo {
	e := echo.New()
	e.HideBanner, e.HidePort = true, true
	e.IPExtractor = ipExtractor(d.TrustedProxies)
	e.HTTPErrorHandler = errorHandler(d.Log)
	e.Use(middleware.RecoverWithConfig(middleware.RecoverConfig{DisableStackAll: true, DisablePrintStack: true}))
	e.Use(middleware.BodyLimit("64K"))
	e.Use(defaultHeaders)

	e.GET("/healthz", healthz)
	e.GET("/readyz", readyz(d.Ready))
	if d.Metrics != nil {
		e.GET("/metrics", echo.WrapHandler(d.Metrics))
	}
	if a := d.API; a != nil {
		// Rate limits in this replica's memory (ratelimit.go): per client
		// IP first, then per device session once the token is verified,
		// or per presented grant on the token endpoint.
		rl := newRateLimits(d.RateLimits)
		e.GET("/v1/oauth/authorize", a.authorize, rl.byIP(true))
		e.GET("/v1/oauth/callback", a.callback)
		e.POST("/v1/device/token", a.deviceToken, rl.byIP(true), rl.byGrant())
		e.POST("/v1/device/revoke", a.deviceRevoke, rl.byIP(true))
		e.GET("/.well-known/jwks.json", a.jwks)
		e.GET("/.well-known/oauth-authorization-server", a.oauthMetadata)
		dev := e.Group("/v1/connections")
		dev.GET("", a.listConnections, a.requireDevice, rl.bySession())
		dev.GET("/:id", a.getConnection, a.requireDevice, rl.bySession())
		// The pull checks the device session in its one read of the
		// connection (vault.Request.Session).
		dev.GET("/:id/access-token", a.getAccessToken, rl.byIP(false), a.requireDeviceSignature, rl.bySession())
		if a.cfg.AdminStore != nil {
			ad := newAdminAPI(a)
			adm := e.Group("/admin/v1", ad.requireKey)
			adm.GET("/connections", ad.listConnections)
			adm.GET("/connections/:id", ad.getConnection)
			adm.POST("/connections/:id/refresh", ad.refresh)
			adm.POST("/connections/:id/reauth-link", ad.reauthLink)
			adm.POST("/connections/:id/revoke", ad.revoke)
			adm.DELETE("/connections/:id/identity", ad.eraseIdentity)
			adm.GET("/summary", ad.summary)
			adm.GET("/orgs", ad.listOrgs)
			adm.PUT("/orgs/:org_id/refresh-idle-ttl", ad.setOrgIdleTTL)
			if a.cfg.AdminSessions != nil {
				registerAdminUI(e, ad, a.cfg.AdminSessions)
			}
		}
		if a.cfg.Demo {
			e.GET("/", a.demoHome)
			e.GET("/demo/start", a.demoStart)
			e.GET("/demo/done", a.demoDone)
		}
	}
	for prefix, h := range d.Mount {
		e.Any(prefix+"/*", echo.WrapHandler(http.StripPrefix(prefix, h)))
	}
	return e
}

// defaultHeaders marks every answer as not to be cached or sniffed: most
// carry tokens, re-auth links or connection state. A handler whose answer
// may be cached (JWKS) overrides Cache-Control.
func defaultHeaders(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		h := c.Response().Header()
		h.Set("Cache-Control", "no-store")
		h.Set("X-Content-Type-Options", "nosniff")
		return next(c)
	}
}

func healthz(c echo.Context) error {
	return c.JSON(http.StatusOK, map[string]string{"status": "ok"})
}

func readyz(r Readiness) echo.HandlerFunc {
	return func(c echo.Context) error {
		ctx, cancel := context.WithTimeout(c.Request().Context(), 2*time.Second)
		defer cancel()
		if err := r.Ready(ctx); err != nil {
			return newProblem(http.StatusServiceUnavailable, "not_ready", err.Error())
		}
		return c.JSON(http.StatusOK, map[string]string{"status": "ready"})
	}
}
