package models_test

import (
	"context"
	"encoding/json"
	"errors"
	"sort"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/tokenwarm/tokenwarm/internal/rawdb"
	"github.com/tokenwarm/tokenwarm/models"
)

// person stores an active connection of a named user, authorized at.
func person(t *testing.T, db *models.DB, name, username, org string, at time.Time) models.Connection {
	t.Helper()
	c := models.Connection{ID: uuid.NewString(), Owner: "owner-" + username, OrgID: "00D" + org, UserID: "005" + username,
		LoginURL: "https://login.example.com", InstanceURL: "https://x.example.com", Status: models.StatusActive,
		UserName: name, UserUsername: username, UserEmail: username + "@mail.example", OrgName: org,
		LastRefreshedAt: at, NextWarmAt: at, CreatedAt: at, UpdatedAt: at, AuthorizedAt: &at}
	if err := rawdb.Gorm(db).Create(&c).Error; err != nil {
		t.Fatal(err)
	}
	return c
}

func searchIDs(t *testing.T, db *models.DB, f models.ConnectionFilter) []string {
	t.Helper()
	got, err := db.PageConnections(context.Background(), f, models.ByCreated, nil, 50)
	if err != nil {
		t.Fatal(err)
	}
	out := ids(got)
	sort.Strings(out)
	return out
}

func sorted(s ...string) []string {
	sort.Strings(s)
	return s
}

