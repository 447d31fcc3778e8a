package webhooks

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"strconv"
	"strings"
	"time"
)

// Standard Webhooks headers (https://www.standardwebhooks.com/) of every
// delivery. The names are lowercase as the specification writes them;
// HTTP header names are case-insensitive.
const (
	// HeaderWebhookID is the event ID, the same across retries: receivers
	// deduplicate on it.
	HeaderWebhookID = "webhook-id"
	// HeaderWebhookTimestamp is the Unix time in seconds of this attempt.
	HeaderWebhookTimestamp = "webhook-timestamp"
	// HeaderWebhookSignature is one or more space-separated "v1,<base64
	// HMAC-SHA256 of "<id>.<timestamp>.<body>">", one per signing secret.
	HeaderWebhookSignature = "webhook-signature"
)

// SecretPrefix starts a Standard Webhooks secret: "whsec_" followed by the
// standard (padded) base64 of the HMAC key.
const SecretPrefix = "whsec_"

// SigningKey returns the HMAC-SHA256 key of a configured secret for the
// Standard Webhooks signature: the base64-decoded rest of a "whsec_…"
// secret, or else (a secret of tokenwarm's earlier scheme) the secret's own
// bytes. A secret that starts with "whsec_" but whose rest is not standard
// base64 is also taken as raw bytes, as the verification libraries could
// not decode it either.
func SigningKey(secret string) []byte {
	if rest, ok := strings.CutPrefix(secret, SecretPrefix); ok && rest != "" {
		if key, err := base64.StdEncoding.DecodeString(rest); err == nil && len(key) > 0 {
			return key
		}
	}
	return []byte(secret)
}

// ReceiverSecret returns the "whsec_…" form of a configured secret, what a
// receiver gives its Standard Webhooks library: the secret itself when it
// already is one, else "whsec_" + base64 of its bytes.
func ReceiverSecret(secret string) string {
	return SecretPrefix + base64.StdEncoding.EncodeToString(SigningKey(secret))
}

// SignStandard returns the webhook-signature header value of a delivery
// of body with the given event ID at t: "v1,<sig>" for each key, separated
// by spaces (several during a secret rotation; a receiver accepts the
// delivery when any one matches its key).
func SignStandard(keys [][]byte, id string, t time.Time, body []byte) string {
	ts := strconv.FormatInt(t.Unix(), 10)
	sigs := make([]string, 0, len(keys))
	for _, k := range keys {
		m := hmac.New(sha256.New, k)
		m.Write([]byte(id))
		m.Write([]byte{'.'})
		m.Write([]byte(ts))
		m.Write([]byte{'.'})
		m.Write(body)
		sigs = append(sigs, "v1,"+base64.StdEncoding.EncodeToString(m.Sum(nil)))
	}
	return strings.Join(sigs, " ")
}
