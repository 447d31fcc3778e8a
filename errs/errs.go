// Package errs is tokenwarm's one error shape: a stable code every package
// uses, a message safe to show anyone, and the cause for the logs. Domain
// packages return *Error; handlers/ alone turns a code into an HTTP answer
// (in the spirit of benbjohnson/wtf's Error and ErrorCode). No Error ever
// holds a token, code or verifier, in its message or its cause.
package errs

import (
	"errors"
	"fmt"
	"time"
)

// Code is a stable, machine-readable error code.
type Code string

// The codes. New ones may be added; clients must accept unknown codes.
const (
	// Internal: a bug or a failure with no better name.
	Internal Code = "internal"
	// Unavailable: our own storage did not answer (restart, failover,
	// full pool); retry soon. Never the client's fault.
	Unavailable Code = "service_unavailable"
	NotFound    Code = "not_found"
	Invalid     Code = "invalid_request"
	// InvalidToken: a bearer token is not valid (device sessions).
	InvalidToken Code = "invalid_token"
	// InvalidGrant: a refresh token or code is unknown, used or expired
	// (RFC 6749 invalid_grant).
	InvalidGrant Code = "invalid_grant"
	// InvalidKey: an admin key is missing, unknown or revoked.
	InvalidKey  Code = "invalid_key"
	InvalidName Code = "invalid_name"
	NameTaken   Code = "name_taken"
	// ReauthRequired: the Salesforce grant is dead; a human must sign in.
	ReauthRequired Code = "reauth_required"
	Revoked        Code = "connection_revoked"
	// WrongUser: a re-authorization was completed by another user.
	WrongUser Code = "wrong_user"
	// UpstreamUnavailable: Salesforce failed transiently, or an earlier
	// attempt is still settling; retry after RetryAfter.
	UpstreamUnavailable Code = "upstream_unavailable"
	// UpstreamConfig: Salesforce refused tokenwarm's configuration.
	UpstreamConfig Code = "upstream_configuration_error"
)

// Error is a failure with a code.
type Error struct {
	Code Code
	// Message is safe to show anyone.
	Message string
	// Reason says why, for codes that have one (a re-authorization's).
	Reason string
	// RetryAfter, when set, is when a retry may succeed.
	RetryAfter time.Duration
	// AppWide marks a configuration error that concerns every connection of
	// the app (it pauses refreshing).
	AppWide bool
	// Err is the cause, for logs only.
	Err error
}

func (e *Error) Error() string {
	if e.Message == "" {
		return string(e.Code)
	}
	return fmt.Sprintf("%s: %s", e.Code, e.Message)
}

// Unwrap returns the cause.
func (e *Error) Unwrap() error { return e.Err }

// Is makes an *Error with only a code (and optionally a reason) a sentinel:
// errors.Is(err, &Error{Code: NotFound}) holds for every not-found error.
func (e *Error) Is(target error) bool {
	t, ok := target.(*Error)
	return ok && t.Message == "" && t.Code == e.Code && (t.Reason == "" || t.Reason == e.Reason)
}

// E returns an error of code with a safe message.
func E(code Code, message string) *Error { return &Error{Code: code, Message: message} }

// CodeOf returns the code of err: its *Error's, Unavailable for a database
// that did not answer, Internal for anything else, "" for nil.
func CodeOf(err error) Code {
	if err == nil {
		return ""
	}
	var e *Error
	if errors.As(err, &e) {
		return e.Code
	}
	if IsUnavailable(err) {
		return Unavailable
	}
	return Internal
}

// RetryAfterOf returns the RetryAfter of err's *Error, or 0.
func RetryAfterOf(err error) time.Duration {
	var e *Error
	if errors.As(err, &e) {
		return e.RetryAfter
	}
	return 0
}
