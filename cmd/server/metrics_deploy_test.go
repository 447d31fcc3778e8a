package main

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tokenwarm/tokenwarm/handlers"
	"github.com/tokenwarm/tokenwarm/internal/testkit"
	"github.com/tokenwarm/tokenwarm/metrics"
	"github.com/tokenwarm/tokenwarm/pkce"
	"github.com/tokenwarm/tokenwarm/webhooks"
)

// promqlMetricNames lists the metric names a PromQL expression selects:
// what is left of it once strings, label matchers, ranges, grouping
// clauses, function names, keywords and numbers are taken out.
// label_values(metric, label) (Grafana's variable query) names metric.
func promqlMetricNames(expr string) []string {
	expr = regexp.MustCompile(`label_values\(\s*([a-zA-Z_:][a-zA-Z0-9_:]*)\s*,[^)]*\)`).ReplaceAllString(expr, " $1 ")
	for _, re := range []string{`"(\\.|[^"\\])*"`, `'(\\.|[^'\\])*'`, `\{[^}]*\}`, `\[[^\]]*\]`,
		`\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)`, `\$\w+`} {
		expr = regexp.MustCompile(re).ReplaceAllString(expr, " ")
	}
	keywords := map[string]bool{"and": true, "or": true, "unless": true, "bool": true, "offset": true, "by": true, "without": true,
		"on": true, "ignoring": true, "group_left": true, "group_right": true, "inf": true, "nan": true, "Inf": true, "NaN": true}
	var names []string
	for _, loc := range regexp.MustCompile(`[a-zA-Z_:][a-zA-Z0-9_:]*`).FindAllStringIndex(expr, -1) {
		name := expr[loc[0]:loc[1]]
		if loc[0] > 0 && strings.ContainsAny(expr[loc[0]-1:loc[0]], "0123456789.") { // 1e3, 0.5
			continue
		}
		if strings.HasPrefix(strings.TrimLeft(expr[loc[1]:], " \t\n"), "(") || keywords[name] || slices.Contains(names, name) {
			continue
		}
		names = append(names, name)
	}
	return names
}

func TestPromqlMetricNames(t *testing.T) {
	for expr, want := range map[string][]string{
		`min by (job) (tokenwarm_min_idle_budget_seconds) < 7 * 86400`:                                                      {"tokenwarm_min_idle_budget_seconds"},
		`sum by (job) (increase(a_total{kind="x y",job=~"$job"}[15m])) > 0 unless sum by (job) (increase(b_total[1h])) > 0`: {"a_total", "b_total"},
		`histogram_quantile(0.95, sum by (le) (rate(h_bucket{job=~"$job"}[$__rate_interval])))`:                             {"h_bucket"},
		`up{job="tokenwarm"} == 0`:                         {"up"},
		`label_values(tokenwarm_warm_paused, job)`:         {"tokenwarm_warm_paused"},
		`max(x) / on(instance) group_left(status) y > 1e3`: {"x", "y"},
	} {
		if got := promqlMetricNames(expr); !slices.Equal(got, want) {
			t.Errorf("%s: %v, want %v", expr, got, want)
		}
	}
}

