// Command bench measures tokenwarm's mobile pull path side by side with
// pgbench on the same throwaway PostgreSQL (fsync on, pg_stat_statements
// loaded): one tokenwarm process, the Salesforce emulator in-process with no
// latency, N users connected through the real mobile flow, and these phases
// at one concurrency:
//
//   - pgbench -S -M prepared and -M simple (the database's own ceiling);
//   - pulls of valid tokens spread over the N connections;
//   - pulls all on one connection;
//   - pulls that must refresh (rejected_token, distinct connections);
//   - a herd: C concurrent pulls of one connection with one rejected token.
//
// For each: requests/s, p50/p99 latency, SQL statements per request
// (pg_stat_statements), and CPU per request of tokenwarm and of Postgres
// (from /proc). It never prints a token.
//
//	go run ./cmd/bench -duration 20s -concurrency 16 -connections 50 -json out.json
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/tokenwarm/tokenwarm/emulator"
	"github.com/tokenwarm/tokenwarm/internal/fleet"
	"github.com/tokenwarm/tokenwarm/internal/pgcluster"
)

type options struct {
	duration     time.Duration
	concurrency  int
	connections  int
	jsonPath     string
	pgbenchScale int
	keep         bool
	serverEnv    envList
	profileDir   string
	phases       string
	client       string
	filler       int
}

// envList collects repeated -server-env KEY=VALUE flags.
type envList []string

func (e *envList) String() string { return strings.Join(*e, " ") }
func (e *envList) Set(v string) error {
	if k, _, ok := strings.Cut(v, "="); !ok || k == "" {
		return fmt.Errorf("want KEY=VALUE, got %q", v)
	}
	*e = append(*e, v)
	return nil
}

func main() {
	var o options
	flag.DurationVar(&o.duration, "duration", 20*time.Second, "length of each measured phase")
	flag.IntVar(&o.concurrency, "concurrency", 16, "concurrent requests (pgbench -c) in every phase")
	flag.IntVar(&o.connections, "connections", 50, "users connected through the mobile flow (one Salesforce connection each)")
	flag.StringVar(&o.jsonPath, "json", "", "write the results as JSON to this file")
	flag.IntVar(&o.pgbenchScale, "pgbench-scale", 10, "pgbench -i -s")
	flag.BoolVar(&o.keep, "keep", false, "keep the run directory (server log, binary)")
	flag.StringVar(&o.profileDir, "profile", "", "write a CPU profile of tokenwarm per pull phase into this directory (through TOKENWARM_DEBUG_ADDR; profiling costs a little CPU, so do not record figures of such a run)")
	flag.StringVar(&o.phases, "phases", "", "run only these phases, comma-separated: prepared, simple, spread, spread1, one, refresh, refresh1, herd (default all; ratios need prepared or simple with spread or one)")
	flag.StringVar(&o.client, "client", "raw", "HTTP client of the valid-token pull phases: raw (a lean hand-written HTTP/1.1 client, as lean as pgbench's) or go (net/http's); the other phases always use net/http")
	flag.IntVar(&o.filler, "filler", 0, "connections (and device sessions) written straight into tokenwarm's tables before the users connect, so the measured ones are among that many more (e.g. 1000000; ~1 minute per million)")
	flag.Var(&o.serverEnv, "server-env", "extra KEY=VALUE for tokenwarm's environment, e.g. GOGC=200 or DB_MAX_CONNS=8 (repeatable; recorded in the results)")
	flag.Parse()
	if o.phases != "" {
		for _, k := range strings.Split(o.phases, ",") {
			if !slices.Contains(phaseKeys, k) {
				fmt.Fprintf(os.Stderr, "bench: -phases: no phase %q (phases: %s)\n", k, strings.Join(phaseKeys, ", "))
				os.Exit(2)
			}
		}
	}
	if o.client != "raw" && o.client != "go" {
		fmt.Fprintln(os.Stderr, "bench: -client is raw or go")
		os.Exit(2)
	}
	if o.concurrency < 1 || o.connections < 1 || o.duration < time.Second || o.pgbenchScale < 1 {
		fmt.Fprintln(os.Stderr, "bench: -concurrency and -connections must be >= 1, -duration >= 1s")
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM, syscall.SIGHUP)
	err := run(ctx, o)
	stop()
	if err != nil {
		fmt.Fprintf(os.Stderr, "\nbench: FAILED\n%v\n", err)
		os.Exit(1)
	}
}

// phaseKeys name the phases for -phases, in the order they run.
var phaseKeys = []string{"prepared", "simple", "spread", "spread1", "one", "refresh", "refresh1", "herd"}

func logf(format string, args ...any) {
	fmt.Printf("%s  "+format+"\n", append([]any{time.Now().Format("15:04:05.000")}, args...)...)
}

