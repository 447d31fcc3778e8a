// Command chaos runs tokenwarm the way production does — three replicas on
// one PostgreSQL, a strict Salesforce emulator that drops, delays and fails
// answers — kills replicas and crashes the database under load, and then
// checks the invariants: no refresh token presented twice, every connection
// alive except the ones whose rotation answer provably never arrived, no 401
// to a valid device session, no 500.
//
//	go run ./cmd/chaos -duration 2m
//
// It exits non-zero with the reasons when a check fails.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	mrand "math/rand/v2"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/tokenwarm/tokenwarm/emulator"
	"github.com/tokenwarm/tokenwarm/internal/pgcluster"
)

type options struct {
	duration     time.Duration
	users        int
	callers      int
	replicas     int
	graceful     bool
	jsonPath     string
	keep         bool
	dropRate     float64
	failRate     float64
	killMin      time.Duration
	killMax      time.Duration
	pgCrash      bool
	sfTimeout    time.Duration
	commitBudget time.Duration
	backoffBase  time.Duration
	backoffMax   time.Duration
	minRefreshes int
	unattributed int
}

func main() {
	var o options
	flag.DurationVar(&o.duration, "duration", 2*time.Minute, "length of the load phase")
	flag.IntVar(&o.users, "users", 10, "app users (connections) to connect")
	flag.IntVar(&o.callers, "callers", 16, "concurrent pull callers")
	flag.IntVar(&o.replicas, "replicas", 3, "tokenwarm replicas")
	flag.BoolVar(&o.graceful, "graceful", false, "stop replicas with SIGTERM instead of SIGKILL (then no rotation may be lost)")
	flag.StringVar(&o.jsonPath, "json", "", "write the summary as JSON to this file")
	flag.BoolVar(&o.keep, "keep", false, "keep the run directory (binary, replica and emulator logs)")
	flag.Float64Var(&o.dropRate, "drop-rate", 0.02, "fraction of successful rotations whose answer the emulator drops")
	flag.Float64Var(&o.failRate, "fail-rate", 0.05, "fraction of token calls answered 503")
	flag.DurationVar(&o.killMin, "kill-min", 3*time.Second, "shortest pause between replica kills")
	flag.DurationVar(&o.killMax, "kill-max", 8*time.Second, "longest pause between replica kills")
	flag.BoolVar(&o.pgCrash, "pg-crash", true, "crash-restart PostgreSQL once mid-run")
	flag.DurationVar(&o.sfTimeout, "sf-timeout", 2*time.Second, "SALESFORCE_TIMEOUT of the replicas")
	flag.DurationVar(&o.commitBudget, "commit-budget", 3*time.Second, "TOKENWARM_COMMIT_RETRY_BUDGET of the replicas")
	flag.DurationVar(&o.backoffBase, "backoff-base", time.Second, "TOKENWARM_BACKOFF_BASE of the replicas (short, so a run is not mostly backoff)")
	flag.DurationVar(&o.backoffMax, "backoff-max", 10*time.Second, "TOKENWARM_BACKOFF_MAX of the replicas")
	flag.IntVar(&o.minRefreshes, "min-refreshes", 50, "fewest successful emulator refreshes for the run to count")
	flag.IntVar(&o.unattributed, "allow-unattributed", 0, "rotation_lost episodes the emulator cannot attribute that the run tolerates (reported either way): a replica that gave up on an answer the emulator still wrote into the socket looks delivered to it")
	flag.Parse()
	if o.users < 1 || o.callers < 1 || o.replicas < 1 || o.killMax < o.killMin {
		fmt.Fprintln(os.Stderr, "chaos: bad flags")
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM, syscall.SIGHUP)
	err := run(ctx, o)
	stop()
	if err != nil {
		fmt.Fprintf(os.Stderr, "\nchaos: FAILED\n%v\n", err)
		os.Exit(1)
	}
	fmt.Println("\nchaos: PASSED")
}

func logf(format string, args ...any) {
	fmt.Printf("%s  "+format+"\n", append([]any{time.Now().Format("15:04:05.000")}, args...)...)
}

