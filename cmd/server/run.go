package main

import (
	"context"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/tokenwarm/tokenwarm/adminkeys"
	"github.com/tokenwarm/tokenwarm/emulator"
	"github.com/tokenwarm/tokenwarm/handlers"
	"github.com/tokenwarm/tokenwarm/metrics"
	"github.com/tokenwarm/tokenwarm/models"
	"github.com/tokenwarm/tokenwarm/pkce"
	"github.com/tokenwarm/tokenwarm/restore"
	"github.com/tokenwarm/tokenwarm/seal"
	"github.com/tokenwarm/tokenwarm/vault"
	"github.com/tokenwarm/tokenwarm/warmer"
	"github.com/tokenwarm/tokenwarm/webhooks"
)

// demoClientID and demoClientSecret are the built-in emulator's connected
// app in demo mode. They protect nothing.
const (
	demoClientID     = "tokenwarm-demo"
	demoClientSecret = "tokenwarm-demo-secret"
	emulatorPrefix   = "/_emulator"
)

// adminSessionLabel derives the admin UI's session ring from the seal keys
// (seal.Ring.Derive). Changing it signs every admin out.
const adminSessionLabel = "tokenwarm admin session v1"

func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	cmd := "serve"
	if len(args) > 0 {
		cmd, args = args[0], args[1:]
	}
	switch cmd {
	case "-h", "--help", "-help", "help":
		printUsage(stdout)
		return nil
	case "config":
		printConfig(stdout, getenv)
		return nil
	case "keygen":
		// The key ID names the key in sealed values and in reseal's report;
		// the default (the date) repeats if two keys are made in one day.
		kid := "k" + time.Now().UTC().Format("20060102")
		if len(args) > 0 {
			kid = args[0]
		}
		key, err := seal.GenerateKey(kid)
		if err != nil {
			return err
		}
		if _, err := seal.ParseRing(key); err != nil {
			return err
		}
		fmt.Fprintln(stdout, key)
		return nil
	case "webhook-secret":
		fmt.Fprintln(stdout, webhooks.NewSecret())
		return nil
	case "emulator":
		return runEmulator(ctx, args, stdout)
	case "healthcheck":
		return healthcheck(ctx, args, getenv, stdout)
	case "egress":
		return egressCommand(ctx, args, getenv, stdout)
	case "serve", "migrate", "reseal", "rotate-signing-key", "retire-signing-key", "admin-key", "purge", "restore":
	default:
		printUsage(stderr)
		return fmt.Errorf("unknown command %q", cmd)
	}

	cfg, err := loadConfig(getenv)
	if err != nil {
		return fmt.Errorf("configuration:\n%w", err)
	}
	log := newLogger(stderr, cfg)
	// One serve or reseal per embedded database: refreshes are serialised
	// in-process on SQLite. admin-key, purge and migrate never present a
	// token, so they work next to a running server.
	if cfg.Embedded() && (cmd == "serve" || cmd == "reseal" || cmd == "restore") {
		lock, err := lockDataDir(cfg.DataDir)
		if le := (*lockedError)(nil); errors.As(err, &le) {
			if cmd != "serve" {
				return fmt.Errorf("%s needs the embedded database to itself: stop the server first (lock %s is held%s)",
					cmd, lockDisplay(cfg.DataDir), le.by())
			}
			return fmt.Errorf("another tokenwarm server is using the data directory %s (lock %s is held%s); stop it first or set TOKENWARM_DATA_DIR",
				cfg.DataDir, lockDisplay(cfg.DataDir), le.by())
		}
		if err != nil {
			return err
		}
		defer lock.release()
	}
	db, ring, err := openStorage(cfg, log)
	if err != nil {
		return err
	}
	defer db.Close()

	switch cmd {
	case "migrate":
		applied, err := db.Migrate(ctx)
		if err != nil {
			return err
		}
		fmt.Fprintf(stdout, "applied %d migration(s) to %s\n", len(applied), db.Where)
		return nil
	case "reseal":
		if _, err := db.Migrate(ctx); err != nil {
			return err
		}
		return reseal(ctx, cfg, db, ring, log, stdout)
	case "rotate-signing-key":
		if _, err := db.Migrate(ctx); err != nil {
			return err
		}
		return rotateSigningKey(ctx, cfg, db, ring, stdout)
	case "retire-signing-key":
		if _, err := db.Migrate(ctx); err != nil {
			return err
		}
		return retireSigningKey(ctx, cfg, db, ring, args, stdout)
	case "admin-key":
		if _, err := db.Migrate(ctx); err != nil {
			return err
		}
		return adminKey(ctx, adminkeys.New(db, nil), args, stdout, stderr)
	case "restore":
		return restoreCommand(ctx, cfg, db, ring, log, args, stdout)
	case "purge":
		if _, err := db.Migrate(ctx); err != nil {
			return err
		}
		p, err := housekeep(ctx, cfg, db, time.Now())
		if err != nil {
			return err
		}
		fmt.Fprintf(stdout, "deleted %s\n", p)
		return nil
	}
	return serve(ctx, cfg, db, ring, log, stdout)
}

