//go:build unix

package main

import (
	"bufio"
	"bytes"
	"context"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/tokenwarm/tokenwarm/internal/testkit"
)

// serverProcess is the built binary running `serve`.
type serverProcess struct {
	cmd    *exec.Cmd
	base   string
	stderr *testkit.SyncBuffer
	done   chan error
}

// startProcess starts the binary with env and waits until it listens.
func startProcess(t *testing.T, bin string, env []string) *serverProcess {
	t.Helper()
	cmd := exec.Command(bin)
	cmd.Dir = t.TempDir()
	cmd.Env = env
	stdout, _ := cmd.StdoutPipe()
	p := &serverProcess{cmd: cmd, stderr: &testkit.SyncBuffer{}, done: make(chan error, 1)}
	cmd.Stderr = p.stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill() })
	re := regexp.MustCompile(`listening on (http://\S+)`)
	lines := bufio.NewScanner(stdout)
	deadline := time.AfterFunc(60*time.Second, func() { _ = cmd.Process.Kill() })
	for lines.Scan() {
		if m := re.FindStringSubmatch(lines.Text()); m != nil {
			p.base = m[1]
			break
		}
	}
	deadline.Stop()
	go func() { _, _ = io.Copy(io.Discard, stdout); p.done <- cmd.Wait() }()
	if p.base == "" {
		t.Fatalf("server printed no URL; stderr:\n%s", p.stderr.String())
	}
	return p
}

func getStatus(t *testing.T, url, bearer string) int {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, url, nil)
	if bearer != "" {
		req.Header.Set("Authorization", "Bearer "+bearer)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

// runCommand runs the binary to completion (at most 30s) and returns its
// output and exit error.
func runCommand(t *testing.T, bin string, env []string, args ...string) (stdout, stderr string, err error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Dir = t.TempDir()
	cmd.Env = env
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err = cmd.Run()
	if ctx.Err() != nil {
		t.Fatalf("tokenwarm %v did not exit within 30s: stdout %q stderr %q", args, out.String(), errOut.String())
	}
	return out.String(), errOut.String(), err
}

// One embedded server per data directory: a second server on the same
// directory exits at once with a clear message, and so does reseal, while
// admin-key and purge (which never present a refresh token) work next to
// the running server. The lock is the kernel's: after the first server is
// SIGKILLed, a new one starts on the same directory with no clean-up.
func TestOneEmbeddedServerPerDataDirectory(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary")
	}
	bin := filepath.Join(t.TempDir(), "tokenwarm")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	data := filepath.Join(t.TempDir(), "data")
	env := []string{"TOKENWARM_ADDR=127.0.0.1:0", "TOKENWARM_DATA_DIR=" + data}

	first := startProcess(t, bin, env)
	if st := getStatus(t, first.base+"/healthz", ""); st != 200 {
		t.Fatalf("first server /healthz: %d", st)
	}

	// A second server on the same directory is refused, non-zero.
	stdout, stderr, err := runCommand(t, bin, env)
	if err == nil || strings.Contains(stdout, "listening on") ||
		!strings.Contains(stderr, "another tokenwarm server is using the data directory "+data) ||
		!strings.Contains(stderr, "lock "+data+"/tokenwarm.lock is held") ||
		!strings.Contains(stderr, "stop it first or set TOKENWARM_DATA_DIR") {
		t.Fatalf("second server on the same data directory: err %v\nstdout %s\nstderr %s", err, stdout, stderr)
	}
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() == 0 {
		t.Fatalf("second server: %v, want a non-zero exit", err)
	}

	// admin-key and purge do not take the lock.
	stdout, stderr, err = runCommand(t, bin, env, "admin-key", "create", "x")
	key := strings.TrimSpace(stdout)
	if err != nil || !strings.HasPrefix(key, "twa_") {
		t.Fatalf("admin-key create next to the server: %v %q %q", err, stdout, stderr)
	}
	if stdout, stderr, err := runCommand(t, bin, env, "purge"); err != nil || !strings.Contains(stdout, "deleted") {
		t.Fatalf("purge next to the server: %v %q %q", err, stdout, stderr)
	}
	// reseal presents nothing but rewrites every sealed token: refused.
	stdout, stderr, err = runCommand(t, bin, env, "reseal")
	if err == nil || !strings.Contains(stderr, "reseal needs the embedded database to itself: stop the server first") ||
		strings.Contains(stdout, "resealed") {
		t.Fatalf("reseal next to the server: %v %q %q", err, stdout, stderr)
	}
	// So is restore: the server's refreshes are serialised in-process.
	if _, stderr, err := runCommand(t, bin, env, "restore"); err == nil ||
		!strings.Contains(stderr, "restore needs the embedded database to itself: stop the server first") {
		t.Fatalf("restore next to the server: %v %q", err, stderr)
	}
	// The server made the key usable: it serves the admin API with it.
	if st := getStatus(t, first.base+"/admin/v1/summary", key); st != 200 {
		t.Fatalf("admin key made next to the server: %d", st)
	}

	// SIGKILL: no shutdown code runs; the lock file stays behind.
	if err := first.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	select {
	case <-first.done:
	case <-time.After(20 * time.Second):
		t.Fatal("first server did not die on SIGKILL")
	}
	if _, err := os.Stat(filepath.Join(data, "tokenwarm.lock")); err != nil {
		t.Fatalf("lock file: %v", err)
	}

	third := startProcess(t, bin, env)
	if st := getStatus(t, third.base+"/readyz", ""); st != 200 {
		t.Fatalf("server after the SIGKILLed one /readyz: %d\n%s", st, third.stderr.String())
	}
	if st := getStatus(t, third.base+"/admin/v1/summary", key); st != 200 {
		t.Fatalf("admin key on the restarted server: %d", st)
	}
	_ = third.cmd.Process.Signal(os.Interrupt)
	select {
	case err := <-third.done:
		if err != nil {
			t.Errorf("third server did not stop cleanly: %v\n%s", err, third.stderr.String())
		}
	case <-time.After(30 * time.Second):
		t.Error("third server did not stop on SIGINT")
	}
	// Stopped, it leaves the directory to reseal.
	if stdout, stderr, err := runCommand(t, bin, env, "reseal"); err != nil || !strings.Contains(stdout, "resealed") {
		t.Fatalf("reseal with no server: %v %q %q", err, stdout, stderr)
	}
}