// Phase is one measured phase.
type Phase struct {
	Name        string  `json:"name"`
	Kind        string  `json:"kind"` // pgbench or pull
	Concurrency int     `json:"concurrency"`
	Seconds     float64 `json:"seconds"`
	Requests    int     `json:"requests"` // successful requests (pgbench: transactions)
	// NonOK counts answers other than 200 (and transport errors, pgbench's
	// failed transactions) by label.
	NonOK     map[string]int `json:"non_ok,omitempty"`
	PerSecond float64        `json:"per_second"`
	P50Ms     float64        `json:"p50_ms"`
	P99Ms     float64        `json:"p99_ms"`
	// The tail in more detail: p90, p99.9 and the slowest request.
	P90Ms  float64 `json:"p90_ms"`
	P999Ms float64 `json:"p999_ms"`
	MaxMs  float64 `json:"max_ms"`
	MeanMs float64 `json:"mean_ms"`
	// Statements is what pg_stat_statements counted in the phase's
	// database (utility statements such as BEGIN, COMMIT and SET
	// included).
	Statements       int64   `json:"statements"`
	StatementsPerReq float64 `json:"statements_per_request"`
	// CPU per successful request, microseconds.
	TokenwarmCPUUs float64 `json:"tokenwarm_cpu_us_per_request,omitempty"`
	PostgresCPUUs  float64 `json:"postgres_cpu_us_per_request"`
	// The bench process itself: load generator plus the emulator.
	BenchCPUUs float64 `json:"bench_cpu_us_per_request,omitempty"`
	// CPU use over the phase, in cores (the machine has NumCPU).
	TokenwarmCores float64 `json:"tokenwarm_cores,omitempty"`
	PostgresCores  float64 `json:"postgres_cores"`
	BenchCores     float64 `json:"bench_cores,omitempty"`
	// MachineCores is the whole machine's busy CPU over the phase
	// (processes, interrupts and steal); OtherCores is the part of the
	// processes' time that was not ours (tokenwarm, Postgres, this process
	// and pgbench): anything else running on the machine. It should be
	// near 0 for figures worth recording.
	MachineCores float64 `json:"machine_cores"`
	IRQCores     float64 `json:"irq_cores"`
	StealCores   float64 `json:"steal_cores"`
	OtherCores   float64 `json:"other_processes_cores"`
	// Refreshes at the emulator during the phase.
	Refreshes       int     `json:"refreshes"`
	RefreshesPerReq float64 `json:"refreshes_per_request,omitempty"`
	// Herd only.
	Rounds            int     `json:"rounds,omitempty"`
	RefreshesPerRound float64 `json:"refreshes_per_round,omitempty"`
	// RoundsWithSeveralTokens counts herd rounds whose callers were not all
	// handed the same access token.
	RoundsWithSeveralTokens int `json:"rounds_with_several_tokens,omitempty"`
	// Refresh phases: the emulator's own mean time per request (no
	// injected latency; every request is a refresh there), and p50 minus
	// it: tokenwarm's added latency.
	UpstreamMeanMs       float64          `json:"upstream_mean_ms,omitempty"`
	AddedP50Ms           float64          `json:"added_p50_ms,omitempty"`
	StatementsPerRefresh float64          `json:"statements_per_refresh,omitempty"`
	TopStatements        []StatementCount `json:"top_statements,omitempty"`
}

// Result is the whole run.
type Result struct {
	StartedAt   time.Time         `json:"started_at"`
	Commit      string            `json:"commit"`
	Machine     map[string]string `json:"machine"`
	Postgres    map[string]string `json:"postgres"`
	Duration    string            `json:"duration"`
	Concurrency int               `json:"concurrency"`
	Connections int               `json:"connections"`
	ServerEnv   []string          `json:"server_env,omitempty"`
	// Client is the HTTP client of the valid-token pull phases.
	Client string `json:"pull_client"`
	// Filler is how many connections were written straight into the
	// tables besides the connected users' (-filler).
	Filler           int                `json:"filler_connections,omitempty"`
	Phases           []Phase            `json:"phases"`
	Ratios           map[string]float64 `json:"ratios"`
	StatementsSource string             `json:"statements_source"`
	WallSeconds      int                `json:"wall_seconds"`
	// IdleMachineCores is the machine's busy CPU over 2 s before the
	// phases, with tokenwarm and Postgres idle: other work on the machine.
	IdleMachineCores float64 `json:"idle_machine_cores"`
}

type bench struct {
	o       options
	cluster *pgcluster.Cluster
	pmPID   int
	srv     *server
	emu     *emulator.Server
	upNanos atomic.Int64 // time the emulator spent serving requests
	upCalls atomic.Int64
	stmts   *statements
	// debugAddr is tokenwarm's profiler listener (-profile), and phase
	// the name of the phase running, for the profile's file name.
	debugAddr string
	phase     string
	cl        *client
	users     []*appUser
	pgb       *pgbench
}

