// Package webhooks tells administrators' systems when connections die or
// come back, by POSTing JSON events to configured URLs.
//
// Events are written to the webhook_outbox table (models.WebhookDelivery,
// built by Deliveries or Announcer) inside the transaction that records
// what happened, so an event is announced if and only if it committed. A Dispatcher delivers due rows with retries and
// jittered exponential backoff; the outbox survives restarts, and several
// replicas can dispatch at once (Postgres rows are claimed FOR UPDATE SKIP
// LOCKED under a lease). Delivery is at least once: a receiver must
// deduplicate on the event ID, which stays the same across retries.
//
// # Request
//
//	POST <endpoint URL>
//	Content-Type: application/json
//	Tokenwarm-Event-Id: evt_3f0c...
//	Tokenwarm-Event-Type: connection.needs_reauth
//	Tokenwarm-Signature: t=1767225600,v1=5d1c...
//
//	{"id":"evt_3f0c...","type":"connection.needs_reauth",
//	 "created_at":"2026-01-01T00:00:00Z",
//	 "data":{"connection_id":"...","org_id":"...","user_id":"...","reason":"invalid_grant"}}
//
// Any 2xx answer means delivered; anything else, a network error or no
// answer within the timeout means the delivery is retried later. Payloads
// never contain tokens: Deliveries refuses data fields named like one.
//
// # Signature
//
// Tokenwarm-Signature holds t, the Unix time in seconds when the request
// was signed, and v1, the lowercase hex HMAC-SHA256 of the string
// "<t>.<raw request body>" keyed with the endpoint's secret. To verify,
// recompute the HMAC over the raw body as received (before any JSON
// parsing), compare in constant time, and reject timestamps more than a
// few minutes from your clock to limit replays. Verify does exactly that;
// the header may carry several v1 values, any one matching suffices.
package webhooks

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"github.com/tokenwarm/tokenwarm/models"
)

// Event types.
const (
	TypeNeedsReauth    = "connection.needs_reauth"
	TypeReauthorized   = "connection.reauthorized"
	TypeRevoked        = "connection.revoked"
	TypeIdleExpiryRisk = "connection.idle_expiry_risk"
	TypeConfigError    = "app.config_error"
	// TypeRestoreDetected: the database was restored from a backup;
	// refreshes are held app-wide until `tokenwarm restore` ran.
	TypeRestoreDetected = "app.restore_detected"
)

var knownTypes = map[string]bool{
	TypeNeedsReauth: true, TypeReauthorized: true, TypeRevoked: true,
	TypeIdleExpiryRisk: true, TypeConfigError: true, TypeRestoreDetected: true,
}

// Event is something administrators are told about.
type Event struct {
	// ID is the idempotency ID receivers deduplicate on. Deliveries fills in
	// NewEventID() when empty.
	ID        string
	Type      string
	CreatedAt time.Time
	// ConnectionID is sent as data.connection_id when set.
	ConnectionID string `json:",omitempty"`
	// Data holds safe fields only (org_id, user_id, reason,
	// idle_budget_seconds, error_code); never a token or secret.
	Data map[string]any
}

// Endpoint is a URL events are sent to and the secret they are signed with.
type Endpoint struct {
	URL    string
	Secret string
}

// NewEventID returns a fresh random event ID.
func NewEventID() string {
	b := make([]byte, 16)
	rand.Read(b)
	return "evt_" + hex.EncodeToString(b)
}

// payload is the JSON body of a delivery.
type payload struct {
	ID        string         `json:"id"`
	Type      string         `json:"type"`
	CreatedAt time.Time      `json:"created_at"`
	Data      map[string]any `json:"data"`
}

// forbiddenWords may not appear in a data field name: a field named like
// a credential is a bug waiting to leak one.
var forbiddenWords = []string{"token", "secret", "password", "authorization", "credential"}

// Deliveries returns ev's outbox rows, one per endpoint, for the storing
// transaction to write (models.DB stores them: with their audit events
// through SetAnnouncer, or alone with EnqueueDeliveries). Storing the same
// event ID twice for an endpoint is a no-op. It refuses unknown types and
// data fields named like a credential.
func Deliveries(endpoints []Endpoint, ev Event, now time.Time) ([]models.WebhookDelivery, error) {
	if !knownTypes[ev.Type] {
		return nil, fmt.Errorf("webhooks: unknown event type %q", ev.Type)
	}
	if err := checkData(ev.Data); err != nil {
		return nil, err
	}
	if len(endpoints) == 0 {
		return nil, nil
	}
	if ev.ID == "" {
		ev.ID = NewEventID()
	}
	now = now.UTC().Truncate(time.Microsecond)
	if ev.CreatedAt.IsZero() {
		ev.CreatedAt = now
	}
	data := make(map[string]any, len(ev.Data)+1)
	for k, v := range ev.Data {
		data[k] = v
	}
	if ev.ConnectionID != "" {
		data["connection_id"] = ev.ConnectionID
	}
	body, err := json.Marshal(payload{ID: ev.ID, Type: ev.Type, CreatedAt: ev.CreatedAt.UTC(), Data: data})
	if err != nil {
		return nil, fmt.Errorf("webhooks: encode %s: %w", ev.Type, err)
	}
	rows := make([]models.WebhookDelivery, 0, len(endpoints))
	for _, ep := range endpoints {
		rows = append(rows, models.WebhookDelivery{EventID: ev.ID, EventType: ev.Type, EndpointURL: ep.URL, Payload: string(body),
			CreatedAt: now, NextAttemptAt: now})
	}
	return rows, nil
}

// checkData refuses field names, at any depth, that look like credentials.
func checkData(data map[string]any) error {
	for k, v := range data {
		lk := strings.ToLower(k)
		for _, w := range forbiddenWords {
			if strings.Contains(lk, w) {
				return fmt.Errorf("webhooks: data field %q looks like a credential; webhooks never carry one", k)
			}
		}
		if m, ok := v.(map[string]any); ok {
			if err := checkData(m); err != nil {
				return err
			}
		}
	}
	return nil
}
