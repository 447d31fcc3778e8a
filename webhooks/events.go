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
	models.EventReauthSoon:      TypeReauthSoon,
	models.EventRestoreDetected: TypeRestoreDetected,
}

// Announces reports whether events of an audit-event kind are announced
// (models.DB.AnnouncePeople reads the person of those only).
func Announces(kind string) bool {
	_, ok := eventTypes[kind]
	return ok
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
			addPerson(data, ev.Person)
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

// addPerson puts who the connection belongs to into data, the fields
// tokenwarm knows (models.DB.AnnouncePeople; none when it is off):
// org_id, user_id, and, when captured, user_name, username, email and
// org_name. Personal data, never a token.
func addPerson(data map[string]any, p *models.Person) {
	if p == nil {
		return
	}
	for k, v := range map[string]string{"org_id": p.OrgID, "user_id": p.UserID, "user_name": p.Name,
		"username": p.Username, "email": p.Email, "org_name": p.OrgName} {
		if v != "" {
			data[k] = v
		}
	}
}
