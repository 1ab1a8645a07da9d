//go:build unix

package main

// Benchmarks that isolate the parts of the intake path, for profiling:
//
//	go test ./cmd/lastmile-loadgen -run '^$' -bench . -benchtime 3s -cpuprofile cpu.pprof
//	go test ./cmd/lastmile-loadgen -run TestInboxQueryPlans -v
//
// BenchmarkAccept          storage.DB.Accept alone (group commit, WAL, synchronous=FULL), 16 callers;
//                          also reports CPU µs, write calls and bytes written per delivery
// BenchmarkWebhook         githubapp.Webhook.ServeHTTP + storage, 16 callers, no HTTP, no worker
// BenchmarkNextDeliveries  the worker's inbox query, with N deliveries pending (and N done)
// BenchmarkNextAttemptAt   the next due time alone (NextWork gives it beside the deliveries), same backlogs

import (
	"context"
	"database/sql"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/lastmile-app/lastmile/githubapp"
	"github.com/lastmile-app/lastmile/pipeline"
	"github.com/lastmile-app/lastmile/storage"
)

func openBenchDB(tb testing.TB) (*storage.DB, string) {
	tb.Helper()
	path := filepath.Join(tb.TempDir(), "bench.db")
	db, err := storage.Open(context.Background(), path)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { db.Close() })
	return db, path
}

var benchSeq atomic.Int64

// benchDelivery is a delivery as the webhook makes it from a push body.
func benchDelivery(p *Payloads, rng *rand.Rand) *pipeline.Delivery {
	n := benchSeq.Add(1)
	body := p.Next(rng, nil)
	repo := int(n % int64(p.Repos))
	return &pipeline.Delivery{
		ID: fmt.Sprintf("%016x-%d", rng.Uint64(), n), Event: "push", InstallationID: installationID,
		RepositoryID: int64(186853002 + repo), Repository: fmt.Sprintf("Codertocat/service-%03d", repo),
		State: pipeline.DeliveryPending, Body: body,
	}
}

func BenchmarkAccept(b *testing.B) {
	db, _ := openBenchDB(b)
	p, err := NewPayloads(8000, 16)
	if err != nil {
		b.Fatal(err)
	}
	b.SetParallelism(8) // × GOMAXPROCS(2) = 16 concurrent callers, as 16 connections
	b.ResetTimer()
	io0 := procIO()
	cpu0 := cpuMicros()
	b.RunParallel(func(pb *testing.PB) {
		rng := rand.New(rand.NewPCG(rand.Uint64(), 1))
		for pb.Next() {
			if _, err := db.Accept(context.Background(), benchDelivery(p, rng), "push", githubapp.OutcomeAccepted); err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "deliveries/s")
	io1 := procIO()
	b.ReportMetric((cpuMicros()-cpu0)/float64(b.N), "cpuµs/op")
	b.ReportMetric((io1["syscw"]-io0["syscw"])/float64(b.N), "syscw/op")
	b.ReportMetric((io1["syscr"]-io0["syscr"])/float64(b.N), "syscr/op")
	b.ReportMetric((io1["wchar"]-io0["wchar"])/float64(b.N), "wchar/op")
}

type nopCounter struct{}

func (nopCounter) WebhookRejected(string, string) {}

func BenchmarkWebhook(b *testing.B) {
	for _, logged := range []bool{false, true} {
		b.Run(fmt.Sprintf("log=%v", logged), func(b *testing.B) {
			db, _ := openBenchDB(b)
			p, err := NewPayloads(8000, 16)
			if err != nil {
				b.Fatal(err)
			}
			secret := []byte("bench-secret")
			lg := slog.New(slog.NewJSONHandler(io.Discard, nil))
			if !logged {
				lg = slog.New(slog.NewJSONHandler(io.Discard, &slog.HandlerOptions{Level: slog.LevelError}))
			}
			h := githubapp.NewWebhook(string(secret), db, func(string) bool { return true }, nopCounter{}, nil, lg)
			b.SetParallelism(8)
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				rng := rand.New(rand.NewPCG(rand.Uint64(), 2))
				for pb.Next() {
					body := p.Next(rng, nil)
					req := httptest.NewRequest(http.MethodPost, "/webhook", strings.NewReader(string(body)))
					req.Header.Set("X-GitHub-Event", "push")
					req.Header.Set("X-GitHub-Delivery", newDeliveryID(rng))
					req.Header.Set("Content-Type", "application/json")
					req.Header.Set("X-Hub-Signature-256", githubapp.SignatureHeader(secret, body))
					w := httptest.NewRecorder()
					h.ServeHTTP(w, req)
					if w.Code != http.StatusAccepted {
						b.Errorf("status %d: %s", w.Code, w.Body)
						return
					}
				}
			})
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "deliveries/s")
		})
	}
}

