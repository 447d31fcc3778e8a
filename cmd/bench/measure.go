package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
)

// clockTick is USER_HZ, the unit of /proc/<pid>/stat's CPU times. It is 100
// on every Linux architecture Go supports.
const clockTick = 10 * time.Millisecond

// procTimes reads utime+stime and cutime+cstime (children already reaped)
// of a process, and its parent's PID.
func procTimes(pid int) (self, reaped time.Duration, ppid int, err error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, 0, 0, err
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0, 0, 0, fmt.Errorf("/proc/%d/stat: no comm", pid)
	}
	// After "pid (comm) ": state ppid pgrp session tty tpgid flags minflt
	// cminflt majflt cmajflt utime stime cutime cstime ...
	f := strings.Fields(s[i+1:])
	if len(f) < 15 {
		return 0, 0, 0, fmt.Errorf("/proc/%d/stat: %d fields", pid, len(f))
	}
	n := func(k int) time.Duration {
		v, _ := strconv.ParseInt(f[k], 10, 64)
		return time.Duration(v) * clockTick
	}
	ppid, _ = strconv.Atoi(f[1])
	return n(11) + n(12), n(13) + n(14), ppid, nil
}

// processCPU is a process's own CPU time.
func processCPU(pid int) time.Duration {
	self, _, _, err := procTimes(pid)
	if err != nil {
		return 0
	}
	return self
}

// treeCPU is the CPU time of a postmaster and all its backends: its own,
// its live children's, and that of the children it has reaped (backends of
// clients that disconnected). A backend that exits between two readings
// moves from the second term to the third, so deltas stay right.
func treeCPU(root int) time.Duration {
	self, reaped, _, err := procTimes(root)
	if err != nil {
		return 0
	}
	total := self + reaped
	dirs, _ := filepath.Glob("/proc/[0-9]*")
	for _, d := range dirs {
		pid, err := strconv.Atoi(filepath.Base(d))
		if err != nil || pid == root {
			continue
		}
		s, _, ppid, err := procTimes(pid)
		if err == nil && ppid == root {
			total += s
		}
	}
	return total
}

// statements reads pg_stat_statements for one database.
type statements struct {
	conn *pgx.Conn // to database postgres, so our own queries are not counted
}

func (s *statements) reset(ctx context.Context) error {
	_, err := s.conn.Exec(ctx, "SELECT pg_stat_statements_reset()")
	return err
}

// StatementCount is one normalised statement (constants are $n: no token
// can appear), how often it ran, its mean execution time inside Postgres
// and the shared buffers it hit and read per call.
type StatementCount struct {
	Calls       int64   `json:"calls"`
	Query       string  `json:"query"`
	MeanExecUs  float64 `json:"mean_exec_us"`
	HitPerCall  float64 `json:"shared_blocks_hit_per_call"`
	ReadPerCall float64 `json:"shared_blocks_read_per_call"`
}

// read returns the total number of statements executed in database db
// since the reset, and the busiest ones.
func (s *statements) read(ctx context.Context, db string, top int) (int64, []StatementCount, error) {
	rows, err := s.conn.Query(ctx, `SELECT calls, query, 1000 * total_exec_time / greatest(calls, 1),
			shared_blks_hit::float8 / greatest(calls, 1), shared_blks_read::float8 / greatest(calls, 1) FROM pg_stat_statements
		WHERE dbid = (SELECT oid FROM pg_database WHERE datname = $1) ORDER BY calls DESC`, db)
	if err != nil {
		return 0, nil, err
	}
	defer rows.Close()
	var total int64
	var list []StatementCount
	for rows.Next() {
		var c StatementCount
		if err := rows.Scan(&c.Calls, &c.Query, &c.MeanExecUs, &c.HitPerCall, &c.ReadPerCall); err != nil {
			return 0, nil, err
		}
		total += c.Calls
		if len(list) < top {
			c.Query = strings.Join(strings.Fields(c.Query), " ")
			if len(c.Query) > 160 {
				c.Query = c.Query[:157] + "..."
			}
			list = append(list, c)
		}
	}
	return total, list, rows.Err()
}

// percentile of sorted durations, in milliseconds.
func percentile(sorted []time.Duration, p float64) float64 {
	if len(sorted) == 0 {
		return 0
	}
	i := int(p*float64(len(sorted))+0.5) - 1
	i = max(0, min(i, len(sorted)-1))
	return float64(sorted[i]) / float64(time.Millisecond)
}

func latencySummary(lat []time.Duration) (p50, p99, mean float64) {
	if len(lat) == 0 {
		return 0, 0, 0
	}
	slices.Sort(lat)
	var sum time.Duration
	for _, d := range lat {
		sum += d
	}
	return percentile(lat, 0.50), percentile(lat, 0.99), float64(sum) / float64(len(lat)) / float64(time.Millisecond)
}

// cpuStat is the machine's CPU time from /proc/stat's cpu line: time in
// processes (user, nice, system), in interrupts (irq, softirq: loopback
// networking lands partly there) and stolen by the VM's host.
type cpuStat struct{ procs, irq, steal time.Duration }

func machineCPU() cpuStat {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return cpuStat{}
	}
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line)
	if len(f) < 9 || f[0] != "cpu" {
		return cpuStat{}
	}
	n := func(i int) time.Duration {
		v, _ := strconv.ParseInt(f[i], 10, 64)
		return time.Duration(v) * clockTick
	}
	// user nice system idle iowait irq softirq steal
	return cpuStat{procs: n(1) + n(2) + n(3), irq: n(6) + n(7), steal: n(8)}
}