// deployQueries are the PromQL expressions of the alerting rules and of the
// Grafana dashboard (panel targets and variable queries), by where they are.
func deployQueries(t *testing.T) map[string]string {
	t.Helper()
	queries := map[string]string{}
	rules, _ := filepath.Glob(filepath.Join(repoRoot, "deploy/prometheus/rules/*.yml"))
	if len(rules) == 0 {
		t.Fatal("no rule files in deploy/prometheus/rules")
	}
	for _, f := range rules {
		for _, doc := range yamlDocs(t, f) {
			for _, g := range asList(doc["groups"]) {
				for _, r := range asList(dig(g, "rules")) {
					name, _ := dig(r, "alert").(string)
					if name == "" {
						name, _ = dig(r, "record").(string)
					}
					queries[filepath.Base(f)+" "+name] = dig(r, "expr").(string)
				}
			}
		}
	}
	dashboards, _ := filepath.Glob(filepath.Join(repoRoot, "deploy/grafana/*.json"))
	if len(dashboards) == 0 {
		t.Fatal("no dashboards in deploy/grafana")
	}
	for _, f := range dashboards {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		var d struct {
			Panels []struct {
				Title   string `json:"title"`
				Targets []struct {
					Expr string `json:"expr"`
				} `json:"targets"`
			} `json:"panels"`
			Templating struct {
				List []struct {
					Name  string `json:"name"`
					Type  string `json:"type"`
					Query any    `json:"query"`
				} `json:"list"`
			} `json:"templating"`
		}
		if err := json.Unmarshal(b, &d); err != nil {
			t.Fatalf("%s is not valid JSON: %v", f, err)
		}
		if len(d.Panels) == 0 {
			t.Fatalf("%s has no panels", f)
		}
		for _, p := range d.Panels {
			if len(p.Targets) == 0 {
				t.Errorf("%s: panel %q has no query", f, p.Title)
			}
			for i, tg := range p.Targets {
				queries[filepath.Base(f)+" panel "+p.Title+" #"+strconv.Itoa(i)] = tg.Expr
			}
		}
		for _, v := range d.Templating.List {
			if v.Type == "query" {
				q, _ := dig(v.Query, "query").(string)
				queries[filepath.Base(f)+" variable "+v.Name] = q
			}
		}
	}
	return queries
}

// scrapeFamilies parses the text exposition format: the metric families
// (from their TYPE lines) and each sample's value by its series.
func scrapeFamilies(t *testing.T, body string) (families map[string]string, samples map[string]float64) {
	t.Helper()
	families, samples = map[string]string{}, map[string]float64{}
	for _, line := range strings.Split(body, "\n") {
		if f, ok := strings.CutPrefix(line, "# TYPE "); ok {
			name, typ, _ := strings.Cut(f, " ")
			families[name] = typ
			continue
		}
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		i := strings.LastIndex(line, " ")
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			t.Fatalf("metrics line %q: %v", line, err)
		}
		samples[line[:i]] = v
	}
	return families, samples
}

// exported reports whether the scrape has a metric of that name, counting
// the _bucket, _sum and _count series of histograms and summaries.
func exported(families map[string]string, name string) bool {
	if families[name] != "" {
		return true
	}
	for _, suffix := range []string{"_bucket", "_sum", "_count"} {
		if base, ok := strings.CutSuffix(name, suffix); ok && (families[base] == "histogram" || families[base] == "summary") {
			return true
		}
	}
	return false
}

