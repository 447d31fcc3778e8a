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
	CodeInternal       Code = "internal"
)

// Error is a vault failure with a code and a message safe to show anyone.
type Error struct {
	Code    Code
	Message string
	// Reason is set for reauth_required: why the connection died.
	Reason     string
	RetryAfter time.Duration
	cause      error
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
