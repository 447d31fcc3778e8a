package models_test

import (
	"context"
	"fmt"
	"github.com/tokenwarm/tokenwarm/internal/rawdb"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/tokenwarm/tokenwarm/models"
)

// adminFleet stores n connections of status, created and last refreshed at
// base + i/2 minutes (pairs tie, so the id breaks ties), and returns them
// in (time, id) order.
func adminFleet(t *testing.T, db *models.DB, n int, status string, base time.Time) []models.Connection {
	t.Helper()
	var out []models.Connection
	for i := range n {
		at := base.Add(time.Duration(i/2) * time.Minute)
		c := models.Connection{ID: uuid.NewString(), Owner: fmt.Sprintf("owner-%d", i%2), OrgID: fmt.Sprintf("00D%d", i%3), UserID: fmt.Sprintf("005-%s-%d", status, i),
			LoginURL: "https://login.example.com", InstanceURL: "https://x.example.com", Status: status,
			LastRefreshedAt: at, NextWarmAt: at, CreatedAt: at, UpdatedAt: at}
		if err := rawdb.Gorm(db).Create(&c).Error; err != nil {
			t.Fatal(err)
		}
		out = append(out, c)
	}
	return out
}

func ids(cs []models.Connection) []string {
	out := make([]string, len(cs))
	for i, c := range cs {
		out[i] = c.ID
	}
	return out
}

