package main

import (
	"bytes"
	"context"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
)

// The health check reaches the listener of TOKENWARM_ADDR on loopback when
// it listens on every interface, and refuses an address it cannot reach.
func TestHealthcheckURL(t *testing.T) {
	for addr, want := range map[string]string{
		":8080":          "http://127.0.0.1:8080/readyz",
		"0.0.0.0:8080":   "http://127.0.0.1:8080/readyz",
		"[::]:8080":      "http://[::1]:8080/readyz",
		"127.0.0.1:9000": "http://127.0.0.1:9000/readyz",
		"10.1.2.3:80":    "http://10.1.2.3:80/readyz",
	} {
		if got, err := healthcheckURL(addr, "/readyz"); err != nil || got != want {
			t.Errorf("%s: %q %v, want %q", addr, got, err, want)
		}
	}
	for _, bad := range []string{"8080", "127.0.0.1:0", "localhost"} {
		if _, err := healthcheckURL(bad, "/readyz"); err == nil {
			t.Errorf("%s: no error", bad)
		}
	}
}

// 200 is healthy; a 503 is not, and says why; so is a port nobody
// listens on, and an ambient proxy is never used.
func TestHealthcheckAnswers(t *testing.T) {
	var ready atomic.Bool
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch {
		case r.URL.Path == "/readyz" && ready.Load(), r.URL.Path == "/healthz":
			w.Write([]byte(`{"status":"ok"}`))
		default:
			w.Header().Set("Content-Type", "application/problem+json")
			w.WriteHeader(http.StatusServiceUnavailable)
			w.Write([]byte(`{"status":503,"code":"not_ready","detail":"database unreachable"}`))
		}
	}))
	defer srv.Close()
	_, port, _ := net.SplitHostPort(srv.Listener.Addr().String())
	env := envFrom(map[string]string{"TOKENWARM_ADDR": ":" + port, "HTTP_PROXY": "http://127.0.0.1:1", "http_proxy": "http://127.0.0.1:1"})
	check := func(args ...string) (string, error) {
		var out bytes.Buffer
		err := run(context.Background(), append([]string{"healthcheck"}, args...), env, &out, &out)
		return out.String(), err
	}

	if _, err := check(); err == nil || !strings.Contains(err.Error(), "503") || !strings.Contains(err.Error(), "database unreachable") {
		t.Fatalf("not ready: %v", err)
	}
	if out, err := check("-path", "/healthz"); err != nil || !strings.Contains(out, "ok: GET http://127.0.0.1:"+port+"/healthz: 200") {
		t.Fatalf("/healthz: %q %v", out, err)
	}
	ready.Store(true)
	if out, err := check(); err != nil || !strings.Contains(out, "/readyz: 200") {
		t.Fatalf("ready: %q %v", out, err)
	}
	if _, err := check("-path", "readyz"); err == nil || !strings.Contains(err.Error(), "usage: tokenwarm healthcheck") {
		t.Fatalf("bad path: %v", err)
	}
	srv.Close()
	if _, err := check(); err == nil || !strings.Contains(err.Error(), "GET http://127.0.0.1:"+port+"/readyz") {
		t.Fatalf("dead port: %v", err)
	}
}
