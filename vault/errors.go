package vault

import (
	"errors"
	"fmt"
	"time"
)

// Code is a stable, machine-readable error code. handlers/ maps codes to HTTP.
type Code string

// Error codes of the vault.
const (
	CodeNotFound       Code = "not_found"
	CodeReauthRequired Code = "reauth_required"
	CodeRevoked        Code = "connection_revoked"
	// CodeUpstreamUnavailable: Salesforce failed transiently, or another
	// worker's attempt is still settling; retry after RetryAfter.
	CodeUpstreamUnavailable Code = "upstream_unavailable"
	// CodeUpstreamConfig: the connected app or egress is misconfigured.
	CodeUpstreamConfig Code = "upstream_configuration_error"
	// CodeUnavailable: our own database did not answer; retry soon. Never
	// the client's fault.
	CodeUnavailable Code = "service_unavailable"
	CodeInternal    Code = "internal"
)

// Error is a vault failure with a code and a message safe to show anyone.
type Error struct {
	Code    Code
	Message string
	// Reason is set for reauth_required: why the connection died.
	Reason     string
	RetryAfter time.Duration
	// AppWide marks a configuration error that certainly concerns every
	// connection of the app (client credentials, or an IP restriction seen
	// on several connections): it pauses refreshing for the app.
	AppWide bool
	cause   error
}

func (e *Error) Error() string {
	if e.Message == "" {
		return string(e.Code)
	}
	return fmt.Sprintf("%s: %s", e.Code, e.Message)
}

func (e *Error) Unwrap() error { return e.cause }

// ErrorCode returns the code of a vault error, or CodeInternal.
func ErrorCode(err error) Code {
	var e *Error
	if errors.As(err, &e) {
		return e.Code
	}
	return CodeInternal
}

func newErr(code Code, msg string) *Error { return &Error{Code: code, Message: msg} }

// IsAppWide reports whether err is a configuration error that concerns the
// whole app, which should pause refreshing until a probe succeeds.
func IsAppWide(err error) bool {
	var e *Error
	return errors.As(err, &e) && e.AppWide
}
