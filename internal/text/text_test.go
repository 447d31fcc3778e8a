package text

import "testing"

func TestTruncate(t *testing.T) {
	for _, tc := range []struct {
		s    string
		n    int
		want string
	}{
		{"abc", 5, "abc"}, {"abcdef", 3, "abc"}, {"héllo", 2, "h"}, {"héllo", 3, "hé"}, {"", 0, ""},
	} {
		if got := Truncate(tc.s, tc.n); got != tc.want {
			t.Errorf("Truncate(%q, %d) = %q, want %q", tc.s, tc.n, got, tc.want)
		}
	}
	if got := Ellipsize("abcdef", 3); got != "abc…" {
		t.Errorf("Ellipsize = %q", got)
	}
	for host, want := range map[string]bool{"localhost": true, "127.0.0.1": true, "127.0.0.2": true, "[::1]": true, "::1": true,
		"example.com": false, "10.0.0.1": false, "": false} {
		if IsLoopbackHost(host) != want {
			t.Errorf("IsLoopbackHost(%q) != %v", host, want)
		}
	}
	for s, want := range map[string]bool{"3f2504e0-4f89-11d3-9a0c-0305e82c3301": true, "3F2504E0-4F89-11D3-9A0C-0305E82C3301": true,
		"{3f2504e0-4f89-11d3-9a0c-0305e82c3301}": false, "3f2504e04f8911d39a0c0305e82c3301": false, "x": false} {
		if IsUUID(s) != want {
			t.Errorf("IsUUID(%q) != %v", s, want)
		}
	}
}
