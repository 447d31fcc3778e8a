package handlers

import (
	"context"
	"errors"
	"net/http"
	"strconv"
	"strings"

	"github.com/labstack/echo/v4"

	"github.com/tokenwarm/tokenwarm/devices"
	"github.com/tokenwarm/tokenwarm/errs"
)

// oauthError is an RFC 6749 error body; the OAuth endpoints answer these
// instead of problem details.
type oauthError struct {
	Error            string `json:"error"`
	ErrorDescription string `json:"error_description,omitempty"`
}

func oauthFail(c echo.Context, status int, code, desc string) error {
	c.Response().Header().Set("Cache-Control", "no-store")
	return c.JSON(status, oauthError{Error: code, ErrorDescription: desc})
}

type deviceTokenResponse struct {
	AccessToken   string   `json:"access_token"`
	TokenType     string   `json:"token_type"`
	ExpiresIn     int      `json:"expires_in"`
	RefreshToken  string   `json:"refresh_token"`
	SessionID     string   `json:"session_id"`
	ConnectionIDs []string `json:"connection_ids"`
}

// deviceToken trades a handoff code (with the app's PKCE verifier) or a
// device refresh token for a device session.
func (a *API) deviceToken(c echo.Context) error {
	if ct := c.Request().Header.Get(echo.HeaderContentType); !strings.HasPrefix(ct, echo.MIMEApplicationForm) {
		return oauthFail(c, http.StatusBadRequest, "invalid_request", "the body must be application/x-www-form-urlencoded")
	}
	form, err := c.FormParams()
	if err != nil {
		var he *echo.HTTPError
		if errors.As(err, &he) && he.Code == http.StatusRequestEntityTooLarge {
			return err
		}
		return oauthFail(c, http.StatusBadRequest, "invalid_request", "the form body cannot be parsed")
	}
	for k, v := range form {
		if len(v) > 1 {
			return oauthFail(c, http.StatusBadRequest, "invalid_request", "parameter "+k+" is repeated")
		}
	}
	ctx := c.Request().Context()
	var toks *devices.Tokens
	switch gt := form.Get("grant_type"); gt {
	case "handoff_code":
		code, verifier := form.Get("code"), form.Get("code_verifier")
		if code == "" || verifier == "" {
			return oauthFail(c, http.StatusBadRequest, "invalid_request", "code and code_verifier are required")
		}
		label := form.Get("device_label")
		if len(label) > 128 {
			return oauthFail(c, http.StatusBadRequest, "invalid_request", "device_label is longer than 128 characters")
		}
		h, err := a.devices.RedeemHandoff(ctx, code, verifier)
		if err != nil {
			return a.deviceGrantError(c, err)
		}
		toks, err = a.devices.CreateSession(ctx, h.Owner, label)
		if err != nil {
			return a.deviceGrantError(c, err)
		}
	case "refresh_token":
		rt := form.Get("refresh_token")
		if rt == "" {
			return oauthFail(c, http.StatusBadRequest, "invalid_request", "refresh_token is required")
		}
		toks, err = a.devices.Refresh(ctx, rt)
		if err != nil {
			return a.deviceGrantError(c, err)
		}
	case "":
		return oauthFail(c, http.StatusBadRequest, "invalid_request", "grant_type is required")
	default:
		return oauthFail(c, http.StatusBadRequest, "unsupported_grant_type", "grant_type must be handoff_code or refresh_token")
	}
	// The session is stored (and a refresh token rotated): losing this
	// answer now would make the app present the old token again, which is
	// reuse. The read is retried on a fresh connection by the store.
	conns, err := a.vault.ConnectionsOf(ctx, toks.Owner)
	if err != nil {
		return a.oauthUnavailable(c, err)
	}
	ids := make([]string, 0, len(conns))
	for _, cn := range conns {
		ids = append(ids, cn.ID)
	}
	c.Response().Header().Set("Cache-Control", "no-store")
	c.Response().Header().Set("Pragma", "no-cache")
	return c.JSON(http.StatusOK, deviceTokenResponse{AccessToken: toks.AccessToken, TokenType: "Bearer", ExpiresIn: toks.ExpiresIn,
		RefreshToken: toks.RefreshToken, SessionID: toks.SessionID, ConnectionIDs: ids})
}

