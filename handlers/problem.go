package handlers

import (
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"strconv"

	"github.com/labstack/echo/v4"

	"github.com/tokenwarm/tokenwarm/errs"
	"github.com/tokenwarm/tokenwarm/vault"
)

// Problem is an RFC 9457 problem details body with a stable code.
type Problem struct {
	Type     string `json:"type"`
	Title    string `json:"title"`
	Status   int    `json:"status"`
	Detail   string `json:"detail,omitempty"`
	Instance string `json:"instance,omitempty"`
	Code     string `json:"code"`
	// Reason says why a connection needs re-authorization.
	Reason string `json:"reason,omitempty"`
	// ReauthURL is where a human re-authorizes a dead connection.
	ReauthURL string `json:"reauth_url,omitempty"`
	// RetryAfter mirrors the Retry-After header, in seconds.
	RetryAfter int `json:"retry_after,omitempty"`
	// Errors names the offending fields of a bad request.
	Errors []FieldError `json:"errors,omitempty"`
}

// FieldError says what is wrong with one parameter.
type FieldError struct {
	Field   string `json:"field"`
	Message string `json:"message"`
}

// problemError is an error that already knows its problem body. cause,
// if any, is our own failure behind it: logged, never shown.
type problemError struct {
	p     Problem
	cause error
}

func (e *problemError) Error() string {
	if e.cause != nil {
		return e.p.Code + ": " + e.p.Detail + ": " + e.cause.Error()
	}
	return e.p.Code + ": " + e.p.Detail
}

// newProblem builds an error that renders as the given problem.
func newProblem(status int, code, detail string) error {
	return &problemError{p: Problem{Status: status, Code: code, Title: http.StatusText(status), Detail: detail}}
}

// codeUnavailable is the problem code of our own failures that a retry may
// cure (the database cannot be reached): 503 with Retry-After, never 401
// or 500, so that no client takes it for its own fault (an SDK treats 401
// as "sign out").
const codeUnavailable = "service_unavailable"

// unavailableRetryAfter is the Retry-After of service_unavailable: a
// database restart or failover takes seconds.
const unavailableRetryAfter = 1

func unavailableProblem() Problem {
	return Problem{Status: http.StatusServiceUnavailable, Code: codeUnavailable, Title: http.StatusText(http.StatusServiceUnavailable),
		Detail: "the service is temporarily unavailable; retry shortly", RetryAfter: unavailableRetryAfter}
}

// unavailable is the error of a check or action that could not be made
// because of our own failure (cause, logged without being shown).
func unavailable(cause error) error {
	return &problemError{p: unavailableProblem(), cause: cause}
}

// vaultStatus is the one place where a vault error code becomes an HTTP
// status.
var vaultStatus = map[vault.Code]int{
	vault.CodeNotFound:            http.StatusNotFound,
	vault.CodeReauthRequired:      http.StatusConflict,
	vault.CodeRevoked:             http.StatusConflict,
	vault.CodeUpstreamUnavailable: http.StatusServiceUnavailable,
	vault.CodeUpstreamConfig:      http.StatusServiceUnavailable,
	vault.CodeUnavailable:         http.StatusServiceUnavailable,
	vault.CodeInternal:            http.StatusInternalServerError,
}

// errorHandler renders every error as problem details and logs the
// unexpected ones (never with a token: errors here are built to be safe).
func errorHandler(log *slog.Logger) echo.HTTPErrorHandler {
	return func(err error, c echo.Context) {
		if c.Response().Committed {
			return
		}
		p := toProblem(err)
		switch {
		case p.Status >= 500 && p.Code == "internal":
			log.Error("request failed", "method", c.Request().Method, "path", c.Path(), "err", err)
		case p.Code == codeUnavailable:
			log.Warn("request failed: service unavailable", "method", c.Request().Method, "path", c.Path(), "err", err)
		}
		p.Instance = c.Request().URL.Path
		if p.Type == "" {
			p.Type = "https://tokenwarm.dev/problems/" + p.Code
		}
		if p.Title == "" {
			p.Title = http.StatusText(p.Status)
		}
		if p.RetryAfter > 0 {
			c.Response().Header().Set("Retry-After", strconv.Itoa(p.RetryAfter))
		}
		if p.Status == http.StatusUnauthorized {
			c.Response().Header().Set("WWW-Authenticate", `Bearer realm="tokenwarm", error="invalid_token"`)
		}
		body, _ := json.Marshal(p)
		_ = c.Blob(p.Status, "application/problem+json", body)
	}
}

func toProblem(err error) Problem {
	var pe *problemError
	if errors.As(err, &pe) {
		return pe.p
	}
	var ve *vault.Error
	if errors.As(err, &ve) {
		if ve.Code == vault.CodeInternal && errs.IsUnavailable(err) {
			return unavailableProblem()
		}
		st, ok := vaultStatus[ve.Code]
		if !ok {
			st = http.StatusInternalServerError
		}
		p := Problem{Status: st, Code: string(ve.Code), Detail: ve.Message, Reason: ve.Reason}
		if ve.Code == vault.CodeInternal {
			p.Detail = "internal error"
		}
		if ve.RetryAfter > 0 {
			p.RetryAfter = max(1, int(ve.RetryAfter.Seconds()+0.999))
		} else if p.Code == codeUnavailable {
			p.RetryAfter = unavailableRetryAfter
		}
		return p
	}
	var he *echo.HTTPError
	if errors.As(err, &he) {
		code := "http_" + strconv.Itoa(he.Code)
		switch he.Code {
		case http.StatusNotFound:
			code = "not_found"
		case http.StatusMethodNotAllowed:
			code = "method_not_allowed"
		case http.StatusRequestEntityTooLarge:
			code = "body_too_large"
		case http.StatusUnauthorized:
			code = "unauthorized"
		}
		return Problem{Status: he.Code, Code: code, Detail: http.StatusText(he.Code)}
	}
	// A database that cannot answer is our failure, and one a retry may
	// cure: 503, not 500. (A vault error with an upstream code is checked
	// above: its network errors are Salesforce's, not the database's.)
	if errs.IsUnavailable(err) {
		return unavailableProblem()
	}
	return Problem{Status: http.StatusInternalServerError, Code: "internal", Detail: "internal error"}
}
