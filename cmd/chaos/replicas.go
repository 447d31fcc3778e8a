package main

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"sync"
	"syscall"
	"time"
)

// replica is one tokenwarm server process, restartable on the same port.
type replica struct {
	idx     int
	bin     string
	addr    string // 127.0.0.1:port
	env     []string
	logPath string

	mu   sync.Mutex
	pids []int // of every process this replica ran: its worker IDs end in them
	cmd  *exec.Cmd
	done chan struct{} // closed when the current process exited
	up   bool
}

func (r *replica) url() string { return "http://" + r.addr }

// processIDs returns the PIDs of every process the replica ran.
func (r *replica) processIDs() []int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]int(nil), r.pids...)
}

func (r *replica) start() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.up {
		return nil
	}
	logf, err := os.OpenFile(r.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	cmd := exec.Command(r.bin, "serve")
	cmd.Env = r.env
	cmd.Stdout, cmd.Stderr = logf, logf
	// Its own process group (a terminal's Ctrl-C is ours to handle), and
	// killed with us if we die.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		logf.Close()
		return fmt.Errorf("replica %d: %w", r.idx, err)
	}
	done := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		logf.Close()
		close(done)
	}()
	r.cmd, r.done, r.up = cmd, done, true
	r.pids = append(r.pids, cmd.Process.Pid)
	return nil
}

// stop sends sig and waits for the process to exit (SIGKILL after grace).
func (r *replica) stop(sig syscall.Signal, grace time.Duration) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if !r.up {
		return
	}
	_ = r.cmd.Process.Signal(sig)
	select {
	case <-r.done:
	case <-time.After(grace):
		_ = r.cmd.Process.Kill()
		<-r.done
	}
	r.up = false
}

func (r *replica) isUp() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.up
}

// exited reports a process that died on its own.
func (r *replica) exited() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if !r.up {
		return false
	}
	select {
	case <-r.done:
		return true
	default:
		return false
	}
}

// waitReady polls /readyz until it answers 200.
func (r *replica) waitReady(ctx context.Context, max time.Duration) error {
	deadline := time.Now().Add(max)
	c := &http.Client{Timeout: 2 * time.Second}
	for {
		if r.exited() {
			return fmt.Errorf("replica %d exited during start-up (log %s)", r.idx, r.logPath)
		}
		resp, err := c.Get(r.url() + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("replica %d not ready after %s (log %s)", r.idx, max, r.logPath)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func freeAddr() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer l.Close()
	return l.Addr().String(), nil
}