// A running server, after real traffic through the built-in emulator
// (connects through the standard OAuth leg, pulls, a refresh, a device
// refresh token reused, a failing webhook receiver, a rate-limited
// session), exports every metric that an alerting rule or a dashboard
// query names, counts what happened, and shows no token.
func TestMetricsOfRulesAndDashboardExist(t *testing.T) {
	var webhookHits atomic.Int64
	receiver := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		webhookHits.Add(1)
		http.Error(w, "down for maintenance", http.StatusServiceUnavailable)
	})
	// Closed after the server stops (cleanups run last first).
	hook := httptest.NewServer(receiver)
	t.Cleanup(hook.Close)
	const client, redirect = "com.example.metrics", "http://127.0.0.1/cb"
	base, _ := startDemo(t, map[string]string{
		"TOKENWARM_APP_CLIENTS":                   client + "=" + redirect,
		"TOKENWARM_DEVICE_REFRESH_REUSE_INTERVAL": "0",
		"TOKENWARM_RATE_LIMIT_SESSION_RPS":        "0.001",
		"TOKENWARM_RATE_LIMIT_SESSION_BURST":      "10",
		"TOKENWARM_WEBHOOK_URLS":                  hook.URL,
		"TOKENWARM_WEBHOOK_SECRET":                "metrics-test-secret-0123",
		"TOKENWARM_WEBHOOK_RETRY_BASE":            "1s",
	})
	var issued []string
	call := func(req *http.Request, want int) map[string]any {
		t.Helper()
		v := doJSON(t, req, want)
		for _, k := range []string{"access_token", "refresh_token"} {
			if s, ok := v[k].(string); ok {
				issued = append(issued, s)
			}
		}
		return v
	}
	token := func(form url.Values, want int) map[string]any {
		req, _ := http.NewRequest(http.MethodPost, base+"/v1/device/token", strings.NewReader(form.Encode()))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		return call(req, want)
	}
	session := func() map[string]any {
		code, verifier := standardConnect(t, base, client, redirect, "metrics@example.com")
		return token(url.Values{"grant_type": {"authorization_code"}, "code": {code}, "code_verifier": {verifier},
			"redirect_uri": {redirect}, "client_id": {client}}, 200)
	}
	pull := func(jwt, id, query string, want int) map[string]any {
		req, _ := http.NewRequest(http.MethodGet, base+"/v1/connections/"+id+"/access-token"+query, nil)
		req.Header.Set("Authorization", "Bearer "+jwt)
		return call(req, want)
	}

	// Connect, pull twice, then report the Salesforce token rejected: one
	// refresh.
	s1 := session()
	jwt, id := s1["access_token"].(string), s1["connection_ids"].([]any)[0].(string)
	first := pull(jwt, id, "", 200)
	pull(jwt, id, "", 200)
	refreshed := pull(jwt, id, "?rejected_token="+url.QueryEscape(first["access_token"].(string)), 200)
	if refreshed["access_token"] == first["access_token"] {
		t.Fatal("a rejected token did not cause a refresh")
	}
	// The device refresh token, rotated, then presented again: reuse.
	r1 := s1["refresh_token"].(string)
	token(url.Values{"grant_type": {"refresh_token"}, "refresh_token": {r1}, "client_id": {client}}, 200)
	token(url.Values{"grant_type": {"refresh_token"}, "refresh_token": {r1}, "client_id": {client}}, 400)
	// A re-authorization: its webhook fails at the receiver.
	s2 := session()
	// A session pulling past its burst.
	jwt2 := s2["access_token"].(string)
	for i := 0; ; i++ {
		req, _ := http.NewRequest(http.MethodGet, base+"/v1/connections/"+id+"/access-token", nil)
		req.Header.Set("Authorization", "Bearer "+jwt2)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode == http.StatusTooManyRequests {
			break
		}
		if resp.StatusCode != 200 || i > 20 {
			t.Fatalf("pull %d: %d, want 200 until a 429", i, resp.StatusCode)
		}
	}

	scrape := func() string {
		resp, err := http.Get(base + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != 200 {
			t.Fatalf("/metrics: %d", resp.StatusCode)
		}
		return string(b)
	}
	var body string
	var families map[string]string
	var samples map[string]float64
	testkit.WaitFor(t, "a failed webhook delivery counted", 30*time.Second, func() bool {
		body = scrape()
		families, samples = scrapeFamilies(t, body)
		return samples[`tokenwarm_webhook_deliveries_total{outcome="failed"}`] >= 1
	})
	if webhookHits.Load() < 1 {
		t.Error("the receiver saw no delivery")
	}

	// What the traffic did is counted.
	for series, want := range map[string]float64{
		`tokenwarm_connections{status="active"}`:                  1,
		`tokenwarm_device_refresh_reuse_total`:                    1,
		`tokenwarm_refresh_events_total{kind="rotation_lost"}`:    0,
		`tokenwarm_refresh_events_total{kind="unknown_outcome"}`:  0,
		`tokenwarm_webhook_deliveries_total{outcome="delivered"}`: 0,
		`tokenwarm_warm_paused`:                                   0,
	} {
		if got, ok := samples[series]; !ok || got != want {
			t.Errorf("%s = %v (exported: %v), want %v", series, got, ok, want)
		}
	}
	for series, atLeast := range map[string]float64{
		`tokenwarm_refreshes_total{cause="pull",outcome="ok"}`: 1,
		`tokenwarm_refresh_events_total{kind="refreshed"}`:     1,
		`tokenwarm_rate_limited_total{limit="session"}`:        1,
	} {
		if samples[series] < atLeast {
			t.Errorf("%s = %v, want at least %v", series, samples[series], atLeast)
		}
	}
	if _, ok := samples["tokenwarm_min_idle_budget_seconds"]; !ok {
		t.Error("no smallest idle budget with an active connection")
	}

	// Every metric a rule or a panel names exists. up is Prometheus's own.
	checked := 0
	for where, expr := range deployQueries(t) {
		names := promqlMetricNames(expr)
		if len(names) == 0 {
			t.Errorf("%s: no metric in %q", where, expr)
		}
		for _, name := range names {
			if name != "up" && !exported(families, name) {
				t.Errorf("%s names %s, which the server does not export", where, name)
			}
			checked++
		}
	}
	t.Logf("%d metric references in the rules and the dashboard, %d metric families exported", checked, len(families))
	testkit.AssertNoTokens(t, issued, map[string]string{"metrics": body})
}

