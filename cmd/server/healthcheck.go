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
	"strings"
	"time"
)

// healthcheck runs `tokenwarm healthcheck`: a GET of /readyz (or -path) on
// the server this environment configures (TOKENWARM_ADDR), for container
// health checks in images that have no curl. nil means a 200 answer; the
// program then exits 0, and 1 on any error. It reads nothing but
// TOKENWARM_ADDR: no database, no secrets.
func healthcheck(ctx context.Context, args []string, getenv func(string) string, stdout io.Writer) error {
	fs := flag.NewFlagSet("healthcheck", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	path := fs.String("path", "/readyz", "path to GET: /readyz (the database answers, migrations applied) or /healthz (the process is up)")
	timeout := fs.Duration("timeout", 3*time.Second, "give up after this long")
	if err := fs.Parse(args); err != nil || fs.NArg() > 0 || !strings.HasPrefix(*path, "/") || *timeout <= 0 {
		return errors.New("usage: tokenwarm healthcheck [-path /readyz|/healthz] [-timeout 3s]")
	}
	addr := strings.TrimSpace(getenv("TOKENWARM_ADDR"))
	if addr == "" {
		addr = settingDefault("TOKENWARM_ADDR")
	}
	target, err := healthcheckURL(addr, *path)
	if err != nil {
		return fmt.Errorf("healthcheck: TOKENWARM_ADDR=%s: %w", addr, err)
	}
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, target, nil)
	if err != nil {
		return fmt.Errorf("healthcheck: %w", err)
	}
	// Straight to the local listener: no ambient proxy, no redirects.
	client := &http.Client{Transport: &http.Transport{Proxy: nil, DisableKeepAlives: true},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := client.Do(req)
	if err != nil {
		return fmt.Errorf("healthcheck: GET %s: %w", target, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		// The problem's detail says why (e.g. "database unreachable"); it
		// never carries a secret.
		var p struct {
			Detail string `json:"detail"`
		}
		_ = json.NewDecoder(io.LimitReader(resp.Body, 16<<10)).Decode(&p)
		return fmt.Errorf("healthcheck: GET %s: %s %s", target, resp.Status, p.Detail)
	}
	fmt.Fprintf(stdout, "ok: GET %s: %s\n", target, resp.Status)
	return nil
}

// healthcheckURL is the URL of path on the listener of addr, as seen from
// the same host: an unspecified address (":8080", "0.0.0.0:8080",
// "[::]:8080") is reached on loopback.
func healthcheckURL(addr, path string) (string, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return "", errors.New("want host:port such as :8080 or 127.0.0.1:8080")
	}
	if port == "" || port == "0" {
		return "", errors.New("the port is chosen at start-up; the health check cannot know it")
	}
	switch host {
	case "", "0.0.0.0":
		host = "127.0.0.1"
	case "::":
		host = "::1"
	}
	return "http://" + net.JoinHostPort(host, port) + path, nil
}

// settingDefault is the default of a setting of the config table.
func settingDefault(env string) string {
	for _, s := range settings {
		if s.env == env {
			return s.def
		}
	}
	return ""
}
