package models_test

import (
	"context"
	"fmt"
	"github.com/tokenwarm/tokenwarm/internal/rawdb"
	"sync"
	"testing"
	"time"

	"github.com/tokenwarm/tokenwarm/models"
)

func init() {
	ctx := context.Background()
	at := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	delivery := func(eventID string, due time.Time) models.WebhookDelivery {
		return models.WebhookDelivery{EventID: eventID, EventType: "connection.revoked", EndpointURL: "https://hooks.example/x",
			Payload: `{"id":"` + eventID + `"}`, CreatedAt: at, NextAttemptAt: due}
	}
	type outboxRow struct {
		EventID       string
		NextAttemptAt time.Time
		Attempts      int
		DeliveredAt   *time.Time
		LastError     string
	}
	get := func(t *testing.T, db *models.DB, eventID string) outboxRow {
		t.Helper()
		var r outboxRow
		if err := rawdb.Gorm(db).Table("webhook_outbox").Where("event_id = ?", eventID).Take(&r).Error; err != nil {
			t.Fatal(err)
		}
		return r
	}
	ids := func(rows []models.WebhookDelivery) []string {
		out := make([]string, len(rows))
		for i, r := range rows {
			out[i] = r.EventID
		}
		return out
	}
	register(
		storageCase{"webhooks: enqueueing an event twice stores it once", func(t *testing.T, db *models.DB) {
			rows := []models.WebhookDelivery{delivery("evt_1", at)}
			for range 2 {
				if err := db.EnqueueDeliveries(ctx, rows); err != nil {
					t.Fatal(err)
				}
			}
			if err := db.EnqueueDeliveries(ctx, nil); err != nil {
				t.Fatal(err)
			}
			var n int64
			rawdb.Gorm(db).Model(&models.WebhookDelivery{}).Count(&n)
			if n != 1 || rows[0].ID != 0 {
				t.Fatalf("%d rows (caller's row ID %d), want 1 and the caller's rows untouched", n, rows[0].ID)
			}
		}},
		storageCase{"webhooks: claims take due rows oldest first under a lease; outcomes need the lease", func(t *testing.T, db *models.DB) {
			err := db.EnqueueDeliveries(ctx, []models.WebhookDelivery{
				delivery("evt_b", at.Add(-time.Minute)), delivery("evt_a", at.Add(-time.Hour)),
				delivery("evt_c", at.Add(-time.Second)), delivery("evt_later", at.Add(time.Hour))})
			if err != nil {
				t.Fatal(err)
			}
			lease := at.Add(5*time.Minute + 123456789*time.Nanosecond) // sub-microsecond part: dropped consistently
			got, err := db.ClaimDueDeliveries(ctx, 2, at, lease)
			if err != nil || fmt.Sprint(ids(got)) != "[evt_a evt_b]" {
				t.Fatalf("claimed %v, %v; want evt_a, evt_b", ids(got), err)
			}
			if !got[0].NextAttemptAt.Equal(at.Add(-time.Hour)) {
				t.Fatalf("claimed row due %v, want the time it was due", got[0].NextAttemptAt)
			}
			// Leased rows are not claimed again until the lease ends.
			again, err := db.ClaimDueDeliveries(ctx, 10, at, lease)
			if err != nil || fmt.Sprint(ids(again)) != "[evt_c]" {
				t.Fatalf("second claim %v, %v; want evt_c", ids(again), err)
			}
			a, b, c := got[0], got[1], again[0]
			// evt_a: delivered (no lease needed).
			if err := db.MarkDelivered(ctx, a.ID, at.Add(time.Second), 1); err != nil {
				t.Fatal(err)
			}
			// evt_b: rescheduled under the lease; a stale lease changes nothing.
			if err := db.RescheduleDelivery(ctx, b.ID, at, at.Add(time.Hour), 9, "stale"); err != nil {
				t.Fatal(err)
			}
			if r := get(t, db, "evt_b"); r.Attempts != 0 || r.LastError != "" {
				t.Fatalf("a stale lease rescheduled the row: %+v", r)
			}
			if err := db.RescheduleDelivery(ctx, b.ID, lease, at.Add(10*time.Minute), 1, "HTTP 500"); err != nil {
				t.Fatal(err)
			}
			if r := get(t, db, "evt_b"); r.Attempts != 1 || r.LastError != "HTTP 500" || !r.NextAttemptAt.Equal(at.Add(10*time.Minute)) {
				t.Fatalf("rescheduled row %+v", r)
			}
			// evt_c: given up.
			if err := db.MarkDeliveryFailed(ctx, c.ID, lease, 3, "gave up"); err != nil {
				t.Fatal(err)
			}
			if r := get(t, db, "evt_a"); r.DeliveredAt == nil || r.Attempts != 1 {
				t.Fatalf("delivered row %+v", r)
			}
			// Far in the future only the rescheduled and the later row are due.
			late, err := db.ClaimDueDeliveries(ctx, 10, at.Add(100*365*24*time.Hour), at.Add(100*365*24*time.Hour))
			if err != nil || fmt.Sprint(ids(late)) != "[evt_b evt_later]" {
				t.Fatalf("late claim %v, %v; want evt_b and evt_later (not the delivered or given-up rows)", ids(late), err)
			}
		}},
		storageCase{"webhooks: purge deletes finished rows past retention only", func(t *testing.T, db *models.DB) {
			err := db.EnqueueDeliveries(ctx, []models.WebhookDelivery{delivery("evt_done", at), delivery("evt_failed", at),
				delivery("evt_retrying", at)})
			if err != nil {
				t.Fatal(err)
			}
			lease := at.Add(time.Minute)
			rows, err := db.ClaimDueDeliveries(ctx, 10, at, lease)
			if err != nil || len(rows) != 3 {
				t.Fatalf("claimed %d, %v", len(rows), err)
			}
			for _, r := range rows {
				switch r.EventID {
				case "evt_done":
					err = db.MarkDelivered(ctx, r.ID, at, 1)
				case "evt_failed":
					err = db.MarkDeliveryFailed(ctx, r.ID, lease, 20, "gave up")
				default:
					err = db.RescheduleDelivery(ctx, r.ID, lease, at.Add(time.Hour), 1, "HTTP 500")
				}
				if err != nil {
					t.Fatal(err)
				}
			}
			if n, err := db.PurgeWebhookDeliveries(ctx, at); err != nil || n != 0 {
				t.Fatalf("purged %d at the cutoff, %v", n, err)
			}
			if n, err := db.PurgeWebhookDeliveries(ctx, at.Add(time.Second)); err != nil || n != 2 {
				t.Fatalf("purged %d, %v; want the delivered and the given-up row", n, err)
			}
			get(t, db, "evt_retrying")
		}},
		storageCase{"webhooks: racing replicas claim disjoint rows", func(t *testing.T, db *models.DB) {
			const n = 60
			rows := make([]models.WebhookDelivery, n)
			for i := range rows {
				rows[i] = delivery(fmt.Sprintf("evt_%02d", i), at.Add(-time.Duration(i)*time.Second))
			}
			if err := db.EnqueueDeliveries(ctx, rows); err != nil {
				t.Fatal(err)
			}
			var mu sync.Mutex
			claimed := map[string]int{}
			var wg sync.WaitGroup
			for _, r := range pools(t, db, 4) {
				for range 2 {
					wg.Go(func() {
						for {
							got, err := r.ClaimDueDeliveries(ctx, 3, at, at.Add(time.Hour))
							if err != nil {
								t.Error(err)
								return
							}
							if len(got) == 0 {
								return
							}
							mu.Lock()
							for _, g := range got {
								claimed[g.EventID]++
							}
							mu.Unlock()
						}
					})
				}
			}
			wg.Wait()
			if len(claimed) != n {
				t.Errorf("%d rows claimed, want %d", len(claimed), n)
			}
			for id, c := range claimed {
				if c != 1 {
					t.Errorf("%s claimed %d times", id, c)
				}
			}
		}},
	)
}
