//go:build unix

package main

import (
	"debug/elf"
	"net"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/tokenwarm/tokenwarm/emulator"
	"github.com/tokenwarm/tokenwarm/internal/pgtest"
	"github.com/tokenwarm/tokenwarm/seal"
)

// repoRoot is the module root, the Dockerfile's build context.
const repoRoot = "../.."

// dockerInstruction is one instruction of a Dockerfile, continuation lines
// joined.
type dockerInstruction struct {
	cmd  string // upper case: FROM, RUN, ENV, ...
	args string
}

// readDockerfile reads the repository's Dockerfile.
func readDockerfile(t *testing.T) []dockerInstruction {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(repoRoot, "Dockerfile"))
	if err != nil {
		t.Fatal(err)
	}
	var out []dockerInstruction
	var cur string
	for _, line := range strings.Split(string(b), "\n") {
		trimmed := strings.TrimSpace(line)
		if cur == "" && (trimmed == "" || strings.HasPrefix(trimmed, "#")) {
			continue
		}
		if strings.HasSuffix(trimmed, `\`) {
			cur += strings.TrimSuffix(trimmed, `\`) + " "
			continue
		}
		cur += trimmed
		cmd, args, _ := strings.Cut(cur, " ")
		out = append(out, dockerInstruction{cmd: strings.ToUpper(cmd), args: strings.TrimSpace(args)})
		cur = ""
	}
	return out
}

// shellWords splits a RUN line the way /bin/sh would for the simple words
// the build line uses: blanks separate, single and double quotes group,
// and ${VAR} or $VAR expand from vars (any other variable is an error).
func shellWords(t *testing.T, s string, vars map[string]string) []string {
	t.Helper()
	var words []string
	var w strings.Builder
	inWord := false
	var quote rune
	rs := []rune(s)
	for i := 0; i < len(rs); i++ {
		r := rs[i]
		switch {
		case quote == '\'' && r != '\'':
			w.WriteRune(r)
		case r == quote:
			quote = 0
		case quote == 0 && (r == '\'' || r == '"'):
			quote, inWord = r, true
		case r == '$' && quote != '\'':
			name := ""
			if i+1 < len(rs) && rs[i+1] == '{' {
				end := strings.IndexRune(string(rs[i:]), '}')
				if end < 0 {
					t.Fatalf("unterminated ${ in %q", s)
				}
				name = string(rs[i+2 : i+end])
				i += end
			} else {
				j := i + 1
				for j < len(rs) && (rs[j] == '_' || rs[j] >= 'A' && rs[j] <= 'Z' || rs[j] >= 'a' && rs[j] <= 'z' || rs[j] >= '0' && rs[j] <= '9') {
					j++
				}
				name = string(rs[i+1 : j])
				i = j - 1
			}
			v, ok := vars[name]
			if !ok {
				t.Fatalf("the build line uses $%s, which this test does not know how to set", name)
			}
			w.WriteString(v)
			inWord = true
		case quote == 0 && (r == ' ' || r == '\t'):
			if inWord {
				words = append(words, w.String())
				w.Reset()
				inWord = false
			}
		default:
			w.WriteRune(r)
			inWord = true
		}
	}
	if quote != 0 {
		t.Fatalf("unterminated quote in %q", s)
	}
	if inWord {
		words = append(words, w.String())
	}
	return words
}

// dockerBuildCommand is the Dockerfile's `go build` line as a command
// writing the binary to out, for this machine's OS and architecture (what
// BuildKit sets TARGETOS and TARGETARCH to for a native build).
func dockerBuildCommand(t *testing.T, out string) *exec.Cmd {
	t.Helper()
	var line string
	for _, in := range readDockerfile(t) {
		if in.cmd == "RUN" && strings.Contains(in.args, "go build") {
			if line != "" {
				t.Fatal("the Dockerfile has more than one go build line")
			}
			line = in.args
		}
	}
	if line == "" {
		t.Fatal("the Dockerfile has no RUN ... go build line")
	}
	words := shellWords(t, line, map[string]string{"TARGETOS": runtime.GOOS, "TARGETARCH": runtime.GOARCH})
	for len(words) > 0 && strings.HasPrefix(words[0], "--") { // RUN flags such as --mount=type=cache
		words = words[1:]
	}
	// The container has no GOFLAGS; assignments before the command are
	// its environment.
	env := append(os.Environ(), "GOFLAGS=")
	for len(words) > 0 && strings.Contains(words[0], "=") {
		env = append(env, words[0])
		words = words[1:]
	}
	if len(words) < 2 || words[0] != "go" || words[1] != "build" || strings.ContainsAny(strings.Join(words, " "), ";&|<>`") {
		t.Fatalf("the build line is not a plain go build command: %q", line)
	}
	replaced := false
	for i := range words {
		if words[i] == "-o" && i+1 < len(words) {
			words[i+1], replaced = out, true
		}
	}
	if !replaced {
		t.Fatalf("the build line has no -o: %q", line)
	}
	cmd := exec.Command(words[0], words[1:]...)
	cmd.Dir = repoRoot
	cmd.Env = env
	return cmd
}

