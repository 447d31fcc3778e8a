//go:build !unix

package models

// Without a non-blocking peek, a connection idle for more than a second is
// pinged, as pgx does by default.
const canPeek = false

func peekQuiet(uintptr) bool { return false }
