package handlers

import (
	"context"
	"errors"
	"net/http"
	"net/url"
	"strconv"
	"strings"

	"github.com/labstack/echo/v4"

	"github.com/tokenwarm/tokenwarm/devices"
	"github.com/tokenwarm/tokenwarm/errs"
	"github.com/tokenwarm/tokenwarm/pkce"
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
	Scope         string   `json:"scope"`
	SessionID     string   `json:"session_id"`
	ConnectionIDs []string `json:"connection_ids"`
}

// deviceToken is the token endpoint (RFC 6749 section 3.2): it trades an
// authorization (handoff) code, with the app's PKCE verifier, or a device
// refresh token for a device session. Apps are public clients: a client_id
// (form or HTTP Basic with an empty password) names the client, nothing
// authenticates it.
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
	clientID, refusal := a.oauthClient(c, form)
	if refusal != nil {
		return oauthFail(c, refusal.status, refusal.code, refusal.desc)
	}
	ctx := c.Request().Context()
	var toks *devices.Tokens
	switch gt := form.Get("grant_type"); gt {
	case "authorization_code", "handoff_code":
		code, verifier := form.Get("code"), form.Get("code_verifier")
		if code == "" || verifier == "" {
			return oauthFail(c, http.StatusBadRequest, "invalid_request", "code and code_verifier are required")
		}
		label := form.Get("device_label")
		if len(label) > 128 {
			return oauthFail(c, http.StatusBadRequest, "invalid_request", "device_label is longer than 128 characters")
		}
		// The code is spent in the transaction that stores the session.
		toks, _, err = a.devices.StartSession(ctx, devices.SessionRequest{Code: code, CodeVerifier: verifier,
			RedirectURI: form.Get("redirect_uri"), RequireRedirectURI: gt == "authorization_code", ClientID: clientID, DeviceLabel: label})
		if err != nil {
			return a.deviceGrantError(c, err)
		}
	case "refresh_token":
		rt := form.Get("refresh_token")
		if rt == "" {
			return oauthFail(c, http.StatusBadRequest, "invalid_request", "refresh_token is required")
		}
		if clientID != "" {
			if err := a.devices.CheckRefreshClient(ctx, rt, clientID); err != nil {
				return a.deviceGrantError(c, err)
			}
		}
		toks, err = a.devices.Refresh(ctx, rt)
		if err != nil {
			return a.deviceGrantError(c, err)
		}
	case "":
		return oauthFail(c, http.StatusBadRequest, "invalid_request", "grant_type is required")
	default:
		return oauthFail(c, http.StatusBadRequest, "unsupported_grant_type", "grant_type must be authorization_code, refresh_token or handoff_code")
	}
	// The session is stored (and a refresh token rotated): losing this
	// answer now would make the app present the old token again, which is
	// reuse. A new session's connections were read in its transaction;
	// after a refresh the read is retried on a fresh connection by the
	// store.
	ids := toks.ConnectionIDs
	if ids == nil {
		conns, err := a.vault.ConnectionsOf(ctx, toks.Owner)
		if err != nil {
			return a.oauthUnavailable(c, err)
		}
		ids = make([]string, 0, len(conns))
		for _, cn := range conns {
			ids = append(ids, cn.ID)
		}
	}
	c.Response().Header().Set("Cache-Control", "no-store")
	c.Response().Header().Set("Pragma", "no-cache")
	return c.JSON(http.StatusOK, deviceTokenResponse{AccessToken: toks.AccessToken, TokenType: "Bearer", ExpiresIn: toks.ExpiresIn,
		RefreshToken: toks.RefreshToken, Scope: grantedScope, SessionID: toks.SessionID, ConnectionIDs: ids})
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

