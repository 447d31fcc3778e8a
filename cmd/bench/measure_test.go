package main

import (
	"os"
	"path/filepath"
	"runtime"
	"testing"
	"time"
)

func TestPercentile(t *testing.T) {
	var lat []time.Duration
	for i := 100; i >= 1; i-- {
		lat = append(lat, time.Duration(i)*time.Millisecond)
	}
	p50, p99, mean := latencySummary(lat)
	if p50 != 50 || p99 != 99 || mean != 50.5 {
		t.Fatalf("p50 %v p99 %v mean %v", p50, p99, mean)
	}
	if p50, p99, _ := latencySummary(nil); p50 != 0 || p99 != 0 {
		t.Fatal("empty")
	}
}

func TestProcTimesOfSelf(t *testing.T) {
	self, _, ppid, err := procTimes(os.Getpid())
	if err != nil {
		if runtime.GOOS == "linux" {
			t.Fatal(err)
		}
		t.Skip(err) // /proc is Linux's
	}
	if ppid != os.Getppid() || self < 0 {
		t.Fatalf("ppid %d (want %d), cpu %v", ppid, os.Getppid(), self)
	}
}

func TestReadPgbenchLog(t *testing.T) {
	p := filepath.Join(t.TempDir(), "pgbench_log.1")
	// client_id transaction_no time script_no time_epoch time_us
	if err := os.WriteFile(p, []byte("0 1 250 0 1700000000 123\n1 1 1500 0 1700000000 456\n2 1 skipped 0 1700000000 789\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	lat, err := readPgbenchLog(p)
	if err != nil || len(lat) != 2 || lat[0] != 250*time.Microsecond || lat[1] != 1500*time.Microsecond {
		t.Fatalf("%v %v", lat, err)
	}
}