func run(ctx context.Context, o options) error {
	started := time.Now()
	dir, err := os.MkdirTemp("", "tokenwarm-bench.")
	if err != nil {
		return err
	}
	defer func() {
		if o.keep {
			logf("run directory kept: %s", dir)
			return
		}
		os.RemoveAll(dir)
	}()
	b := &bench{o: o}
	res := Result{StartedAt: started.UTC(), Commit: gitCommit(), Machine: machine(), Duration: o.duration.String(),
		Concurrency: o.concurrency, Connections: o.connections, ServerEnv: o.serverEnv, Client: o.client, Filler: o.filler, Ratios: map[string]float64{}}

	// 1. PostgreSQL: durable (fsync, synchronous_commit and full page
	// writes on, as in production), with pg_stat_statements.
	pgBin, err := pgcluster.FindBin()
	if err != nil {
		return err
	}
	if !hasPgStatStatements(pgBin) {
		return errors.New("pg_stat_statements is not installed next to the server binaries (Debian ships it in postgresql-15); the bench counts statements with it")
	}
	res.StatementsSource = "pg_stat_statements (track=top, track_utility=on), reset before and read after each phase, filtered to the phase's database"
	pgbenchPath, err := findPgbench()
	if err != nil {
		return err
	}
	logf("starting PostgreSQL (fsync on, pg_stat_statements)")
	pgLog, _ := os.Create(filepath.Join(dir, "pgcluster.log"))
	defer pgLog.Close()
	b.cluster, err = pgcluster.Start(ctx, pgcluster.Options{Bin: pgBin, Log: pgLog, Settings: map[string]string{
		"shared_preload_libraries": "pg_stat_statements",
		"fsync":                    "on",
		"synchronous_commit":       "on",
		"full_page_writes":         "on",
		"max_connections":          "200",
	}})
	if err != nil {
		return err
	}
	defer b.cluster.Stop()
	if b.pmPID, err = b.cluster.PostmasterPID(); err != nil {
		return err
	}
	for _, db := range []string{"tokenwarm", "pgbench"} {
		if err := b.cluster.CreateDatabase(ctx, db); err != nil {
			return err
		}
	}
	admin, err := pgx.Connect(ctx, b.cluster.URL("postgres"))
	if err != nil {
		return err
	}
	defer admin.Close(context.Background())
	if _, err := admin.Exec(ctx, "CREATE EXTENSION pg_stat_statements"); err != nil {
		return err
	}
	b.stmts = &statements{conn: admin}
	if res.Postgres, err = pgSettings(ctx, admin); err != nil {
		return err
	}
	res.Postgres["data_directory_filesystem"] = filesystemOf(b.cluster.Dir())
	b.pgb = &pgbench{path: pgbenchPath, port: b.cluster.Port(), db: "pgbench", dir: dir}
	logf("pgbench -i -s %d", o.pgbenchScale)
	if err := b.pgb.initialise(ctx, o.pgbenchScale); err != nil {
		return err
	}

	// 2. The emulator in-process, without latency, and one tokenwarm.
	if err := b.startServer(ctx, dir); err != nil {
		return err
	}
	defer b.srv.stop(30 * time.Second)

	// 3. Users through the real flow.
	logf("connecting %d users through the mobile flow", o.connections)
	b.users = make([]*appUser, o.connections)
	for i := range b.users {
		b.users[i] = &appUser{name: fmt.Sprintf("bench%d@example.com", i)}
	}
	if err := b.cl.connectAll(ctx, b.users); err != nil {
		return err
	}
	for _, u := range b.users { // everyone's current token, for the refresh phase
		tok, outcome := b.cl.pull(ctx, u, "")
		if outcome != "" {
			return fmt.Errorf("first pull of %s: %s", u.name, outcome)
		}
		u.token.Store(&tok)
	}

	// How busy the machine is without us: 2 s with no load.
	m0 := machineCPU()
	time.Sleep(2 * time.Second)
	m1 := machineCPU()
	res.IdleMachineCores = (m1.procs - m0.procs + m1.irq - m0.irq + m1.steal - m0.steal).Seconds() / 2
	logf("machine busy while idle: %.2f cores", res.IdleMachineCores)

	// 4. The phases.
	c := o.concurrency
	phases := []struct {
		key, name string
		run       func(context.Context) (Phase, error)
	}{
		{"prepared", "pgbench -S -M prepared", func(ctx context.Context) (Phase, error) { return b.pgbenchPhase(ctx, "prepared") }},
		{"simple", "pgbench -S -M simple", func(ctx context.Context) (Phase, error) { return b.pgbenchPhase(ctx, "simple") }},
		{"spread", fmt.Sprintf("pull, spread over %d connections", o.connections), b.pullSpread(c)},
		// The same, one at a time: a pull's own latency, without queueing.
		{"spread1", fmt.Sprintf("pull, spread over %d, one at a time", o.connections), b.pullSpread(1)},
		{"one", "pull, one connection", b.pullOne},
		{"refresh", "pull that refreshes (rejected_token)", b.pullRefresh(c)},
		// The same, one at a time: tokenwarm's own latency over the
		// upstream round trip, without queueing for the machine's cores.
		{"refresh1", "pull that refreshes, one at a time", b.pullRefresh(1)},
		{"herd", fmt.Sprintf("herd: %d pulls of one connection, one rejected token", c), b.herd},
	}
	if len(phases) != len(phaseKeys) {
		return errors.New("bench: phaseKeys is out of step with the phases")
	}
	for i, ph := range phases {
		if ph.key != phaseKeys[i] {
			return errors.New("bench: phaseKeys is out of step with the phases")
		}
	}
	byKey := map[string]Phase{}
	for _, ph := range phases {
		if o.phases != "" && !slices.Contains(strings.Split(o.phases, ","), ph.key) {
			continue
		}
		if err := b.ensureDevices(ctx); err != nil {
			return err
		}
		logf("phase: %s (%s)", ph.name, o.duration)
		b.phase = ph.name
		p, err := ph.run(ctx)
		if err != nil {
			return fmt.Errorf("%s: %w", ph.name, err)
		}
		p.Name = ph.name
		res.Phases = append(res.Phases, p)
		byKey[ph.key] = p
		if ctx.Err() != nil {
			return ctx.Err()
		}
	}
	if b.srv.exited() {
		return fmt.Errorf("tokenwarm exited during the run (log %s)", b.srv.logPath)
	}
	for _, base := range []string{"prepared", "simple"} {
		for _, pull := range []string{"spread", "one"} {
			b, okb := byKey[base]
			p, okp := byKey[pull]
			if okb && okp && b.PerSecond > 0 {
				res.Ratios["pull_"+pull+"_per_pgbench_"+base] = p.PerSecond / b.PerSecond
			}
		}
	}
	res.WallSeconds = int(time.Since(started).Seconds())
	printResult(res)
	if o.jsonPath != "" {
		out, _ := json.MarshalIndent(res, "", "  ")
		if err := os.WriteFile(o.jsonPath, append(out, '\n'), 0o644); err != nil {
			return err
		}
		logf("wrote %s", o.jsonPath)
	}
	// Every phase must have worked: some successes, nothing but 200s.
	var problems []string
	for _, p := range res.Phases {
		if p.Requests == 0 {
			problems = append(problems, p.Name+": no successful request")
		}
		for k, n := range p.NonOK {
			problems = append(problems, fmt.Sprintf("%s: %d × %s", p.Name, n, k))
		}
	}
	if len(problems) > 0 {
		return errors.New(" - " + strings.Join(problems, "\n - "))
	}
	return nil
}

