//go:build tokenwarm_testclock

package main

import (
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"time"

	"github.com/tokenwarm/tokenwarm/clock"
	"github.com/tokenwarm/tokenwarm/warmer"
)

// testClockPrefix serves the test clock in builds with the tokenwarm_testclock
// tag, and only there: a default build has no such route.
const testClockPrefix = "/_test"

// serverClock is the clock the server and the built-in emulator share in a
// test build: the wall clock plus the jumps POST /_test/clock makes. Anyone
// who can reach the server can move it, so a test build runs only in demo
// mode, in front of the emulator, never in front of Salesforce.
func serverClock(cfg *Config) (clock.Clock, error) {
	if !cfg.Demo() {
		return nil, errors.New("this is a test build (tag tokenwarm_testclock) whose clock anyone can move: it runs only in demo mode, with the built-in emulator (unset SALESFORCE_LOGIN_URL)")
	}
	return &clock.Offset{}, nil
}

type clockAnswer struct {
	Now      time.Time  `json:"now"`
	WarmPass *warmState `json:"warm_pass,omitempty"`
}

type warmState struct {
	Claimed   int64  `json:"claimed"`
	OK        int64  `json:"ok"`
	Fresh     int64  `json:"skipped_already_fresh"`
	Transient int64  `json:"transient"`
	Dead      int64  `json:"dead"`
	Failed    int64  `json:"failed"`
	Error     string `json:"error,omitempty"`
}

// mountTestClock serves GET /_test/clock (the time) and POST /_test/clock
// {"advance":"24h"}: the clock jumps forward, then one warm pass runs to its
// end before the answer, as the warmer's schedule would have run passes
// during the skipped time. A test that skips a month one day at a time sees
// every connection warmed as in production; one that skips it at once sees
// what an idle month does.
func mountTestClock(mounts map[string]http.Handler, clk clock.Clock, warm *warmer.Warmer, log *slog.Logger) {
	o := clk.(*clock.Offset)
	log.Warn("TEST BUILD: POST " + testClockPrefix + "/clock moves the clock of the server and the built-in emulator forward; never deploy this binary")
	mux := http.NewServeMux()
	mux.HandleFunc("GET /clock", func(w http.ResponseWriter, r *http.Request) {
		writeClock(w, http.StatusOK, clockAnswer{Now: o.Now().UTC()})
	})
	mux.HandleFunc("POST /clock", func(w http.ResponseWriter, r *http.Request) {
		var body struct {
			Advance string `json:"advance"`
		}
		if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 1024)).Decode(&body); err != nil {
			http.Error(w, `want {"advance":"<Go duration>"}`, http.StatusBadRequest)
			return
		}
		d, err := time.ParseDuration(body.Advance)
		if err != nil || d <= 0 {
			http.Error(w, "advance must be a positive Go duration such as 24h", http.StatusBadRequest)
			return
		}
		now, _ := o.Advance(d)
		log.Info("test clock advanced", "by", d, "now", now.UTC())
		p, err := warm.RunOnce(r.Context())
		ws := &warmState{Claimed: p.Claimed, OK: p.Outcomes.OK, Fresh: p.Outcomes.SkippedAlreadyFresh,
			Transient: p.Outcomes.Transient, Dead: p.Outcomes.Dead, Failed: p.Outcomes.Failed}
		if err != nil {
			ws.Error = err.Error()
		}
		writeClock(w, http.StatusOK, clockAnswer{Now: now.UTC(), WarmPass: ws})
	})
	mounts[testClockPrefix] = mux
}

func writeClock(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}
