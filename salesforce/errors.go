package salesforce

import (
	"fmt"
	"net/http"
	"strings"
	"time"
)

// Class is what an outcome of a token-endpoint call means for tokenwarm.
// docs/SALESFORCE.md has the table Classify follows.
type Class int

// Outcome classes.
const (
	// OK: the call succeeded.
	OK Class = iota
	// Dead: the refresh token will never work again; only a human
	// re-authorization recovers.
	Dead
	// Concurrent: Salesforce saw the same refresh token presented twice at
	// once. Our code never does that, so someone else holds the token.
	Concurrent
	// Config: the connected app is certainly misconfigured (client
	// credentials, grant type): every connection of the app fails alike.
	Config
	// Restricted: "IP restricted or invalid login hours". Either the egress
	// address (app-wide) or one user's profile login hours (one user): only
	// several connections failing alike make it app-wide.
	Restricted
	// Transient: try again later (5xx, rate limits, network errors before
	// the request was sent).
	Transient
	// Unknown: the request was sent but no usable answer arrived; Salesforce
	// may or may not have rotated the token.
	Unknown
	// Unrecognized: an answer we have no rule for. It concerns this one
	// connection (backed off, recorded with Salesforce's code), never the
	// app and never proof that the token is dead.
	Unrecognized
)

func (c Class) String() string {
	switch c {
	case OK:
		return "ok"
	case Dead:
		return "dead"
	case Concurrent:
		return "concurrent_presentation"
	case Config:
		return "config_error"
	case Restricted:
		return "restricted"
	case Transient:
		return "transient"
	case Unknown:
		return "unknown_outcome"
	case Unrecognized:
		return "unrecognized"
	}
	return fmt.Sprintf("class(%d)", int(c))
}

// Error is a failed call to Salesforce. It carries Salesforce's error code and
// description, never a token.
type Error struct {
	Class       Class
	Op          string // "refresh", "exchange", "revoke", "introspect"
	HTTPStatus  int    // 0 when no response arrived
	Code        string // Salesforce's "error", or a tokenwarm code such as "network_error"
	Description string
	RetryAfter  time.Duration
	cause       error
}

func (e *Error) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "salesforce %s: %s (%s", e.Op, e.Code, e.Class)
	if e.HTTPStatus != 0 {
		fmt.Fprintf(&b, ", HTTP %d", e.HTTPStatus)
	}
	b.WriteString(")")
	if e.Description != "" {
		b.WriteString(": ")
		b.WriteString(e.Description)
	}
	return b.String()
}

// Unwrap exposes the transport error, already scrubbed of tokens.
func (e *Error) Unwrap() error { return e.cause }

// MayHaveRotated reports whether a refresh that failed this way may still
// have rotated the token: the request was sent and no definite refusal came
// back. A 4xx OAuth error is a refusal; a 5xx may come from a gateway after
// Salesforce processed the request, and a redirect, a timeout, a dropped
// connection or an unreadable answer say nothing. Before such a token is
// presented again, introspection must show it is still active.
func (e *Error) MayHaveRotated() bool {
	switch {
	case e.Class == Unknown:
		return true
	case e.HTTPStatus >= 500, e.HTTPStatus >= 300 && e.HTTPStatus < 400:
		return true
	}
	return false
}

// Classify maps a token-endpoint error answer to a class.
func Classify(httpStatus int, code, description string) Class {
	desc := strings.ToLower(description)
	switch code {
	case "invalid_grant":
		switch {
		case strings.Contains(desc, "already being processed"):
			return Concurrent
		case strings.Contains(desc, "ip restricted"), strings.Contains(desc, "login hours"):
			return Restricted
		}
		return Dead
	case "inactive_user", "inactive_org":
		return Dead
	case "invalid_client_id", "invalid_client", "invalid_client_credentials",
		"unsupported_grant_type", "unauthorized_client", "invalid_scope", "redirect_uri_mismatch":
		return Config
	case "rate_limit_exceeded", "slow_down", "client_blocked_retry",
		"service_unavailable", "system_down", "server_error", "temporarily_unavailable":
		return Transient
	}
	switch {
	case httpStatus == http.StatusTooManyRequests, httpStatus >= 500, httpStatus == http.StatusRequestTimeout:
		return Transient
	}
	return Unrecognized
}
