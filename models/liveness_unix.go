//go:build linux || darwin || freebsd || netbsd || openbsd || dragonfly

package models

import (
	"errors"
	"syscall"
)

const canPeek = true

// peekQuiet peeks at one byte without waiting: quiet when there is none to
// read yet (EAGAIN), not when there is one, the peer closed (0 bytes) or
// the socket has an error.
func peekQuiet(fd uintptr) bool {
	var b [1]byte
	_, _, err := syscall.Recvfrom(int(fd), b[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
	return errors.Is(err, syscall.EAGAIN) || errors.Is(err, syscall.EWOULDBLOCK)
}