// doJSON sends req and decodes the JSON answer, which must have status want.
func doJSON(t *testing.T, req *http.Request, want int) map[string]any {
	t.Helper()
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var v map[string]any
	_ = json.NewDecoder(resp.Body).Decode(&v)
	if resp.StatusCode != want {
		t.Fatalf("%s %s: %d %v, want %d", req.Method, req.URL.Path, resp.StatusCode, v, want)
	}
	return v
}

// standardConnect runs an app's authorization request through tokenwarm
// and the built-in emulator's consent page (as username) up to the
// redirect to the app, and returns the code and the app's verifier.
func standardConnect(t *testing.T, base, client, redirect, username string) (code, verifier string) {
	t.Helper()
	jar, _ := cookiejar.New(nil)
	browser := &http.Client{Jar: jar, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	verifier = pkce.NewVerifier()
	next := base + "/v1/oauth/authorize?" + url.Values{"response_type": {"code"}, "client_id": {client}, "redirect_uri": {redirect},
		"code_challenge": {pkce.S256(verifier)}, "code_challenge_method": {"S256"}, "state": {"st"}, "login_hint": {username}}.Encode()
	resp, err := browser.Get(next)
	for range 10 {
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		switch {
		case resp.StatusCode == http.StatusFound && strings.HasPrefix(resp.Header.Get("Location"), redirect):
			u, _ := url.Parse(resp.Header.Get("Location"))
			if u.Query().Get("code") == "" || u.Query().Get("state") != "st" {
				t.Fatalf("redirect to the app %s", u)
			}
			return u.Query().Get("code"), verifier
		case resp.StatusCode == http.StatusFound:
			loc, _ := resp.Request.URL.Parse(resp.Header.Get("Location"))
			resp, err = browser.Get(loc.String())
		case resp.StatusCode == http.StatusOK: // the emulator's consent page
			action := regexp.MustCompile(`<form method="post" action="([^"]+)"`).FindStringSubmatch(string(body))
			if action == nil {
				t.Fatalf("%s: no consent form:\n%s", resp.Request.URL, body)
			}
			form := url.Values{}
			for _, m := range regexp.MustCompile(`name="([a-z_]+)" value="([^"]*)"`).FindAllStringSubmatch(string(body), -1) {
				form.Set(m[1], htmlUnescape(m[2]))
			}
			form.Set("action", "allow")
			to, _ := resp.Request.URL.Parse(htmlUnescape(action[1]))
			resp, err = browser.PostForm(to.String(), form)
		default:
			t.Fatalf("%s: %d %s", resp.Request.URL, resp.StatusCode, body)
		}
	}
	t.Fatal("the authorization did not reach the app")
	return "", ""
}

// The metrics' fixed label sets are the values the packages report:
// nothing they report falls into "other".
func TestMetricLabelSetsMatchTheReporters(t *testing.T) {
	if want := []string{webhooks.OutcomeDelivered, webhooks.OutcomeFailed, webhooks.OutcomeGaveUp, webhooks.OutcomeDropped}; !slices.Equal(metrics.WebhookOutcomes, want) {
		t.Errorf("metrics.WebhookOutcomes %v, webhooks reports %v", metrics.WebhookOutcomes, want)
	}
	if want := []string{handlers.LimitSession, handlers.LimitIP}; !slices.Equal(metrics.RateLimits, want) {
		t.Errorf("metrics.RateLimits %v, handlers reports %v", metrics.RateLimits, want)
	}
}
