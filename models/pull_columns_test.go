package models

import (
	"reflect"
	"regexp"
	"strings"
	"sync"
	"testing"

	"gorm.io/gorm/schema"
)

// The pull reads its columns into the fields of those names, on both
// paths, and never the sealed refresh token or the person.
func TestPullColumns(t *testing.T) {
	sch, err := schema.Parse(&Connection{}, &sync.Map{}, schema.NamingStrategy{})
	if err != nil {
		t.Fatal(err)
	}
	var c Connection
	targets := pullTargets(&c)
	if len(targets) != len(pullColumns) {
		t.Fatalf("%d targets for %d columns", len(targets), len(pullColumns))
	}
	for i, col := range pullColumns {
		f := sch.LookUpField(col)
		if f == nil || f.DBName != col {
			t.Fatalf("%s is not a column of Connection", col)
		}
		if want := reflect.ValueOf(&c).Elem().FieldByName(f.Name).Addr().Interface(); targets[i] != want {
			t.Errorf("column %s is scanned into the wrong field (want %s)", col, f.Name)
		}
	}
	for _, sql := range []string{connectionForSessionSQL, connectionForSessionPGSQL} {
		for _, col := range pullColumns {
			if !regexp.MustCompile(`c\.` + col + `\b`).MatchString(sql) {
				t.Errorf("the pull does not read %s: %s", col, sql)
			}
		}
		for _, never := range []string{"refresh_token_sealed", "user_email", "user_name", "c.*"} {
			if strings.Contains(sql, never) {
				t.Errorf("the pull reads %s: %s", never, sql)
			}
		}
	}
}
