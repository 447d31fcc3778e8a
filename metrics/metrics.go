// Package metrics exposes tokenwarm's Prometheus metrics. Labels are small
// fixed sets (cause, outcome class, status): never a token, never an ID.
package metrics

import (
	"context"
	"log/slog"
	"net/http"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/tokenwarm/tokenwarm/clock"
	"github.com/tokenwarm/tokenwarm/models"
	"github.com/tokenwarm/tokenwarm/warmer"
)

// Metrics holds the instruments and the registry that serves them.
type Metrics struct {
	Registry      *prometheus.Registry
	refreshes     *prometheus.CounterVec
	latency       *prometheus.HistogramVec
	events        *prometheus.CounterVec
	deviceReuse   prometheus.Counter
	webhooks      *prometheus.CounterVec
	rateLimited   *prometheus.CounterVec
	scrapeTimeout time.Duration
}

// EventKinds are the refresh-path events counted by
// tokenwarm_refresh_events_total; any other kind counts as "other".
var EventKinds = []string{
	models.EventRefreshed, models.EventTransientFailure, models.EventConfigError, models.EventRestricted,
	models.EventUnrecognized, models.EventNeedsReauth, models.EventConcurrentPresentation,
	models.EventUnknownOutcome, models.EventRotationLost, models.EventIntrospectionFailed,
	models.EventAttemptUnresolved,
}

// WebhookOutcomes label tokenwarm_webhook_deliveries_total (the outcomes
// of webhooks.Config.Observe); RateLimits label tokenwarm_rate_limited_total
// (handlers.LimitSession, handlers.LimitIP).
var (
	WebhookOutcomes = []string{"delivered", "failed", "gave_up", "dropped"}
	RateLimits      = []string{"session", "ip"}
)

// Fleet is what the gauges read at scrape time; *models.DB implements it.
type Fleet interface {
	ConnectionCountsByStatus(ctx context.Context) (map[string]int64, error)
	// Each org's refresh-token idle TTL, and the oldest refresh of the
	// active connections of a group of orgs.
	IdleTTLs(ctx context.Context, def time.Duration) (models.IdleTTLs, error)
	OldestRefresh(ctx context.Context, scope models.OrgScope) (time.Time, error)
	WarmBacklog(ctx context.Context, now time.Time) (int64, error)
}

// New registers every metric. db feeds the gauges read at scrape time.
// New makes the metrics; idleTTL is the default refresh-token idle TTL
// (orgs may have their own).
func New(db Fleet, idleTTL time.Duration, clk clock.Clock, log *slog.Logger) *Metrics {
	if clk == nil {
		clk = clock.System{}
	}
	reg := prometheus.NewRegistry()
	m := &Metrics{
		Registry: reg,
		refreshes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tokenwarm_refreshes_total",
			Help: "Refresh attempts that reached Salesforce, by cause (pull, warm, admin) and outcome class.",
		}, []string{"cause", "outcome"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "tokenwarm_refresh_upstream_seconds",
			Help:    "Duration of Salesforce refresh calls, by outcome class.",
			Buckets: []float64{.025, .05, .1, .15, .25, .5, 1, 2.5, 5, 10, 15},
		}, []string{"outcome"}),
		events: counterVec("tokenwarm_refresh_events_total",
			"Events the refresh path of this replica stored, by kind (rotation_lost, unknown_outcome, concurrent_presentation, needs_reauth, ...), counted after their transaction committed.",
			"kind", append(EventKinds, "other")),
		deviceReuse: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "tokenwarm_device_refresh_reuse_total",
			Help: "Presentations of an already rotated device refresh token (outside the reuse interval) that revoked the device session.",
		}),
		webhooks: counterVec("tokenwarm_webhook_deliveries_total",
			"Webhook delivery attempts of this replica by outcome: delivered, failed (will be retried), gave_up (after the last attempt), dropped (endpoint no longer configured).",
			"outcome", WebhookOutcomes),
		rateLimited: counterVec("tokenwarm_rate_limited_total",
			"Requests this replica answered 429, by limit (session: per device session or presented grant; ip: per client IP).",
			"limit", RateLimits),
		scrapeTimeout: 3 * time.Second,
	}
	reg.MustRegister(m.refreshes, m.latency, m.events, m.deviceReuse, m.webhooks, m.rateLimited,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		&dbCollector{db: db, idleTTL: idleTTL, clock: clk, log: log, timeout: m.scrapeTimeout})
	return m
}

