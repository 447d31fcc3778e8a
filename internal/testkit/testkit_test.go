package testkit

import "testing"

func TestContainsTokenFindsEveryKind(t *testing.T) {
	issued := []string{"00Dabc!AQxyzxyzxyzxyz", "5Aep861refreshrefreshrefresh", "aPrxcodecodecode", "other-token-shape"}
	for _, tok := range issued {
		if !ContainsToken(issued, "level=INFO msg=x value="+tok+" end") {
			t.Errorf("missed %q", tok)
		}
	}
	for _, text := range []string{"", "00Dabc!AQxyz", "5Aep861refresh", "nothing here", "00Dabc! 5Aep861 aPrx"} {
		if ContainsToken(issued, text) {
			t.Errorf("false hit in %q", text)
		}
	}
}
