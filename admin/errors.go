package admin

import (
	"errors"
	"strings"
	"time"

	"github.com/tokenwarm/tokenwarm/internal/text"
	"github.com/tokenwarm/tokenwarm/salesforce"
	"github.com/tokenwarm/tokenwarm/vault"
)

// InvalidError is a parameter the service refuses: which one, and the rule
// it breaks.
type InvalidError struct {
	Field   string
	Message string
}

func (e *InvalidError) Error() string { return e.Field + " " + e.Message }

// RefreshError is a refresh that was tried (and audited) and failed; Err
// says why (a vault.Error).
type RefreshError struct{ Err error }

func (e *RefreshError) Error() string { return "refresh failed: " + e.Err.Error() }
func (e *RefreshError) Unwrap() error { return e.Err }

func errNotFound() error {
	return &vault.Error{Code: vault.CodeNotFound, Message: "no such connection"}
}

func errRevoked() error {
	return &vault.Error{Code: vault.CodeRevoked, Message: "the connection was revoked"}
}

// upstreamRevokeError says why Salesforce did not confirm a revocation;
// the connection is left as it was, so the admin can retry.
func upstreamRevokeError(err error) error {
	var se *salesforce.Error
	if errors.As(err, &se) && (se.Class == salesforce.Config || se.Class == salesforce.Restricted) {
		return &vault.Error{Code: vault.CodeUpstreamConfig, Message: "Salesforce refused tokenwarm's client credentials or IP address"}
	}
	return &vault.Error{Code: vault.CodeUpstreamUnavailable, Message: "Salesforce did not confirm the revocation; retry", RetryAfter: 30 * time.Second}
}

// connectionID checks and normalises a connection ID: anything but a UUID
// is no connection.
func connectionID(id string) (string, error) {
	if !text.IsUUID(id) {
		return "", errNotFound()
	}
	return strings.ToLower(id), nil
}
