// Package metrics exposes tokenwarm's Prometheus metrics. Labels are small
// fixed sets (cause, outcome class, status): never a token, never an ID.
package metrics

import (
	"context"
	"log/slog"
	"net/http"
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
	scrapeTimeout time.Duration
}

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
		scrapeTimeout: 3 * time.Second,
	}
	reg.MustRegister(m.refreshes, m.latency,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		&dbCollector{db: db, idleTTL: idleTTL, clock: clk, log: log, timeout: m.scrapeTimeout})
	return m
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
}

func (c *dbCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- connectionsDesc
	ch <- idleBudgetDesc
	ch <- backlogDesc
}

func (c *dbCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), c.timeout)
	defer cancel()
	byStatus, err := c.db.ConnectionCountsByStatus(ctx)
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
