package storage_test

import (
	"context"
	"fmt"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/lastmile-app/lastmile/pipeline"
	"github.com/lastmile-app/lastmile/storage"
)

// BenchmarkAcceptBesidePrune measures how long the webhook intake waits
// for a prune: the latency of deliveries accepted one after another, with
// no prune (the baseline), then during the first prune of a backlog
// (benchBacklog bodies of 8 KB), then during the next prune, with nothing
// to prune over a history of benchHistory deliveries. The figures are
// ratios to the baseline of the same run (the machine's disk sets the
// absolute ones): the p50 and the worst latency during each prune, over
// those of the baseline. One iteration is a whole run:
//
//	go test ./storage -run '^$' -bench AcceptBesidePrune -benchtime 1x
func BenchmarkAcceptBesidePrune(b *testing.B) {
	const (
		benchHistory = 1_000_000
		benchBacklog = 20_000
	)
	for range b.N {
		b.StopTimer()
		ctx := context.Background()
		db, err := storage.Open(ctx, filepath.Join(b.TempDir(), "lastmile.db"))
		if err != nil {
			b.Fatal(err)
		}
		raw := rawConn(b, db)
		insertHistory(b, raw, "old", retentionT0, benchHistory, benchBacklog, 8000)
		seq := 0
		accept := func() time.Duration {
			seq++
			d := &pipeline.Delivery{ID: fmt.Sprintf("new-%d", seq), Event: "push", Repository: "acme/shop",
				RepositoryID: 1, InstallationID: 7, State: pipeline.DeliveryPending, Body: []byte(`{}`)}
			began := time.Now()
			if _, err := db.Accept(ctx, d, "push", "accepted"); err != nil {
				b.Fatal(err)
			}
			return time.Since(began)
		}
		// during accepts deliveries one after another while prune runs.
		during := func() (lat []time.Duration, took time.Duration) {
			errc := make(chan error, 1)
			began := time.Now()
			go func() {
				_, err := db.Prune(ctx, retentionT0.Add(24*365*time.Hour))
				took = time.Since(began)
				errc <- err
			}()
			for {
				select {
				case err := <-errc:
					if err != nil {
						b.Fatal(err)
					}
					return lat, took
				default:
				}
				lat = append(lat, accept())
			}
		}
		b.StartTimer()

		var idle []time.Duration
		for range 200 {
			idle = append(idle, accept())
		}
		backlog, backlogTook := during()
		again, againTook := during()

		b.StopTimer()
		p50 := func(l []time.Duration) float64 {
			s := slices.Clone(l)
			slices.Sort(s)
			return float64(s[len(s)/2])
		}
		worst := func(l []time.Duration) float64 { return float64(slices.Max(l)) }
		b.ReportMetric(p50(idle)/1e6, "idle-p50-ms")
		b.ReportMetric(worst(idle)/1e6, "idle-max-ms")
		b.ReportMetric(p50(backlog)/p50(idle), "backlog-p50/idle-p50")
		b.ReportMetric(worst(backlog)/worst(idle), "backlog-max/idle-max")
		b.ReportMetric(float64(backlogTook.Milliseconds()), "backlog-prune-ms")
		b.ReportMetric(p50(again)/p50(idle), "again-p50/idle-p50")
		b.ReportMetric(worst(again)/worst(idle), "again-max/idle-max")
		b.ReportMetric(float64(againTook.Microseconds())/1e3, "again-prune-ms")
		b.ReportMetric(float64(len(backlog)), "accepted-in-backlog-prune")
		db.Close()
		b.StartTimer()
	}
}