func run(ctx context.Context, o options) (err error) {
	started := time.Now()
	dir, err := os.MkdirTemp("", "tokenwarm-chaos.")
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

	// 1. PostgreSQL. synchronous_commit=off on the server: tokenwarm must
	// ask for durable commits itself.
	logf("starting PostgreSQL")
	pgLog, _ := os.Create(filepath.Join(dir, "pgcluster.log"))
	defer pgLog.Close()
	cluster, err := pgcluster.Start(ctx, pgcluster.Options{Log: pgLog, Settings: map[string]string{
		"synchronous_commit": "off", "fsync": "off", "full_page_writes": "off", "max_connections": "300",
	}})
	if err != nil {
		return err
	}
	defer cluster.Stop()
	if err := cluster.CreateDatabase(ctx, "tokenwarm"); err != nil {
		return err
	}
	dbURL := cluster.URL("tokenwarm")

	// 2. The emulator, on one listener per replica (so a rotation tells
	// which replica it answered) plus one for the driver.
	const clientID, clientSecret = "3MVGchaos.client", "chaos-client-secret"
	sessionTimeout := 20 * time.Second
	emu := emulator.New(emulator.Config{ClientID: clientID, ClientSecret: clientSecret, AutoApprove: true, SessionTimeout: sessionTimeout})
	emuSrv := &http.Server{Handler: emu, ReadHeaderTimeout: 10 * time.Second, ErrorLog: nil}
	emuSrv.SetKeepAlivesEnabled(true)
	emuURLs := make([]string, o.replicas+1)
	listener := map[string]int{}
	for i := range emuURLs {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return err
		}
		emuURLs[i] = "http://" + ln.Addr().String()
		if i < o.replicas {
			listener[ln.Addr().String()] = i
		}
		go func() { _ = emuSrv.Serve(ln) }()
	}
	defer emuSrv.Close()
	emu.SetBaseURL(emuURLs[o.replicas])

	// 3. Build the server once and prepare the replicas.
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
	const appRedirect = "https://chaos-app.example/oauth/done"
	reps := make([]*replica, o.replicas)
	// Replicas share one public URL, as behind a load balancer: it is the
	// device JWTs' issuer and the OAuth callback. This proxy is that
	// balancer, sending each request to a random replica that is up.
	lbLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	publicURL := "http://" + lbLn.Addr().String()
	lb := &http.Server{ReadHeaderTimeout: 10 * time.Second, Handler: &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			up := make([]*replica, 0, len(reps))
			for _, r := range reps {
				if r.isUp() {
					up = append(up, r)
				}
			}
			if len(up) == 0 {
				up = reps
			}
			target, _ := url.Parse(up[mrand.IntN(len(up))].url())
			pr.SetURL(target)
			pr.Out.Host = pr.In.Host
		},
		ErrorLog: log.New(io.Discard, "", 0),
	}}
	go func() { _ = lb.Serve(lbLn) }()
	defer lb.Close()
	for i := range reps {
		addr, err := freeAddr()
		if err != nil {
			return err
		}
		env := []string{
			"PATH=" + os.Getenv("PATH"),
			"HOME=" + dir,
			"DATABASE_URL=" + dbURL,
			"TOKENWARM_SEAL_KEYS=" + strings.TrimSpace(string(key)),
			"TOKENWARM_DATA_DIR=" + filepath.Join(dir, fmt.Sprintf("data%d", i)),
			"TOKENWARM_ADDR=" + addr,
			"TOKENWARM_PUBLIC_URL=" + publicURL,
			"SALESFORCE_LOGIN_URL=" + emuURLs[i],
			"SALESFORCE_CLIENT_ID=" + clientID,
			"SALESFORCE_CLIENT_SECRET=" + clientSecret,
			"SALESFORCE_SESSION_TIMEOUT=" + sessionTimeout.String(),
			"SALESFORCE_TIMEOUT=" + o.sfTimeout.String(),
			"TOKENWARM_LOCK_TIMEOUT=5s",
			"TOKENWARM_COMMIT_RETRY_BUDGET=" + o.commitBudget.String(),
			"TOKENWARM_BACKOFF_BASE=" + o.backoffBase.String(),
			"TOKENWARM_BACKOFF_MAX=" + o.backoffMax.String(),
			"TOKENWARM_APP_REDIRECT_URIS=" + appRedirect,
			"TOKENWARM_WARM_SCHEDULE=@every 2s",
			"TOKENWARM_WARM_INTERVAL=15s",
			"TOKENWARM_DEVICE_TOKEN_TTL=1m",
			// The load is hammering on purpose: no rate limits.
			"TOKENWARM_RATE_LIMIT_SESSION_RPS=0",
			"TOKENWARM_RATE_LIMIT_IP_RPS=0",
			// Long enough for a refresh that presented its token (the
			// server refuses less).
			"TOKENWARM_SHUTDOWN_TIMEOUT=" + (2*o.sfTimeout + o.commitBudget + 10*time.Second).String(),
			"TOKENWARM_LOG_FORMAT=json",
		}
		reps[i] = &replica{idx: i, bin: bin, addr: addr, env: env, logPath: filepath.Join(dir, fmt.Sprintf("replica%d.log", i))}
	}
	defer func() {
		for _, r := range reps {
			r.stop(syscall.SIGKILL, 5*time.Second)
		}
	}()
	mig := exec.CommandContext(ctx, bin, "migrate")
	mig.Env = reps[0].env
	if out, err := mig.CombinedOutput(); err != nil {
		return fmt.Errorf("tokenwarm migrate: %w: %s", err, out)
	}
	for _, r := range reps {
		if err := r.start(); err != nil {
			return err
		}
	}
	for _, r := range reps {
		if err := r.waitReady(ctx, 60*time.Second); err != nil {
			return err
		}
	}
	logf("%d replicas ready", len(reps))

	// Faults from here on.
	emu.SetLatency(func() time.Duration { return time.Duration(50+mrand.IntN(201)) * time.Millisecond })
	emu.SetFailureRate(o.failRate, http.StatusServiceUnavailable)
	emu.SetDropRate(o.dropRate)
	emu.SetAnswerLatency(func() time.Duration { return time.Duration(mrand.IntN(151)) * time.Millisecond })

	c := newCounters()
	reauthCtx, cancelReauth := context.WithCancel(ctx)
	defer cancelReauth()
	d := &driver{
		replicas: reps, emuURL: emuURLs[o.replicas], appRedirect: appRedirect, c: c, reauthCtx: reauthCtx,
		client: &http.Client{
			Timeout:       10 * time.Second,
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
			Transport:     &http.Transport{MaxIdleConnsPerHost: 64, IdleConnTimeout: 5 * time.Second},
		},
	}

	// 4. Connect every user through the real flow.
	logf("connecting %d users", o.users)
	d.users = make([]*appUser, o.users)
	var wg sync.WaitGroup
	errs := make(chan error, o.users)
	for i := range d.users {
		u := &appUser{name: fmt.Sprintf("user%d@example.com", i)}
		d.users[i] = u
		wg.Go(func() {
			if err := d.connect(ctx, u, 90*time.Second); err != nil {
				errs <- err
			}
		})
	}
	wg.Wait()
	close(errs)
	if err := <-errs; err != nil {
		return err
	}
	if ctx.Err() != nil {
		return ctx.Err()
	}
	refreshesBefore := emu.Stats().Refreshes

	// 5. Load, kills and one database crash.
	logf("load for %s: %d callers, kills every %s-%s (graceful=%v)", o.duration, o.callers, o.killMin, o.killMax, o.graceful)
	loadCtx, cancelLoad := context.WithTimeout(ctx, o.duration)
	defer cancelLoad()
	var (
		killsMu   sync.Mutex
		kills     []kill
		termStops int
		selfExits int
		pgCrashAt time.Time
		pgCrashMs int64
		lastKill  time.Time
	)
	var bg sync.WaitGroup
	for range o.callers {
		bg.Go(func() { d.caller(loadCtx) })
	}
	bg.Go(func() { // killer
		for sleepCtx(loadCtx, o.killMin+time.Duration(mrand.Int64N(int64(o.killMax-o.killMin)+1))) {
			r := reps[mrand.IntN(len(reps))]
			if !r.isUp() {
				continue
			}
			at := time.Now()
			if o.graceful {
				r.stop(syscall.SIGTERM, 40*time.Second)
			} else {
				r.stop(syscall.SIGKILL, 5*time.Second)
			}
			killsMu.Lock()
			if o.graceful {
				termStops++
			} else {
				kills = append(kills, kill{replica: r.idx, at: at})
			}
			lastKill = time.Now()
			killsMu.Unlock()
			logf("replica %d stopped (%s)", r.idx, map[bool]string{true: "SIGTERM", false: "SIGKILL"}[o.graceful])
			sleepCtx(loadCtx, time.Second+time.Duration(mrand.Int64N(int64(time.Second))))
			if err := r.start(); err != nil {
				logf("restart replica %d: %v", r.idx, err)
			}
		}
	})
	bg.Go(func() { // replicas that die on their own come back
		for sleepCtx(loadCtx, 500*time.Millisecond) {
			for _, r := range reps {
				if r.exited() {
					killsMu.Lock()
					selfExits++
					killsMu.Unlock()
					logf("replica %d exited on its own; restarting (log %s)", r.idx, r.logPath)
					r.stop(syscall.SIGKILL, time.Second)
					sleepCtx(loadCtx, time.Second)
					_ = r.start()
				}
			}
		}
	})
	if o.pgCrash {
		bg.Go(func() {
			if !sleepCtx(loadCtx, o.duration*2/5) {
				return
			}
			at := time.Now()
			logf("crashing PostgreSQL (pg_ctl restart -m immediate)")
			rctx, cancel := context.WithTimeout(ctx, 90*time.Second)
			defer cancel()
			if err := cluster.Restart(rctx, "immediate"); err != nil {
				logf("PostgreSQL restart failed: %v", err)
				c.inc("FAIL PostgreSQL restart")
				return
			}
			killsMu.Lock()
			pgCrashAt, pgCrashMs = at, time.Since(at).Milliseconds()
			killsMu.Unlock()
			logf("PostgreSQL back after %d ms", pgCrashMs)
		})
	}
	bg.Wait()
	logf("load over; waiting for reauthorizations")
	reauthDone := make(chan struct{})
	go func() { d.reauths.Wait(); close(reauthDone) }()
	select {
	case <-reauthDone:
	case <-time.After(100 * time.Second):
		cancelReauth()
		<-reauthDone
	}
	if ctx.Err() != nil {
		return ctx.Err()
	}

	// 7. Everything up, leases expired, then one forced refresh per
	// connection and its token used at the emulator.
	for _, r := range reps {
		if r.exited() {
			r.stop(syscall.SIGKILL, time.Second)
		}
		if err := r.start(); err != nil {
			return err
		}
	}
	for _, r := range reps {
		if err := r.waitReady(ctx, 60*time.Second); err != nil {
			return err
		}
	}
	lease := o.sfTimeout + o.commitBudget + 5*time.Second
	killsMu.Lock()
	settle := time.Until(lastKill.Add(lease*3/2 + 2*time.Second))
	killsMu.Unlock()
	if settle > 0 {
		logf("waiting %s for attempt leases to expire", settle.Round(time.Second))
		if !sleepCtx(ctx, settle) {
			return ctx.Err()
		}
	}
	logf("final check of %d connections", len(d.users))
	finalCtx, cancelFinal := context.WithTimeout(ctx, 90*time.Second)
	defer cancelFinal()
	verified := map[string]bool{}
	var vmu sync.Mutex
	for _, u := range d.users {
		wg.Go(func() {
			if u.dead.Load() || !u.connected.Load() {
				return
			}
			d.ensureDevice(finalCtx, u, true)
			deadline := time.Now().Add(60 * time.Second)
			for time.Now().Before(deadline) && finalCtx.Err() == nil {
				q := map[string][]string{"min_validity": {"5"}}
				if t := u.last(); t != "" {
					q["rejected_token"] = []string{t}
				}
				res := d.pull(finalCtx, u, q)
				if res.reauth != "" {
					u.dead.Store(true)
					u.addEpisode(res.reauth)
					c.inc("final: reauth_required: " + shortReason(res.reauth))
					return
				}
				if res.unauthorized != "" {
					d.recoverDevice(finalCtx, u, res.unauthorized)
				}
				if tok := res.token; tok != "" {
					if d.checkAtEmulator(finalCtx, u, tok, true) {
						vmu.Lock()
						verified[u.name] = true
						vmu.Unlock()
					}
					return
				}
				if !res.retry {
					return
				}
				sleepCtx(finalCtx, 500*time.Millisecond)
			}
			c.inc("FAIL final: no answer within 60s")
		})
	}
	wg.Wait()

	// 8. State from the database, the emulator's books, matching, checks.
	st := emu.Stats()
	conns, events, err := readDB(ctx, dbURL)
	if err != nil {
		return err
	}
	byConn := map[string]*appUser{}
	for _, u := range d.users {
		byConn[u.connID] = u
	}
	episodes := map[string][]string{}
	current := map[string]string{}
	statusCount := map[string]int{}
	var problems []string
	for _, u := range d.users {
		episodes[u.name] = u.getEpisodes()
	}
	for _, cn := range conns {
		u := byConn[cn.id]
		key := cn.status
		if cn.status == "needs_reauth" {
			key += " (" + shortReason(cn.reason) + ")"
		}
		statusCount[key]++
		if u == nil {
			problems = append(problems, fmt.Sprintf("connection %s belongs to no driven user", cn.id))
			continue
		}
		switch {
		case cn.status == "active" && verified[u.name]:
			if rt, ok := emu.CurrentRefreshToken(emu.OrgID(), cn.userID); ok {
				current[u.name] = rt
			}
		case cn.status == "needs_reauth":
			if !u.dead.Load() { // found at the end without a 409 seen
				episodes[u.name] = append(episodes[u.name], cn.reason)
			}
		default:
			problems = append(problems, fmt.Sprintf("connection of %s ended %s without a working token", u.name, cn.status))
		}
	}
	if len(conns) != len(d.users) {
		problems = append(problems, fmt.Sprintf("%d connections in the database, want %d", len(conns), len(d.users)))
	}
	// A replica owns an attempt for its lease (SALESFORCE_TIMEOUT + commit
	// budget + 5s from the claim): until then it may still be storing the
	// answer, and a kill in that time loses it.
	window := o.sfTimeout + o.commitBudget + 6*time.Second
	lost, err := readLostAttempts(ctx, dbURL, byConn, reps)
	if err != nil {
		return err
	}
	rep := matchLosses(lossInput{episodes: episodes, rotations: emu.Rotations(), kills: kills, listener: listener, lost: lost,
		window: window, inflight: o.sfTimeout, current: current})
	lostByWhy := map[string]int{}
	for _, l := range emu.LostRotations() {
		lostByWhy[l.Why]++
	}
	leaks := scanLeaks(emu.IssuedTokens(), append([]string{filepath.Join(dir, "pgcluster.log"), cluster.LogPath()}, logPaths(reps)...))

	sum := summary{
		Duration: o.duration.String(), Users: o.users, Callers: o.callers, Replicas: o.replicas, Graceful: o.graceful,
		Outcomes: c.snapshot(), Kills: len(kills), GracefulStops: termStops, ReplicaSelfExits: selfExits,
		PGRestarts: btoi(!pgCrashAt.IsZero()), PGRestartMs: pgCrashMs,
		EmulatorRefreshes: st.Refreshes, RefreshesDuringLoad: st.Refreshes - refreshesBefore, Exchanges: st.Exchanges,
		TokenCalls: st.TokenCalls, InjectedFailures: st.InjectedFailures,
		LostRotationsByWhy: lostByWhy, StalePresentations: st.StalePresentations,
		ConcurrentPresentations: st.ConcurrentPresentations, MaxConcurrentPresentations: st.MaxConcurrentPresentations,
		CallsAfterDead: st.CallsAfterDead, ChainsRevoked: st.ChainsRevoked, Introspections: st.Introspections,
		RefreshIntrospections: st.RefreshIntrospections, Revocations: st.Revocations,
		ConnectionsByStatus: statusCount, Events: events, Losses: rep, TokenLeaks: leaks,
		WallSeconds: int(time.Since(started).Seconds()),
	}
	// Assertions.
	check := func(ok bool, format string, args ...any) {
		if !ok {
			problems = append(problems, fmt.Sprintf(format, args...))
		}
	}
	check(st.StalePresentations == 0, "reuse: %d stale refresh-token presentations at the emulator (each revoked a chain)", st.StalePresentations)
	check(st.ConcurrentPresentations == 0 && st.MaxConcurrentPresentations <= 1, "concurrent presentations: %d (max %d in flight for one chain)", st.ConcurrentPresentations, st.MaxConcurrentPresentations)
	check(st.CallsAfterDead == 0, "%d refresh calls for chains already declared dead", st.CallsAfterDead)
	for _, k := range sortedKeys(sum.Outcomes) {
		check(!strings.HasPrefix(k, "FAIL "), "%d × %s", sum.Outcomes[k], strings.TrimPrefix(k, "FAIL "))
	}
	unmatched := 0
	for _, n := range rep.Unmatched {
		unmatched += n
	}
	for u, n := range rep.Unmatched {
		if unmatched > o.unattributed {
			check(false, "%s: %d rotation_lost connection(s) not matched to a lost rotation of that user at the emulator", u, n)
		} else {
			logf("tolerated (-allow-unattributed %d): %s: %d rotation_lost connection(s) not matched to a lost rotation of that user", o.unattributed, u, n)
		}
	}
	for _, d := range rep.Details {
		fmt.Fprint(os.Stderr, d)
	}
	for u, rs := range rep.OtherReauth {
		check(false, "%s: needs_reauth for a reason other than rotation_lost: %q", u, rs)
	}
	check(st.Refreshes >= o.minRefreshes, "only %d successful refreshes at the emulator (want >= %d): the run proves nothing", st.Refreshes, o.minRefreshes)
	check(len(kills)+termStops == 0 || sum.RefreshesDuringLoad >= len(kills)+termStops, "%d refreshes during load for %d kills", sum.RefreshesDuringLoad, len(kills)+termStops)
	if o.graceful {
		// A stop with SIGTERM loses nothing: the only losses allowed are
		// the answers the emulator dropped on purpose.
		stopLosses := rep.RotationLost - min(rep.RotationLost, lostByWhy[emulator.LostDropped])
		check(stopLosses == 0 && rep.Candidates[emulator.LostClientGone] == 0 && rep.Candidates[candKilledAfter] == 0,
			"graceful run lost %d rotations that no dropped answer explains (client gone: %d)", stopLosses, rep.Candidates[emulator.LostClientGone])
	}
	check(leaks == 0, "%d tokens found in the logs", leaks)
	sum.Failures = problems
	sum.Passed = len(problems) == 0
	printSummary(sum)
	if o.jsonPath != "" {
		b, _ := json.MarshalIndent(sum, "", "  ")
		if err := os.WriteFile(o.jsonPath, append(b, '\n'), 0o644); err != nil {
			return err
		}
	}
	if len(problems) > 0 {
		if !o.keep {
			fmt.Println("(rerun with -keep to keep the replica logs)")
		}
		return errors.New(" - " + strings.Join(problems, "\n - "))
	}
	return nil
}

