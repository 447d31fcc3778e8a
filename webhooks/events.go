package webhooks

import (
	"fmt"

	"github.com/tokenwarm/tokenwarm/models"
)

// eventTypes maps audit-event kinds to the webhook types they announce.
var eventTypes = map[string]string{
	models.EventNeedsReauth:     TypeNeedsReauth,
	models.EventReauthorized:    TypeReauthorized,
	models.EventRevoked:         TypeRevoked,
	"idle_expiry_risk":          TypeIdleExpiryRisk,
	"config_error_app_paused":   TypeConfigError,
	models.EventRestoreDetected: TypeRestoreDetected,
}

// Announcer returns the models.Announcer that turns stored audit events
// into outbox deliveries to endpoints (models.DB.SetAnnouncer). It writes
// nothing itself. The idempotency ID derives from the event row, so it is
// stable whatever retries the storing transaction makes.
func Announcer(endpoints []Endpoint) models.Announcer {
	return func(events []models.Event) ([]models.WebhookDelivery, error) {
		if len(endpoints) == 0 {
			return nil, nil
		}
		var out []models.WebhookDelivery
		for _, ev := range events {
			typ, ok := eventTypes[ev.Kind]
			if !ok {
				continue
			}
			data := map[string]any{}
			if ev.ErrorCode != "" {
				data["error_code"] = ev.ErrorCode
			}
			if ev.Detail != "" {
				data["reason"] = ev.Detail
			}
			if ev.Cause != "" {
				data["cause"] = ev.Cause
			}
			we := Event{ID: fmt.Sprintf("evt_%d_%s", ev.ID, typ), Type: typ, CreatedAt: ev.CreatedAt, Data: data}
			if ev.ConnectionID != nil {
				we.ConnectionID = *ev.ConnectionID
			}
			ds, err := Deliveries(endpoints, we, ev.CreatedAt)
			if err != nil {
				return nil, err
			}
			out = append(out, ds...)
		}
		return out, nil
	}
}