// counterVec is a counter with one label whose every value exists from the
// start at 0, so that the first event shows as an increase.
func counterVec(name, help, label string, values []string) *prometheus.CounterVec {
	c := prometheus.NewCounterVec(prometheus.CounterOpts{Name: name, Help: help}, []string{label})
	for _, v := range values {
		c.WithLabelValues(v)
	}
	return c
}

// WatchWarmer exports a warmer's counters and last-pass gauges.
func (m *Metrics) WatchWarmer(stats func() warmer.Stats) {
	m.Registry.MustRegister(
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "tokenwarm_warm_passes_total", Help: "Warm passes run by this replica."},
			func() float64 { return float64(stats().Passes) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "tokenwarm_warm_claimed_total", Help: "Connections claimed by this replica's warm passes."},
			func() float64 { return float64(stats().Claimed) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "tokenwarm_idle_expiry_risk_total", Help: "Connections whose idle budget fell under the risk threshold."},
			func() float64 { return float64(stats().IdleRiskEvents) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "tokenwarm_warm_last_pass_seconds", Help: "Duration of this replica's last warm pass."},
			func() float64 { return stats().LastPassDuration.Seconds() }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "tokenwarm_warm_paused", Help: "1 while warming is paused by an app-wide configuration error (IP allowlist, client credentials)."},
			func() float64 {
				if stats().Paused {
					return 1
				}
				return 0
			}),
	)
}

// ObserveRefresh records one refresh that reached Salesforce.
func (m *Metrics) ObserveRefresh(cause, outcome string, upstream time.Duration) {
	m.refreshes.WithLabelValues(cause, outcome).Inc()
	m.latency.WithLabelValues(outcome).Observe(upstream.Seconds())
}

// EventStored counts one stored refresh-path event (vault.Config.Stored).
func (m *Metrics) EventStored(kind string) {
	m.events.WithLabelValues(oneOf(kind, EventKinds)).Inc()
}

// DeviceReuse counts one device refresh token reuse (devices.Config.OnReuse).
func (m *Metrics) DeviceReuse() { m.deviceReuse.Inc() }

// WebhookAttempt counts one webhook delivery attempt by outcome
// (webhooks.Config.Observe).
func (m *Metrics) WebhookAttempt(outcome string) {
	m.webhooks.WithLabelValues(oneOf(outcome, WebhookOutcomes)).Inc()
}

// RateLimited counts one request refused by a rate limit
// (handlers.RateLimits.Limited).
func (m *Metrics) RateLimited(limit string) {
	m.rateLimited.WithLabelValues(oneOf(limit, RateLimits)).Inc()
}

// oneOf keeps label values to a fixed set: v if known, else "other".
func oneOf(v string, known []string) string {
	for _, k := range known {
		if v == k {
			return v
		}
	}
	return "other"
}

// Handler serves /metrics.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.Registry, promhttp.HandlerOpts{})
}

var (
	connectionsDesc = prometheus.NewDesc("tokenwarm_connections", "Connections by status.", []string{"status"}, nil)
	idleBudgetDesc  = prometheus.NewDesc("tokenwarm_min_idle_budget_seconds",
		"Smallest remaining idle budget among active connections: time until the idle TTL (each org's own, 30 days by default) would kill the most neglected refresh token.", nil, nil)
	backlogDesc = prometheus.NewDesc("tokenwarm_warm_backlog", "Active connections due for warming and not yet warmed.", nil, nil)
)

// dbCollector reads fleet gauges from the database at scrape time, so every
// replica reports the same fleet-wide truth.
type dbCollector struct {
	db      Fleet
	idleTTL time.Duration
	clock   clock.Clock
	log     *slog.Logger
	timeout time.Duration

	// The counts by status need a scan of every connection: at a million
	// connections it takes most of a second, longer than a scrape should.
	// They are kept for statusCountsMaxAge and then renewed in the
	// background while scrapes get the kept ones, so no scrape after the
	// first waits for the scan whatever the number of connections.
	mu         sync.Mutex
	counts     map[string]int64
	countedAt  time.Time
	recounting bool
}

