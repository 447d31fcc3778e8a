// Package pgcluster starts a throwaway PostgreSQL cluster from the machine's
// server binaries: initdb into a temp dir, pg_ctl start on a free loopback
// port, crash restarts on the same port, and removal of everything on Stop.
// It is used by tests and by the chaos command (cmd/chaos).
//
// When the process runs as root, initdb and pg_ctl run as the unprivileged
// user "postgres" (created with useradd when missing), since PostgreSQL
// refuses to run as root.
package pgcluster

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
)

// EnvBin names the directory holding initdb, pg_ctl and postgres. It wins
// over every other way of finding them.
const EnvBin = "TOKENWARM_TEST_PG_BIN"

// ErrNoBinaries is returned by FindBin and Start when no PostgreSQL server
// binaries are found.
var ErrNoBinaries = errors.New("pgcluster: PostgreSQL server binaries (initdb, pg_ctl, postgres) not found")

// Options configures Start.
type Options struct {
	// Settings are passed to the server as -c name=value (e.g.
	// "synchronous_commit": "off", "fsync": "off"). listen_addresses, port
	// and unix_socket_directories are set by Start and cannot be overridden.
	// max_connections defaults to 200.
	Settings map[string]string
	// Log receives the output of initdb and pg_ctl and progress lines; nil
	// discards them. The server's own log is at (*Cluster).LogPath.
	Log io.Writer
	// Bin overrides binary discovery.
	Bin string
	// User is the OS user that runs the cluster when the process is root;
	// default "postgres".
	User string
}

// Cluster is a running throwaway cluster.
type Cluster struct {
	bin      string
	dir      string
	data     string
	sock     string
	logPath  string
	port     int
	opts     string
	log      io.Writer
	cred     *syscall.Credential
	mu       sync.Mutex
	stopped  bool
	restarts int
	backups  int
}

// FindBin returns the directory of the PostgreSQL server binaries: $EnvBin,
// else the resolved directory of initdb on PATH, else the highest
// /usr/lib/postgresql/*/bin.
func FindBin() (string, error) {
	if d := os.Getenv(EnvBin); d != "" {
		if hasServerBins(d) {
			return d, nil
		}
		return "", fmt.Errorf("pgcluster: %s=%s does not contain initdb, pg_ctl and postgres", EnvBin, d)
	}
	if p, err := exec.LookPath("initdb"); err == nil {
		if r, err := filepath.EvalSymlinks(p); err == nil {
			if d := filepath.Dir(r); hasServerBins(d) {
				return d, nil
			}
		}
	}
	dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	sort.Slice(dirs, func(i, j int) bool { return versionOf(dirs[i]) > versionOf(dirs[j]) })
	for _, d := range dirs {
		if hasServerBins(d) {
			return d, nil
		}
	}
	return "", ErrNoBinaries
}

func versionOf(binDir string) float64 {
	v, _ := strconv.ParseFloat(filepath.Base(filepath.Dir(binDir)), 64)
	return v
}

func hasServerBins(d string) bool {
	for _, n := range []string{"initdb", "pg_ctl", "postgres"} {
		st, err := os.Stat(filepath.Join(d, n))
		if err != nil || st.IsDir() || st.Mode()&0o111 == 0 {
			return false
		}
	}
	return true
}

// Start creates and starts a cluster. The caller must call Stop.
func Start(ctx context.Context, o Options) (*Cluster, error) {
	bin := o.Bin
	if bin == "" {
		var err error
		if bin, err = FindBin(); err != nil {
			return nil, err
		}
	}
	c := &Cluster{bin: bin, log: o.Log}
	if c.log == nil {
		c.log = io.Discard
	}
	if os.Geteuid() == 0 {
		name := o.User
		if name == "" {
			name = "postgres"
		}
		cred, err := ensureUser(ctx, name)
		if err != nil {
			return nil, err
		}
		c.cred = cred
	}
	// A short path: the unix socket path must fit in ~107 bytes.
	dir, err := os.MkdirTemp("/tmp", "twpg.")
	if err != nil {
		return nil, fmt.Errorf("pgcluster: temp dir: %w", err)
	}
	c.dir = dir
	c.data = filepath.Join(dir, "data")
	c.sock = filepath.Join(dir, "s")
	c.logPath = filepath.Join(dir, "server.log")
	ok := false
	defer func() {
		if !ok {
			c.Stop()
		}
	}()
	if err := os.Mkdir(c.sock, 0o700); err != nil {
		return nil, fmt.Errorf("pgcluster: %w", err)
	}
	if c.cred != nil {
		for _, p := range []string{dir, c.sock} {
			if err := os.Chown(p, int(c.cred.Uid), int(c.cred.Gid)); err != nil {
				return nil, fmt.Errorf("pgcluster: chown %s: %w", p, err)
			}
		}
	}
	t0 := time.Now()
	if err := c.run(ctx, "initdb", "-D", c.data, "-A", "trust", "-U", "postgres", "--no-sync", "-E", "UTF8", "--locale=C"); err != nil {
		return nil, err
	}
	settings := map[string]string{"max_connections": "200"}
	for k, v := range o.Settings {
		settings[k] = v
	}
	var lastErr error
	for attempt := 0; attempt < 3; attempt++ {
		port, err := freePort()
		if err != nil {
			return nil, err
		}
		c.port = port
		settings["listen_addresses"] = "127.0.0.1"
		settings["port"] = strconv.Itoa(port)
		settings["unix_socket_directories"] = c.sock
		c.opts = optionString(settings)
		if lastErr = c.run(ctx, "pg_ctl", "-D", c.data, "-l", c.logPath, "-w", "-t", "60", "-o", c.opts, "start"); lastErr == nil {
			break
		}
		_ = c.run(ctx, "pg_ctl", "-D", c.data, "-m", "immediate", "-w", "stop")
	}
	if lastErr != nil {
		return nil, fmt.Errorf("%w\nserver log:\n%s", lastErr, c.tailLog())
	}
	if err := c.waitReady(ctx, 60*time.Second); err != nil {
		return nil, err
	}
	fmt.Fprintf(c.log, "pgcluster: ready on 127.0.0.1:%d in %s (%s)\n", c.port, time.Since(t0).Round(time.Millisecond), c.dir)
	ok = true
	return c, nil
}