// deviceGrantError answers a failed grant: invalid_grant only when the
// grant itself is bad (the app then drops its session); any failure of ours,
// such as an unreachable database, is temporarily_unavailable, so the app
// keeps its session and retries.
func (a *API) deviceGrantError(c echo.Context, err error) error {
	if errors.Is(err, devices.ErrInvalidGrant) || errors.Is(err, devices.ErrRefreshReuse) {
		return oauthFail(c, http.StatusBadRequest, "invalid_grant", safeMessage(err))
	}
	if errors.Is(err, devices.ErrInvalidRequest) {
		return oauthFail(c, http.StatusBadRequest, "invalid_request", safeMessage(err))
	}
	return a.oauthUnavailable(c, err)
}

// oauthUnavailable is the OAuth endpoints' answer to a failure of ours
// (RFC 6749 section 4.1.2.1 names it temporarily_unavailable): 503 with
// Retry-After. err is logged; errors of devices and the database never
// carry a token.
func (a *API) oauthUnavailable(c echo.Context, err error) error {
	if errs.IsUnavailable(err) {
		a.log.Warn("device token endpoint: database unavailable", "path", c.Path(), "err", err)
	} else {
		a.log.Error("device token endpoint failed", "path", c.Path(), "err", err)
	}
	c.Response().Header().Set("Retry-After", strconv.Itoa(unavailableRetryAfter))
	return oauthFail(c, http.StatusServiceUnavailable, "temporarily_unavailable", "the service is temporarily unavailable; retry shortly")
}

// safeMessage is the message of a devices error: built to carry no token.
func safeMessage(err error) string {
	var de *devices.Error
	if errors.As(err, &de) {
		return de.Error()
	}
	return "the grant is invalid"
}

// deviceRevoke revokes a device refresh token and its session (RFC 7009:
// an unknown token is not an error).
func (a *API) deviceRevoke(c echo.Context) error {
	form, err := c.FormParams()
	if err != nil || form.Get("token") == "" {
		return oauthFail(c, http.StatusBadRequest, "invalid_request", "token is required")
	}
	if err := a.devices.RevokeByRefreshToken(c.Request().Context(), form.Get("token")); err != nil {
		return a.oauthUnavailable(c, err)
	}
	return c.JSON(http.StatusOK, map[string]any{})
}

func (a *API) jwks(c echo.Context) error {
	set, err := a.devices.JWKS(c.Request().Context())
	if err != nil {
		return err
	}
	c.Response().Header().Set("Cache-Control", "public, max-age=300")
	return c.JSON(http.StatusOK, set)
}

const claimsKey = "device_claims"

// requireDevice checks the device JWT. Every invalid, expired or revoked
// token gets the same 401; a token that could not be checked (the database
// did not answer) gets 503 service_unavailable with Retry-After, never 401:
// an SDK signs its user out on 401.
func (a *API) requireDevice(next echo.HandlerFunc) echo.HandlerFunc {
	return a.deviceAuth(a.devices.Verify, next)
}

// requireDeviceSignature checks the device JWT's signature and claims
// only; the handler must read the session with whatever else it reads
// (the token pull does, in one statement with the connection) and judge it
// with Claims.CheckSession.
func (a *API) requireDeviceSignature(next echo.HandlerFunc) echo.HandlerFunc {
	return a.deviceAuth(a.devices.VerifySignature, next)
}

func (a *API) deviceAuth(verify func(context.Context, string) (*devices.Claims, error), next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		auth := c.Request().Header.Get("Authorization")
		scheme, tok, ok := strings.Cut(auth, " ")
		if !ok || !strings.EqualFold(scheme, "Bearer") || strings.TrimSpace(tok) == "" {
			return newProblem(http.StatusUnauthorized, "unauthorized", "a device bearer token is required")
		}
		claims, err := verify(c.Request().Context(), strings.TrimSpace(tok))
		if errors.Is(err, devices.ErrInvalidToken) {
			return invalidDeviceToken()
		}
		if err != nil {
			return unavailable(err)
		}
		c.Set(claimsKey, claims)
		return next(c)
	}
}

// invalidDeviceToken is the one answer to every invalid, expired or
// revoked device token, so nothing tells them apart.
func invalidDeviceToken() error {
	return newProblem(http.StatusUnauthorized, "unauthorized", "the device token is invalid, expired or revoked")
}

func deviceClaims(c echo.Context) *devices.Claims {
	claims, _ := c.Get(claimsKey).(*devices.Claims)
	return claims
}

func deviceOwner(c echo.Context) string {
	claims, _ := c.Get(claimsKey).(*devices.Claims)
	if claims == nil {
		return ""
	}
	return claims.Subject
}