func btoi(b bool) int {
	if b {
		return 1
	}
	return 0
}

func logPaths(reps []*replica) []string {
	var out []string
	for _, r := range reps {
		out = append(out, r.logPath)
	}
	return out
}

type connRow struct {
	id, userID, status, reason string
}

// readDB reads the final connection state and event counts directly.
func readDB(ctx context.Context, dbURL string) ([]connRow, map[string]int, error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, dbURL)
	if err != nil {
		return nil, nil, err
	}
	defer conn.Close(context.Background())
	rows, err := conn.Query(ctx, `SELECT id::text, user_id, status, reauth_reason FROM connections ORDER BY created_at`)
	if err != nil {
		return nil, nil, err
	}
	var conns []connRow
	for rows.Next() {
		var r connRow
		if err := rows.Scan(&r.id, &r.userID, &r.status, &r.reason); err != nil {
			return nil, nil, err
		}
		conns = append(conns, r)
	}
	if err := rows.Err(); err != nil {
		return nil, nil, err
	}
	events := map[string]int{}
	rows, err = conn.Query(ctx, `SELECT kind, count(*) FROM events GROUP BY kind`)
	if err != nil {
		return nil, nil, err
	}
	for rows.Next() {
		var k string
		var n int
		if err := rows.Scan(&k, &n); err != nil {
			return nil, nil, err
		}
		events[k] = n
	}
	return conns, events, rows.Err()
}

