package handlers

import (
	"encoding/hex"
	"errors"
	"net/http"
	"strconv"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/tokenwarm/tokenwarm/models"
	"github.com/tokenwarm/tokenwarm/vault"
)

// idleTTL is Salesforce's sliding idle lifetime of a refresh token.
const idleTTL = 30 * 24 * time.Hour

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

func (a *API) view(cn *models.Connection) connectionView {
	v := connectionView{ID: cn.ID, OrgID: cn.OrgID, UserID: cn.UserID, LoginURL: cn.LoginURL, InstanceURL: cn.InstanceURL,
		Status: cn.Status, ReauthReason: cn.ReauthReason, LastRefreshedAt: cn.LastRefreshedAt.UTC(),
		IdleExpiresAt: cn.LastRefreshedAt.Add(idleTTL).UTC(), CreatedAt: cn.CreatedAt.UTC()}
	if cn.Status == models.StatusNeedsReauth {
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

// ownConnection loads a connection of the calling device's user; anything
// else is 404, so IDs of other users' connections cannot be probed.
func (a *API) ownConnection(c echo.Context) (*models.Connection, error) {
	id := c.Param("id")
	notFound := newProblem(http.StatusNotFound, "not_found", "no such connection")
	if !validUUID(id) {
		return nil, notFound
	}
	cn, err := a.vault.Connection(c.Request().Context(), id)
	if vault.ErrorCode(err) == vault.CodeNotFound || (err == nil && cn.Owner != deviceOwner(c)) {
		return nil, notFound
	}
	return cn, err
}

func (a *API) getConnection(c echo.Context) error {
	cn, err := a.ownConnection(c)
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
	cn, err := a.ownConnection(c)
	if err != nil {
		return err
	}
	at, err := a.vault.Access(c.Request().Context(), cn.ID, req)
	if err != nil {
		var ve *vault.Error
		if errors.As(err, &ve) && ve.Code == vault.CodeReauthRequired {
			p := toProblem(err)
			p.ReauthURL = a.ReauthURL(cn.ID)
			return &problemError{p: p}
		}
		return err
	}
	c.Response().Header().Set("Cache-Control", "no-store")
	return c.JSON(http.StatusOK, accessTokenView{ConnectionID: cn.ID, AccessToken: at.Token, TokenType: "Bearer",
		InstanceURL: at.InstanceURL, IssuedAt: at.IssuedAt.UTC(), ExpiresAt: at.ExpiresAt.UTC()})
}

func newFieldProblem(code, field, msg string) error {
	return &problemError{p: Problem{Status: http.StatusBadRequest, Code: code, Title: http.StatusText(http.StatusBadRequest),
		Detail: field + " " + msg, Errors: []FieldError{{Field: field, Message: msg}}}}
}

func validUUID(s string) bool {
	if len(s) != 36 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if i == 8 || i == 13 || i == 18 || i == 23 {
			if c != '-' {
				return false
			}
			continue
		}
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F') {
			return false
		}
	}
	return true
}
