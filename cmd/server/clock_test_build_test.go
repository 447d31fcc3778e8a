//go:build tokenwarm_testclock

package main

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"
)

// go test -tags tokenwarm_testclock ./cmd/server/ (scripts/test.d/50-typescript-sdk.sh runs it).
func TestTestBuildClockAdvancesAndWarms(t *testing.T) {
	base, _ := startDemo(t, nil)
	post := func(body string) (int, clockAnswer) {
		t.Helper()
		resp, err := http.Post(base+"/_test/clock", "application/json", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var a clockAnswer
		if resp.StatusCode == http.StatusOK {
			if err := json.NewDecoder(resp.Body).Decode(&a); err != nil {
				t.Fatal(err)
			}
		}
		return resp.StatusCode, a
	}
	before := time.Now()
	status, a := post(`{"advance":"72h"}`)
	if status != http.StatusOK || a.WarmPass == nil || a.WarmPass.Error != "" {
		t.Fatalf("advance: %d %+v", status, a)
	}
	if d := a.Now.Sub(before); d < 72*time.Hour || d > 72*time.Hour+time.Minute {
		t.Fatalf("the clock moved by %s, want 72h", d)
	}
	resp, err := http.Get(base + "/_test/clock")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	var now clockAnswer
	if err := json.Unmarshal(b, &now); err != nil || now.Now.Before(a.Now) {
		t.Fatalf("GET /_test/clock = %s", b)
	}
	for _, bad := range []string{`{"advance":"-1h"}`, `{"advance":"0s"}`, `{"advance":"soon"}`, `not json`} {
		if status, _ := post(bad); status != http.StatusBadRequest {
			t.Errorf("%s: %d, want 400", bad, status)
		}
	}
}

// A test build refuses to run in front of Salesforce: its clock is
// anyone's to move.
func TestTestBuildRunsOnlyInDemoMode(t *testing.T) {
	err := run(context.Background(), nil, envFrom(map[string]string{
		"TOKENWARM_ADDR": "127.0.0.1:0", "TOKENWARM_DATA_DIR": t.TempDir(),
		"SALESFORCE_LOGIN_URL": "https://login.salesforce.com", "SALESFORCE_CLIENT_ID": "x",
	}), io.Discard, io.Discard)
	if err == nil || !strings.Contains(err.Error(), "demo mode") {
		t.Fatalf("run = %v, want a refusal outside demo mode", err)
	}
}
