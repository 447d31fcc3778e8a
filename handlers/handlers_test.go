package handlers

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/tokenwarm/tokenwarm/vault"
)

type readyFunc func(context.Context) error

func (f readyFunc) Ready(ctx context.Context) error { return f(ctx) }

func TestHealthAndReadiness(t *testing.T) {
	var notReady error
	e := New(Deps{Log: slog.New(slog.DiscardHandler), Ready: readyFunc(func(context.Context) error { return notReady })})
	get := func(path string) (*httptest.ResponseRecorder, Problem) {
		rec := httptest.NewRecorder()
		e.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, path, nil))
		var p Problem
		_ = json.Unmarshal(rec.Body.Bytes(), &p)
		return rec, p
	}
	if rec, _ := get("/healthz"); rec.Code != 200 {
		t.Fatalf("healthz %d", rec.Code)
	}
	if rec, _ := get("/readyz"); rec.Code != 200 {
		t.Fatalf("readyz %d", rec.Code)
	}
	notReady = errors.New("1 migration(s) pending")
	rec, p := get("/readyz")
	if rec.Code != 503 || p.Code != "not_ready" || rec.Header().Get("Content-Type") != "application/problem+json" {
		t.Fatalf("readyz when not ready: %d %q %q", rec.Code, p.Code, rec.Header().Get("Content-Type"))
	}
	rec, p = get("/nope")
	if rec.Code != 404 || p.Code != "not_found" {
		t.Fatalf("unknown path: %d %+v", rec.Code, p)
	}
}

func TestVaultErrorsMapToStatus(t *testing.T) {
	cases := map[vault.Code]int{
		vault.CodeNotFound:            404,
		vault.CodeReauthRequired:      409,
		vault.CodeUpstreamUnavailable: 503,
		vault.CodeUpstreamConfig:      503,
		vault.CodeInternal:            500,
	}
	for code, status := range cases {
		p := toProblem(&vault.Error{Code: code, Message: "m"})
		if p.Status != status || p.Code != string(code) {
			t.Errorf("%s -> %d %s, want %d", code, p.Status, p.Code, status)
		}
	}
}

// Our own failures that a retry may cure are 503 service_unavailable with
// Retry-After, not 500: a database that does not answer anywhere in the
// error chain, and the vault's "service_unavailable" code. A network error
// behind an upstream code stays Salesforce's.
func TestUnavailableIsServiceUnavailable(t *testing.T) {
	for name, err := range map[string]error{
		"admin shutdown": fmt.Errorf("devices: load session: %w", &pgconn.PgError{Code: "57P01"}),
		"closed pool":    fmt.Errorf("x: %w", errors.New("sql: database is closed")),
		"vault code":     &vault.Error{Code: "service_unavailable", Message: "database unavailable"},
	} {
		p := toProblem(err)
		if p.Status != 503 || p.Code != "service_unavailable" || p.RetryAfter != 1 {
			t.Errorf("%s -> %d %s retry_after %d, want 503 service_unavailable retry_after 1", name, p.Status, p.Code, p.RetryAfter)
		}
	}
	if p := toProblem(errors.New("boom")); p.Status != 500 || p.Code != "internal" {
		t.Errorf("an unknown error -> %d %s, want 500 internal", p.Status, p.Code)
	}
	if p := toProblem(&vault.Error{Code: vault.CodeUpstreamUnavailable, RetryAfter: 30 * time.Second}); p.Code != "upstream_unavailable" || p.RetryAfter != 30 {
		t.Errorf("upstream_unavailable -> %+v", p)
	}
}