func (b *bench) startServer(ctx context.Context, dir string) error {
	const clientID, clientSecret = "3MVGbench.client", "bench-client-secret"
	const appRedirect = "https://bench-app.example/oauth/done"
	// Access tokens stay valid for the whole run: only the refresh phases
	// refresh.
	sessionTimeout := 24 * time.Hour
	b.emu = emulator.New(emulator.Config{ClientID: clientID, ClientSecret: clientSecret, AutoApprove: true, SessionTimeout: sessionTimeout})
	// The emulator's own time per request: in the refresh phases every
	// request it gets is a refresh (tokenwarm calls nothing else there).
	timed := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		t0 := time.Now()
		b.emu.ServeHTTP(w, r)
		b.upNanos.Add(int64(time.Since(t0)))
		b.upCalls.Add(1)
	})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	emuURL := "http://" + ln.Addr().String()
	emuSrv := &http.Server{Handler: timed, ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = emuSrv.Serve(ln) }()
	context.AfterFunc(ctx, func() { emuSrv.Close() })
	b.emu.SetBaseURL(emuURL)

	logf("building the server")
	bin := filepath.Join(dir, "tokenwarm")
	build := exec.CommandContext(ctx, "go", "build", "-o", bin, "./cmd/server")
	build.Stdout, build.Stderr = os.Stdout, os.Stderr
	if err := build.Run(); err != nil {
		return fmt.Errorf("go build ./cmd/server (run from the repository root): %w", err)
	}
	key, err := exec.CommandContext(ctx, bin, "keygen").Output()
	if err != nil {
		return fmt.Errorf("tokenwarm keygen: %w", err)
	}
	addr, err := freeAddr()
	if err != nil {
		return err
	}
	b.srv = &server{addr: addr, logPath: filepath.Join(dir, "tokenwarm.log"), env: []string{
		"PATH=" + os.Getenv("PATH"),
		"HOME=" + dir,
		"DATABASE_URL=" + b.cluster.URL("tokenwarm"),
		"TOKENWARM_SEAL_KEYS=" + strings.TrimSpace(string(key)),
		"TOKENWARM_DATA_DIR=" + filepath.Join(dir, "data"),
		"TOKENWARM_ADDR=" + addr,
		"SALESFORCE_LOGIN_URL=" + emuURL,
		"SALESFORCE_CLIENT_ID=" + clientID,
		"SALESFORCE_CLIENT_SECRET=" + clientSecret,
		"SALESFORCE_SESSION_TIMEOUT=" + sessionTimeout.String(),
		"TOKENWARM_APP_REDIRECT_URIS=" + appRedirect,
		"TOKENWARM_DEVICE_TOKEN_TTL=1h",
		// The benchmark measures pulls, not the rate limits that would
		// refuse most of them: off.
		"TOKENWARM_RATE_LIMIT_SESSION_RPS=0",
		"TOKENWARM_RATE_LIMIT_IP_RPS=0",
		// No warm pass during the phases (nothing is due for 72h anyway;
		// this keeps the pass's own queries out of the counts).
		"TOKENWARM_WARM_SCHEDULE=@every 6h",
		"TOKENWARM_LOG_FORMAT=json",
	}}
	if b.o.profileDir != "" {
		if b.debugAddr, err = freeAddr(); err != nil {
			return err
		}
		b.srv.env = append(b.srv.env, "TOKENWARM_DEBUG_ADDR="+b.debugAddr)
	}
	b.srv.env = append(b.srv.env, b.o.serverEnv...) // later entries win
	mig := exec.CommandContext(ctx, bin, "migrate")
	mig.Env = b.srv.env
	if out, err := mig.CombinedOutput(); err != nil {
		return fmt.Errorf("tokenwarm migrate: %w: %s", err, out)
	}
	if b.o.filler > 0 {
		if err := b.fill(ctx, b.o.filler); err != nil {
			return err
		}
	}
	if err := b.srv.start(bin); err != nil {
		return err
	}
	if err := b.srv.waitReady(ctx, 60*time.Second); err != nil {
		return err
	}
	b.cl = &client{base: b.srv.url(), appRedirect: appRedirect, http: &http.Client{
		Timeout:       60 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		Transport: &http.Transport{MaxIdleConns: 4 * b.o.concurrency, MaxIdleConnsPerHost: 4 * b.o.concurrency,
			IdleConnTimeout: time.Minute, DisableCompression: true},
	}}
	logf("tokenwarm ready on %s (pid %d)", addr, b.srv.pid())
	return nil
}