// lostDetail is how a rotation_lost event names the attempt it settles.
var lostDetail = regexp.MustCompile(`attempt by (\S+) started (\S+);`)

// readLostAttempts reads the attempts tokenwarm recorded as lost (its
// rotation_lost events) with the replica whose process presented: a
// worker ID is the host name and the process ID.
func readLostAttempts(ctx context.Context, dbURL string, byConn map[string]*appUser, reps []*replica) ([]lostAttempt, error) {
	host, err := os.Hostname()
	if err != nil {
		return nil, err
	}
	worker := map[string]int{}
	for _, r := range reps {
		for _, pid := range r.processIDs() {
			worker[fmt.Sprintf("%s-%d", host, pid)] = r.idx
		}
	}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, dbURL)
	if err != nil {
		return nil, err
	}
	defer conn.Close(context.Background())
	rows, err := conn.Query(ctx, `SELECT connection_id::text, detail FROM events WHERE kind = 'rotation_lost' AND connection_id IS NOT NULL`)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []lostAttempt
	for rows.Next() {
		var id, detail string
		if err := rows.Scan(&id, &detail); err != nil {
			return nil, err
		}
		m := lostDetail.FindStringSubmatch(detail)
		u := byConn[id]
		if m == nil || u == nil {
			continue
		}
		rep, ok := worker[m[1]]
		started, err := time.Parse(time.RFC3339, m[2])
		if !ok || err != nil {
			continue
		}
		out = append(out, lostAttempt{user: u.name, replica: rep, started: started})
	}
	return out, rows.Err()
}

