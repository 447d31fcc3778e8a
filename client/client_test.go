package client

import (
	"bufio"
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// offline matches the errors of a `go run pkg@version` that could not reach
// the module proxy (and did not find the module in the local cache).
var offline = regexp.MustCompile(`dial tcp|no such host|GOPROXY=off|module lookup disabled|connection refused|i/o timeout|network is unreachable|TLS handshake timeout`)

// TestGeneratedClientUpToDate runs the go:generate directive of generate.go,
// as written, on copies of cfg.yaml and ../openapi.yaml in a temporary
// directory, and fails if the result differs from the committed
// client.gen.go.
func TestGeneratedClientUpToDate(t *testing.T) {
	args := generateDirective(t)
	gobin, err := exec.LookPath(args[0])
	if err != nil {
		t.Fatalf("%s not found: %v", args[0], err)
	}

	tmp := t.TempDir()
	pkgDir := filepath.Join(tmp, "client")
	if err := os.Mkdir(pkgDir, 0o755); err != nil {
		t.Fatal(err)
	}
	copyFile(t, "cfg.yaml", filepath.Join(pkgDir, "cfg.yaml"))
	copyFile(t, filepath.Join("..", "openapi.yaml"), filepath.Join(tmp, "openapi.yaml"))

	ctx, cancel := context.WithTimeout(t.Context(), 8*time.Minute)
	defer cancel()
	run := func(env ...string) ([]byte, error) {
		cmd := exec.CommandContext(ctx, gobin, args[1:]...)
		cmd.Dir = pkgDir
		cmd.Env = append(os.Environ(), env...)
		return cmd.CombinedOutput()
	}
	out, err := run()
	if err != nil && offline.Match(out) {
		// No proxy: the module cache's download directory is a module
		// proxy of its own, holding the generator if it ever ran here.
		t.Logf("module proxy unreachable, retrying from the module cache: %s", out)
		var modcache []byte
		if modcache, err = exec.CommandContext(ctx, gobin, "env", "GOMODCACHE").Output(); err == nil {
			proxy := "GOPROXY=file://" + filepath.ToSlash(filepath.Join(strings.TrimSpace(string(modcache)), "cache", "download"))
			out, err = run(proxy)
		}
		if err != nil && os.Getenv("CI") != "true" {
			t.Skipf("cannot run the generator offline (not in the module cache, proxy unreachable): %v\n%s", err, out)
		}
	}
	if err != nil {
		t.Fatalf("%s: %v\n%s", strings.Join(args, " "), err, out)
	}

	want, err := os.ReadFile(filepath.Join(pkgDir, "client.gen.go"))
	if err != nil {
		t.Fatalf("generator wrote no client.gen.go: %v\n%s", err, out)
	}
	got, err := os.ReadFile("client.gen.go")
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("client/client.gen.go is out of date with openapi.yaml (first difference at line %d); run: go generate ./client", firstDiffLine(got, want))
	}
}

// generateDirective returns the command of the one //go:generate line of
// generate.go, split into words (it uses no quoting).
func generateDirective(t *testing.T) []string {
	t.Helper()
	f, err := os.Open("generate.go")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var found []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), "//go:generate "); ok {
			if found != nil {
				t.Fatal("generate.go has more than one //go:generate line")
			}
			found = strings.Fields(rest)
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	if len(found) < 3 || found[0] != "go" || found[1] != "run" {
		t.Fatalf("generate.go: want one `//go:generate go run …` line, got %q", found)
	}
	return found
}

func copyFile(t *testing.T, from, to string) {
	t.Helper()
	b, err := os.ReadFile(from)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(to, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

func firstDiffLine(a, b []byte) int {
	la, lb := bytes.Split(a, []byte("\n")), bytes.Split(b, []byte("\n"))
	for i := range min(len(la), len(lb)) {
		if !bytes.Equal(la[i], lb[i]) {
			return i + 1
		}
	}
	return min(len(la), len(lb)) + 1
}
