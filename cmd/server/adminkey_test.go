package main

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/tokenwarm/tokenwarm/internal/testkit"
)

// Keys made on the command line open the admin API of a running server,
// until revoked on the command line.
func TestAdminKeySubcommandsAgainstRunningServer(t *testing.T) {
	env := envFrom(map[string]string{"TOKENWARM_DATA_DIR": t.TempDir(), "TOKENWARM_ADDR": "127.0.0.1:0"})
	cli := func(args ...string) (string, string, error) {
		var out, errOut bytes.Buffer
		err := run(context.Background(), append([]string{"admin-key"}, args...), env, &out, &errOut)
		return out.String(), errOut.String(), err
	}
	out, warn, err := cli("create", "ops-alice")
	key := strings.TrimSpace(out)
	if err != nil || !regexp.MustCompile(`^twa_[A-Za-z0-9_-]{43}$`).MatchString(key) || !strings.Contains(warn, "will not be shown again") {
		t.Fatalf("create: %v %q %q", err, out, warn)
	}
	if _, _, err := cli("create", "ops-alice"); err == nil {
		t.Fatal("a second key with the same name was created")
	}
	for _, bad := range [][]string{{}, {"create"}, {"rotate", "x"}, {"list", "x"}} {
		if _, _, err := cli(bad...); err == nil || !strings.Contains(err.Error(), "usage") {
			t.Fatalf("admin-key %v: %v", bad, err)
		}
	}
	out, _, err = cli("list")
	if err != nil || !strings.Contains(out, "ops-alice") || !strings.Contains(out, key[:8]) || strings.Contains(out, key) {
		t.Fatalf("list: %v %q", err, out)
	}

	ctx, cancel := context.WithCancel(context.Background())
	stdout := &testkit.SyncBuffer{}
	done := make(chan error, 1)
	go func() { done <- run(ctx, nil, env, stdout, io.Discard) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("server: %v", err)
		}
	}()
	var base string
	for deadline := time.Now().Add(30 * time.Second); base == "" && time.Now().Before(deadline); {
		if m := regexp.MustCompile(`listening on (http://\S+)`).FindStringSubmatch(stdout.String()); m != nil {
			base = m[1]
		} else {
			time.Sleep(20 * time.Millisecond)
		}
	}
	if base == "" {
		t.Fatal("server printed no URL")
	}
	summary := func() int {
		req, _ := http.NewRequest(http.MethodGet, base+"/admin/v1/summary", nil)
		req.Header.Set("Authorization", "Bearer "+key)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if st := summary(); st != 200 {
		t.Fatalf("summary with a fresh key: %d", st)
	}
	if out, _, err := cli("revoke", "ops-alice"); err != nil || !strings.Contains(out, "revoked") {
		t.Fatalf("revoke: %v %q", err, out)
	}
	if st := summary(); st != 401 {
		t.Fatalf("summary with a revoked key: %d", st)
	}
	if _, _, err := cli("revoke", "nobody"); err == nil {
		t.Fatal("revoking an unknown key succeeded")
	}
}