// Port is the TCP port on 127.0.0.1.
func (c *Cluster) Port() int { return c.port }

// Dir is the cluster's temp dir (data directory, socket dir, server log).
func (c *Cluster) Dir() string { return c.dir }

// LogPath is the server log file (inside Dir, removed by Stop).
func (c *Cluster) LogPath() string { return c.logPath }

// URL is the connection URL of database dbname as user postgres.
func (c *Cluster) URL(dbname string) string {
	u := url.URL{
		Scheme:   "postgres",
		User:     url.User("postgres"),
		Host:     net.JoinHostPort("127.0.0.1", strconv.Itoa(c.port)),
		Path:     "/" + dbname,
		RawQuery: "sslmode=disable",
	}
	return u.String()
}

// PostmasterPID is the process ID of the running server's postmaster, read
// from postmaster.pid. Its backends are its children (the bench sums their
// CPU time).
func (c *Cluster) PostmasterPID() (int, error) {
	b, err := os.ReadFile(filepath.Join(c.data, "postmaster.pid"))
	if err != nil {
		return 0, fmt.Errorf("pgcluster: %w", err)
	}
	line, _, _ := strings.Cut(string(b), "\n")
	pid, err := strconv.Atoi(strings.TrimSpace(line))
	if err != nil || pid <= 0 {
		return 0, fmt.Errorf("pgcluster: postmaster.pid starts with %q", line)
	}
	return pid, nil
}

// CreateDatabase creates database name.
func (c *Cluster) CreateDatabase(ctx context.Context, name string) error {
	conn, err := pgx.Connect(ctx, c.URL("postgres"))
	if err != nil {
		return fmt.Errorf("pgcluster: connect: %w", err)
	}
	defer conn.Close(context.Background())
	if _, err := conn.Exec(ctx, "CREATE DATABASE "+pgx.Identifier{name}.Sanitize()); err != nil {
		return fmt.Errorf("pgcluster: create database %s: %w", name, err)
	}
	return nil
}

// Restart restarts the server on the same port. mode is a pg_ctl shutdown
// mode: "immediate" is a crash restart (no checkpoint; every client
// connection is cut and the server recovers from WAL), "fast" and "smart" are
// clean ones. It returns once the server accepts connections again.
func (c *Cluster) Restart(ctx context.Context, mode string) error {
	switch mode {
	case "immediate", "fast", "smart":
	case "":
		mode = "fast"
	default:
		return fmt.Errorf("pgcluster: unknown restart mode %q", mode)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.stopped {
		return errors.New("pgcluster: cluster stopped")
	}
	if err := c.run(ctx, "pg_ctl", "-D", c.data, "-l", c.logPath, "-m", mode, "-w", "-t", "60", "-o", c.opts, "restart"); err != nil {
		return fmt.Errorf("%w\nserver log:\n%s", err, c.tailLog())
	}
	c.restarts++
	return c.waitReady(ctx, 60*time.Second)
}

// Stop stops the server (immediate) and removes the temp dir. It is safe to
// call more than once.
func (c *Cluster) Stop() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.stopped {
		return
	}
	c.stopped = true
	if c.data != "" {
		if _, err := os.Stat(filepath.Join(c.data, "postmaster.pid")); err == nil {
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			_ = c.run(ctx, "pg_ctl", "-D", c.data, "-m", "immediate", "-w", "stop")
			cancel()
		}
	}
	if c.dir != "" {
		_ = os.RemoveAll(c.dir)
	}
}

