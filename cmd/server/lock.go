//go:build unix

package main

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
)

// lockName is the file under TOKENWARM_DATA_DIR whose exclusive flock
// marks the one process that may refresh tokens of the embedded database.
const lockName = "tokenwarm.lock"

// lockedError: another process holds the data directory's lock.
type lockedError struct {
	// pid is the holder's process ID as its lock file tells, or 0.
	pid int
}

func (e *lockedError) Error() string { return "the data directory lock is held" + e.by() }

// by names the holder (" by process N"), if known.
func (e *lockedError) by() string {
	if e.pid > 0 {
		return " by process " + strconv.Itoa(e.pid)
	}
	return ""
}

// dataDirLock is a held lock on a data directory.
type dataDirLock struct{ f *os.File }

// lockDataDir takes the exclusive, non-blocking flock on
// <dir>/tokenwarm.lock. Refresh serialisation on SQLite is in-process, so
// two processes on one embedded database could each present the same
// refresh token: serve and reseal hold this lock for as long as they run.
// The kernel drops it when the process ends, however it ends, so a killed
// server leaves nothing to clean up (the file stays; the lock does not).
// When another process holds it, the error is a *lockedError.
func lockDataDir(dir string) (*dataDirLock, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("create data dir: %w", err)
	}
	path := filepath.Join(dir, lockName)
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600) // close-on-exec: children do not inherit it
	if err != nil {
		return nil, fmt.Errorf("open lock file %s: %w", path, err)
	}
	for {
		err = syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		if !errors.Is(err, syscall.EINTR) {
			break
		}
	}
	if errors.Is(err, syscall.EWOULDBLOCK) {
		le := &lockedError{}
		if b, rerr := os.ReadFile(path); rerr == nil {
			if pid, perr := strconv.Atoi(strings.TrimSpace(string(b))); perr == nil && pid > 0 {
				le.pid = pid
			}
		}
		f.Close()
		return nil, le
	}
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("lock %s: %w", path, err)
	}
	// The holder's PID, for the message of whoever is refused; only ever
	// written under the lock.
	if err := f.Truncate(0); err == nil {
		_, _ = f.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0)
	}
	return &dataDirLock{f: f}, nil
}

// release drops the lock (closing the file does). Safe on nil.
func (l *dataDirLock) release() {
	if l != nil && l.f != nil {
		l.f.Close()
		l.f = nil
	}
}
