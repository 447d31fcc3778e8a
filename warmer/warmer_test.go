package warmer_test

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"math"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tokenwarm/tokenwarm/models"
	"github.com/tokenwarm/tokenwarm/vault"
	"github.com/tokenwarm/tokenwarm/warmer"
)

const (
	day      = 24 * time.Hour
	interval = 72 * time.Hour // the vault's default warm interval
	jitter   = 0.15           // and its jitter
)

func TestValidateConfig(t *testing.T) {
	cases := []struct {
		name     string
		interval time.Duration
		jitter   float64
		budget   time.Duration
		ok       bool
	}{
		{"defaults", 72 * time.Hour, 0.15, 7 * day, true},
		{"no jitter, no budget", 29 * day, 0, 0, true},
		{"just under the TTL", 20 * day, 0.25, 4*day + 23*time.Hour, true},
		{"exactly the TTL", 20 * day, 0.25, 5 * day, false},
		{"jitter pushes past the TTL", 27 * day, 0.15, 0, false},
		{"budget pushes past the TTL", 72 * time.Hour, 0.15, 27 * day, false},
		{"interval alone is the TTL", vault.DefaultIdleTTL, 0, 0, false},
		{"huge interval does not overflow", time.Duration(1 << 62), 0.5, time.Duration(1 << 62), false},
		{"zero interval", 0, 0.15, 0, false},
		{"negative jitter", 72 * time.Hour, -0.1, 0, false},
		{"jitter of 1", 72 * time.Hour, 1, 0, false},
		{"negative budget", 72 * time.Hour, 0.15, -time.Hour, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			err := warmer.ValidateConfig(tc.interval, tc.jitter, tc.budget, vault.DefaultIdleTTL)
			if (err == nil) != tc.ok {
				t.Fatalf("ValidateConfig(%s, %g, %s) = %v, want ok=%v", tc.interval, tc.jitter, tc.budget, err, tc.ok)
			}
		})
	}
}

