package main

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	standardwebhooks "github.com/standard-webhooks/standard-webhooks/libraries/go"

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
// the receiver accepts the event once. The restart also rotates the
// webhook secret from an earlier-scheme secret to a whsec_ one and turns
// the legacy header off: the receiver verifies every attempt with the
// Standard Webhooks library (the old secret in its whsec_ form, then
// either secret), and the legacy header while it is sent.
func TestWebhookSurvivesServerRestart(t *testing.T) {
	const secret = "whsec-0123456789abcdef" // the earlier scheme: any string
	oldForLibrary := "whsec_" + base64.StdEncoding.EncodeToString([]byte(secret))
	newSecret := webhooks.NewSecret()
	var mu sync.Mutex
	attempts, accepted := 0, map[string]int{}
	var lastBody []byte
	receiver := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		mu.Lock()
		defer mu.Unlock()
		attempts++
		libSecrets := []string{oldForLibrary}
		legacy := r.Header.Get(webhooks.HeaderSignature)
		if attempts == 1 {
			if err := webhooks.Verify(secret, legacy, body, time.Now(), webhooks.DefaultTolerance); err != nil {
				t.Errorf("bad legacy signature: %v", err)
			}
		} else {
			libSecrets = append(libSecrets, newSecret)
			if legacy != "" {
				t.Errorf("legacy signature %q sent although TOKENWARM_WEBHOOK_LEGACY_SIGNATURE=false", legacy)
			}
		}
		for _, s := range libSecrets {
			wh, err := standardwebhooks.NewWebhook(s)
			if err == nil {
				err = wh.Verify(body, r.Header)
			}
			if err != nil {
				t.Errorf("attempt %d: the Standard Webhooks library refuses the delivery: %v", attempts, err)
			}
		}
		if attempts == 1 {
			http.Error(w, "not yet", http.StatusInternalServerError)
			return
		}
		accepted[r.Header.Get("webhook-id")]++
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
		var v map[string]any
		if code := adminCall(t, method, base, key, path, &v); code != 200 {
			t.Fatalf("%s %s: %d", method, path, code)
		}
		return v
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

	rotated := func(k string) string {
		switch k {
		case "TOKENWARM_WEBHOOK_SECRET":
			return newSecret
		case "TOKENWARM_WEBHOOK_PREVIOUS_SECRET":
			return secret
		case "TOKENWARM_WEBHOOK_LEGACY_SIGNATURE":
			return "false"
		}
		return env(k)
	}
	_, stop = startServer(t, rotated)
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
	if ev["type"] != webhooks.TypeRevoked || data["connection_id"] != id || accepted[ev["id"].(string)] != 1 {
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

// `tokenwarm webhook-secret` prints a fresh whsec_ secret with a 32-byte
// key that the Standard Webhooks library accepts.
func TestWebhookSecretCommand(t *testing.T) {
	var a, b bytes.Buffer
	for _, out := range []*bytes.Buffer{&a, &b} {
		if err := run(context.Background(), []string{"webhook-secret"}, envFrom(nil), out, io.Discard); err != nil {
			t.Fatal(err)
		}
	}
	s := strings.TrimSpace(a.String())
	rest, ok := strings.CutPrefix(s, "whsec_")
	key, err := base64.StdEncoding.DecodeString(rest)
	if !ok || err != nil || len(key) != 32 || s == strings.TrimSpace(b.String()) {
		t.Fatalf("webhook-secret printed %q and %q: want two different whsec_ secrets of 32-byte keys", s, b.String())
	}
	if _, err := standardwebhooks.NewWebhook(s); err != nil {
		t.Fatal(err)
	}
}

// The webhook signing settings: the legacy header is on by default; a
// previous secret must be a real secret and not the current one, and the
// errors never show either.
func TestWebhookSigningSettings(t *testing.T) {
	cfg, err := loadConfig(envFrom(nil))
	if err != nil || !cfg.WebhookLegacySignature {
		t.Fatalf("legacy signature default %v (%v), want on during the transition", cfg.WebhookLegacySignature, err)
	}
	const current = "whsec_Y3VycmVudC1zZWNyZXQtb2YtMjQtYnl0ZXM="
	for prev, want := range map[string]string{
		"short-secret": "TOKENWARM_WEBHOOK_PREVIOUS_SECRET must be at least 16 characters",
		current:        "differ from TOKENWARM_WEBHOOK_SECRET",
	} {
		env := map[string]string{"TOKENWARM_WEBHOOK_URLS": "https://hooks.example/t", "TOKENWARM_WEBHOOK_SECRET": current,
			"TOKENWARM_WEBHOOK_PREVIOUS_SECRET": prev, "TOKENWARM_WEBHOOK_LEGACY_SIGNATURE": "maybe"}
		_, err := loadConfig(envFrom(env))
		if err == nil {
			t.Fatalf("previous secret %q and legacy signature %q accepted", prev, "maybe")
		}
		msg := err.Error()
		if !strings.Contains(msg, "TOKENWARM_WEBHOOK_LEGACY_SIGNATURE=maybe: want true or false") ||
			(want != "" && !strings.Contains(msg, want)) {
			t.Errorf("previous secret %q: error %q, want %q", prev, msg, want)
		}
		if strings.Contains(msg, current[6:]) || strings.Contains(msg, prev) {
			t.Errorf("error shows a secret: %s", msg)
		}
	}
	cfg, err = loadConfig(envFrom(map[string]string{"TOKENWARM_WEBHOOK_URLS": "https://hooks.example/t", "TOKENWARM_WEBHOOK_SECRET": current,
		"TOKENWARM_WEBHOOK_PREVIOUS_SECRET": "my-old-webhook-secret-0123", "TOKENWARM_WEBHOOK_LEGACY_SIGNATURE": "false"}))
	if err != nil || cfg.WebhookLegacySignature || cfg.WebhookPreviousSecret != "my-old-webhook-secret-0123" {
		t.Fatalf("a rotation's settings: %+v, %v", cfg, err)
	}
}
