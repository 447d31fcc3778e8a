package models

import (
	"strings"
	"testing"
)

// The pull reads every column of a connection but the person's: a column
// added to Connection is read by default, and the person's never.
func TestPullReadsEveryColumnButThePersons(t *testing.T) {
	for _, col := range []string{"c.id", "c.owner", "c.status", "c.access_token_sealed", "c.access_token_expires_at", "c.rotation_count", "c.reauth_reason", "c.instance_url"} {
		if !strings.Contains(connectionForSessionSQL, col+",") {
			t.Errorf("the pull does not read %s: %s", col, connectionForSessionSQL)
		}
	}
	for _, col := range pullSkips {
		if strings.Contains(connectionForSessionSQL, "c."+col+",") || strings.Contains(connectionForSessionSQL, "c."+col+" ") {
			t.Errorf("the pull reads %s", col)
		}
	}
	all := connectionColumns("c", nil)
	if n, m := strings.Count(all, ","), strings.Count(connectionColumns("c", pullSkips), ","); n-m != len(pullSkips) {
		t.Errorf("%d columns skipped, want %d (a skipped name is not a column?)", n-m, len(pullSkips))
	}
}
