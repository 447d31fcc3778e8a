//go:build !tokenwarm_testclock

package main

import (
	"net/http"
	"strings"
	"testing"
)

// A default build has no test clock: nothing can move a production
// server's time (the route exists only with -tags tokenwarm_testclock).
func TestDefaultBuildHasNoTestClock(t *testing.T) {
	base, out := startDemo(t, nil)
	for _, method := range []string{http.MethodGet, http.MethodPost} {
		req, _ := http.NewRequest(method, base+"/_test/clock", strings.NewReader(`{"advance":"24h"}`))
		req.Header.Set("Content-Type", "application/json")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusNotFound {
			t.Errorf("%s /_test/clock = %d in a default build, want 404", method, resp.StatusCode)
		}
	}
	if strings.Contains(out.String(), "TEST BUILD") {
		t.Error("a default build announces a test clock")
	}
}
