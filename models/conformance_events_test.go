package models_test

import (
	"context"
	"github.com/tokenwarm/tokenwarm/internal/rawdb"
	"testing"
	"time"

	"github.com/tokenwarm/tokenwarm/models"
)

func init() {
	register(
		storageCase{"events are stored with the webhook deliveries announcing them", func(t *testing.T, db *models.DB) {
			db.SetAnnouncer(func(evs []models.Event) ([]models.WebhookDelivery, error) {
				var out []models.WebhookDelivery
				for _, ev := range evs {
					if ev.ID == 0 {
						t.Error("announced an event without its ID")
					}
					if ev.Kind == "announced" {
						out = append(out, models.WebhookDelivery{EventID: "evt_" + ev.Kind, EventType: "t", EndpointURL: "https://example.com/hook",
							Payload: "{}", CreatedAt: ev.CreatedAt, NextAttemptAt: ev.CreatedAt})
					}
				}
				return out, nil
			})
			now := time.Now().UTC()
			err := db.RecordEvents(context.Background(), []models.Event{{ID: 42, Kind: "announced", CreatedAt: now}, {Kind: "quiet", CreatedAt: now}})
			if err != nil {
				t.Fatal(err)
			}
			var events, deliveries int64
			rawdb.Gorm(db).Model(&models.Event{}).Count(&events)
			rawdb.Gorm(db).Model(&models.WebhookDelivery{}).Count(&deliveries)
			if events != 2 || deliveries != 1 {
				t.Fatalf("events %d deliveries %d, want 2 and 1", events, deliveries)
			}
		}},
		storageCase{"an announcer failure stores neither events nor deliveries", func(t *testing.T, db *models.DB) {
			db.SetAnnouncer(func([]models.Event) ([]models.WebhookDelivery, error) { return nil, context.Canceled })
			if err := db.RecordEvents(context.Background(), []models.Event{{Kind: "x", CreatedAt: time.Now().UTC()}}); err == nil {
				t.Fatal("no error")
			}
			var events int64
			rawdb.Gorm(db).Model(&models.Event{}).Count(&events)
			if events != 0 {
				t.Fatalf("%d events stored", events)
			}
		}},
	)
}

func init() {
	register(
		storageCase{"org idle TTL overrides are set, read and removed", func(t *testing.T, db *models.DB) {
			ctx := context.Background()
			def := 30 * 24 * time.Hour
			if err := db.SetOrgIdleTTL(ctx, "00Dshort", 7*24*time.Hour, time.Now()); err != nil {
				t.Fatal(err)
			}
			if err := db.SetOrgIdleTTL(ctx, "00Dshort", 10*24*time.Hour, time.Now()); err != nil {
				t.Fatal(err)
			}
			ttls, err := db.IdleTTLs(ctx, def)
			if err != nil || ttls.For("00Dshort") != 10*24*time.Hour || ttls.For("00Dother") != def {
				t.Fatalf("%+v %v", ttls, err)
			}
			if sc := ttls.Scopes(); len(sc) != 2 || sc[0].TTL != def || sc[1].Scope.Only != "00Dshort" {
				t.Fatalf("scopes %+v", sc)
			}
			if err := db.SetOrgIdleTTL(ctx, "00Dshort", 0, time.Now()); err != nil {
				t.Fatal(err)
			}
			if ttls, err := db.IdleTTLs(ctx, def); err != nil || len(ttls.ByOrg) != 0 {
				t.Fatalf("after removal: %+v %v", ttls, err)
			}
		}},
	)
}