// assertStatic fails unless bin is an ELF executable with no interpreter
// and no dynamic section: it runs on an image without a libc.
func assertStatic(t *testing.T, bin string) {
	t.Helper()
	f, err := elf.Open(bin)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP || p.Type == elf.PT_DYNAMIC {
			t.Fatalf("%s is dynamically linked (program header %v)", bin, p.Type)
		}
	}
	if libs, _ := f.ImportedLibraries(); len(libs) > 0 {
		t.Fatalf("%s needs shared libraries %v", bin, libs)
	}
}

// freePort is a TCP port nobody listens on right now.
func freePort(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	_, port, _ := net.SplitHostPort(ln.Addr().String())
	return port
}

// The image's binary: built by the Dockerfile's own build line (static,
// CGO off), it serves /readyz against Postgres with the image's settings,
// its healthcheck exits 0 against it and 1 against a dead port, and it
// stops cleanly on SIGTERM.
func TestStaticBinaryBuiltAsTheDockerfileServesReadyz(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary")
	}
	if runtime.GOOS != "linux" {
		t.Skip("the image is Linux")
	}
	dbURL := pgtest.NewDatabase(t)
	bin := filepath.Join(t.TempDir(), "tokenwarm")
	build := dockerBuildCommand(t, bin)
	start := time.Now()
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("%v: %v\n%s", build.Args, err, out)
	}
	t.Logf("%v took %s", build.Args, time.Since(start).Round(time.Second))
	assertStatic(t, bin)

	emu := httptest.NewServer(emulator.New(emulator.Config{ClientID: "deploy-test", ClientSecret: "deploy-test-secret"}))
	defer emu.Close()
	key, err := seal.GenerateKey("k1")
	if err != nil {
		t.Fatal(err)
	}
	port := freePort(t)
	// The image's environment, then the deployment's.
	var env []string
	for _, in := range readDockerfile(t) {
		if in.cmd == "ENV" {
			env = append(env, shellWords(t, in.args, nil)...)
		}
	}
	env = append(env, "TOKENWARM_ADDR=:"+port, "TOKENWARM_DATA_DIR="+t.TempDir(), "DATABASE_URL="+dbURL, "TOKENWARM_SEAL_KEYS="+key,
		"SALESFORCE_LOGIN_URL="+emu.URL, "SALESFORCE_CLIENT_ID=deploy-test", "SALESFORCE_CLIENT_SECRET=deploy-test-secret")
	srv := startProcess(t, bin, env)
	if st := getStatus(t, "http://127.0.0.1:"+port+"/readyz", ""); st != 200 {
		t.Fatalf("/readyz = %d\n%s", st, srv.stderr.String())
	}

	// The HEALTHCHECK's command, with the container's environment.
	stdout, stderr, err := runCommand(t, bin, []string{"TOKENWARM_ADDR=:" + port}, "healthcheck")
	if err != nil || !strings.Contains(stdout, "ok: GET http://127.0.0.1:"+port+"/readyz: 200") {
		t.Fatalf("healthcheck against the server: %v %q %q", err, stdout, stderr)
	}
	dead := freePort(t)
	_, stderr, err = runCommand(t, bin, []string{"TOKENWARM_ADDR=:" + dead}, "healthcheck")
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 1 || !strings.Contains(stderr, "127.0.0.1:"+dead+"/readyz") {
		t.Fatalf("healthcheck against a dead port: %v %q, want exit status 1", err, stderr)
	}

	if err := srv.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-srv.done:
		if err != nil {
			t.Fatalf("the server did not stop cleanly on SIGTERM: %v\n%s", err, srv.stderr.String())
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the server did not stop on SIGTERM")
	}
}