// lockDisplay names the lock file of dir as the operator wrote dir.
func lockDisplay(dir string) string {
	return strings.TrimRight(dir, "/") + "/" + lockName
}

// adminKey runs `admin-key create NAME`, `admin-key revoke NAME` and
// `admin-key list`. The key goes to stdout alone, so scripts can capture it;
// the warning goes to stderr.
func adminKey(ctx context.Context, keys *adminkeys.Store, args []string, stdout, stderr io.Writer) error {
	usage := errors.New("usage: tokenwarm admin-key create NAME | revoke NAME | list")
	if len(args) == 0 {
		return usage
	}
	switch {
	case args[0] == "create" && len(args) == 2:
		key, err := keys.Create(ctx, args[1])
		if err != nil {
			return err
		}
		fmt.Fprintln(stdout, key)
		fmt.Fprintf(stderr, "admin key %q created. Store it now: it is not kept and will not be shown again.\n", args[1])
		return nil
	case args[0] == "revoke" && len(args) == 2:
		if err := keys.Revoke(ctx, args[1]); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "admin key %q revoked\n", args[1])
		return nil
	case args[0] == "list" && len(args) == 1:
		list, err := keys.List(ctx)
		if err != nil {
			return err
		}
		tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "NAME\tPREFIX\tCREATED\tLAST USED\tREVOKED")
		when := func(t *time.Time) string {
			if t == nil {
				return "-"
			}
			return t.UTC().Format(time.RFC3339)
		}
		for _, k := range list {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", k.Name, k.Prefix, k.CreatedAt.UTC().Format(time.RFC3339), when(k.LastUsedAt), when(k.RevokedAt))
		}
		return tw.Flush()
	}
	return usage
}

func newLogger(w io.Writer, cfg *Config) *slog.Logger {
	var level slog.Level
	_ = level.UnmarshalText([]byte(cfg.LogLevel))
	opts := &slog.HandlerOptions{Level: level}
	if cfg.LogFormat == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}

func openStorage(cfg *Config, log *slog.Logger) (*models.DB, *seal.Ring, error) {
	var ring *seal.Ring
	switch {
	case cfg.SealKeys != "":
		r, err := seal.ParseRing(cfg.SealKeys)
		if err != nil {
			return nil, nil, fmt.Errorf("TOKENWARM_SEAL_KEYS: %w", err)
		}
		ring = r
	case cfg.Embedded():
		path := filepath.Join(cfg.DataDir, "seal.key")
		r, created, err := seal.LoadOrCreateKeyFile(path)
		if err != nil {
			return nil, nil, fmt.Errorf("development seal key %s: %w", path, err)
		}
		if created {
			log.Warn("GENERATED A DEVELOPMENT SEAL KEY: tokens are encrypted with a key stored next to them. Set TOKENWARM_SEAL_KEYS for anything but a trial", "path", path)
		} else {
			log.Warn("using the development seal key from the data dir; set TOKENWARM_SEAL_KEYS for anything but a trial", "path", path)
		}
		ring = r
	default:
		return nil, nil, errors.New("TOKENWARM_SEAL_KEYS is required with DATABASE_URL (make one with: tokenwarm keygen)")
	}
	db, err := models.Open(cfg.DatabaseURL, cfg.DataDir, models.Options{MaxOpenConns: cfg.DBMaxConns, Pooler: cfg.DBPooler})
	if err != nil {
		return nil, nil, err
	}
	return db, ring, nil
}

