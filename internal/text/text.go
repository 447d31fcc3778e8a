// Package text holds the few string helpers several packages need.
package text

import (
	"net"
	"strings"
	"unicode/utf8"

	"github.com/google/uuid"
)

// Truncate cuts s to at most n bytes, on a rune boundary.
func Truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
}

// Ellipsize is Truncate with "…" appended when something was cut.
func Ellipsize(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return Truncate(s, n) + "…"
}

// IsLoopbackHost reports whether host (no port) is localhost or a loopback
// address.
func IsLoopbackHost(host string) bool {
	host = strings.Trim(host, "[]")
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// IsUUID reports whether s is a UUID in its canonical 36-character form.
func IsUUID(s string) bool {
	id, err := uuid.Parse(s)
	return err == nil && len(s) == 36 && strings.EqualFold(id.String(), s)
}