// oauthClient returns the client_id a request to the token or revocation
// endpoint names, in the form or as HTTP Basic (client_id with an empty
// password, RFC 6749 section 2.3.1; golang.org/x/oauth2 tries Basic
// first), or "" when it names none. A refusal is 401 invalid_client for an
// unknown client or a password (public clients have none), 400
// invalid_request when form and Basic disagree.
func (a *API) oauthClient(c echo.Context, form url.Values) (string, *oauthRefusal) {
	id := form.Get("client_id")
	user, pass, basic := c.Request().BasicAuth()
	if basic {
		u, err := url.QueryUnescape(user)
		p, perr := url.QueryUnescape(pass)
		if err != nil || perr != nil || p != "" || !a.cfg.AppClients.Known(u) {
			c.Response().Header().Set("WWW-Authenticate", `Basic realm="tokenwarm"`)
			return "", &oauthRefusal{http.StatusUnauthorized, "invalid_client", "unknown client, or a client secret sent by a public client"}
		}
		if id != "" && id != u {
			return "", &oauthRefusal{http.StatusBadRequest, "invalid_request", "client_id in the form and in HTTP Basic differ"}
		}
		return u, nil
	}
	if id != "" && !a.cfg.AppClients.Known(id) {
		return "", &oauthRefusal{http.StatusUnauthorized, "invalid_client", "client_id is not a client registered on this server"}
	}
	return id, nil
}

// oauthRefusal is an OAuth error answer not yet made.
type oauthRefusal struct {
	status     int
	code, desc string
}

// deviceRevoke is the revocation endpoint (RFC 7009): a device refresh
// token (current or rotated) or a valid device access token ends its
// session. Unknown, invalid and already revoked tokens answer 200, as the
// RFC asks; token_type_hint is only a hint (the token's form tells).
func (a *API) deviceRevoke(c echo.Context) error {
	form, err := c.FormParams()
	if err != nil || form.Get("token") == "" {
		return oauthFail(c, http.StatusBadRequest, "invalid_request", "token is required")
	}
	clientID, refusal := a.oauthClient(c, form)
	if refusal != nil {
		return oauthFail(c, refusal.status, refusal.code, refusal.desc)
	}
	err = a.devices.Revoke(c.Request().Context(), form.Get("token"), clientID)
	if errors.Is(err, devices.ErrWrongClient) {
		return oauthFail(c, http.StatusBadRequest, "unauthorized_client", "the token was not issued to this client")
	}
	if err != nil {
		return a.oauthUnavailable(c, err)
	}
	return c.JSON(http.StatusOK, map[string]any{})
}

// authServerMetadata is the RFC 8414 document: what a standard OAuth
// library (AppAuth, golang.org/x/oauth2) needs to talk to tokenwarm.
type authServerMetadata struct {
	Issuer                                     string   `json:"issuer"`
	AuthorizationEndpoint                      string   `json:"authorization_endpoint"`
	TokenEndpoint                              string   `json:"token_endpoint"`
	RevocationEndpoint                         string   `json:"revocation_endpoint"`
	JWKSURI                                    string   `json:"jwks_uri"`
	ResponseTypesSupported                     []string `json:"response_types_supported"`
	ResponseModesSupported                     []string `json:"response_modes_supported"`
	GrantTypesSupported                        []string `json:"grant_types_supported"`
	CodeChallengeMethodsSupported              []string `json:"code_challenge_methods_supported"`
	TokenEndpointAuthMethodsSupported          []string `json:"token_endpoint_auth_methods_supported"`
	RevocationEndpointAuthMethodsSupported     []string `json:"revocation_endpoint_auth_methods_supported"`
	ScopesSupported                            []string `json:"scopes_supported"`
	AuthorizationResponseIssParameterSupported bool     `json:"authorization_response_iss_parameter_supported"`
}

func (a *API) oauthMetadata(c echo.Context) error {
	base := a.cfg.PublicURL
	c.Response().Header().Set("Cache-Control", "public, max-age=300")
	return c.JSON(http.StatusOK, authServerMetadata{
		Issuer:                                     base,
		AuthorizationEndpoint:                      base + "/v1/oauth/authorize",
		TokenEndpoint:                              base + "/v1/device/token",
		RevocationEndpoint:                         base + "/v1/device/revoke",
		JWKSURI:                                    base + "/.well-known/jwks.json",
		ResponseTypesSupported:                     []string{"code"},
		ResponseModesSupported:                     []string{"query"},
		GrantTypesSupported:                        []string{"authorization_code", "refresh_token"},
		CodeChallengeMethodsSupported:              []string{pkce.MethodS256},
		TokenEndpointAuthMethodsSupported:          []string{"none"},
		RevocationEndpointAuthMethodsSupported:     []string{"none"},
		ScopesSupported:                            []string{grantedScope},
		AuthorizationResponseIssParameterSupported: true,
	})
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