type readiness struct{ db *models.DB }

func (r readiness) Ready(ctx context.Context) error {
	if err := r.db.Ping(ctx); err != nil {
		return errors.New("database unreachable")
	}
	n, err := r.db.Pending(ctx)
	if err != nil {
		return errors.New("cannot read migration state")
	}
	if n > 0 {
		return fmt.Errorf("%d migration(s) pending", n)
	}
	return nil
}

func serve(ctx context.Context, cfg *Config, db *models.DB, ring *seal.Ring, log *slog.Logger, stdout io.Writer) error {
	applied, err := db.Migrate(ctx)
	if err != nil {
		return err
	}
	if len(applied) > 0 {
		log.Info("migrations applied", "versions", applied, "database", db.Where)
	}

	// One clock for the server and the built-in emulator: the wall clock,
	// except in a test build (clock_test_build.go).
	clk, err := serverClock(cfg)
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", cfg.Addr)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", cfg.Addr, err)
	}
	base := "http://" + ln.Addr().String()
	if cfg.PublicURL == "" {
		cfg.PublicURL = base
	}

	mounts := map[string]http.Handler{}
	loginURL, clientID, clientSecret := cfg.LoginURL, cfg.ClientID, cfg.ClientSecret
	if cfg.Demo() {
		emu := emulator.New(emulator.Config{ClientID: demoClientID, ClientSecret: demoClientSecret, SessionTimeout: cfg.SessionTimeout, Clock: clk})
		emu.SetBaseURL(cfg.PublicURL + emulatorPrefix)
		mounts[emulatorPrefix] = emu
		loginURL, clientID, clientSecret = cfg.PublicURL+emulatorPrefix, demoClientID, demoClientSecret
	}

	sf := salesforceClient(cfg, clientID, clientSecret, clk)
	met := metrics.New(db, cfg.RefreshIdleTTL, clk, log)
	endpoints := announceWebhooks(db, cfg)
	vcfg := vaultConfig(cfg, met.ObserveRefresh)
	vcfg.Stored = met.EventStored
	v := vault.New(db, ring, sf, clk, log, vcfg)
	// A database restored from a backup holds refresh tokens Salesforce
	// rotated since: nothing is presented until every one was verified.
	guard := restore.NewGuard(db, cfg.DataDir, clk, log, v.Config().Worker)
	if err := guard.Check(ctx); err != nil {
		log.Error("could not check the database's history; refreshes are held until a check succeeds", "err", err)
	}
	v.SetHold(guard)
	met.WatchHold(v.Held)
	warm := warmer.New(v, db, clk, log, warmer.Config{Concurrency: cfg.WarmConcurrency, BatchSize: cfg.WarmBatch,
		RiskThreshold: cfg.IdleRiskBefore, RefreshMaxAge: cfg.RefreshMaxAge, ReauthSoon: cfg.ReauthSoon})
	// Pulls respect the app-wide pause, and their configuration errors
	// raise it: one alert, no flood of refused refreshes.
	v.SetPause(warm)
	met.WatchWarmer(warm.Stats)
	mountTestClock(mounts, clk, warm, log)
	dev := deviceService(cfg, db, ring, clk, met.DeviceReuse)
	if err := dev.EnsureSigningKey(ctx); err != nil {
		return fmt.Errorf("device signing key: %w", err)
	}
	redirects := cfg.AppRedirectURIs
	if cfg.Demo() {
		redirects = append(redirects, cfg.PublicURL+handlers.DemoRedirectPath)
	}
	pending := pkce.NewStore(db, ring, clk, 0)
	// The admin UI's sessions have keys of their own, derived from the
	// seal keys: the same on every replica and after a restart.
	sessions, err := ring.Derive(adminSessionLabel)
	if err != nil {
		return fmt.Errorf("admin session keys: %w", err)
	}
	api := handlers.NewAPI(handlers.APIConfig{PublicURL: cfg.PublicURL, LoginURL: loginURL, ClientID: clientID, AppRedirectURIs: redirects, AppClients: cfg.AppClients,
		ReauthLinkTTL: cfg.ReauthLinkTTL, AdminSessionTTL: cfg.AdminSessionTTL,
		AllowAnyLoginHost: cfg.Demo(), Demo: cfg.Demo(), AdminSessions: sessions, AdminStore: db, ValidateOrgIdleTTL: cfg.ValidateIdleTTL,
		RefreshMaxAge: cfg.RefreshMaxAge, ReauthSoon: cfg.ReauthSoon}, log, v, dev, pending, sf, ring, nil)

	limits := cfg.RateLimits
	limits.Limited = met.RateLimited
	router := handlers.New(handlers.Deps{Log: log, Ready: readiness{db}, API: api, Metrics: met.Handler(), Mount: mounts,
		RateLimits: limits, TrustedProxies: cfg.TrustedProxies})
	srv := &http.Server{Handler: router, ReadHeaderTimeout: 10 * time.Second}

	if cfg.DebugAddr != "" { // before the API serves: a failure here stops nothing
		dbg, err := startDebug(cfg.DebugAddr)
		if err != nil {
			return err
		}
		defer dbg.Close()
		log.Info("profiler listening", "listen", dbg.Addr)
	}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	dispatcher := webhooks.NewDispatcher(db, endpoints, clk, nil, log, webhooks.Config{BaseBackoff: cfg.WebhookRetry, NoLegacySignature: !cfg.WebhookLegacySignature,
		Observe: met.WebhookAttempt})
	stopJobs, err := startJobs(ctx, log,
		job{name: "webhooks", spec: "@every 1s", run: dispatcher.Pass},
		job{name: "housekeeping", spec: housekeepEvery, run: housekeepJob(cfg, db, log)},
		job{name: "restore-guard", spec: "@every " + cfg.RestoreCheckInterval.String(), run: guardJob(guard, log)})
	if err != nil {
		return err
	}
	defer stopJobs()
	if err := warm.Start(cfg.WarmSchedule); err != nil {
		return fmt.Errorf("warmer: %w", err)
	}

	log.Info("tokenwarm started", "worker", v.Config().Worker, "listen", ln.Addr().String(), "public_url", cfg.PublicURL,
		"database", db.Where, "salesforce", loginURL, "seal_key", ring.ActiveKeyID())
	fmt.Fprintf(stdout, "tokenwarm is listening on %s\n", base)
	fmt.Fprintf(stdout, "  health:    %s/healthz\n", base)
	if cfg.Demo() {
		fmt.Fprintf(stdout, "  demo mode: the built-in Salesforce emulator answers at %s\n", loginURL)
		fmt.Fprintf(stdout, "  open %s/ in a browser to walk through the connect flow\n", cfg.PublicURL)
	}

	select {
	case err := <-errc:
		return fmt.Errorf("http server: %w", err)
	case <-ctx.Done():
	}
	log.Info("shutting down")
	sctx, cancel := context.WithTimeout(context.Background(), cfg.ShutdownTimeout)
	defer cancel()
	// No new presentation of a refresh token from here on (a pull that
	// needs one gets 503 and retries on another replica); every refresh
	// that presented one, whoever started it (a pull, even one whose caller
	// gave up, the warmer, an admin, a background revalidation), runs on
	// until its outcome is stored, before the pool closes.
	v.Drain()
	warmDone := warm.Stop()
	if err := srv.Shutdown(sctx); err != nil {
		return fmt.Errorf("shutdown: %w", err)
	}
	select {
	case <-warmDone.Done():
	case <-sctx.Done():
		return errors.New("shutdown: warm refreshes still running at the shutdown timeout")
	}
	if err := v.Wait(sctx); err != nil {
		return fmt.Errorf("shutdown: refreshes still running: %w", err)
	}
	// Every rotation is stored: remember the database's history up to
	// here, so a restore of an older backup is recognised at the next
	// start.
	if err := guard.Check(sctx); err != nil {
		log.Warn("could not record the database's history at shutdown", "err", err)
	}
	log.Info("shut down: every refresh stored")
	return nil
}