func sameIDs(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func init() {
	register(
		storageCase{"connections are found by a case-insensitive search on the user's name, username, email or org name; LIKE wildcards are literal", func(t *testing.T, db *models.DB) {
			at := time.Now().UTC().Add(-time.Hour).Truncate(time.Microsecond)
			ada := person(t, db, "Ada Lovelace", "ada.l", "Analytical Engines", at)
			grace := person(t, db, "Grace Hopper", "g_hopper", "Navy", at)
			odd := person(t, db, "100% Done", "odd", "Navy", at)
			for q, want := range map[string][]string{
				"lovelace":     {ada.ID},
				"ADA":          {ada.ID},
				"g_hop":        {grace.ID},
				"G_HOPPER@MAI": {grace.ID},
				"navy":         sorted(grace.ID, odd.ID),
				"%":            {odd.ID},
				"_":            {grace.ID},
				"nobody":       {},
			} {
				if got := searchIDs(t, db, models.ConnectionFilter{Search: q}); !sameIDs(got, sorted(want...)) {
					t.Errorf("search %q: got %v, want %v", q, got, want)
				}
			}
			if got := searchIDs(t, db, models.ConnectionFilter{Search: "navy", Status: models.StatusRevoked}); len(got) != 0 {
				t.Errorf("search ignores the other filters: %v", got)
			}
		}},
		storageCase{"erasing a person's data clears name, username and email in the transaction of its audit event; the connection stays", func(t *testing.T, db *models.DB) {
			ctx := context.Background()
			at := time.Now().UTC().Add(-time.Hour).Truncate(time.Microsecond)
			ada := person(t, db, "Ada Lovelace", "ada.l", "Analytical Engines", at)
			id := ada.ID
			ev := models.Event{ConnectionID: &id, Kind: models.EventIdentityErased, Cause: "admin", Detail: "erased", CreatedAt: time.Now().UTC()}
			c, err := db.EraseIdentity(ctx, ada.ID, ev)
			if err != nil {
				t.Fatal(err)
			}
			if c.UserName != "" || c.UserUsername != "" || c.UserEmail != "" || c.OrgName != "Analytical Engines" || c.Status != models.StatusActive {
				t.Fatalf("after erasure: %+v", c)
			}
			stored, err := db.Connection(ctx, ada.ID)
			if err != nil || stored.UserName != "" || stored.UserUsername != "" || stored.UserEmail != "" {
				t.Fatalf("stored after erasure: %+v %v", stored, err)
			}
			if got := searchIDs(t, db, models.ConnectionFilter{Search: "lovelace"}); len(got) != 0 {
				t.Fatalf("an erased name is still found: %v", got)
			}
			evs, err := db.ConnectionEvents(ctx, ada.ID, 5)
			if err != nil || len(evs) != 1 || evs[0].Kind != models.EventIdentityErased {
				t.Fatalf("audit events %+v %v", evs, err)
			}
			if _, err := db.EraseIdentity(ctx, uuid.NewString(), ev); !errors.Is(err, models.ErrNotFound) {
				t.Fatalf("erasing an unknown connection: %v", err)
			}
		}},
		storageCase{"reauth_soon is recorded once per authorization of an active connection past the cutoff, and again after a re-authorization", func(t *testing.T, db *models.DB) {
			ctx := context.Background()
			now := time.Now().UTC().Truncate(time.Microsecond)
			old := person(t, db, "Old Timer", "old", "Org", now.Add(-85*24*time.Hour))
			person(t, db, "New Comer", "new", "Org", now.Add(-24*time.Hour))
			dead := person(t, db, "Dead Grant", "dead", "Org", now.Add(-89*24*time.Hour))
			rawdb.Gorm(db).Model(&models.Connection{}).Where("id = ?", dead.ID).Update("status", models.StatusNeedsReauth)
			cutoff := now.Add(-83 * 24 * time.Hour)
			record := func() []models.ReauthDue {
				found, err := db.RecordReauthSoon(ctx, cutoff, models.EventReauthSoon, 10, func(d models.ReauthDue) models.Event {
					id := d.ID
					return models.Event{ConnectionID: &id, Kind: models.EventReauthSoon, CreatedAt: time.Now().UTC()}
				})
				if err != nil {
					t.Fatal(err)
				}
				return found
			}
			found := record()
			if len(found) != 1 || found[0].ID != old.ID || !found[0].AuthorizedAt.Equal(*old.AuthorizedAt) {
				t.Fatalf("first sweep found %+v", found)
			}
			if again := record(); len(again) != 0 {
				t.Fatalf("a second sweep recorded again: %+v", again)
			}
			if got := searchIDs(t, db, models.ConnectionFilter{Status: models.StatusActive, AuthorizedBefore: &cutoff}); !sameIDs(got, []string{old.ID}) {
				t.Fatalf("AuthorizedBefore filter: %v", got)
			}
			// Re-authorized, and later old again: a new event.
			reauth := time.Now().UTC().Add(time.Millisecond)
			rawdb.Gorm(db).Model(&models.Connection{}).Where("id = ?", old.ID).Update("authorized_at", reauth)
			if again := record(); len(again) != 0 {
				t.Fatalf("a fresh authorization was flagged: %+v", again)
			}
			time.Sleep(5 * time.Millisecond)
			later := time.Now().UTC()
			cutoff = later
			if again := record(); len(again) != 2 {
				// old (re-authorized since its event) and the newcomer
				t.Fatalf("after re-authorization: %+v", again)
			}
		}},
		storageCase{"with AnnouncePeople the announcer gets the Person of each event of an announced kind from its connection; otherwise none", func(t *testing.T, db *models.DB) {
			ctx := context.Background()
			at := time.Now().UTC().Add(-time.Hour).Truncate(time.Microsecond)
			ada := person(t, db, "Ada Lovelace", "ada.l", "Analytical Engines", at)
			var got []*models.Person
			db.SetAnnouncer(func(evs []models.Event) ([]models.WebhookDelivery, error) {
				for _, ev := range evs {
					got = append(got, ev.Person)
				}
				return nil, nil
			})
			id := ada.ID
			ev := models.Event{ConnectionID: &id, Kind: "revoked", CreatedAt: time.Now().UTC()}
			if err := db.RecordEvents(ctx, []models.Event{ev}); err != nil {
				t.Fatal(err)
			}
			db.AnnouncePeople(func(kind string) bool { return kind == "revoked" })
			refreshed := models.Event{ConnectionID: &id, Kind: "refreshed", CreatedAt: time.Now().UTC()}
			if err := db.RecordEvents(ctx, []models.Event{ev, {Kind: "config_error_app_paused", CreatedAt: time.Now().UTC()}, refreshed}); err != nil {
				t.Fatal(err)
			}
			b, _ := json.Marshal(got)
			if len(got) != 4 || got[0] != nil || got[1] == nil || got[2] != nil || got[3] != nil {
				t.Fatalf("persons %s", b)
			}
			if p := got[1]; p.Name != "Ada Lovelace" || p.Username != "ada.l" || p.Email != "ada.l@mail.example" || p.OrgName != "Analytical Engines" ||
				p.OrgID != ada.OrgID || p.UserID != ada.UserID {
				t.Fatalf("person %+v", p)
			}
			var stored []models.Event
			rawdb.Gorm(db).Where("connection_id = ?", ada.ID).Find(&stored)
			if len(stored) != 3 {
				t.Fatalf("events stored: %d", len(stored))
			}
		}},
	)
}
