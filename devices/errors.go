package devices

import (
	"errors"
	"fmt"
)

// Sentinel errors; test with errors.Is. Every error of this package that
// wraps one is an *Error whose Reason is safe to show the client. No error
// ever contains a token, code or verifier.
var (
	// ErrInvalidToken: the bearer token is not a valid access token of a
	// live session.
	ErrInvalidToken = errors.New("devices: invalid token")
	// ErrInvalidGrant: a refresh token or handoff code is unknown, used,
	// expired, or belongs to a revoked session (RFC 6749 invalid_grant).
	ErrInvalidGrant = errors.New("devices: invalid grant")
	// ErrRefreshReuse: an already rotated refresh token was presented; the
	// session is now revoked. It is also an ErrInvalidGrant.
	ErrRefreshReuse = fmt.Errorf("%w: refresh token reuse", ErrInvalidGrant)
	// ErrInvalidRequest: an argument is malformed (empty owner, bad PKCE
	// challenge, ...).
	ErrInvalidRequest = errors.New("devices: invalid request")
	// ErrNotFound: no such session or signing key.
	ErrNotFound = errors.New("devices: not found")
)

// Error is a failure of one of the sentinel kinds with a reason safe to show.
type Error struct {
	Kind   error
	Reason string
}

func (e *Error) Error() string { return e.Kind.Error() + ": " + e.Reason }

func (e *Error) Unwrap() error { return e.Kind }

func newErr(kind error, reason string) *Error { return &Error{Kind: kind, Reason: reason} }
