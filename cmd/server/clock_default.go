//go:build !tokenwarm_testclock

package main

import (
	"log/slog"
	"net/http"

	"github.com/tokenwarm/tokenwarm/clock"
	"github.com/tokenwarm/tokenwarm/warmer"
)

// serverClock is the one clock of the server and the built-in emulator: in
// a default build the wall clock, which nothing can move. Test builds
// (-tags tokenwarm_testclock, clock_test_build.go) swap in one a test moves.
func serverClock(*Config) (clock.Clock, error) { return clock.System{}, nil }

// mountTestClock adds no route to a default build.
func mountTestClock(map[string]http.Handler, clock.Clock, *warmer.Warmer, *slog.Logger) {}