// statusCountsMaxAge is how long the counts by status are served before a
// scrape starts renewing them.
var statusCountsMaxAge = 30 * time.Second

// statusCountsTimeout bounds a renewal in the background.
const statusCountsTimeout = time.Minute

// statusCounts returns the counts by status: the kept ones while they are
// fresh; stale ones while a renewal runs in the background; read now only
// when there are none yet.
func (c *dbCollector) statusCounts(ctx context.Context) (map[string]int64, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.counts != nil {
		if time.Since(c.countedAt) >= statusCountsMaxAge && !c.recounting {
			c.recounting = true
			go c.recount()
		}
		return c.counts, nil
	}
	counts, err := c.db.ConnectionCountsByStatus(ctx)
	if err != nil {
		return nil, err
	}
	c.counts, c.countedAt = counts, time.Now()
	return counts, nil
}

func (c *dbCollector) recount() {
	ctx, cancel := context.WithTimeout(context.Background(), statusCountsTimeout)
	defer cancel()
	counts, err := c.db.ConnectionCountsByStatus(ctx)
	c.mu.Lock()
	defer c.mu.Unlock()
	c.recounting = false
	if err != nil {
		c.log.Warn("metrics: cannot read connection counts", "err", err)
		return
	}
	c.counts, c.countedAt = counts, time.Now()
}

func (c *dbCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- connectionsDesc
	ch <- idleBudgetDesc
	ch <- backlogDesc
}

func (c *dbCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), c.timeout)
	defer cancel()
	byStatus, err := c.statusCounts(ctx)
	if err != nil {
		c.log.Warn("metrics: cannot read connection counts", "err", err)
		return
	}
	counts := map[string]int64{models.StatusActive: 0, models.StatusNeedsReauth: 0, models.StatusRevoked: 0}
	for status, n := range byStatus {
		counts[status] = n
	}
	for status, n := range counts {
		ch <- prometheus.MustNewConstMetric(connectionsDesc, prometheus.GaugeValue, float64(n), status)
	}
	now := c.clock.Now().UTC()
	if budget, ok := c.minIdleBudget(ctx, now); ok {
		ch <- prometheus.MustNewConstMetric(idleBudgetDesc, prometheus.GaugeValue, budget.Seconds())
	}
	if due, err := c.db.WarmBacklog(ctx, now); err == nil {
		ch <- prometheus.MustNewConstMetric(backlogDesc, prometheus.GaugeValue, float64(due))
	}
}

// minIdleBudget is the smallest idle budget of an active connection, each
// counted against its org's idle TTL; ok is false when there is none.
func (c *dbCollector) minIdleBudget(ctx context.Context, now time.Time) (time.Duration, bool) {
	ttls, err := c.db.IdleTTLs(ctx, c.idleTTL)
	if err != nil {
		c.log.Warn("metrics: cannot read the orgs' idle TTLs", "err", err)
		return 0, false
	}
	var budget time.Duration
	found := false
	for _, g := range ttls.Scopes() {
		oldest, err := c.db.OldestRefresh(ctx, g.Scope)
		if err != nil {
			c.log.Warn("metrics: cannot read the oldest refresh", "err", err)
			return 0, false
		}
		if oldest.IsZero() {
			continue
		}
		if b := oldest.Add(g.TTL).Sub(now); !found || b < budget {
			budget, found = b, true
		}
	}
	return budget, found
}

// WatchHold exports the restore hold: 1 while refreshes are held for the
// whole app because the database was restored from a backup and
// `tokenwarm restore` has not finished (package restore).
func (m *Metrics) WatchHold(held func() bool) {
	m.Registry.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "tokenwarm_restore_hold",
		Help: "1 while refreshes are held app-wide after a restore of the database from a backup, until `tokenwarm restore` has run."},
		func() float64 {
			if held() {
				return 1
			}
			return 0
		}))
}
