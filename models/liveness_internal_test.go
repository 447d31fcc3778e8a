package models

import (
	"net"
	"testing"
)

// A connection that is not a socket (a custom dialer's) cannot be peeked
// at: shouldPing then falls back to pgx's one-second rule.
func TestQuietSocketOfAPipeIsUnknown(t *testing.T) {
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	if _, known := quietSocket(a); known {
		t.Error("a net.Pipe was peeked at")
	}
}