// fillInbox stores pending deliveries, and as many done ones before them.
func fillInbox(tb testing.TB, db *storage.DB, path string, pending int) {
	tb.Helper()
	p, err := NewPayloads(8000, 16)
	if err != nil {
		tb.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(7, 7))
	ctx := context.Background()
	for i := 0; i < 2*pending; i++ {
		if _, err := db.Accept(ctx, benchDelivery(p, rng), "push", githubapp.OutcomeAccepted); err != nil {
			tb.Fatal(err)
		}
	}
	// The older half is done, as after the worker handled it.
	raw, err := sql.Open("sqlite", "file:"+path+"?_pragma=busy_timeout(10000)")
	if err != nil {
		tb.Fatal(err)
	}
	defer raw.Close()
	if _, err := raw.Exec(`UPDATE deliveries SET state = 'done', attempts = 1 WHERE seq <= (SELECT MIN(seq) + ? - 1 FROM deliveries)`, pending); err != nil {
		tb.Fatal(err)
	}
}

func BenchmarkNextDeliveries(b *testing.B) {
	for _, pending := range []int{16, 1000, 5000, 20000} {
		b.Run(fmt.Sprintf("pending=%d", pending), func(b *testing.B) {
			db, path := openBenchDB(b)
			fillInbox(b, db, path, pending)
			busy := map[pipeline.InHand]bool{} // Codertocat/service-001 to 003 (benchDelivery's IDs)
			for repo := 1; repo <= 3; repo++ {
				busy[pipeline.InHandOf(int64(186853002+repo), fmt.Sprintf("Codertocat/service-%03d", repo), 0)] = true
			}
			ctx := context.Background()
			b.ResetTimer()
			for b.Loop() {
				ds, err := db.NextDeliveries(ctx, time.Now(), busy, 1)
				if err != nil || len(ds) != 1 {
					b.Fatal(len(ds), err)
				}
			}
		})
	}
}

func BenchmarkNextAttemptAt(b *testing.B) {
	for _, pending := range []int{16, 1000, 5000, 20000} {
		b.Run(fmt.Sprintf("pending=%d", pending), func(b *testing.B) {
			db, path := openBenchDB(b)
			fillInbox(b, db, path, pending)
			ctx := context.Background()
			b.ResetTimer()
			for b.Loop() {
				if _, err := db.NextAttemptAt(ctx); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// TestInboxQueryPlans prints how SQLite runs the worker's queries.
func TestInboxQueryPlans(t *testing.T) {
	db, path := openBenchDB(t)
	fillInbox(t, db, path, 200)
	raw, err := sql.Open("sqlite", "file:"+path+"?mode=ro")
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	for name, q := range map[string]string{
		"NextDeliveries": `SELECT * FROM deliveries d
		WHERE d.state = 'pending'
		  AND d.seq = (SELECT MIN(seq) FROM deliveries p WHERE p.state = 'pending' AND p.repository = d.repository)
		  AND d.next_attempt_at <= 1
		ORDER BY d.seq`,
		"NextAttemptAt": `SELECT MIN(next_attempt_at) FROM deliveries WHERE state = 'pending'`,
	} {
		rows, err := raw.Query("EXPLAIN QUERY PLAN " + q)
		if err != nil {
			t.Fatal(err)
		}
		var plan []string
		for rows.Next() {
			var id, parent, notused int
			var detail string
			if err := rows.Scan(&id, &parent, &notused, &detail); err != nil {
				t.Fatal(err)
			}
			plan = append(plan, detail)
		}
		rows.Close()
		t.Logf("%s: %s", name, strings.Join(plan, " | "))
	}
	var pageSize, pages int
	raw.QueryRow("PRAGMA page_size").Scan(&pageSize)
	raw.QueryRow("PRAGMA page_count").Scan(&pages)
	t.Logf("page_size %d, %d pages for 400 deliveries of 8000 bytes (%.1f pages each)", pageSize, pages, float64(pages)/400)
}

// procIO reads this process's I/O counters (/proc/self/io): syscw and
// wchar, write calls and bytes, show what a commit costs in system calls.
func procIO() map[string]float64 {
	b, _ := os.ReadFile("/proc/self/io")
	m := map[string]float64{}
	for _, l := range strings.Split(string(b), "\n") {
		if k, v, ok := strings.Cut(l, ": "); ok {
			f, _ := strconv.ParseFloat(v, 64)
			m[k] = f
		}
	}
	return m
}

// cpuMicros is this process's user+system CPU time so far, in µs.
func cpuMicros() float64 {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return float64(ru.Utime.Nano()+ru.Stime.Nano()) / 1e3
}