// fill writes n connections and their device sessions straight into
// tokenwarm's tables (internal/fleet), then vacuums and analyses them.
func (b *bench) fill(ctx context.Context, n int) error {
	logf("writing %d filler connections and device sessions", n)
	t0 := time.Now()
	conn, err := pgx.Connect(ctx, b.cluster.URL("tokenwarm"))
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	rlen, alen, err := fleet.SealedLengths()
	if err != nil {
		return err
	}
	// Next to none due (one in 2^30, i.e. row 50): the warm pass does not
	// run during the phases anyway.
	args := pgx.NamedArgs(fleet.Params(n, 1<<30, rlen, alen, time.Now().UTC().Truncate(time.Second)))
	for _, q := range []string{fleet.ConnectionsSQL, fleet.SessionsSQL} {
		if _, err := conn.Exec(ctx, q, args); err != nil {
			return fmt.Errorf("fill: %w", err)
		}
	}
	for _, q := range []string{"VACUUM (ANALYZE) connections", "VACUUM (ANALYZE) device_sessions", "CHECKPOINT"} {
		if _, err := conn.Exec(ctx, q); err != nil {
			return err
		}
	}
	logf("filled in %.0fs", time.Since(t0).Seconds())
	return nil
}

// ensureDevices refreshes device sessions whose JWT could expire during
// the next phase.
func (b *bench) ensureDevices(ctx context.Context) error {
	for _, u := range b.users {
		if time.Until(u.jwtExp) < 3*b.o.duration+time.Minute {
			if err := b.cl.refreshDevice(ctx, u); err != nil {
				return err
			}
		}
	}
	return nil
}

// snapshot is the counters a phase is measured with.
type snapshot struct {
	at                   time.Time
	tw, pg, self, reaped time.Duration
	machine              cpuStat
	refreshes            int
	upNanos, upCalls     int64
}

func (b *bench) snap() snapshot {
	self, reaped, _, _ := procTimes(os.Getpid())
	s := snapshot{at: time.Now(), machine: machineCPU(), pg: treeCPU(b.pmPID), self: self, reaped: reaped, refreshes: b.emu.Stats().Refreshes,
		upNanos: b.upNanos.Load(), upCalls: b.upCalls.Load()}
	if b.srv != nil {
		s.tw = processCPU(b.srv.pid())
	}
	return s
}

// finish fills in the measures common to every phase.
func (b *bench) finish(ctx context.Context, p *Phase, db string, s0, s1 snapshot, lat []time.Duration) error {
	el := s1.at.Sub(s0.at)
	p.Seconds = el.Seconds()
	p.Concurrency = b.o.concurrency
	if p.PerSecond == 0 {
		p.PerSecond = float64(p.Requests) / el.Seconds()
	}
	p.P50Ms, p.P99Ms, p.MeanMs = latencySummary(lat) // sorts lat
	p.P90Ms, p.P999Ms, p.MaxMs = percentile(lat, 0.90), percentile(lat, 0.999), percentile(lat, 1)
	// Statements of requests answered by now have all run; a short pause
	// lets anything a request started in the background finish too.
	time.Sleep(300 * time.Millisecond)
	total, top, err := b.stmts.read(ctx, db, 16)
	if err != nil {
		return err
	}
	p.Statements, p.TopStatements = total, top
	p.Refreshes = s1.refreshes - s0.refreshes
	cores := func(d time.Duration) float64 { return d.Seconds() / el.Seconds() }
	p.PostgresCores = cores(s1.pg - s0.pg)
	m0, m1 := s0.machine, s1.machine
	p.IRQCores, p.StealCores = cores(m1.irq-m0.irq), cores(m1.steal-m0.steal)
	p.MachineCores = cores(m1.procs-m0.procs) + p.IRQCores + p.StealCores
	// Ours: tokenwarm, Postgres, this process, and its reaped children
	// (pgbench, once it exited).
	ours := (s1.tw - s0.tw) + (s1.pg - s0.pg) + (s1.self - s0.self) + (s1.reaped - s0.reaped)
	p.OtherCores = max(0, cores(m1.procs-m0.procs-ours))
	if p.Kind == "pull" {
		p.TokenwarmCores = cores(s1.tw - s0.tw)
		p.BenchCores = cores(s1.self - s0.self)
	}
	if p.Requests > 0 {
		n := float64(p.Requests)
		us := func(d time.Duration) float64 { return float64(d.Microseconds()) / n }
		p.StatementsPerReq = float64(total) / n
		p.PostgresCPUUs = us(s1.pg - s0.pg)
		if p.Kind == "pull" {
			p.TokenwarmCPUUs = us(s1.tw - s0.tw)
			p.BenchCPUUs = us(s1.self - s0.self)
			p.RefreshesPerReq = float64(p.Refreshes) / n
		}
	}
	if p.Refreshes > 0 {
		p.StatementsPerRefresh = float64(total) / float64(p.Refreshes)
	}
	if calls := s1.upCalls - s0.upCalls; calls > 0 && p.Refreshes > 0 {
		p.UpstreamMeanMs = float64(s1.upNanos-s0.upNanos) / float64(calls) / float64(time.Millisecond)
		p.AddedP50Ms = p.P50Ms - p.UpstreamMeanMs
	}
	return nil
}

