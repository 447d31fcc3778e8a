package main

import (
	"os"
	"strings"
	"testing"
)

// The README documents every setting, and its test command is the one CI runs.
func TestReadmeMatchesConfigAndCI(t *testing.T) {
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range settings {
		if !strings.Contains(string(readme), "`"+s.env+"`") {
			t.Errorf("README does not document %s", s.env)
		}
	}
	// The README stands alone: nothing outside the repository exists for
	// its readers.
	if strings.Contains(string(readme), "../shared") {
		t.Error("README refers to ../shared, which is not part of the repository")
	}
	ci, err := os.ReadFile("../../.ci/run")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(readme), "./scripts/test ") || !strings.Contains(string(ci), "./scripts/test") {
		t.Error("README's test command and .ci/run disagree")
	}
}
