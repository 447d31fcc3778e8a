package metrics_test

import (
	"io"
	"log/slog"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/tokenwarm/tokenwarm/clock"
	"github.com/tokenwarm/tokenwarm/internal/rawdb"
	"github.com/tokenwarm/tokenwarm/internal/testkit"
	"github.com/tokenwarm/tokenwarm/metrics"
	"github.com/tokenwarm/tokenwarm/models"
	"github.com/tokenwarm/tokenwarm/warmer"
)

func TestFleetGaugesAndRefreshCounters(t *testing.T) {
	db := testkit.MigratedDB(t, models.SQLite)
	now := time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)
	clk := clock.NewFake(now)
	add := func(id, status string, lastRefresh, nextWarm time.Time) {
		c := models.Connection{ID: id, Owner: "o", OrgID: "00D", UserID: id, LoginURL: "https://login.salesforce.com",
			Status: status, LastRefreshedAt: lastRefresh, NextWarmAt: nextWarm, CreatedAt: now, UpdatedAt: now}
		if err := rawdb.Gorm(db).Create(&c).Error; err != nil {
			t.Fatal(err)
		}
	}
	add("11111111-1111-1111-1111-111111111111", models.StatusActive, now.Add(-20*24*time.Hour), now.Add(-time.Hour))
	add("22222222-2222-2222-2222-222222222222", models.StatusActive, now.Add(-time.Hour), now.Add(71*time.Hour))
	add("33333333-3333-3333-3333-333333333333", models.StatusNeedsReauth, now.Add(-40*24*time.Hour), now.Add(-time.Hour))

	m := metrics.New(db, 30*24*time.Hour, clk, slog.New(slog.DiscardHandler))
	m.WatchWarmer(func() warmer.Stats {
		return warmer.Stats{Passes: 3, Claimed: 7, IdleRiskEvents: 2, Paused: true, LastPassDuration: 1500 * time.Millisecond}
	})
	m.ObserveRefresh("warm", "ok", 120*time.Millisecond)
	m.ObserveRefresh("pull", "transient", 2*time.Second)

	rec := httptest.NewRecorder()
	m.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	body, _ := io.ReadAll(rec.Body)
	out := string(body)
	for _, want := range []string{
		`tokenwarm_connections{status="active"} 2`,
		`tokenwarm_connections{status="needs_reauth"} 1`,
		`tokenwarm_connections{status="revoked"} 0`,
		`tokenwarm_warm_backlog 1`,
		`tokenwarm_min_idle_budget_seconds 864000`,
		`tokenwarm_refreshes_total{cause="warm",outcome="ok"} 1`,
		`tokenwarm_refreshes_total{cause="pull",outcome="transient"} 1`,
		`tokenwarm_refresh_upstream_seconds_count{outcome="ok"} 1`,
		`tokenwarm_warm_passes_total 3`,
		`tokenwarm_warm_claimed_total 7`,
		`tokenwarm_idle_expiry_risk_total 2`,
		`tokenwarm_warm_paused 1`,
		`tokenwarm_warm_last_pass_seconds 1.5`,
	} {
		if !strings.Contains(out, want) {
			t.Errorf("metrics lack %q", want)
		}
	}
	if strings.Contains(out, "11111111-1111") {
		t.Error("a connection ID appears in the metrics")
	}
}

// The smallest idle budget counts each connection against its org's own
// idle TTL.
func TestMinIdleBudgetUsesEachOrgsTTL(t *testing.T) {
	db := testkit.MigratedDB(t, models.SQLite)
	now := time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)
	for i, c := range []struct{ org, id string }{{"00Dlong", "11111111-1111-1111-1111-111111111111"}, {"00Dshort", "22222222-2222-2222-2222-222222222222"}} {
		row := models.Connection{ID: c.id, Owner: "o", OrgID: c.org, UserID: c.id, LoginURL: "https://login.salesforce.com",
			Status: models.StatusActive, LastRefreshedAt: now.Add(-time.Duration(10-i*8) * 24 * time.Hour), NextWarmAt: now.Add(time.Hour),
			CreatedAt: now, UpdatedAt: now}
		if err := rawdb.Gorm(db).Create(&row).Error; err != nil {
			t.Fatal(err)
		}
	}
	scrape := func() string {
		m := metrics.New(db, 30*24*time.Hour, clock.NewFake(now), slog.New(slog.DiscardHandler))
		rec := httptest.NewRecorder()
		m.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
		b, _ := io.ReadAll(rec.Body)
		return string(b)
	}
	// 00Dlong refreshed 10 days ago, 00Dshort 2 days ago: with the default
	// TTL the first has 20 days left.
	if out := scrape(); !strings.Contains(out, "tokenwarm_min_idle_budget_seconds 1.728e+06") {
		t.Fatalf("default TTL:\n%s", out)
	}
	// 00Dshort's admin set 3 days: it has one day left.
	if err := db.SetOrgIdleTTL(t.Context(), "00Dshort", 3*24*time.Hour, now); err != nil {
		t.Fatal(err)
	}
	if out := scrape(); !strings.Contains(out, "tokenwarm_min_idle_budget_seconds 86400") {
		t.Fatalf("org TTL:\n%s", out)
	}
}

// The event, reuse, webhook and rate-limit counters exist at 0 from the
// start (so a first event is an increase), count what they are told, and
// keep their labels to fixed sets: an unknown value counts as "other".
func TestEventCountersHaveFixedLabels(t *testing.T) {
	m := metrics.New(testkit.MigratedDB(t, models.SQLite), 30*24*time.Hour, nil, slog.New(slog.DiscardHandler))
	scrape := func() string {
		rec := httptest.NewRecorder()
		m.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
		return rec.Body.String()
	}
	contains(t, scrape(),
		`tokenwarm_refresh_events_total{kind="rotation_lost"} 0`,
		`tokenwarm_refresh_events_total{kind="unknown_outcome"} 0`,
		`tokenwarm_refresh_events_total{kind="concurrent_presentation"} 0`,
		`tokenwarm_device_refresh_reuse_total 0`,
		`tokenwarm_webhook_deliveries_total{outcome="failed"} 0`,
		`tokenwarm_webhook_deliveries_total{outcome="gave_up"} 0`,
		`tokenwarm_rate_limited_total{limit="ip"} 0`)
	m.EventStored(models.EventRotationLost)
	m.EventStored("twr_not_a_kind_but_a_token")
	m.DeviceReuse()
	m.WebhookAttempt("failed")
	m.WebhookAttempt("https://hooks.example.com/secret-path")
	m.RateLimited("session")
	m.RateLimited("203.0.113.7")
	out := scrape()
	contains(t, out,
		`tokenwarm_refresh_events_total{kind="rotation_lost"} 1`,
		`tokenwarm_refresh_events_total{kind="other"} 1`,
		`tokenwarm_device_refresh_reuse_total 1`,
		`tokenwarm_webhook_deliveries_total{outcome="failed"} 1`,
		`tokenwarm_webhook_deliveries_total{outcome="other"} 1`,
		`tokenwarm_rate_limited_total{limit="session"} 1`,
		`tokenwarm_rate_limited_total{limit="other"} 1`)
	for _, leak := range []string{"twr_", "hooks.example.com", "203.0.113.7"} {
		if strings.Contains(out, leak) {
			t.Errorf("a label carries %q", leak)
		}
	}
}

// contains fails t for each of wants that out lacks.
func contains(t *testing.T, out string, wants ...string) {
	t.Helper()
	for _, want := range wants {
		if !strings.Contains(out, want) {
			t.Errorf("metrics lack %q", want)
		}
	}
}
