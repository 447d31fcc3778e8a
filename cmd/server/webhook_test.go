package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tokenwarm/tokenwarm/internal/testkit"
	"github.com/tokenwarm/tokenwarm/webhooks"
)

// startServer runs the real program until the returned stop is called.
func startServer(t *testing.T, env func(string) string) (base string, stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	out := &testkit.SyncBuffer{}
	done := make(chan error, 1)
	go func() { done <- run(ctx, nil, env, out, io.Discard) }()
	re := regexp.MustCompile(`listening on (http://\S+)`)
	for deadline := time.Now().Add(30 * time.Second); base == ""; {
		if m := re.FindStringSubmatch(out.String()); m != nil {
			base = m[1]
		} else if time.Now().After(deadline) {
			cancel()
			t.Fatal("server printed no URL")
		} else {
			time.Sleep(20 * time.Millisecond)
		}
	}
	return base, func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("server: %v", err)
		}
	}
}

// A revoked connection is announced by a signed webhook. The receiver fails
// the first delivery, the server is stopped before the retry, and a new
// server process on the same database delivers it: nothing is lost, and
// the receiver accepts the event once.
func TestWebhookSurvivesServerRestart(t *testing.T) {
	const secret = "whsec-0123456789abcdef"
	var mu sync.Mutex
	attempts, accepted := 0, map[string]int{}
	var lastBody []byte
	receiver := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		mu.Lock()
		defer mu.Unlock()
		attempts++
		if err := webhooks.Verify(secret, r.Header.Get(webhooks.HeaderSignature), body, time.Now(), webhooks.DefaultTolerance); err != nil {
			t.Errorf("bad signature: %v", err)
		}
		if attempts == 1 {
			http.Error(w, "not yet", http.StatusInternalServerError)
			return
		}
		accepted[r.Header.Get(webhooks.HeaderEventID)]++
		lastBody = body
	}))
	defer receiver.Close()
	count := func() int { mu.Lock(); defer mu.Unlock(); return attempts }

	env := envFrom(map[string]string{"TOKENWARM_DATA_DIR": t.TempDir(), "TOKENWARM_ADDR": "127.0.0.1:0",
		"TOKENWARM_WEBHOOK_URLS": receiver.URL, "TOKENWARM_WEBHOOK_SECRET": secret, "TOKENWARM_WEBHOOK_RETRY_BASE": "1s"})
	var keyOut bytes.Buffer
	if err := run(context.Background(), []string{"admin-key", "create", "ops"}, env, &keyOut, io.Discard); err != nil {
		t.Fatal(err)
	}
	key := strings.TrimSpace(keyOut.String())

	base, stop := startServer(t, env)
	demoConnect(t, base)
	admin := func(method, path string) map[string]any {
		req, _ := http.NewRequest(method, base+path, nil)
		req.Header.Set("Authorization", "Bearer "+key)
		return doJSON(t, req, 200)
	}
	list := admin(http.MethodGet, "/admin/v1/connections")
	items, _ := list["connections"].([]any)
	if len(items) != 1 {
		t.Fatalf("connections: %v", list)
	}
	id := items[0].(map[string]any)["id"].(string)
	admin(http.MethodPost, "/admin/v1/connections/"+id+"/revoke")

	waitUntil(t, "the first (failing) delivery", func() bool { return count() == 1 })
	stop()

	_, stop = startServer(t, env)
	defer stop()
	waitUntil(t, "the retried delivery after the restart", func() bool { return count() >= 2 })
	mu.Lock()
	defer mu.Unlock()
	if len(accepted) != 1 {
		t.Fatalf("accepted events %v, want one", accepted)
	}
	var ev map[string]any
	_ = json.Unmarshal(lastBody, &ev)
	data, _ := ev["data"].(map[string]any)
	if ev["type"] != webhooks.TypeRevoked || data["connection_id"] != id {
		t.Fatalf("webhook %s", lastBody)
	}
}

func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(30 * time.Second); !cond(); {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