func (c *Cluster) waitReady(ctx context.Context, max time.Duration) error {
	deadline := time.Now().Add(max)
	for {
		cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		conn, err := pgx.Connect(cctx, c.URL("postgres"))
		if err == nil {
			err = conn.Ping(cctx)
			conn.Close(context.Background())
		}
		cancel()
		if err == nil {
			return nil
		}
		if ctx.Err() != nil || time.Now().After(deadline) {
			return fmt.Errorf("pgcluster: server not ready: %v\nserver log:\n%s", err, c.tailLog())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (c *Cluster) run(ctx context.Context, name string, args ...string) error {
	cmd := exec.CommandContext(ctx, filepath.Join(c.bin, name), args...)
	cmd.Dir = c.dir
	var out bytes.Buffer
	cmd.Stdout = io.MultiWriter(&out, c.log)
	cmd.Stderr = io.MultiWriter(&out, c.log)
	// pg_ctl start leaves the postmaster running with our stdout/stderr
	// unless it gets its own; -l redirects the server, and WaitDelay keeps a
	// stray inherited pipe from blocking us.
	cmd.WaitDelay = 5 * time.Second
	cmd.Env = append(os.Environ(), "LC_ALL=C")
	if c.cred != nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: c.cred}
		cmd.Env = append(cmd.Env, "HOME="+c.dir)
	}
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("pgcluster: %s %s: %w: %s", name, strings.Join(args, " "), err, strings.TrimSpace(out.String()))
	}
	return nil
}

func (c *Cluster) tailLog() string {
	b, err := os.ReadFile(c.logPath)
	if err != nil {
		return "(no server log)"
	}
	if len(b) > 4000 {
		b = b[len(b)-4000:]
	}
	return string(b)
}

func optionString(settings map[string]string) string {
	keys := make([]string, 0, len(settings))
	for k := range settings {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b strings.Builder
	for _, k := range keys {
		if b.Len() > 0 {
			b.WriteByte(' ')
		}
		// pg_ctl hands -o to a shell: single-quote each setting.
		b.WriteString("-c '" + strings.ReplaceAll(k+"="+settings[k], "'", `'\''`) + "'")
	}
	return b.String()
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("pgcluster: free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

func ensureUser(ctx context.Context, name string) (*syscall.Credential, error) {
	u, err := user.Lookup(name)
	if err != nil {
		out, uerr := exec.CommandContext(ctx, "useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", name).CombinedOutput()
		if uerr != nil {
			return nil, fmt.Errorf("pgcluster: useradd %s: %v: %s", name, uerr, out)
		}
		if u, err = user.Lookup(name); err != nil {
			return nil, fmt.Errorf("pgcluster: user %s: %w", name, err)
		}
	}
	uid, err1 := strconv.ParseUint(u.Uid, 10, 32)
	gid, err2 := strconv.ParseUint(u.Gid, 10, 32)
	if err1 != nil || err2 != nil {
		return nil, fmt.Errorf("pgcluster: user %s has non-numeric ids", name)
	}
	return &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid), NoSetGroups: true}, nil
}

// BaseBackup takes a physical backup of the running cluster with
// pg_basebackup (plain format, WAL streamed along) into a directory of its
// own inside Dir, and returns that directory. It asks for a fast
// checkpoint: the default spread one makes it wait minutes.
func (c *Cluster) BaseBackup(ctx context.Context) (string, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.backups++
	dir := filepath.Join(c.dir, fmt.Sprintf("backup%d", c.backups))
	if err := c.run(ctx, "pg_basebackup", "-h", c.sock, "-p", strconv.Itoa(c.port), "-U", "postgres", "-D", dir, "-Fp", "-X", "stream", "-c", "fast", "--no-sync"); err != nil {
		return "", err
	}
	return dir, nil
}

// RestoreBaseBackup stops the server, replaces its data directory with the
// backup made by BaseBackup (which is used up), and starts it again on the
// same port: a restore from a physical backup.
func (c *Cluster) RestoreBaseBackup(ctx context.Context, backup string) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.stopped {
		return errors.New("pgcluster: cluster stopped")
	}
	if err := c.run(ctx, "pg_ctl", "-D", c.data, "-m", "fast", "-w", "stop"); err != nil {
		return err
	}
	if err := os.RemoveAll(c.data); err != nil {
		return fmt.Errorf("pgcluster: %w", err)
	}
	if err := os.Rename(backup, c.data); err != nil {
		return fmt.Errorf("pgcluster: %w", err)
	}
	if err := c.run(ctx, "pg_ctl", "-D", c.data, "-l", c.logPath, "-w", "-t", "60", "-o", c.opts, "start"); err != nil {
		return fmt.Errorf("%w\nserver log:\n%s", err, c.tailLog())
	}
	return c.waitReady(ctx, 60*time.Second)
}
