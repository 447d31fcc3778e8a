package handlers_test

import (
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/tokenwarm/tokenwarm/models"
)

// BenchmarkPull is one pull of a valid token through the whole handler
// stack (device JWT check, the one SQL statement, unsealing, JSON), without
// the network: its allocations and CPU per pull. The load benchmark
// (scripts/bench) measures the same path over HTTP against pgbench.
func BenchmarkPull(b *testing.B) {
	for _, dialect := range []models.Dialect{models.SQLite, models.Postgres} {
		b.Run(string(dialect), func(b *testing.B) {
			w := newWorld(b, dialect)
			code, verifier := w.connectApp("bench@example.com", nil)
			tok := w.session(code, verifier)
			req := httptest.NewRequest(http.MethodGet, "/v1/connections/"+tok.ConnectionIDs[0]+"/access-token", nil)
			req.Header.Set("Authorization", "Bearer "+tok.AccessToken)
			pull := func() {
				rec := httptest.NewRecorder()
				w.router.ServeHTTP(rec, req)
				if rec.Code != http.StatusOK {
					b.Fatalf("pull: %d %s", rec.Code, rec.Body)
				}
			}
			pull() // the first pull refreshes nothing but fills caches
			b.ReportAllocs()
			for b.Loop() {
				pull()
			}
		})
	}
}