// scanLeaks counts issued tokens that appear in the files.
func scanLeaks(issued []string, files []string) int {
	set := map[string]bool{}
	lengths := map[int]bool{}
	for _, t := range issued {
		set[t] = true
		lengths[len(t)] = true
	}
	n := 0
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		s := string(b)
		for l := range lengths {
			for i := 0; i+l <= len(s); i++ {
				// Tokens start with an alphanumeric; check only at
				// boundaries to keep this linear-ish.
				if i > 0 && isTokenChar(s[i-1]) {
					continue
				}
				if set[s[i:i+l]] {
					n++
				}
			}
		}
	}
	return n
}

func isTokenChar(c byte) bool {
	return 'A' <= c && c <= 'Z' || 'a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '-' || c == '_' || c == '!'
}

type summary struct {
	Passed                     bool           `json:"passed"`
	Failures                   []string       `json:"failures,omitempty"`
	Duration                   string         `json:"duration"`
	WallSeconds                int            `json:"wall_seconds"`
	Users                      int            `json:"users"`
	Callers                    int            `json:"callers"`
	Replicas                   int            `json:"replicas"`
	Graceful                   bool           `json:"graceful"`
	Outcomes                   map[string]int `json:"outcomes"`
	Kills                      int            `json:"kills"`
	GracefulStops              int            `json:"graceful_stops"`
	ReplicaSelfExits           int            `json:"replica_self_exits"`
	PGRestarts                 int            `json:"pg_restarts"`
	PGRestartMs                int64          `json:"pg_restart_ms"`
	EmulatorRefreshes          int            `json:"emulator_refreshes"`
	RefreshesDuringLoad        int            `json:"refreshes_during_load"`
	Exchanges                  int            `json:"exchanges"`
	TokenCalls                 int            `json:"token_calls"`
	InjectedFailures           int            `json:"injected_failures"`
	LostRotationsByWhy         map[string]int `json:"lost_rotations_by_why"`
	StalePresentations         int            `json:"stale_presentations"`
	ConcurrentPresentations    int            `json:"concurrent_presentations"`
	MaxConcurrentPresentations int            `json:"max_concurrent_presentations"`
	CallsAfterDead             int            `json:"calls_after_dead"`
	ChainsRevoked              int            `json:"chains_revoked"`
	Introspections             int            `json:"introspections"`
	RefreshIntrospections      int            `json:"refresh_introspections"`
	Revocations                int            `json:"revocations"`
	ConnectionsByStatus        map[string]int `json:"connections_by_status"`
	Events                     map[string]int `json:"events"`
	Losses                     lossReport     `json:"losses"`
	TokenLeaks                 int            `json:"token_leaks"`
}

