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
//	webhook-id: evt_3f0c...
//	webhook-timestamp: 1767225600
//	webhook-signature: v1,K5oZfzN95Z9UVu1EsfQmfVNQhnkZ2pj9o9NDN/H/pI4=
//	Tokenwarm-Event-Id: evt_3f0c...
//	Tokenwarm-Event-Type: connection.needs_reauth
//	Tokenwarm-Signature: t=1767225600,v1=5d1c...
//
//	{"id":"evt_3f0c...","type":"connection.needs_reauth",
//	 "created_at":"2026-01-01T00:00:00Z","timestamp":"2026-01-01T00:00:00Z",
//	 "data":{"connection_id":"...","org_id":"...","user_id":"...","error_code":"invalid_grant","reason":"...","cause":"warm",
//	         "user_name":"Ada Lovelace","username":"ada@acme.example","email":"ada@acme.example","org_name":"Acme"}}
//
// The person fields (org_id, user_id, user_name, username, email,
// org_name) come from the connection when the event is stored, with
// models.DB.AnnouncePeople (TOKENWARM_WEBHOOK_IDENTITY); empty ones are
// left out.
//
// Any 2xx answer means delivered; anything else, a network error or no
// answer within the timeout means the delivery is retried later. Payloads
// never contain tokens: Deliveries refuses data fields named like one.
//
// # Signature
//
// Deliveries follow the Standard Webhooks specification
// (https://www.standardwebhooks.com/), so receivers verify them with its
// published libraries (Go, Node, Python, Ruby, PHP, Java, …) given the
// endpoint's "whsec_…" secret: webhook-id is the event ID (the same in
// every retry), webhook-timestamp the Unix time in seconds of this
// attempt, and webhook-signature "v1,<base64 HMAC-SHA256 of
// "<webhook-id>.<webhook-timestamp>.<raw body>">", keyed with the secret's
// key (SigningKey), one space-separated signature per secret while a
// secret is being rotated (Endpoint.PreviousSecrets). A secret of the
// earlier scheme (not "whsec_…") keys the HMAC with its own bytes; its
// receivers use ReceiverSecret's form, "whsec_" + base64 of those bytes.
//
// During a transition, deliveries also carry the legacy
// Tokenwarm-Signature: t, the same Unix time, and one v1 per secret, the
// lowercase hex HMAC-SHA256 of "<t>.<raw body>" keyed with the secret's
// literal bytes. Verify checks it. Config.NoLegacySignature stops it.
package webhooks

import (
	"crypto/rand"
	"encoding/base64"
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
	// TypeReauthSoon: the connection reaches the org's refresh-token
	// maximum age soon; ask the user to re-authorize.
	TypeReauthSoon = "connection.reauth_soon"
	// TypeRestoreDetected: the database was restored from a backup;
	// refreshes are held app-wide until `tokenwarm restore` ran.
	TypeRestoreDetected = "app.restore_detected"
)

var knownTypes = map[string]bool{
	TypeNeedsReauth: true, TypeReauthorized: true, TypeRevoked: true,
	TypeIdleExpiryRisk: true, TypeConfigError: true, TypeReauthSoon: true, TypeRestoreDetected: true,
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

// Endpoint is a URL events are sent to and the secrets they are signed
// with (see SigningKey for what a secret may look like).
type Endpoint struct {
	URL string
	// Secret signs every delivery.
	Secret string
	// PreviousSecrets sign too, during a rotation: each delivery then
	// carries one signature per secret, so receivers still holding an old
	// secret keep verifying until they switch to Secret. Drop them once
	// every receiver has.
	PreviousSecrets []string
}

// NewEventID returns a fresh random event ID.
func NewEventID() string {
	b := make([]byte, 16)
	rand.Read(b)
	return "evt_" + hex.EncodeToString(b)
}

// NewSecret returns a fresh Standard Webhooks secret with a 32-byte key.
func NewSecret() string {
	b := make([]byte, 32)
	rand.Read(b)
	return SecretPrefix + base64.StdEncoding.EncodeToString(b)
}

// payload is the JSON body of a delivery. Timestamp is CreatedAt again,
// under the name the Standard Webhooks payload structure gives it.
type payload struct {
	ID        string         `json:"id"`
	Type      string         `json:"type"`
	CreatedAt time.Time      `json:"created_at"`
	Timestamp time.Time      `json:"timestamp"`
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
	body, err := json.Marshal(payload{ID: ev.ID, Type: ev.Type, CreatedAt: ev.CreatedAt.UTC(), Timestamp: ev.CreatedAt.UTC(), Data: data})
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
