package devices

import (
	"strings"
	"testing"
)

// compactJWS takes three base64url segments and nothing else, byte by byte.
func TestCompactJWS(t *testing.T) {
	for c := range 256 {
		b := byte(c)
		want := b == '-' || b == '_' || b >= '0' && b <= '9' || b >= 'a' && b <= 'z' || b >= 'A' && b <= 'Z'
		if got := compactJWS("aa.b" + string([]byte{b}) + "b.cc"); got != want && b != '.' {
			t.Errorf("byte %#x: %v, want %v", b, got, want)
		}
	}
	for s, want := range map[string]bool{"a.b.c": true, "..": true, "a.b": false, "a.b.c.d": false, "": false,
		"a.b.c\n": false, "a.b.c=": false, strings.Repeat("a", maxTokenLen-4) + ".b.c": true, strings.Repeat("a", maxTokenLen) + ".b.c": false} {
		if got := compactJWS(s); got != want {
			t.Errorf("%.20q…: %v, want %v", s, got, want)
		}
	}
}
