package webhooks_test

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/tokenwarm/tokenwarm/clock"
	"github.com/tokenwarm/tokenwarm/internal/testkit"
	"github.com/tokenwarm/tokenwarm/models"
	"github.com/tokenwarm/tokenwarm/webhooks"
)

// Audit events that admins must hear about reach the outbox in the storing
// transaction and are delivered signed; the others are not announced.
func TestAnnouncerAnnouncesWhatAdminsNeed(t *testing.T) {
	db := testkit.MigratedDB(t, models.SQLite)
	var mu sync.Mutex
	var got []map[string]any
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		if err := webhooks.Verify("s3cret", r.Header.Get(webhooks.HeaderSignature), body, time.Now(), time.Hour); err != nil {
			t.Errorf("signature: %v", err)
		}
		var m map[string]any
		_ = json.Unmarshal(body, &m)
		mu.Lock()
		got = append(got, m)
		mu.Unlock()
	}))
	defer srv.Close()
	endpoints := []webhooks.Endpoint{{URL: srv.URL, Secret: "s3cret"}}
	db.SetAnnouncer(webhooks.Announcer(endpoints))
	now := time.Now().UTC()
	id := "11111111-1111-1111-1111-111111111111"
	err := db.RecordEvents(context.Background(), []models.Event{
		{ConnectionID: &id, Kind: models.EventRefreshed, CreatedAt: now},
		{ConnectionID: &id, Kind: models.EventNeedsReauth, ErrorCode: "invalid_grant", Detail: "expired access/refresh token", CreatedAt: now},
	})
	if err != nil {
		t.Fatal(err)
	}
	d := webhooks.NewDispatcher(db, endpoints, clock.NewFake(now.Add(time.Second)), nil, nil, webhooks.Config{})
	if n, _, err := d.DeliverDue(context.Background()); err != nil || n != 1 {
		t.Fatalf("delivered %d (%v), want 1", n, err)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(got) != 1 || got[0]["type"] != webhooks.TypeNeedsReauth {
		t.Fatalf("received %v", got)
	}
	data, _ := got[0]["data"].(map[string]any)
	if data["connection_id"] != id || data["error_code"] != "invalid_grant" {
		t.Fatalf("data %v", data)
	}
}
