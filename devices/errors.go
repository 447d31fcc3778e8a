package devices

import "github.com/tokenwarm/tokenwarm/errs"

// Error is the package's error shape (errs.Error); its Message is safe to
// show the client. No error ever contains a token, code or verifier.
type Error = errs.Error

// Sentinel errors; test with errors.Is: every error of this package of one
// of these codes matches it.
var (
	// ErrInvalidToken: the bearer token is not a valid access token of a
	// live session.
	ErrInvalidToken = &errs.Error{Code: errs.InvalidToken}
	// ErrInvalidGrant: a refresh token or handoff code is unknown, used,
	// expired, or belongs to a revoked session (RFC 6749 invalid_grant).
	ErrInvalidGrant = &errs.Error{Code: errs.InvalidGrant}
	// ErrRefreshReuse: an already rotated refresh token was presented; the
	// session is now revoked. It is also an ErrInvalidGrant.
	ErrRefreshReuse = &errs.Error{Code: errs.InvalidGrant, Reason: reasonReuse}
	// ErrWrongClient: a code or token was presented by another client
	// than the one it was issued to. It is also an ErrInvalidGrant.
	ErrWrongClient = &errs.Error{Code: errs.InvalidGrant, Reason: reasonWrongClient}
	// ErrInvalidRequest: an argument is malformed (empty owner, bad PKCE
	// challenge, ...).
	ErrInvalidRequest = &errs.Error{Code: errs.Invalid}
	// ErrNotFound: no such session or signing key.
	ErrNotFound = &errs.Error{Code: errs.NotFound}
)

const (
	reasonReuse       = "refresh token reuse"
	reasonWrongClient = "wrong client"
)

// newErr returns an error of kind's code with a reason safe to show.
func newErr(kind *errs.Error, reason string) *Error {
	return &errs.Error{Code: kind.Code, Message: reason, Reason: kind.Reason}
}
