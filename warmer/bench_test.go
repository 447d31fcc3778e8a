package warmer_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"github.com/tokenwarm/tokenwarm/internal/rawdb"
	"log/slog"
	"net/http"
	"runtime"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/tokenwarm/tokenwarm/models"
	"github.com/tokenwarm/tokenwarm/salesforce"
	"github.com/tokenwarm/tokenwarm/vault"
	"github.com/tokenwarm/tokenwarm/warmer"
)

// BenchmarkWarmThroughput measures warm refreshes per second against the
// emulator answering every refresh after 150 ms, on real Postgres, at warm
// concurrency C. The target (issue 4) is at least 90% of C / 0.15 s; the
// benchmark reports refreshes/s and the fraction of that ideal.
//
//	./scripts/test -run '^$' -bench WarmThroughput -benchtime 3x ./warmer/
func BenchmarkWarmThroughput(b *testing.B) {
	const latency = 150 * time.Millisecond
	for _, c := range []int{8, 16, 32} {
		b.Run(fmt.Sprintf("C=%d", c), func(b *testing.B) {
			e := newEnv(b, models.Postgres)
			ids := e.connectMany(c * 40)
			db, err := models.Open(e.PGURL, "", models.Options{MaxOpenConns: 2*c + 8})
			if err != nil {
				b.Fatal(err)
			}
			defer db.Close()
			// As in production (cmd/server): keep a connection per concurrent
			// refresh alive instead of net/http's default two per host.
			sf := e.SFClient()
			tr := http.DefaultTransport.(*http.Transport).Clone()
			tr.MaxIdleConnsPerHost = c
			sf.HTTP = &http.Client{Transport: tr}
			v := vault.New(db, e.Ring, sf, e.Clock, e.Log, vault.Config{Worker: "bench", MaxConcurrentRefreshes: c})
			w := warmer.New(v, db, e.Clock, e.Log, warmer.Config{Concurrency: c, BatchSize: 100})
			defer func() { <-w.Stop().Done() }()
			e.Emu.SetLatency(func() time.Duration { return latency })

			var refreshed int64
			var busy time.Duration
			b.ResetTimer()
			for range b.N {
				b.StopTimer()
				if err := rawdb.Gorm(e.db).Exec("UPDATE connections SET next_warm_at = ?", e.Clock.Now().Add(-time.Second)).Error; err != nil {
					b.Fatal(err)
				}
				b.StartTimer()
				start := time.Now()
				pass, err := w.RunOnce(context.Background())
				busy += time.Since(start)
				if err != nil {
					b.Fatal(err)
				}
				if pass.Outcomes.OK != int64(len(ids)) {
					b.Fatalf("pass refreshed %d of %d (outcomes %+v)", pass.Outcomes.OK, len(ids), pass.Outcomes)
				}
				refreshed += pass.Outcomes.OK
			}
			perSec := float64(refreshed) / busy.Seconds()
			b.ReportMetric(perSec, "refreshes/s")
			b.ReportMetric(perSec/(float64(c)/latency.Seconds()), "of_ideal")
			if st := e.Emu.Stats(); st.StalePresentations != 0 || st.ChainsRevoked != 0 {
				b.Fatalf("emulator saw stale=%d revoked=%d", st.StalePresentations, st.ChainsRevoked)
			}
		})
	}
}

// rotatingRefresher stands in for Salesforce in the memory benchmark: 100,000
// emulated authorizations would dominate the run, and the emulator's own
// bookkeeping would dominate the heap. It rotates like Salesforce; it keeps
// no per-token state, so the heap measured is tokenwarm's.
type rotatingRefresher struct {
	calls atomic.Int64
}

func (r *rotatingRefresher) Revoke(context.Context, string, string) error { return nil }

func (r *rotatingRefresher) RefreshTokenActive(context.Context, string, string) (bool, error) {
	return true, nil
}

func (r *rotatingRefresher) Refresh(context.Context, string, string) (*salesforce.Token, error) {
	r.calls.Add(1)
	now := time.Now().UTC()
	return &salesforce.Token{AccessToken: "00Dbench!" + randomHex(), RefreshToken: "5Aepbench" + randomHex(), Rotated: true,
		IssuedAt: now, ExpiresAt: now.Add(2 * time.Hour)}, nil
}

func randomHex() string {
	var b [24]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// BenchmarkWarmMemoryAllDue records the peak Go heap while 100,000
// connections are due at once and one warm pass works through them on real
// Postgres: claiming in batches must keep memory flat, whatever the backlog.
//
//	./scripts/test -run '^$' -bench WarmMemory -benchtime 1x ./warmer/
func BenchmarkWarmMemoryAllDue(b *testing.B) {
	const n = 100_000
	e := newEnv(b, models.Postgres)
	ref := &rotatingRefresher{}
	db, err := models.Open(e.PGURL, "", models.Options{MaxOpenConns: 40})
	if err != nil {
		b.Fatal(err)
	}
	defer db.Close()
	// Logs are discarded: the harness keeps them in memory, which would be
	// measured as heap.
	quiet := slog.New(slog.DiscardHandler)
	v := vault.New(db, e.Ring, ref, e.Clock, quiet, vault.Config{Worker: "bench", MaxConcurrentRefreshes: 16})
	now := e.Clock.Now().UTC()
	batch := make([]models.Connection, 0, 1000)
	for i := range n {
		id := uuid.NewString()
		sealed, err := v.SealRefresh(id, "5Aepbench"+randomHex())
		if err != nil {
			b.Fatal(err)
		}
		batch = append(batch, models.Connection{ID: id, Owner: "00Dbench/" + id, OrgID: "00Dbench", UserID: id,
			LoginURL: "https://login.salesforce.com", Status: models.StatusActive, RefreshTokenSealed: sealed,
			LastRefreshedAt: now.Add(-73 * time.Hour), NextWarmAt: now.Add(-time.Minute), CreatedAt: now, UpdatedAt: now})
		if len(batch) == cap(batch) || i == n-1 {
			if err := rawdb.Gorm(db).Create(&batch).Error; err != nil {
				b.Fatal(err)
			}
			batch = batch[:0]
		}
	}
	batch = nil
	runtime.GC()
	var base runtime.MemStats
	runtime.ReadMemStats(&base)

	w := warmer.New(v, db, e.Clock, quiet, warmer.Config{Concurrency: 12, BatchSize: 100})
	defer func() { <-w.Stop().Done() }()
	var peak atomic.Uint64
	stop := make(chan struct{})
	sampled := make(chan struct{})
	go func() {
		defer close(sampled)
		var ms runtime.MemStats
		for {
			runtime.ReadMemStats(&ms)
			if ms.HeapInuse > peak.Load() {
				peak.Store(ms.HeapInuse)
			}
			select {
			case <-stop:
				return
			case <-time.After(20 * time.Millisecond):
			}
		}
	}()
	b.ResetTimer()
	start := time.Now()
	pass, err := w.RunOnce(context.Background())
	elapsed := time.Since(start)
	b.StopTimer()
	close(stop)
	<-sampled
	if err != nil {
		b.Fatal(err)
	}
	if pass.Outcomes.OK != n || ref.calls.Load() != n {
		b.Fatalf("pass refreshed %d of %d with %d upstream calls (outcomes %+v)", pass.Outcomes.OK, n, ref.calls.Load(), pass.Outcomes)
	}
	b.ReportMetric(float64(peak.Load())/(1<<20), "peak_heap_MiB")
	b.ReportMetric(float64(base.HeapInuse)/(1<<20), "base_heap_MiB")
	b.ReportMetric(float64(n)/elapsed.Seconds(), "refreshes/s")
}
