package main

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/tokenwarm/tokenwarm/internal/pgcluster"
)

// findPgbench prefers the pgbench next to the server binaries.
func findPgbench() (string, error) {
	if bin, err := pgcluster.FindBin(); err == nil {
		if p := filepath.Join(bin, "pgbench"); isExec(p) {
			return p, nil
		}
	}
	p, err := exec.LookPath("pgbench")
	if err != nil {
		return "", fmt.Errorf("pgbench not found next to the PostgreSQL server binaries or on PATH (Debian: postgresql-client)")
	}
	return p, nil
}

func isExec(p string) bool {
	st, err := os.Stat(p)
	return err == nil && !st.IsDir() && st.Mode()&0o111 != 0
}

type pgbench struct {
	path string
	port int
	db   string
	dir  string // for the per-transaction logs
}

func (p *pgbench) args(extra ...string) []string {
	return append([]string{"-h", "127.0.0.1", "-p", strconv.Itoa(p.port), "-U", "postgres"}, extra...)
}

func (p *pgbench) initialise(ctx context.Context, scale int) error {
	cmd := exec.CommandContext(ctx, p.path, p.args("-i", "-q", "-s", strconv.Itoa(scale), p.db)...)
	cmd.Dir = p.dir
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("pgbench -i: %w: %s", err, strings.TrimSpace(string(out)))
	}
	return nil
}

var (
	tpsRe = regexp.MustCompile(`(?m)^tps = ([0-9.]+) \(without initial connection time\)`)
	txRe  = regexp.MustCompile(`(?m)^number of transactions actually processed: ([0-9]+)`)
	errRe = regexp.MustCompile(`(?m)^number of failed transactions: ([0-9]+)`)
)

type pgbenchResult struct {
	tps     float64
	tx      int
	failed  int
	latency []time.Duration
}

// run runs the built-in select-only script (-S) with one protocol mode,
// logging every transaction's latency (-l) for the percentiles.
func (p *pgbench) run(ctx context.Context, mode string, clients int, d time.Duration) (pgbenchResult, error) {
	secs := max(1, int(d.Round(time.Second)/time.Second))
	prefix := filepath.Join(p.dir, "pgbench_"+mode)
	cmd := exec.CommandContext(ctx, p.path, p.args("-n", "-S", "-M", mode, "-c", strconv.Itoa(clients),
		"-j", strconv.Itoa(min(2, clients)), "-T", strconv.Itoa(secs), "-l", "--log-prefix", prefix, p.db)...)
	cmd.Dir = p.dir
	out, err := cmd.CombinedOutput()
	if err != nil {
		return pgbenchResult{}, fmt.Errorf("pgbench -M %s: %w: %s", mode, err, strings.TrimSpace(string(out)))
	}
	var r pgbenchResult
	m := tpsRe.FindSubmatch(out)
	if m == nil {
		return r, fmt.Errorf("pgbench -M %s: no tps in its output: %s", mode, out)
	}
	r.tps, _ = strconv.ParseFloat(string(m[1]), 64)
	if m := txRe.FindSubmatch(out); m != nil {
		r.tx, _ = strconv.Atoi(string(m[1]))
	}
	if m := errRe.FindSubmatch(out); m != nil {
		r.failed, _ = strconv.Atoi(string(m[1]))
	}
	logs, _ := filepath.Glob(prefix + ".*")
	for _, l := range logs {
		lat, err := readPgbenchLog(l)
		if err != nil {
			return r, err
		}
		r.latency = append(r.latency, lat...)
		os.Remove(l)
	}
	return r, nil
}

// readPgbenchLog reads "client_id transaction_no time script_no time_epoch
// time_us" lines; time is the transaction's latency in microseconds.
func readPgbenchLog(path string) ([]time.Duration, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out []time.Duration
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 3 {
			continue
		}
		us, err := strconv.ParseInt(fields[2], 10, 64)
		if err != nil {
			continue // "skipped" or "failed"
		}
		out = append(out, time.Duration(us)*time.Microsecond)
	}
	return out, sc.Err()
}