func (b *bench) pgbenchPhase(ctx context.Context, mode string) (Phase, error) {
	p := Phase{Kind: "pgbench"}
	if err := b.stmts.reset(ctx); err != nil {
		return p, err
	}
	s0 := b.snap()
	r, err := b.pgb.run(ctx, mode, b.o.concurrency, b.o.duration)
	s1 := b.snap()
	if err != nil {
		return p, err
	}
	p.Requests, p.PerSecond = r.tx, r.tps
	if r.failed > 0 {
		p.NonOK = map[string]int{"failed transactions": r.failed}
	}
	// pgbench's own figure excludes connection set-up; its -T is whole
	// seconds. Keep its tps, and measure CPU over the process's life.
	err = b.finish(ctx, &p, "pgbench", s0, s1, r.latency)
	return p, err
}

// load runs fn on c workers for d and collects latencies of successful
// calls and labels of the others.
func load(ctx context.Context, c int, d time.Duration, fn func(ctx context.Context, w int) string) ([]time.Duration, map[string]int) {
	ctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	lats := make([][]time.Duration, c)
	bad := make([]map[string]int, c)
	var wg sync.WaitGroup
	for w := range c {
		wg.Go(func() {
			bad[w] = map[string]int{}
			for ctx.Err() == nil {
				t0 := time.Now()
				outcome := fn(ctx, w)
				dt := time.Since(t0)
				switch outcome {
				case "":
					lats[w] = append(lats[w], dt)
				case "cancelled":
				default:
					bad[w][outcome]++
				}
			}
		})
	}
	wg.Wait()
	var all []time.Duration
	nonOK := map[string]int{}
	for w := range c {
		all = append(all, lats[w]...)
		for k, v := range bad[w] {
			nonOK[k] += v
		}
	}
	return all, nonOK
}

// pullPhase warms up with the same load (unmeasured), then measures it.
func (b *bench) pullPhase(ctx context.Context, c int, fn func(ctx context.Context, w int) string) (Phase, error) {
	p := Phase{Kind: "pull"}
	warm := min(2*time.Second, b.o.duration/10)
	if _, bad := load(ctx, c, warm, fn); len(bad) > 0 {
		return p, fmt.Errorf("warm-up: %v", bad)
	}
	if err := b.stmts.reset(ctx); err != nil {
		return p, err
	}
	stopProfile := b.profile(ctx)
	s0 := b.snap()
	lat, bad := load(ctx, c, b.o.duration, fn)
	s1 := b.snap()
	if err := stopProfile(); err != nil {
		return p, err
	}
	p.Requests = len(lat)
	if len(bad) > 0 {
		p.NonOK = bad
	}
	err := b.finish(ctx, &p, "tokenwarm", s0, s1, lat)
	p.Concurrency = c
	return p, err
}

// profile takes a CPU profile of tokenwarm over the phase (-profile) and
// returns a function that waits for it and writes it.
func (b *bench) profile(ctx context.Context) func() error {
	if b.debugAddr == "" {
		return func() error { return nil }
	}
	secs := max(1, int(b.o.duration/time.Second)-1)
	done := make(chan error, 1)
	go func() {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, fmt.Sprintf("http://%s/debug/pprof/profile?seconds=%d", b.debugAddr, secs), nil)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			done <- err
			return
		}
		defer resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			done <- fmt.Errorf("profile: %s", resp.Status)
			return
		}
		if err := os.MkdirAll(b.o.profileDir, 0o755); err != nil {
			done <- err
			return
		}
		slug := strings.Map(func(r rune) rune {
			if r >= 'a' && r <= 'z' || r >= '0' && r <= '9' {
				return r
			}
			return '-'
		}, strings.ToLower(b.phase))
		f, err := os.Create(filepath.Join(b.o.profileDir, slug+".pprof"))
		if err != nil {
			done <- err
			return
		}
		_, err = io.Copy(f, resp.Body)
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		done <- err
	}()
	return func() error { return <-done }
}

func (b *bench) pullSpread(c int) func(context.Context) (Phase, error) {
	return func(ctx context.Context) (Phase, error) {
		var next atomic.Uint64
		return b.pulls(ctx, c, func() *appUser { return b.users[int(next.Add(1)-1)%len(b.users)] })
	}
}

func (b *bench) pullOne(ctx context.Context) (Phase, error) {
	return b.pulls(ctx, b.o.concurrency, func() *appUser { return b.users[0] })
}

// pulls measures pulls of valid tokens of the users next picks, through the
// lean client (-client raw, one kept-alive connection per worker) or
// net/http's.
func (b *bench) pulls(ctx context.Context, c int, next func() *appUser) (Phase, error) {
	if b.o.client == "go" {
		return b.pullPhase(ctx, c, func(ctx context.Context, _ int) string {
			_, outcome := b.cl.pull(ctx, next(), "")
			return outcome
		})
	}
	raw := make([]*rawPuller, c)
	for w := range raw {
		raw[w] = newRawPuller(b.cl.base)
	}
	defer func() {
		for _, r := range raw {
			r.close()
		}
	}()
	return b.pullPhase(ctx, c, func(ctx context.Context, w int) string {
		return raw[w].pull(ctx, next())
	})
}

// pullRefresh, at a concurrency: worker w owns the connections i with i mod C' = w (C' = the
// concurrency, or fewer workers when there are fewer connections), and
// sends back the token it last got for each, so every pull forces one
// refresh and no two callers share a connection.
func (b *bench) pullRefresh(concurrency int) func(context.Context) (Phase, error) {
	return func(ctx context.Context) (Phase, error) {
		c := min(concurrency, len(b.users))
		turn := make([]int, c)
		p, err := b.pullPhase(ctx, c, func(ctx context.Context, w int) string {
			mine := (len(b.users) - w + c - 1) / c
			u := b.users[w+c*(turn[w]%mine)]
			turn[w]++
			tok, outcome := b.cl.pull(ctx, u, u.lastToken())
			if outcome == "" {
				u.token.Store(&tok)
			}
			return outcome
		})
		p.Concurrency = c
		return p, err
	}
}

