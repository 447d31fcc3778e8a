package main

import (
	"bytes"
	"context"
	"github.com/tokenwarm/tokenwarm/internal/rawdb"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/tokenwarm/tokenwarm/models"
	"github.com/tokenwarm/tokenwarm/warmer"
)

// `tokenwarm purge` deletes finished rows past their retention and keeps
// everything else, including the app-wide pause read back from the log.
func TestPurgeSubcommand(t *testing.T) {
	dir := t.TempDir()
	env := envFrom(map[string]string{"TOKENWARM_DATA_DIR": dir, "TOKENWARM_RETENTION": "48h", "TOKENWARM_EVENT_RETENTION": "1000h"})
	if err := run(context.Background(), []string{"migrate"}, env, io.Discard, io.Discard); err != nil {
		t.Fatal(err)
	}
	db, err := models.Open("", dir, models.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	now := time.Now().UTC()
	old, recent, ancient := now.Add(-72*time.Hour), now.Add(-time.Hour), now.Add(-1100*time.Hour)
	exec := func(sql string, args ...any) {
		t.Helper()
		if err := rawdb.Gorm(db).Exec(sql, args...).Error; err != nil {
			t.Fatal(err)
		}
	}
	for i, at := range []time.Time{old, recent} {
		exec(`INSERT INTO webhook_outbox (event_id, event_type, endpoint_url, payload, created_at, next_attempt_at, attempts, delivered_at)
			VALUES (?, 'connection.revoked', 'https://hooks.example/x', '{}', ?, ?, 1, ?)`, []string{"evt_old", "evt_recent"}[i], at, at, at)
	}
	exec(`INSERT INTO webhook_outbox (event_id, event_type, endpoint_url, payload, created_at, next_attempt_at, attempts)
		VALUES ('evt_pending', 'connection.revoked', 'https://hooks.example/x', '{}', ?, ?, 3)`, ancient, now)
	for _, ev := range []models.Event{{Kind: "warmed", CreatedAt: ancient}, {Kind: "warmed", CreatedAt: old},
		{Kind: warmer.EventAppPaused, CreatedAt: ancient}} {
		if err := rawdb.Gorm(db).Create(&ev).Error; err != nil {
			t.Fatal(err)
		}
	}

	var out bytes.Buffer
	if err := run(context.Background(), []string{"purge"}, env, &out, io.Discard); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), "1 webhook delivery(ies), 1 event(s)") {
		t.Fatalf("purge said %q", out.String())
	}
	var outbox, kinds []string
	rawdb.Gorm(db).Table("webhook_outbox").Order("event_id").Pluck("event_id", &outbox)
	rawdb.Gorm(db).Model(&models.Event{}).Order("id").Pluck("kind", &kinds)
	if strings.Join(outbox, ",") != "evt_pending,evt_recent" || strings.Join(kinds, ",") != "warmed,"+warmer.EventAppPaused {
		t.Fatalf("left outbox %v, events %v", outbox, kinds)
	}
}
