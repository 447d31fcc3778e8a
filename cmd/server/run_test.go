package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/tokenwarm/tokenwarm/handlers"
	"github.com/tokenwarm/tokenwarm/internal/testkit"
	"github.com/tokenwarm/tokenwarm/models"
)

func envFrom(m map[string]string) func(string) string {
	return func(k string) string { return m[k] }
}

func TestConfigDefaultsWithNoEnvironment(t *testing.T) {
	cfg, err := loadConfig(envFrom(nil))
	if err != nil {
		t.Fatal(err)
	}
	if !cfg.Embedded() || !cfg.Demo() || cfg.DataDir != "./data" || cfg.Addr != "127.0.0.1:8080" ||
		cfg.SessionTimeout != 2*time.Hour || cfg.WarmInterval != 72*time.Hour {
		t.Fatalf("unexpected defaults: %+v", cfg)
	}
}

func TestConfigErrorsNameTheVariableAndHideSecrets(t *testing.T) {
	_, err := loadConfig(envFrom(map[string]string{
		"SALESFORCE_SESSION_TIMEOUT": "soon",
		"DATABASE_URL":               "postgres://u:hunter2@db/x",
		"TOKENWARM_WARM_INTERVAL":    "480h",
		"TOKENWARM_PUBLIC_URL":       "not a url",
		"SALESFORCE_INSTANCE_HOSTS":  "https://example.com/",
	}))
	if err == nil {
		t.Fatal("bad configuration accepted")
	}
	msg := err.Error()
	for _, want := range []string{"SALESFORCE_SESSION_TIMEOUT", "SALESFORCE_LOGIN_URL is required", "TOKENWARM_WARM_INTERVAL", "TOKENWARM_PUBLIC_URL", "SALESFORCE_INSTANCE_HOSTS"} {
		if !strings.Contains(msg, want) {
			t.Errorf("error does not mention %s: %s", want, msg)
		}
	}
	if strings.Contains(msg, "hunter2") {
		t.Error("error shows a secret")
	}
}

func TestLoginURLMustBeHTTPSOrLoopback(t *testing.T) {
	for u, ok := range map[string]bool{
		"https://login.salesforce.com":   true,
		"https://acme.my.salesforce.com": true,
		"http://127.0.0.1:8181":          true,
		"http://login.salesforce.com":    false,
		"login.salesforce.com":           false,
	} {
		cfg, err := loadConfig(envFrom(map[string]string{"SALESFORCE_LOGIN_URL": u, "SALESFORCE_CLIENT_ID": "cid"}))
		if (err == nil) != ok {
			t.Errorf("SALESFORCE_LOGIN_URL=%s: %v", u, err)
		}
		if err != nil && !strings.Contains(err.Error(), "SALESFORCE_LOGIN_URL") {
			t.Errorf("error does not name the variable: %v", err)
		}
		if ok && cfg.LoginURL != u {
			t.Errorf("LoginURL = %q, want %q", cfg.LoginURL, u)
		}
	}
}

func TestHelpListsEveryVariableAndConfigMasksSecrets(t *testing.T) {
	var out bytes.Buffer
	if err := run(context.Background(), []string{"--help"}, envFrom(nil), &out, io.Discard); err != nil {
		t.Fatal(err)
	}
	for _, s := range settings {
		if !strings.Contains(out.String(), s.env) {
			t.Errorf("--help does not list %s", s.env)
		}
	}
	out.Reset()
	env := map[string]string{"SALESFORCE_CLIENT_SECRET": "s3cr3t-value", "TOKENWARM_SEAL_KEYS": "k1:AAAAsecretAAAA"}
	if err := run(context.Background(), []string{"config"}, envFrom(env), &out, io.Discard); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(out.String(), "s3cr3t-value") || strings.Contains(out.String(), "secretAAAA") {
		t.Fatalf("config printed a secret:\n%s", out.String())
	}
}

func TestPostgresModeRefusesToStartWithoutKey(t *testing.T) {
	env := map[string]string{"DATABASE_URL": "postgres://x@127.0.0.1:1/x", "SALESFORCE_LOGIN_URL": "https://login.salesforce.com", "SALESFORCE_CLIENT_ID": "id"}
	err := run(context.Background(), nil, envFrom(env), io.Discard, io.Discard)
	if err == nil || !strings.Contains(err.Error(), "TOKENWARM_SEAL_KEYS is required") {
		t.Fatalf("err = %v", err)
	}
}