func printSummary(s summary) {
	w := os.Stdout
	row := func(k string, v any) { fmt.Fprintf(w, "  %-58s %v\n", k, v) }
	section := func(t string) { fmt.Fprintf(w, "\n%s\n", t) }
	section("requests by outcome")
	for _, k := range sortedKeys(s.Outcomes) {
		row(k, s.Outcomes[k])
	}
	section("chaos")
	row("replica SIGKILLs", s.Kills)
	row("replica SIGTERMs", s.GracefulStops)
	row("replicas that exited on their own", s.ReplicaSelfExits)
	row("PostgreSQL crash restarts", s.PGRestarts)
	row("PostgreSQL restart ms", s.PGRestartMs)
	section("emulator")
	row("successful refreshes (rotations)", s.EmulatorRefreshes)
	row("  of which during load", s.RefreshesDuringLoad)
	row("code exchanges", s.Exchanges)
	row("token calls / injected failures", fmt.Sprintf("%d / %d", s.TokenCalls, s.InjectedFailures))
	for _, k := range sortedKeys(s.LostRotationsByWhy) {
		row("lost rotations: "+k, s.LostRotationsByWhy[k])
	}
	row("REUSE: stale presentations", s.StalePresentations)
	row("concurrent presentations (max in flight)", fmt.Sprintf("%d (%d)", s.ConcurrentPresentations, s.MaxConcurrentPresentations))
	row("calls after dead", s.CallsAfterDead)
	row("chains revoked", s.ChainsRevoked)
	row("introspections (of refresh tokens)", fmt.Sprintf("%d (%d)", s.Introspections, s.RefreshIntrospections))
	row("revocations", s.Revocations)
	section("connections (database, final)")
	for _, k := range sortedKeys(s.ConnectionsByStatus) {
		row(k, s.ConnectionsByStatus[k])
	}
	section("events (database)")
	for _, k := range sortedKeys(s.Events) {
		row(k, s.Events[k])
	}
	section("losses")
	row("rotation_lost episodes", s.Losses.RotationLost)
	row("matched to a lost rotation of the same user", s.Losses.Matched)
	for _, k := range sortedKeys(s.Losses.Candidates) {
		row("candidate lost rotations: "+k, s.Losses.Candidates[k])
	}
	row("tokens found in logs", s.TokenLeaks)
	fmt.Fprintf(w, "\nwall time %ds\n", s.WallSeconds)
}
