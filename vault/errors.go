package vault

import (
	"errors"

	"github.com/tokenwarm/tokenwarm/errs"
)

// The vault's errors are errs.Error: a code, a message safe to show
// anyone, and for reauth_required the reason.
type (
	Error = errs.Error
	Code  = errs.Code
)

// Error codes of the vault.
const (
	CodeNotFound       = errs.NotFound
	CodeReauthRequired = errs.ReauthRequired
	CodeRevoked        = errs.Revoked
	// CodeUpstreamUnavailable: Salesforce failed transiently, or another
	// worker's attempt is still settling; retry after RetryAfter.
	CodeUpstreamUnavailable = errs.UpstreamUnavailable
	// CodeUpstreamConfig: the connected app or egress is misconfigured.
	CodeUpstreamConfig = errs.UpstreamConfig
	// CodeUnavailable: our own database did not answer; retry soon. Never
	// the client's fault.
	CodeUnavailable = errs.Unavailable
	CodeInternal    = errs.Internal
	// CodeWrongUser: a re-authorization link was completed by another
	// Salesforce user than the one of its connection.
	CodeWrongUser = errs.WrongUser
)

// ErrorCode returns the code of a vault error (errs.CodeOf; Internal for
// an error that is not one).
func ErrorCode(err error) Code {
	if err == nil {
		return CodeInternal
	}
	return errs.CodeOf(err)
}

func newErr(code Code, msg string) *Error { return &Error{Code: code, Message: msg} }

// IsAppWide reports whether err is a configuration error that concerns the
// whole app, which should pause refreshing until a probe succeeds.
func IsAppWide(err error) bool {
	var e *Error
	return errors.As(err, &e) && e.AppWide
}