// A pass warms exactly the due connections, on both engines and through
// PgBouncer in transaction pooling mode; a transient
// failure comes due again after the retry delay, not after the claim lease.
func TestRunOnceWarmsDueConnections(t *testing.T) {
	backends(t, func(t *testing.T, b backend) {
		e := newEnvOn(t, b)
		r := e.replica("w1", warmer.Config{})
		cfg := r.warmer.Config()
		ids := e.connectMany(20)
		ctx := context.Background()

		p, err := r.warmer.RunOnce(ctx)
		if err != nil || p.Claimed != 0 {
			t.Fatalf("nothing is due yet, pass claimed %d (%v)", p.Claimed, err)
		}
		if st := r.warmer.Stats(); st.Backlog != 0 || st.MinIdleBudget != vault.DefaultIdleTTL {
			t.Fatalf("fresh connections: backlog %d, min idle budget %s", st.Backlog, st.MinIdleBudget)
		}

		e.Clock.Advance(4 * day)
		e.Emu.FailNext(1, 503)
		p, err = r.warmer.RunOnce(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if p.Claimed != 20 || p.Outcomes.OK != 19 || p.Outcomes.Transient != 1 {
			t.Fatalf("pass = %+v, want 20 claimed, 19 ok, 1 transient", p)
		}
		now := e.Clock.Now()
		var failed models.Connection
		for _, id := range ids {
			c := e.conn(id)
			if c.ConsecutiveFailures == 0 {
				if !c.LastRefreshedAt.Equal(now) || c.NextWarmAt.Before(now.Add(61*time.Hour)) || c.NextWarmAt.After(now.Add(83*time.Hour)) {
					t.Fatalf("warmed connection: last refreshed %s, next warm %s (now %s)", c.LastRefreshedAt, c.NextWarmAt, now)
				}
				continue
			}
			failed = c
		}
		// The vault's backoff (30s ± 20%) is shorter than the retry delay.
		if failed.ID == "" || failed.NextAttemptAt == nil || !failed.NextWarmAt.Equal(now.Add(cfg.RetryDelay)) {
			t.Fatalf("failed connection %q: next warm %s, want now + %s (not the %s lease)", failed.ID, failed.NextWarmAt, cfg.RetryDelay, cfg.Lease)
		}
		if st := r.warmer.Stats(); st.Backlog != 0 {
			t.Fatalf("backlog after the pass = %d", st.Backlog)
		}

		e.Clock.Advance(cfg.RetryDelay)
		p, err = r.warmer.RunOnce(ctx)
		if err != nil || p.Claimed != 1 || p.Outcomes.OK != 1 {
			t.Fatalf("retry pass = %+v (%v), want the failed connection warmed", p, err)
		}
		st := r.warmer.Stats()
		if st.Passes != 3 || st.Claimed != 21 || st.Outcomes.OK != 20 || st.Outcomes.Transient != 1 || st.Backlog != 0 {
			t.Fatalf("stats = %+v", st)
		}
		if want := vault.DefaultIdleTTL - cfg.RetryDelay; st.MinIdleBudget != want {
			t.Fatalf("min idle budget = %s, want %s", st.MinIdleBudget, want)
		}
		if st := e.Emu.Stats(); st.Refreshes != 20 || st.StalePresentations != 0 || st.ChainsRevoked != 0 {
			t.Fatalf("emulator: %+v", st)
		}
		e.checkTokensInSync()
	})
}

// The simulation of the issue: 1,000 connections, 90 days in one-hour
// steps, three replicas each with its own pool and vault running their
// passes at the same moment, 5% transient failures and a little latency at
// Salesforce, and now and then a mobile pull on a few connections.
func TestSimulation90DaysThreeReplicas(t *testing.T) {
	const (
		connections = 1000
		days        = 90
		step        = time.Hour
		pulled      = 50 // connections that also see mobile pulls
	)
	e := newEnv(t, models.Postgres)
	began := time.Now()
	ids := e.connectMany(connections)
	t.Logf("setup: %d connections in %s", connections, time.Since(began).Round(time.Millisecond))

	var rs []replica
	for i := range 3 {
		rs = append(rs, e.replica(fmt.Sprintf("w%d", i+1), warmer.Config{}))
	}
	e.Emu.SetRand(rand.New(rand.NewPCG(4, 2)))
	e.Emu.SetFailureRate(0.05, 503)
	e.Emu.SetLatency(func() time.Duration { return time.Duration(rand.N(2000)) * time.Microsecond })
	e.Emu.ResetStats()

	rng := rand.New(rand.NewPCG(1, 2))
	var pulls sync.WaitGroup
	pullErrs := make(chan error, days*24*pulled)
	began = time.Now()
	steps := int(days * day / step)
	for s := range steps {
		e.Clock.Advance(step)
		for _, id := range ids[:pulled] {
			// About one pull every five days: rarer than the warm interval,
			// so these connections see both kinds of refresh.
			if rng.IntN(120) == 0 {
				v := rs[rng.IntN(len(rs))].vault
				pulls.Go(func() {
					if _, err := v.GetAccessToken(context.Background(), id, 5*time.Minute); err != nil && vault.ErrorCode(err) != vault.CodeUpstreamUnavailable {
						pullErrs <- err
					}
				})
			}
		}
		runAll(t, rs)
		pulls.Wait()
		if s%(30*24) == 0 {
			t.Logf("day %d after %s", s/24, time.Since(began).Round(time.Second))
		}
	}
	elapsed := time.Since(began)
	close(pullErrs)
	for err := range pullErrs {
		t.Fatalf("mobile pull: %v", err)
	}
	end := e.Clock.Now()

	em := e.Emu.Stats()
	t.Logf("%d steps in %s; emulator: %d token calls, %d refreshes, %d injected failures",
		steps, elapsed.Round(time.Millisecond), em.TokenCalls, em.Refreshes, em.InjectedFailures)
	if em.IdleExpiries != 0 || em.StalePresentations != 0 || em.ChainsRevoked != 0 || em.CallsAfterDead != 0 || em.MaxConcurrentPresentations > 1 {
		t.Fatalf("emulator saw idle expiries %d, stale presentations %d, chains revoked %d, calls after dead %d, max concurrent presentations %d",
			em.IdleExpiries, em.StalePresentations, em.ChainsRevoked, em.CallsAfterDead, em.MaxConcurrentPresentations)
	}
	for _, kind := range []string{models.EventNeedsReauth, models.EventConfigError, warmer.EventIdleExpiryRisk, models.EventUnknownOutcome} {
		if n := e.countEvents(kind); n != 0 {
			t.Fatalf("%d %s events", n, kind)
		}
	}
	for _, c := range e.conns() {
		if c.Status != models.StatusActive {
			t.Fatalf("connection %s is %s", c.ID, c.Status)
		}
	}

	// Each connection's history: refreshes by any cause, and the failures
	// that pushed a warm to the next step.
	type refresh struct {
		at     time.Time
		cause  string
		worker string
	}
	refreshes := map[string][]refresh{}
	failures := map[string][]time.Time{}
	for _, id := range ids {
		refreshes[id] = []refresh{{at: start, cause: "connect"}}
	}
	evs := e.eventsOf(models.EventRefreshed, models.EventTransientFailure)
	for _, ev := range evs {
		id := *ev.ConnectionID
		if ev.Kind == models.EventTransientFailure {
			failures[id] = append(failures[id], ev.CreatedAt)
			continue
		}
		refreshes[id] = append(refreshes[id], refresh{at: ev.CreatedAt, cause: ev.Cause, worker: ev.Worker})
	}
	if got := len(evs) - int(e.countEvents(models.EventTransientFailure)); got != em.Refreshes {
		t.Fatalf("%d refreshed events for %d refreshes at Salesforce", got, em.Refreshes)
	}

	minGap := time.Duration(float64(interval) * (1 - jitter))
	maxGap := time.Duration(float64(interval) * (1 + jitter))
	byWorker := map[string]int{}
	counts := map[int]int{} // warm refreshes per unpulled connection -> connections
	total := 0
	for i, id := range ids {
		history := append(refreshes[id], refresh{at: end, cause: "end"})
		warms := 0
		for j := 1; j < len(history); j++ {
			prev, cur := history[j-1], history[j]
			gap := cur.at.Sub(prev.at)
			// Within the schedule: a warm lands in the first step after it
			// is due, or one step later per failed attempt in between.
			late := 0
			for _, f := range failures[id] {
				if f.After(prev.at) && !f.After(cur.at) {
					late++
				}
			}
			if limit := maxGap + step*time.Duration(1+late); gap > limit {
				t.Fatalf("connection %s went %s without a refresh (%s to %s, %d failures), limit %s", id, gap, prev.at, cur.at, late, limit)
			}
			if cur.cause != vault.CauseWarm {
				continue
			}
			// Never warmed early, so never twice in one cycle, by any
			// replica, and never right after a mobile pull refreshed it.
			if gap < minGap-time.Second {
				t.Fatalf("connection %s warmed by %s only %s after its previous refresh (%s by %s)", id, cur.worker, gap, prev.cause, prev.worker)
			}
			warms++
			byWorker[cur.worker]++
		}
		if i >= pulled {
			counts[warms]++
			total += warms
		}
	}
	var hist []string
	for _, n := range slices.Sorted(maps.Keys(counts)) {
		hist = append(hist, fmt.Sprintf("%d×%d", counts[n], n))
	}
	mean := float64(total) / float64(connections-pulled)
	t.Logf("warms per connection (connections×warms): %s; mean %.2f; by replica %v", strings.Join(hist, " "), mean, byWorker)

	// 90 days / 72h = 30 cycles, but a count of warms in a window is a
	// renewal count: with a mean gap μ (72h, plus half a step because a
	// warm lands in the first step after it is due) and spread σ (72h ±
	// 15% uniform), renewal theory expects T/μ − (1 − σ²/μ²)/2 ≈ 29.3, and
	// 30 jittered gaps add up to a spread of half an interval, so 28 and
	// 31 are honest counts for a few percent of connections. "Within ±1
	// of 30" for every one of 950 connections would fail on jitter alone;
	// the gap checks above are the per-connection guarantee, the mean
	// checks the rate, and the range only rules out gross drift (27 or
	// 32 is a four-sigma event).
	mu := float64(interval + step/2)
	sigma := float64(maxGap-minGap) / math.Sqrt(12)
	expected := float64(days*day)/mu - (1-sigma*sigma/(mu*mu))/2
	if math.Abs(mean-expected) > 0.2 {
		t.Fatalf("mean warms per connection = %.2f, want %.2f", mean, expected)
	}
	for n := range counts {
		if n < 27 || n > 32 {
			t.Fatalf("%d connections warmed %d times in 90 days, want 27 to 32", counts[n], n)
		}
	}
	for _, r := range rs {
		if byWorker[r.vault.Config().Worker] == 0 {
			t.Fatalf("replica %s never warmed anything: %v", r.vault.Config().Worker, byWorker)
		}
		if st := r.warmer.Stats(); st.Passes != int64(steps) || st.Outcomes.Failed != 0 || st.Outcomes.Dead != 0 || st.Outcomes.Config != 0 {
			t.Fatalf("replica stats: %+v", st)
		}
	}
	if st := rs[0].warmer.Stats(); st.MinIdleBudget < vault.DefaultIdleTTL-maxGap-4*step {
		t.Fatalf("min idle budget %s", st.MinIdleBudget)
	}
	e.checkTokensInSync()
}

// Five days of Salesforce answering 503: nobody is marked dead, exactly the
// connections whose idle budget crossed the threshold raise one event each,
// and everything is warm again soon after.
func TestOutageOfFiveDays(t *testing.T) {
	const (
		connections = 100
		step        = time.Hour
		// With 6.5 days of the 30 used up counting as a risk, a five-day
		// outage makes about half the connections cross.
		threshold = vault.DefaultIdleTTL - 6*day - 12*time.Hour
	)
	e := newEnv(t, models.Postgres)
	ids := e.connectMany(connections)
	rs := []replica{
		e.replica("w1", warmer.Config{RiskThreshold: threshold}),
		e.replica("w2", warmer.Config{RiskThreshold: threshold}),
	}
	run := func(d time.Duration) {
		for range int(d / step) {
			e.Clock.Advance(step)
			runAll(t, rs)
		}
	}
	began := time.Now()
	run(6 * day)
	e.Emu.SetFailureRate(1, 503)
	outageStart := e.Clock.Now()
	run(5 * day)
	e.Emu.SetFailureRate(0, 0)
	outageEnd := e.Clock.Now()
	run(2 * step)
	for _, c := range e.conns() {
		if c.Status != models.StatusActive || c.LastRefreshedAt.Before(outageEnd) || c.ConsecutiveFailures != 0 {
			t.Fatalf("two hours after the outage: connection %s %s, last refreshed %s, %d failures",
				c.ID, c.Status, c.LastRefreshedAt, c.ConsecutiveFailures)
		}
	}
	run(4 * day)
	t.Logf("17 simulated days in %s", time.Since(began).Round(time.Millisecond))

	em := e.Emu.Stats()
	if em.IdleExpiries != 0 || em.ChainsRevoked != 0 || em.StalePresentations != 0 {
		t.Fatalf("emulator: %+v", em)
	}
	if n := e.countEvents(models.EventNeedsReauth); n != 0 {
		t.Fatalf("%d connections needed re-authorization after an outage", n)
	}

	refreshes := map[string][]time.Time{}
	for _, id := range ids {
		refreshes[id] = []time.Time{start}
	}
	for _, ev := range e.eventsOf(models.EventRefreshed) {
		refreshes[*ev.ConnectionID] = append(refreshes[*ev.ConnectionID], ev.CreatedAt)
	}
	risks := map[string][]time.Time{}
	riskEvents := e.eventsOf(warmer.EventIdleExpiryRisk)
	for _, ev := range riskEvents {
		risks[*ev.ConnectionID] = append(risks[*ev.ConnectionID], ev.CreatedAt)
	}
	// A sweep runs every step, after that step's refreshes: a connection
	// crosses when a step finds it unrefreshed for longer than the allowed
	// idle time. Crossings inside the last step before a refresh may race
	// that refresh in another replica, so they may go either way.
	allowed := vault.DefaultIdleTTL - threshold
	crossed := 0
	for _, id := range ids {
		times := append(refreshes[id], e.Clock.Now().Add(step))
		for j := 1; j < len(times); j++ {
			from, to := times[j-1], times[j]
			var in []time.Time
			for _, r := range risks[id] {
				if r.After(from) && r.Before(to) || r.Equal(to) {
					in = append(in, r)
				}
			}
			gap := to.Sub(from)
			switch {
			case len(in) > 1:
				t.Fatalf("connection %s: %d idle risk events for one crossing", id, len(in))
			case gap-step > allowed && len(in) == 0:
				t.Fatalf("connection %s went %s without a refresh (%s to %s) and raised no idle risk", id, gap, from, to)
			case gap <= allowed && len(in) != 0:
				t.Fatalf("connection %s raised idle risk at %s within %s of its refresh", id, in[0], gap)
			case len(in) == 1:
				crossed++
				if in[0].Sub(from) <= allowed {
					t.Fatalf("connection %s raised idle risk %s after its refresh", id, in[0].Sub(from))
				}
			}
		}
	}
	if crossed == 0 || crossed == connections || crossed != len(riskEvents) {
		t.Fatalf("%d connections crossed the threshold, %d risk events, want some but not all of %d", crossed, len(riskEvents), connections)
	}
	for _, ev := range riskEvents {
		if ev.CreatedAt.Before(outageStart) || ev.CreatedAt.After(outageEnd) {
			t.Fatalf("idle risk raised at %s, outside the outage", ev.CreatedAt)
		}
	}
	var counted int64
	for _, r := range rs {
		counted += r.warmer.Stats().IdleRiskEvents
	}
	if counted != int64(len(riskEvents)) {
		t.Fatalf("replicas counted %d idle risk events, %d recorded", counted, len(riskEvents))
	}
	t.Logf("%d of %d connections crossed the idle-risk threshold during the outage", crossed, connections)
	e.checkTokensInSync()
}

// An IP allowlist that shuts tokenwarm out pauses warming for the whole
// app with one alert; while paused only probes reach Salesforce; once the
// allowlist lets tokenwarm in again, warming resumes by itself.
func TestConfigErrorPausesTheApp(t *testing.T) {
	dialects(t, testConfigErrorPausesTheApp)
}

func testConfigErrorPausesTheApp(t *testing.T, dialect models.Dialect) {
	const connections = 30
	e := newEnv(t, dialect)
	ids := e.connectMany(connections)
	// The app-level events reach the announcer (the webhook outbox) in the
	// transaction that stores them.
	var hooked sync.Map
	e.announce = func(evs []models.Event) ([]models.WebhookDelivery, error) {
		for _, ev := range evs {
			hooked.Store(ev.Kind, true)
		}
		return nil, nil
	}
	hookCfg := warmer.Config{}
	rs := []replica{e.replica("w1", hookCfg)}
	if dialect == models.Postgres {
		rs = append(rs, e.replica("w2", hookCfg))
	}
	defer func() {
		for _, kind := range []string{warmer.EventAppPaused, warmer.EventAppResumed} {
			if _, ok := hooked.Load(kind); !ok && !t.Failed() {
				t.Errorf("the announcer never saw %s", kind)
			}
		}
	}()
	probeInterval := rs[0].warmer.Config().ProbeInterval

	e.Clock.Advance(4 * day)
	if err := e.Emu.SetAllowedIPs([]string{"203.0.113.1/32"}); err != nil {
		t.Fatal(err)
	}
	e.Emu.ResetStats()
	runAll(t, rs)
	e.Clock.Advance(10 * time.Second)
	runAll(t, rs)
	for _, r := range rs {
		if !r.warmer.Paused() {
			t.Fatal("a replica is not paused after the configuration error")
		}
	}
	first := e.Emu.Stats().TokenCalls
	// Once paused, what a pass may do is bounded by the refreshes that were
	// already in flight, plus the restricted answers it takes to show that
	// an IP restriction is app-wide and not one user's login hours.
	if limit := len(rs)*rs[0].warmer.Config().Concurrency + 3; first > limit {
		t.Fatalf("%d token calls before the pause took hold, want at most %d", first, limit)
	}

	probes := 0
	for range 12 {
		e.Clock.Advance(20 * time.Second)
		for _, p := range runAll(t, rs) {
			if p.Probed {
				probes++
			}
			if !p.Paused || p.Outcomes.OK != 0 {
				t.Fatalf("pass while the allowlist still refuses us: %+v", p)
			}
		}
	}
	calls := e.Emu.Stats().TokenCalls - first
	if calls != probes || probes == 0 || probes > len(rs)*(int(12*20*time.Second/probeInterval)+1) {
		t.Fatalf("while paused: %d token calls, %d probes (%d replicas, one probe per %s each)", calls, probes, len(rs), probeInterval)
	}
	t.Logf("%d token calls before the pause took hold; %d probes and %d token calls in 4 paused minutes", first, probes, calls)
	if n := e.countEvents(warmer.EventAppPaused); n != 1 {
		t.Fatalf("%d app paused events, want 1", n)
	}
	if n := strings.Count(e.Logs.String(), "ALERT: Salesforce refused"); n != 1 {
		t.Fatalf("%d alerts in the log, want 1", n)
	}
	for _, c := range e.conns() {
		if c.Status != models.StatusActive {
			t.Fatalf("connection %s is %s after a configuration error", c.ID, c.Status)
		}
	}

	if err := e.Emu.SetAllowedIPs(nil); err != nil {
		t.Fatal(err)
	}
	fixed := e.Clock.Now()
	warm := func() bool {
		for _, id := range ids {
			if c := e.conn(id); !c.LastRefreshedAt.After(fixed) {
				return false
			}
		}
		return true
	}
	for i := 0; !warm(); i++ {
		if i == 20 {
			t.Fatal("warming did not resume within 20 minutes of the allowlist being fixed")
		}
		e.Clock.Advance(time.Minute)
		runAll(t, rs)
	}
	runAll(t, rs)
	for _, r := range rs {
		if r.warmer.Paused() {
			t.Fatal("a replica is still paused")
		}
	}
	if p, r := e.countEvents(warmer.EventAppPaused), e.countEvents(warmer.EventAppResumed); p != 1 || r != 1 {
		t.Fatalf("%d paused and %d resumed events, want one each", p, r)
	}
	if em := e.Emu.Stats(); em.ChainsRevoked != 0 || em.StalePresentations != 0 {
		t.Fatalf("emulator: %+v", em)
	}
	e.checkTokensInSync()
}

// Stop in the middle of a pass against a slow Salesforce waits for the
// refreshes in flight, starts no new one, and gives the rest back.
func TestStopWaitsForInFlightRefreshes(t *testing.T) {
	dialects(t, testStopWaitsForInFlightRefreshes)
}

func testStopWaitsForInFlightRefreshes(t *testing.T, dialect models.Dialect) {
	const connections = 40
	e := newEnv(t, dialect)
	ids := e.connectMany(connections)
	r := e.replica("w1", warmer.Config{Concurrency: 4})
	if err := r.warmer.Start("not a schedule"); err == nil {
		t.Fatal("Start accepted a bad schedule")
	}
	e.Clock.Advance(4 * day)
	e.Emu.ResetStats()
	e.Emu.SetLatency(func() time.Duration { return 300 * time.Millisecond })
	if err := r.warmer.Start("@every 1s"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the first refresh to reach Salesforce", 10*time.Second, func() bool { return e.Emu.Stats().TokenCalls > 0 })
	stopped := r.warmer.Stop()
	select {
	case <-stopped.Done():
	case <-time.After(30 * time.Second):
		t.Fatal("Stop did not finish")
	}
	em := e.Emu.Stats()
	st := r.warmer.Stats()
	if st.Outcomes.OK != int64(em.Refreshes) || em.TokenCalls != em.Refreshes {
		t.Fatalf("after Stop: warmer stored %d refreshes, Salesforce made %d of %d calls", st.Outcomes.OK, em.Refreshes, em.TokenCalls)
	}
	if em.Refreshes == 0 || em.Refreshes >= connections {
		t.Fatalf("%d refreshes: Stop did not land mid-pass", em.Refreshes)
	}
	e.checkTokensInSync()
	now := e.Clock.Now()
	for _, id := range ids {
		if c := e.conn(id); !c.LastRefreshedAt.Equal(now) && c.NextWarmAt.After(now) {
			t.Fatalf("connection %s was not warmed, yet still leased until %s", id, c.NextWarmAt)
		}
	}
	if _, err := r.warmer.RunOnce(context.Background()); !errors.Is(err, warmer.ErrStopped) {
		t.Fatalf("RunOnce after Stop: %v", err)
	}
	if err := r.warmer.Start("@every 1s"); !errors.Is(err, warmer.ErrStopped) {
		t.Fatalf("Start after Stop: %v", err)
	}
}

// A configuration error met by a mobile pull, while nothing is due for
// warming, pauses the app with the one alert; pulls that need a refresh
// then fail at once without calling Salesforce, a pull whose token is still
// good is served, and a probe of a connection that is not due resumes
// everything once Salesforce accepts us again.
func TestPullConfigErrorPausesTheApp(t *testing.T) {
	dialects(t, func(t *testing.T, dialect models.Dialect) {
		e := newEnv(t, dialect)
		ids := e.connectMany(6)
		r := e.replica("w1", warmer.Config{})
		r.vault.SetPause(r.warmer)
		ctx := context.Background()
		// Past the access tokens' life, well before anything is due.
		e.Clock.Advance(3 * time.Hour)
		if _, err := r.vault.GetAccessToken(ctx, ids[5], time.Minute); err != nil {
			t.Fatal(err)
		}
		if err := e.Emu.SetAllowedIPs([]string{"203.0.113.1/32"}); err != nil {
			t.Fatal(err)
		}
		e.Emu.ResetStats()
		pull := func(id string) error {
			_, err := r.vault.Access(ctx, id, vault.Request{Cause: vault.CausePull, MinValidity: time.Minute})
			return err
		}
		// An IP restriction may be one user's login hours: it pauses the
		// app once three connections met it (vault.Config.RestrictedQuorum).
		for i, id := range ids[:3] {
			if err := pull(id); vault.ErrorCode(err) != vault.CodeUpstreamConfig {
				t.Fatalf("pull %d: %v", i, err)
			}
			if paused := r.warmer.Paused(); paused != (i == 2) {
				t.Fatalf("after %d restricted connection(s): paused=%v", i+1, paused)
			}
		}
		if e.countEvents(warmer.EventAppPaused) != 1 {
			t.Fatalf("%d pause events after the pulls' configuration errors", e.countEvents(warmer.EventAppPaused))
		}
		for _, id := range ids[3:5] {
			if err := pull(id); vault.ErrorCode(err) != vault.CodeUpstreamConfig {
				t.Fatalf("pull while paused: %v", err)
			}
		}
		if err := pull(ids[5]); err != nil {
			t.Fatalf("a pull whose token is still good: %v", err)
		}
		if n := e.Emu.Stats().TokenCalls; n != 3 {
			t.Fatalf("%d token calls, want 3: pulls while paused must not call Salesforce", n)
		}
		if n := strings.Count(e.Logs.String(), "ALERT: Salesforce refused"); n != 1 {
			t.Fatalf("%d alerts in the log, want 1", n)
		}

		if err := e.Emu.SetAllowedIPs(nil); err != nil {
			t.Fatal(err)
		}
		e.Clock.Advance(r.warmer.Config().ProbeInterval)
		p, err := r.warmer.RunOnce(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if !p.Probed || p.Paused || r.warmer.Paused() {
			t.Fatalf("after the fix: %+v (paused %v)", p, r.warmer.Paused())
		}
		// The connections that met the restriction before it was known to
		// be app-wide retry after their own backoff.
		e.Clock.Advance(time.Hour)
		for _, id := range ids {
			if err := pull(id); err != nil {
				t.Fatalf("pull after resume: %v", err)
			}
		}
		for _, c := range e.conns() {
			if c.Status != models.StatusActive {
				t.Fatalf("connection %s is %s", c.ID, c.Status)
			}
		}
		e.checkTokensInSync()
	})
}

// An org whose admin set a shorter refresh-token idle expiry is measured
// and alerted on against its own TTL, the other orgs against the default.
func TestOrgIdleTTLOverride(t *testing.T) {
	dialects(t, func(t *testing.T, dialect models.Dialect) {
		e := newEnv(t, dialect)
		r := e.replica("w1", warmer.Config{RiskThreshold: 9*day + 23*time.Hour})
		ids := e.connectMany(1)
		ctx := context.Background()
		org := e.conns()[0].OrgID
		e.Clock.Advance(2 * time.Hour)
		if _, err := r.warmer.RunOnce(ctx); err != nil {
			t.Fatal(err)
		}
		if st := r.warmer.Stats(); st.MinIdleBudget != vault.DefaultIdleTTL-2*time.Hour || e.countEvents(warmer.EventIdleExpiryRisk) != 0 {
			t.Fatalf("default TTL: budget %s, %d risk events", st.MinIdleBudget, e.countEvents(warmer.EventIdleExpiryRisk))
		}

		if err := e.db.SetOrgIdleTTL(ctx, org, 10*day, e.Clock.Now()); err != nil {
			t.Fatal(err)
		}
		if _, err := r.warmer.RunOnce(ctx); err != nil {
			t.Fatal(err)
		}
		if st := r.warmer.Stats(); st.MinIdleBudget != 10*day-2*time.Hour {
			t.Fatalf("org TTL: budget %s, want %s", st.MinIdleBudget, 10*day-2*time.Hour)
		}
		if n := e.countEvents(warmer.EventIdleExpiryRisk); n != 1 {
			t.Fatalf("%d idle risk events under the org's 10-day TTL, want 1", n)
		}
		v, err := r.vault.Connection(ctx, ids[0])
		if err != nil || !v.IdleExpiresAt.Equal(v.LastRefreshedAt.Add(10*day)) {
			t.Fatalf("view: %+v %v", v, err)
		}

		if err := e.db.SetOrgIdleTTL(ctx, org, 0, e.Clock.Now()); err != nil {
			t.Fatal(err)
		}
		if _, err := r.warmer.RunOnce(ctx); err != nil {
			t.Fatal(err)
		}
		if st := r.warmer.Stats(); st.MinIdleBudget != vault.DefaultIdleTTL-2*time.Hour {
			t.Fatalf("override removed: budget %s", st.MinIdleBudget)
		}
	})
}
