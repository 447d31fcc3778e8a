package models_test

import (
	"net/url"
	"path/filepath"
	"testing"

	"github.com/tokenwarm/tokenwarm/internal/pgtest"
	"github.com/tokenwarm/tokenwarm/models"
)

// pools opens n more independent pools on db's database (Postgres: as
// other replicas would; SQLite: other pools on the one file), closed when
// the test ends. Concurrency cases race them against each other.
func pools(t *testing.T, db *models.DB, n int) []*models.DB {
	t.Helper()
	dbURL, dir := "", filepath.Dir(db.Where)
	if db.Dialect == models.Postgres {
		var name string
		if err := db.SQL().QueryRow("SELECT current_database()").Scan(&name); err != nil {
			t.Fatal(err)
		}
		u, err := url.Parse(pgtest.URL(t))
		if err != nil {
			t.Fatal(err)
		}
		u.Path = "/" + name
		dbURL, dir = u.String(), ""
	}
	out := make([]*models.DB, n)
	for i := range out {
		p, err := models.Open(dbURL, dir, models.Options{})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { p.Close() })
		out[i] = p
	}
	return out
}
