package main

import (
	"context"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/tokenwarm/tokenwarm/internal/testkit"
)

// With no configuration, the demo walks a browser through the whole connect
// flow against the built-in emulator and ends on the handoff page.
func TestDemoWalkThroughWithNoConfiguration(t *testing.T) {
	base, out := startDemo(t, nil)
	if !strings.Contains(out.String(), "open "+base+"/ in a browser") {
		t.Fatalf("the server does not say what to open:\n%s", out.String())
	}

	demoConnect(t, base)
}

// startDemo runs the server in demo mode (embedded, the built-in emulator)
// on a free port with a fresh data directory and extra settings, stops it
// when the test ends, and returns its URL and what it printed.
func startDemo(t *testing.T, extra map[string]string) (string, *testkit.SyncBuffer) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	out := &testkit.SyncBuffer{}
	done := make(chan error, 1)
	env := map[string]string{"TOKENWARM_ADDR": "127.0.0.1:0", "TOKENWARM_DATA_DIR": t.TempDir()}
	for k, v := range extra {
		env[k] = v
	}
	go func() { done <- run(ctx, nil, envFrom(env), out, io.Discard) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("run: %v", err)
		}
	})
	urlRe := regexp.MustCompile(`listening on (http://\S+)`)
	deadline := time.Now().Add(30 * time.Second)
	for {
		if m := urlRe.FindStringSubmatch(out.String()); m != nil {
			return m[1], out
		}
		select {
		case err := <-done:
			done <- err
			t.Fatalf("server stopped: %v\n%s", err, out.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("server printed no URL: %s", out.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// demoConnect walks a browser (a cookie-jar client) through the demo's
// connect flow against the built-in emulator, up to the handoff page.
func demoConnect(t *testing.T, base string) {
	t.Helper()
	jar, _ := cookiejar.New(nil)
	browser := &http.Client{Jar: jar}
	fetch := func(resp *http.Response, err error) string {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != 200 {
			t.Fatalf("%s: %d %s", resp.Request.URL, resp.StatusCode, b)
		}
		return string(b)
	}
	home := fetch(browser.Get(base + "/"))
	if !strings.Contains(home, `href="/demo/start"`) {
		t.Fatalf("home page has no start link:\n%s", home)
	}
	consent := fetch(browser.Get(base + "/demo/start"))
	action := regexp.MustCompile(`<form method="post" action="([^"]+)"`).FindStringSubmatch(consent)
	if action == nil {
		t.Fatalf("no consent form:\n%s", consent)
	}
	form := url.Values{}
	for _, m := range regexp.MustCompile(`name="([a-z_]+)" value="([^"]*)"`).FindAllStringSubmatch(consent, -1) {
		form.Set(m[1], htmlUnescape(m[2]))
	}
	form.Set("action", "allow") // the button a person clicks
	final := fetch(browser.PostForm(htmlUnescape(action[1]), form))
	if !strings.Contains(final, "Handoff received") {
		t.Fatalf("the flow did not end on the handoff page:\n%s", final)
	}
	if strings.Contains(final, "5Aep861") {
		t.Fatal("the demo page shows a refresh token")
	}
}

func htmlUnescape(s string) string {
	return strings.NewReplacer("&amp;", "&", "&#43;", "+", "&#34;", `"`, "&#39;", "'", "&lt;", "<", "&gt;", ">").Replace(s)
}
