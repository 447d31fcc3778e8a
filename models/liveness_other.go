//go:build !(linux || darwin || freebsd || netbsd || openbsd || dragonfly)

package models

// Without a non-blocking peek here, a connection idle for more than a
// second is pinged, as pgx does by default.
const canPeek = false

func peekQuiet(uintptr) bool { return false }
