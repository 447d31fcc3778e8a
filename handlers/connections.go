package handlers

import (
	"encoding/hex"
	"errors"
	"net/http"
	"strconv"
	"time"

	"github.com/google/uuid"
	"github.com/labstack/echo/v4"

	"github.com/tokenwarm/tokenwarm/devices"
	"github.com/tokenwarm/tokenwarm/vault"
)

type connectionView struct {
	ID              string    `json:"id"`
	OrgID           string    `json:"org_id"`
	UserID          string    `json:"user_id"`
	LoginURL        string    `json:"login_url"`
	InstanceURL     string    `json:"instance_url"`
	Status          string    `json:"status"`
	ReauthReason    string    `json:"reauth_reason,omitempty"`
	ReauthURL       string    `json:"reauth_url,omitempty"`
	LastRefreshedAt time.Time `json:"last_refreshed_at"`
	IdleExpiresAt   time.Time `json:"idle_expires_at"`
	CreatedAt       time.Time `json:"created_at"`
}

func (a *API) view(cn *vault.View) connectionView {
	v := connectionView{ID: cn.ID, OrgID: cn.OrgID, UserID: cn.UserID, LoginURL: cn.LoginURL, InstanceURL: cn.InstanceURL,
		Status: cn.Status, ReauthReason: cn.ReauthReason, LastRefreshedAt: cn.LastRefreshedAt,
		IdleExpiresAt: cn.IdleExpiresAt, CreatedAt: cn.CreatedAt}
	if cn.Status == vault.StatusNeedsReauth {
		v.ReauthURL = a.ReauthURL(cn.ID)
	}
	return v
}

func (a *API) listConnections(c echo.Context) error {
	conns, err := a.vault.ConnectionsOf(c.Request().Context(), deviceOwner(c))
	if err != nil {
		return err
	}
	out := make([]connectionView, 0, len(conns))
	for i := range conns {
		out = append(out, a.view(&conns[i]))
	}
	return c.JSON(http.StatusOK, map[string]any{"connections": out})
}

// connectionID is the path's connection ID; a malformed one is the same
// 404 as another user's, so IDs cannot be probed.
func connectionID(c echo.Context) (string, error) {
	id, err := uuid.Parse(c.Param("id"))
	if err != nil || len(c.Param("id")) != 36 {
		return "", newProblem(http.StatusNotFound, "not_found", "no such connection")
	}
	return id.String(), nil
}

func (a *API) getConnection(c echo.Context) error {
	id, err := connectionID(c)
	if err != nil {
		return err
	}
	cn, err := a.vault.ConnectionOf(c.Request().Context(), deviceOwner(c), id)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, a.view(cn))
}

type accessTokenView struct {
	ConnectionID string    `json:"connection_id"`
	AccessToken  string    `json:"access_token"`
	TokenType    string    `json:"token_type"`
	InstanceURL  string    `json:"instance_url"`
	IssuedAt     time.Time `json:"issued_at"`
	ExpiresAt    time.Time `json:"expires_at"`
}

// getAccessToken hands the app a Salesforce access token with at least
// min_validity left, refreshing through the vault only when needed.
func (a *API) getAccessToken(c echo.Context) error {
	q := c.QueryParams()
	minValidity := 300
	if s := q.Get("min_validity"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 0 || n > 7200 {
			return newFieldProblem("invalid_parameter", "min_validity", "must be an integer number of seconds from 0 to 7200")
		}
		minValidity = n
	}
	req := vault.Request{Cause: vault.CausePull, MinValidity: time.Duration(minValidity) * time.Second, RejectedToken: q.Get("rejected_token")}
	if h := q.Get("rejected_token_sha256"); h != "" {
		if b, err := hex.DecodeString(h); err != nil || len(b) != 32 {
			return newFieldProblem("invalid_parameter", "rejected_token_sha256", "must be 64 hexadecimal characters")
		}
		req.RejectedTokenSHA256 = h
	}
	id, err := connectionID(c)
	if err != nil {
		return err
	}
	// One statement: the vault reads the device session with the
	// connection row, in the read its herd shares, and checks both.
	claims := deviceClaims(c)
	req.Owner, req.Session, req.SessionOK, req.UnknownSession = claims.Subject, claims.SessionID, claims.CheckSession, devices.UnknownSession()
	at, err := a.vault.Access(c.Request().Context(), id, req)
	if errors.Is(err, devices.ErrInvalidToken) {
		return invalidDeviceToken()
	}
	if err != nil {
		var ve *vault.Error
		if errors.As(err, &ve) && ve.Code == vault.CodeReauthRequired {
			p := toProblem(err)
			p.ReauthURL = a.ReauthURL(id)
			return &problemError{p: p}
		}
		return err
	}
	c.Response().Header().Set("Cache-Control", "no-store")
	view := accessTokenView{ConnectionID: id, AccessToken: at.Token, TokenType: "Bearer",
		InstanceURL: at.InstanceURL, IssuedAt: at.IssuedAt.UTC(), ExpiresAt: at.ExpiresAt.UTC()}
	body, err := view.appendJSON(make([]byte, 0, 512))
	if err != nil {
		return err
	}
	return c.JSONBlob(http.StatusOK, body)
}

func newFieldProblem(code, field, msg string) error {
	return &problemError{p: Problem{Status: http.StatusBadRequest, Code: code, Title: http.StatusText(http.StatusBadRequest),
		Detail: field + " " + msg, Errors: []FieldError{{Field: field, Message: msg}}}}
}