// Acceptance j: the server starts with no configuration on embedded SQLite,
// a generated key and the emulator, and answers /healthz and /readyz. The
// built binary runs in an empty directory with an empty environment except
// for a free port (8080 may be taken on a test machine).
func TestServerStartsWithNoConfiguration(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary")
	}
	dir := t.TempDir()
	bin := filepath.Join(dir, "tokenwarm")
	build := exec.Command("go", "build", "-o", bin, ".")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	work := t.TempDir()
	cmd := exec.Command(bin)
	cmd.Dir = work
	// The profiler, asked for, listens apart from the API.
	probe, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	debugAddr := probe.Addr().String()
	probe.Close()
	cmd.Env = []string{"TOKENWARM_ADDR=127.0.0.1:0", "TOKENWARM_DEBUG_ADDR=" + debugAddr}
	stdout, _ := cmd.StdoutPipe()
	stderr := &testkit.SyncBuffer{}
	cmd.Stderr = stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		_ = cmd.Process.Signal(os.Interrupt)
		done := make(chan error, 1)
		go func() { done <- cmd.Wait() }()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("server did not stop cleanly on SIGINT: %v\n%s", err, stderr.String())
			}
		case <-time.After(20 * time.Second):
			_ = cmd.Process.Kill()
			t.Error("server did not stop on SIGINT")
		}
	}()

	urlRe := regexp.MustCompile(`listening on (http://\S+)`)
	lines := bufio.NewScanner(stdout)
	var base string
	deadline := time.AfterFunc(60*time.Second, func() { _ = cmd.Process.Kill() })
	for lines.Scan() {
		if m := urlRe.FindStringSubmatch(lines.Text()); m != nil {
			base = m[1]
			break
		}
	}
	deadline.Stop()
	if base == "" {
		t.Fatalf("server printed no URL; stderr:\n%s", stderr.String())
	}
	go func() { _, _ = io.Copy(io.Discard, stdout) }()

	for _, path := range []string{"/healthz", "/readyz"} {
		resp, err := http.Get(base + path)
		if err != nil {
			t.Fatal(err)
		}
		var body map[string]string
		_ = json.NewDecoder(resp.Body).Decode(&body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("%s = %d %v", path, resp.StatusCode, body)
		}
	}
	for url, want := range map[string]int{base + "/debug/pprof/": http.StatusNotFound, "http://" + debugAddr + "/debug/pprof/": http.StatusOK} {
		resp, err := http.Get(url)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != want {
			t.Errorf("GET %s = %d, want %d", url, resp.StatusCode, want)
		}
	}
	for _, f := range []string{"data/tokenwarm.db", "data/seal.key"} {
		if _, err := os.Stat(filepath.Join(work, f)); err != nil {
			t.Errorf("embedded mode did not create %s: %v", f, err)
		}
	}
	if fi, err := os.Stat(filepath.Join(work, "data/seal.key")); err == nil && fi.Mode().Perm() != 0o600 {
		t.Errorf("seal key mode %v, want 0600", fi.Mode().Perm())
	}
	if !strings.Contains(stderr.String(), "GENERATED A DEVELOPMENT SEAL KEY") {
		t.Errorf("no loud warning about the generated key:\n%s", stderr.String())
	}
}

func TestMigrateSubcommandOnSQLite(t *testing.T) {
	dir := t.TempDir()
	env := envFrom(map[string]string{"TOKENWARM_DATA_DIR": dir})
	var out bytes.Buffer
	if err := run(context.Background(), []string{"migrate"}, env, &out, io.Discard); err != nil {
		t.Fatal(err)
	}
	all, _ := models.Migrations(models.SQLite)
	if !strings.Contains(out.String(), fmt.Sprintf("applied %d migration(s)", len(all))) {
		t.Fatalf("first migrate: %q", out.String())
	}
	out.Reset()
	if err := run(context.Background(), []string{"migrate"}, env, &out, io.Discard); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), "applied 0 migration(s)") {
		t.Fatalf("second migrate: %q", out.String())
	}
	out.Reset()
	if err := run(context.Background(), []string{"reseal"}, env, &out, io.Discard); err != nil || !strings.Contains(out.String(), ": 0 connection(s), 0 signing key(s), 0 pending authorization(s)") {
		t.Fatalf("reseal on an empty database: %v %q", err, out.String())
	}
}

// The reuse interval and rate limits: defaults, 0 turns each off, and
// out-of-range values are refused with the variable's name.
func TestReuseIntervalAndRateLimitSettings(t *testing.T) {
	cfg, err := loadConfig(envFrom(nil))
	if err != nil {
		t.Fatal(err)
	}
	want := handlers.DefaultRateLimits()
	if cfg.DeviceReuseInterval != 30*time.Second || fmt.Sprint(cfg.RateLimits) != fmt.Sprint(want) || cfg.TrustedProxies != nil {
		t.Fatalf("defaults: reuse %s, limits %+v, proxies %v", cfg.DeviceReuseInterval, cfg.RateLimits, cfg.TrustedProxies)
	}
	cfg, err = loadConfig(envFrom(map[string]string{"TOKENWARM_DEVICE_REFRESH_REUSE_INTERVAL": "0", "TOKENWARM_RATE_LIMIT_SESSION_RPS": "0",
		"TOKENWARM_RATE_LIMIT_IP_RPS": "0.5", "TOKENWARM_TRUSTED_PROXIES": "10.0.0.0/8, 192.0.2.7,2001:db8::/32"}))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.DeviceReuseInterval != 0 || cfg.RateLimits.SessionRPS != 0 || cfg.RateLimits.IPRPS != 0.5 ||
		fmt.Sprint(cfg.TrustedProxies) != "[10.0.0.0/8 192.0.2.7/32 2001:db8::/32]" {
		t.Fatalf("reuse %s, limits %+v, proxies %v", cfg.DeviceReuseInterval, cfg.RateLimits, cfg.TrustedProxies)
	}
	bad := map[string]string{"TOKENWARM_DEVICE_REFRESH_REUSE_INTERVAL": "6m", "TOKENWARM_RATE_LIMIT_SESSION_RPS": "-1",
		"TOKENWARM_RATE_LIMIT_IP_BURST": "0", "TOKENWARM_TRUSTED_PROXIES": "10.0.0.0/33"}
	_, err = loadConfig(envFrom(bad))
	for name := range bad {
		if err == nil || !strings.Contains(err.Error(), name) {
			t.Errorf("%s=%s: error %v does not name it", name, bad[name], err)
		}
	}
}