// herd: rounds of C simultaneous pulls of one connection, all sending back
// the token of the previous round as rejected. One refresh per round is
// the invariant (I5).
func (b *bench) herd(ctx context.Context) (Phase, error) {
	p := Phase{Kind: "pull"}
	u := b.users[0]
	c := b.o.concurrency
	rounds, several := 0, 0
	round := func(ctx context.Context) ([]time.Duration, map[string]int) {
		rejected := u.lastToken()
		lat := make([]time.Duration, c)
		toks := make([]string, c)
		outs := make([]string, c)
		start := make(chan struct{})
		var wg sync.WaitGroup
		for i := range c {
			wg.Go(func() {
				<-start
				t0 := time.Now()
				toks[i], outs[i] = b.cl.pull(context.WithoutCancel(ctx), u, rejected)
				lat[i] = time.Since(t0)
			})
		}
		close(start)
		wg.Wait()
		var ok []time.Duration
		bad := map[string]int{}
		distinct := map[string]bool{}
		for i := range c {
			if outs[i] != "" {
				bad[outs[i]]++
				continue
			}
			ok = append(ok, lat[i])
			distinct[toks[i]] = true
			u.token.Store(&toks[i])
		}
		if len(distinct) > 1 {
			several++
		}
		return ok, bad
	}
	runFor := func(d time.Duration) ([]time.Duration, map[string]int, int) {
		deadline := time.Now().Add(d)
		var lat []time.Duration
		bad := map[string]int{}
		n := 0
		for time.Now().Before(deadline) && ctx.Err() == nil {
			l, bd := round(ctx)
			lat = append(lat, l...)
			for k, v := range bd {
				bad[k] += v
			}
			n++
		}
		return lat, bad, n
	}
	if _, bad, _ := runFor(min(2*time.Second, b.o.duration/10)); len(bad) > 0 {
		return p, fmt.Errorf("warm-up: %v", bad)
	}
	several = 0
	if err := b.stmts.reset(ctx); err != nil {
		return p, err
	}
	s0 := b.snap()
	lat, bad, n := runFor(b.o.duration)
	s1 := b.snap()
	rounds = n
	p.Requests = len(lat)
	if len(bad) > 0 {
		p.NonOK = bad
	}
	err := b.finish(ctx, &p, "tokenwarm", s0, s1, lat)
	p.Rounds, p.RoundsWithSeveralTokens = rounds, several
	if rounds > 0 {
		p.RefreshesPerRound = float64(p.Refreshes) / float64(rounds)
	}
	return p, err
}

func hasPgStatStatements(bin string) bool {
	lib := filepath.Join(filepath.Dir(bin), "lib", "pg_stat_statements.so")
	if _, err := os.Stat(lib); err == nil {
		return true
	}
	// Not the Debian layout: ask pg_config.
	out, err := exec.Command(filepath.Join(bin, "pg_config"), "--pkglibdir").Output()
	if err != nil {
		return false
	}
	_, err = os.Stat(filepath.Join(strings.TrimSpace(string(out)), "pg_stat_statements.so"))
	return err == nil
}

func pgSettings(ctx context.Context, conn *pgx.Conn) (map[string]string, error) {
	out := map[string]string{}
	var v string
	if err := conn.QueryRow(ctx, "SELECT version()").Scan(&v); err != nil {
		return nil, err
	}
	out["version"] = v
	for _, name := range []string{"fsync", "synchronous_commit", "full_page_writes", "wal_sync_method",
		"wal_level", "shared_buffers", "max_connections", "shared_preload_libraries"} {
		if err := conn.QueryRow(ctx, "SELECT current_setting($1)", name).Scan(&v); err != nil {
			return nil, err
		}
		out[name] = v
	}
	return out, nil
}

func filesystemOf(path string) string {
	out, err := exec.Command("df", "--output=fstype,source", path).Output()
	if err != nil {
		return "unknown"
	}
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	return strings.Join(strings.Fields(lines[len(lines)-1]), " on ")
}

func gitCommit() string {
	out, err := exec.Command("git", "rev-parse", "--short", "HEAD").Output()
	if err != nil {
		return "unknown"
	}
	c := strings.TrimSpace(string(out))
	if st, err := exec.Command("git", "status", "--porcelain", "--untracked-files=no").Output(); err == nil && len(st) > 0 {
		c += "-dirty"
	}
	return c
}

func machine() map[string]string {
	m := map[string]string{"cpus": fmt.Sprint(runtime.NumCPU()), "go": runtime.Version(), "os": runtime.GOOS + "/" + runtime.GOARCH}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if k, v, ok := strings.Cut(l, ":"); ok && strings.TrimSpace(k) == "model name" {
				m["cpu"] = strings.TrimSpace(v)
				break
			}
		}
	}
	if b, err := os.ReadFile("/proc/meminfo"); err == nil {
		if l, _, ok := strings.Cut(string(b), "\n"); ok {
			m["memory"] = strings.Join(strings.Fields(strings.TrimPrefix(l, "MemTotal:")), " ")
		}
	}
	return m
}

