package salesforce

import (
	"fmt"
	"net/http"
	"strings"
	"time"
)

// Class is what an outcome of a token-endpoint call means for tokenwarm.
type Class int

// Outcome classes (SALESFORCE.md, "Errors and what they mean for us").
const (
	// OK: the call succeeded.
	OK Class = iota
	// Dead: the refresh token will never work again; only a human
	// re-authorization recovers.
	Dead
	// Concurrent: Salesforce saw the same refresh token presented twice at
	// once. Our code never does that, so someone else holds the token.
	Concurrent
	// Config: the connected app or the egress is misconfigured (client
	// credentials, IP allowlist). Not the connection's fault.
	Config
	// Transient: try again later (5xx, rate limits, network errors before
	// the request was sent).
	Transient
	// Unknown: the request was sent but no answer arrived; Salesforce may or
	// may not have rotated the token.
	Unknown
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
	case Transient:
		return "transient"
	case Unknown:
		return "unknown_outcome"
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

// Classify maps a token-endpoint error answer to a class.
func Classify(httpStatus int, code, description string) Class {
	desc := strings.ToLower(description)
	switch code {
	case "invalid_grant":
		switch {
		case strings.Contains(desc, "already being processed"):
			return Concurrent
		case strings.Contains(desc, "ip restricted"), strings.Contains(desc, "login hours"),
			containsWord(desc, "ip"):
			return Config
		}
		return Dead
	case "inactive_user", "inactive_org":
		return Dead
	case "invalid_client_id", "invalid_client", "invalid_client_credentials",
		"unsupported_grant_type", "invalid_scope", "unauthorized_client", "redirect_uri_mismatch":
		return Config
	case "rate_limit_exceeded", "slow_down", "client_blocked_retry",
		"service_unavailable", "system_down", "server_error", "temporarily_unavailable":
		return Transient
	}
	switch {
	case httpStatus == http.StatusTooManyRequests, httpStatus >= 500:
		return Transient
	case httpStatus == http.StatusRequestTimeout:
		return Transient
	}
	// An unrecognised 4xx error is not proof that the token is dead; keep the
	// connection and let a human look (it surfaces as a configuration error).
	return Config
}

func containsWord(s, word string) bool {
	for _, f := range strings.FieldsFunc(s, func(r rune) bool {
		return !(r >= 'a' && r <= 'z' || r >= '0' && r <= '9')
	}) {
		if f == word {
			return true
		}
	}
	return false
}
