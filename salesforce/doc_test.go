package salesforce

import (
	"os"
	"strconv"
	"strings"
	"testing"
)

// docs/SALESFORCE.md's classification table is what Classify and
// MayHaveRotated do: every row is checked against the code.
func TestClassificationTableInTheDocs(t *testing.T) {
	doc, err := os.ReadFile("../docs/SALESFORCE.md")
	if err != nil {
		t.Fatal(err)
	}
	_, rest, ok := strings.Cut(string(doc), "<!-- classification:start -->")
	table, _, ok2 := strings.Cut(rest, "<!-- classification:end -->")
	if !ok || !ok2 {
		t.Fatal("docs/SALESFORCE.md has no classification table markers")
	}
	rows := 0
	for _, line := range strings.Split(strings.TrimSpace(table), "\n")[2:] {
		cells := strings.Split(strings.Trim(line, "| "), "|")
		if len(cells) != 6 {
			t.Fatalf("row %q has %d cells, want 6", line, len(cells))
		}
		for i := range cells {
			cells[i] = strings.Trim(strings.TrimSpace(cells[i]), "`")
		}
		status, err := strconv.Atoi(cells[0])
		if err != nil {
			t.Fatalf("row %q: HTTP status %q", line, cells[0])
		}
		code, desc, class, rotated := cells[1], cells[2], cells[3], cells[4]
		if desc == "anything not listed here" {
			desc = "a description no rule names"
		}
		got := Classify(status, code, desc)
		if got.String() != class {
			t.Errorf("%d %q %q: Classify = %s, the docs say %s", status, code, desc, got, class)
		}
		e := &Error{Class: got, HTTPStatus: status, Code: code}
		if want := rotated == "yes"; e.MayHaveRotated() != want {
			t.Errorf("%d %q %q: MayHaveRotated = %v, the docs say %s", status, code, desc, e.MayHaveRotated(), rotated)
		}
		rows++
	}
	if rows < 20 {
		t.Fatalf("only %d rows read", rows)
	}
}