func init() {
	register(
		storageCase{"admin pages walk every connection once, in (time, id) order, under filters", func(t *testing.T, db *models.DB) {
			ctx := context.Background()
			base := time.Now().UTC().Add(-10 * 24 * time.Hour).Truncate(time.Microsecond)
			adminFleet(t, db, 9, models.StatusActive, base)
			adminFleet(t, db, 3, models.StatusRevoked, base.Add(time.Hour))
			for _, order := range []models.ConnectionOrder{models.ByCreated, models.ByLastRefreshed} {
				var seen []models.Connection
				var after *models.Position
				for {
					page, err := db.PageConnections(ctx, models.ConnectionFilter{Status: models.StatusActive}, order, after, 4)
					if err != nil {
						t.Fatal(err)
					}
					seen = append(seen, page...)
					if len(page) < 4 {
						break
					}
					last := page[len(page)-1]
					at := last.CreatedAt
					if order == models.ByLastRefreshed {
						at = last.LastRefreshedAt
					}
					after = &models.Position{At: at, ID: last.ID}
				}
				if len(seen) != 9 {
					t.Fatalf("order %d: %d connections, want the 9 active ones", order, len(seen))
				}
				for i := 1; i < len(seen); i++ {
					a, b := seen[i-1], seen[i]
					if a.Status != models.StatusActive || !(a.CreatedAt.Before(b.CreatedAt) || a.CreatedAt.Equal(b.CreatedAt) && a.ID < b.ID) {
						t.Fatalf("order %d: %s (%s) before %s (%s)", order, a.ID, a.CreatedAt, b.ID, b.CreatedAt)
					}
				}
			}
			got, err := db.PageConnections(ctx, models.ConnectionFilter{OrgID: "00D0", Owner: "owner-0"}, models.ByCreated, nil, 100)
			if err != nil {
				t.Fatal(err)
			}
			for _, c := range got {
				if c.OrgID != "00D0" || c.Owner != "owner-0" {
					t.Fatalf("filter let %s/%s through", c.OrgID, c.Owner)
				}
			}
			// i in {0, 6} active, {0} revoked: owner-0 needs i even, org 00D0 needs i%3 == 0.
			if len(got) != 3 {
				t.Fatalf("org and owner filter: %d connections, want 3", len(got))
			}
			old, err := db.PageConnections(ctx, models.ConnectionFilter{Stale: []models.StaleCutoff{{Before: base.Add(2 * time.Minute)}}}, models.ByLastRefreshed, nil, 100)
			if err != nil {
				t.Fatal(err)
			}
			if len(old) != 4 {
				t.Fatalf("refreshed-before filter: %d connections, want 4", len(old))
			}
			// Orgs with their own idle TTL have their own cutoff.
			all, err := db.PageConnections(ctx, models.ConnectionFilter{}, models.ByLastRefreshed, nil, 100)
			if err != nil {
				t.Fatal(err)
			}
			cutDefault, cutOwn := base.Add(2*time.Minute), base.Add(100*time.Minute)
			want := 0
			for _, c := range all {
				if (c.OrgID == "00D0" && c.LastRefreshedAt.Before(cutOwn)) || (c.OrgID != "00D0" && c.LastRefreshedAt.Before(cutDefault)) {
					want++
				}
			}
			scoped, err := db.PageConnections(ctx, models.ConnectionFilter{Stale: []models.StaleCutoff{
				{Scope: models.OrgScope{Except: []string{"00D0"}}, Before: cutDefault},
				{Scope: models.OrgScope{Only: "00D0"}, Before: cutOwn},
			}}, models.ByLastRefreshed, nil, 100)
			if err != nil || len(scoped) != want || want == len(old) {
				t.Fatalf("per-org cutoffs: %d connections (%v), want %d (and not %d)", len(scoped), err, want, len(old))
			}
		}},
		storageCase{"a connection's events come newest first, at most n", func(t *testing.T, db *models.DB) {
			ctx := context.Background()
			cs := adminFleet(t, db, 2, models.StatusActive, time.Now().UTC().Add(-time.Hour))
			for i := range 5 {
				for _, c := range cs {
					id := c.ID
					if err := db.RecordAdminEvent(ctx, models.Event{ConnectionID: &id, Kind: fmt.Sprintf("k%d", i), Cause: "admin", CreatedAt: time.Now().UTC()}); err != nil {
						t.Fatal(err)
					}
				}
			}
			evs, err := db.ConnectionEvents(ctx, cs[0].ID, 3)
			if err != nil {
				t.Fatal(err)
			}
			if len(evs) != 3 || evs[0].Kind != "k4" || evs[2].Kind != "k2" {
				t.Fatalf("events %+v", evs)
			}
			for _, e := range evs {
				if e.ConnectionID == nil || *e.ConnectionID != cs[0].ID {
					t.Fatalf("another connection's event: %+v", e)
				}
			}
		}},
		storageCase{"the admin summary counts by status and finds the connections at risk", func(t *testing.T, db *models.DB) {
			ctx := context.Background()
			now := time.Now().UTC().Truncate(time.Microsecond)
			empty, err := db.AdminSummary(ctx, models.SummaryQuery{AtRiskBefore: now, ConfigErrorsSince: now.Add(-time.Hour), ConfigErrors: 10})
			if err != nil {
				t.Fatal(err)
			}
			if empty.OldestActiveRefresh != nil || empty.AtRisk != 0 || len(empty.ConfigErrors) != 0 ||
				len(empty.ByStatus) != 3 || empty.ByStatus[models.StatusActive] != 0 {
				t.Fatalf("empty fleet: %+v", empty)
			}
			active := adminFleet(t, db, 4, models.StatusActive, now.Add(-25*24*time.Hour)) // refreshed 25 days ago and one minute later
			adminFleet(t, db, 2, models.StatusNeedsReauth, now.Add(-40*24*time.Hour))
			adminFleet(t, db, 1, models.StatusRevoked, now.Add(-40*24*time.Hour))
			id := active[0].ID
			for i, at := range []time.Time{now.Add(-8 * 24 * time.Hour), now.Add(-time.Hour), now.Add(-time.Minute), now} {
				if err := db.RecordEvents(ctx, []models.Event{{ConnectionID: &id, Kind: models.EventConfigError, ErrorCode: fmt.Sprint(i), CreatedAt: at}}); err != nil {
					t.Fatal(err)
				}
			}
			if err := db.RecordEvents(ctx, []models.Event{{Kind: models.EventRefreshed, CreatedAt: now}}); err != nil {
				t.Fatal(err)
			}
			s, err := db.AdminSummary(ctx, models.SummaryQuery{AtRiskBefore: now.Add(-25*24*time.Hour + 30*time.Second),
				ConfigErrorsSince: now.Add(-7 * 24 * time.Hour), ConfigErrors: 2})
			if err != nil {
				t.Fatal(err)
			}
			if s.ByStatus[models.StatusActive] != 4 || s.ByStatus[models.StatusNeedsReauth] != 2 || s.ByStatus[models.StatusRevoked] != 1 {
				t.Fatalf("counts %+v", s.ByStatus)
			}
			if s.OldestActiveRefresh == nil || !s.OldestActiveRefresh.Equal(active[0].LastRefreshedAt) {
				t.Fatalf("oldest active refresh %v, want %v", s.OldestActiveRefresh, active[0].LastRefreshedAt)
			}
			if s.AtRisk != 2 {
				t.Fatalf("at risk %d, want the 2 active connections refreshed first", s.AtRisk)
			}
			if len(s.ConfigErrors) != 2 || s.ConfigErrors[0].ErrorCode != "3" || s.ConfigErrors[1].ErrorCode != "2" {
				t.Fatalf("config errors %+v", s.ConfigErrors)
			}
		}},
		storageCase{"an admin event is stored with its webhook deliveries, or not at all", func(t *testing.T, db *models.DB) {
			ctx := context.Background()
			fail := false
			db.SetAnnouncer(func(evs []models.Event) ([]models.WebhookDelivery, error) {
				if fail {
					return nil, context.Canceled
				}
				ev := evs[0]
				return []models.WebhookDelivery{{EventID: fmt.Sprintf("evt_%d", ev.ID), EventType: "t", EndpointURL: "https://example.com/hook",
					Payload: "{}", CreatedAt: ev.CreatedAt, NextAttemptAt: ev.CreatedAt}}, nil
			})
			id := adminFleet(t, db, 1, models.StatusActive, time.Now().UTC())[0].ID
			ev := models.Event{ConnectionID: &id, Kind: "admin_refresh", Cause: "admin", Detail: `forced refresh by admin key "ops": ok`, CreatedAt: time.Now().UTC()}
			if err := db.RecordAdminEvent(ctx, ev); err != nil {
				t.Fatal(err)
			}
			fail = true
			if err := db.RecordAdminEvent(ctx, ev); err == nil {
				t.Fatal("no error when the announcer failed")
			}
			var events, deliveries int64
			rawdb.Gorm(db).Model(&models.Event{}).Count(&events)
			rawdb.Gorm(db).Model(&models.WebhookDelivery{}).Count(&deliveries)
			if events != 1 || deliveries != 1 {
				t.Fatalf("events %d deliveries %d, want 1 and 1", events, deliveries)
			}
		}},
	)
}