// salesforceTransport sends token calls through the configured egress
// proxy and no other.
func salesforceTransport(cfg *Config) *http.Transport {
	t := http.DefaultTransport.(*http.Transport).Clone()
	// One kept-alive connection per concurrent refresh: a TLS handshake
	// through the egress proxy per refresh would cost more than the refresh.
	t.MaxIdleConnsPerHost = cfg.DBMaxConns / 2
	// Only the configured proxy: an ambient HTTPS_PROXY would send refresh
	// tokens somewhere the IP allowlist does not know.
	t.Proxy = nil
	if u, err := url.Parse(cfg.ProxyURL); cfg.ProxyURL != "" && err == nil {
		t.Proxy = http.ProxyURL(u)
	}
	// Extra roots (SALESFORCE_CA_FILE) for a private-CA egress; they also
	// verify an https proxy, which Go's transport dials with this config.
	if cfg.CAPool != nil {
		tc := &tls.Config{MinVersion: tls.VersionTLS12}
		if t.TLSClientConfig != nil {
			tc = t.TLSClientConfig.Clone()
		}
		tc.RootCAs = cfg.CAPool
		t.TLSClientConfig = tc
	}
	return t
}

func runEmulator(ctx context.Context, args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("emulator", flag.ContinueOnError)
	fs.SetOutput(stdout)
	addr := fs.String("addr", "127.0.0.1:8181", "listen address")
	clientID := fs.String("client-id", demoClientID, "connected app consumer key")
	clientSecret := fs.String("client-secret", demoClientSecret, "connected app consumer secret")
	session := fs.Duration("session-timeout", 2*time.Hour, "access-token lifetime")
	autoApprove := fs.Bool("auto-approve", false, "approve authorizations without showing the consent page")
	certFile := fs.String("tls-cert", "", "serve HTTPS with this PEM certificate (chain); needs -tls-key")
	keyFile := fs.String("tls-key", "", "PEM private key of -tls-cert")
	allowIPs := fs.String("allow-ips", "", "comma-separated IPs or CIDRs: the refresh-token IP allowlist (code exchange and refresh); empty = any source")
	restrictAll := fs.Bool("allowlist-everywhere", false, "apply -allow-ips to revoke and introspection too")
	if err := fs.Parse(args); err != nil {
		return err
	}
	var opts emulator.ServeOptions
	scheme := "http"
	if *certFile != "" || *keyFile != "" {
		cert, err := tls.LoadX509KeyPair(*certFile, *keyFile)
		if err != nil {
			return fmt.Errorf("emulator: -tls-cert/-tls-key: %w", err)
		}
		opts.TLS, scheme = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}, "https"
	}
	if *allowIPs != "" {
		opts.AllowedIPs = strings.Split(*allowIPs, ",")
	}
	opts.RestrictAll = *restrictAll
	fmt.Fprintf(stdout, "Salesforce emulator on %s://%s (client id %q)\n", scheme, *addr, *clientID)
	return emulator.ListenAndServeWith(ctx, *addr, emulator.Config{
		ClientID: *clientID, ClientSecret: *clientSecret, SessionTimeout: *session, AutoApprove: *autoApprove,
	}, opts, stdout)
}