func printResult(r Result) {
	w := os.Stdout
	fmt.Fprintf(w, "\ntokenwarm pull benchmark — commit %s, %s CPUs (%s), %s\n", r.Commit, r.Machine["cpus"], r.Machine["cpu"], r.Machine["go"])
	pg := r.Postgres
	fmt.Fprintf(w, "PostgreSQL: %s\n  fsync=%s synchronous_commit=%s full_page_writes=%s wal_sync_method=%s shared_buffers=%s, data on %s\n",
		firstWords(pg["version"], 2), pg["fsync"], pg["synchronous_commit"], pg["full_page_writes"], pg["wal_sync_method"], pg["shared_buffers"], pg["data_directory_filesystem"])
	fmt.Fprintf(w, "machine busy before the phases (everything idle): %.2f cores\n", r.IdleMachineCores)
	if r.Filler > 0 {
		fmt.Fprintf(w, "filler: %d more connections and device sessions in the tables\n", r.Filler)
	}
	if len(r.ServerEnv) > 0 {
		fmt.Fprintf(w, "tokenwarm's extra environment: %s\n", strings.Join(r.ServerEnv, " "))
	}
	fmt.Fprintf(w, "phases of %s at concurrency %d, %d connections; valid-token pulls through the %s client; statements: %s\n\n", r.Duration, r.Concurrency, r.Connections, r.Client, r.StatementsSource)
	fmt.Fprintf(w, "%-52s %5s %9s %9s %8s %8s %9s %9s %9s %9s %7s\n",
		"phase", "conc", "requests", "req/s", "p50 ms", "p99 ms", "stmt/req", "tw µs/req", "pg µs/req", "bench µs", "non-2xx")
	for _, p := range r.Phases {
		tw, bn := "-", "-"
		if p.Kind == "pull" {
			tw, bn = fmt.Sprintf("%.0f", p.TokenwarmCPUUs), fmt.Sprintf("%.0f", p.BenchCPUUs)
		}
		nonOK := 0
		for _, n := range p.NonOK {
			nonOK += n
		}
		fmt.Fprintf(w, "%-52s %5d %9d %9.0f %8.2f %8.2f %9.2f %9s %9.0f %9s %7d\n",
			p.Name, p.Concurrency, p.Requests, p.PerSecond, p.P50Ms, p.P99Ms, p.StatementsPerReq, tw, p.PostgresCPUUs, bn, nonOK)
	}
	fmt.Fprintln(w)
	for _, p := range r.Phases {
		if p.Kind == "pull" {
			fmt.Fprintf(w, "%-52s cores: tokenwarm %.2f, postgres %.2f, bench+emulator %.2f, machine %.2f (irq %.2f, steal %.2f, other processes %.2f); refreshes %d (%.3f per request)\n",
				p.Name, p.TokenwarmCores, p.PostgresCores, p.BenchCores, p.MachineCores, p.IRQCores, p.StealCores, p.OtherCores, p.Refreshes, p.RefreshesPerReq)
		} else {
			fmt.Fprintf(w, "%-52s cores: postgres %.2f, machine %.2f (irq %.2f, steal %.2f, other processes %.2f; pgbench itself is most of the rest)\n", p.Name, p.PostgresCores, p.MachineCores, p.IRQCores, p.StealCores, p.OtherCores)
		}
		fmt.Fprintf(w, "%-52s latency ms: mean %.2f, p50 %.2f, p90 %.2f, p99 %.2f, p99.9 %.2f, max %.2f\n", "", p.MeanMs, p.P50Ms, p.P90Ms, p.P99Ms, p.P999Ms, p.MaxMs)
		if p.Kind == "pull" && len(p.TopStatements) > 0 {
			top := p.TopStatements[0]
			fmt.Fprintf(w, "%-52s busiest statement (%d calls): execution %.1f µs mean inside Postgres, shared blocks hit %.2f / read %.2f per call\n",
				"", top.Calls, top.MeanExecUs, top.HitPerCall, top.ReadPerCall)
		}
		if p.StatementsPerRefresh > 0 && p.Rounds == 0 {
			fmt.Fprintf(w, "%-52s statements per refresh %.2f; emulator's own time per refresh %.3f ms; tokenwarm's added p50 %.2f ms\n",
				"", p.StatementsPerRefresh, p.UpstreamMeanMs, p.AddedP50Ms)
		}
		if p.Rounds > 0 {
			fmt.Fprintf(w, "%-52s %d rounds, %.3f refreshes per round, %d rounds handed out more than one token\n",
				"", p.Rounds, p.RefreshesPerRound, p.RoundsWithSeveralTokens)
			if p.RefreshesPerRound > 1 {
				fmt.Fprintf(w, "%-52s WARNING: more than one refresh per round (I5)\n", "")
			}
		}
	}
	for _, p := range r.Phases {
		if p.OtherCores > 0.1 {
			fmt.Fprintf(w, "WARNING: other processes used %.2f cores during %q: its figures are not this code's alone\n", p.OtherCores, p.Name)
		}
	}
	fmt.Fprintln(w)
	keys := make([]string, 0, len(r.Ratios))
	for k := range r.Ratios {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		fmt.Fprintf(w, "ratio %-36s %.3f\n", k, r.Ratios[k])
	}
	fmt.Fprintf(w, "\nwall time %ds\n", r.WallSeconds)
}

func firstWords(s string, n int) string {
	f := strings.Fields(s)
	if len(f) > n {
		f = f[:n]
	}
	return strings.Join(f, " ")
}
