package storage_test

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/lastmile-app/lastmile/metrics"
	"github.com/lastmile-app/lastmile/pipeline"
)

// An environment is live since the push whose configuration first named
// it (as production, for a production one): later pushes naming it keep
// that time; named again after it was removed, or made a production one,
// it is live since then; removed, it has no series.
func TestEnvironmentLiveSince(t *testing.T) {
	t0 := time.Date(2026, 3, 2, 9, 0, 0, 0, time.UTC)
	hour := func(n int) time.Time { return t0.Add(time.Duration(n) * time.Hour) }
	l := newCaseLedger(t)
	push := func(n int, at time.Time, config string) {
		t.Helper()
		cfg, err := pipeline.ParseConfig([]byte(config))
		if err != nil {
			t.Fatal(err)
		}
		l.db.Now = func() time.Time { return at }
		sha := fmt.Sprintf("%040d", n)
		rel := &pipeline.Release{Repo: l.repo, SHA: sha, Ref: "refs/heads/main", PushedAt: at, Config: cfg,
			State: pipeline.ReleaseActive, ParentID: l.parent}
		if _, err := l.db.RecordRelease(context.Background(), rel, nil); err != nil {
			t.Fatal(err)
		}
		l.parent = rel.ID
	}
	since := func(want ...string) {
		t.Helper()
		if got := l.series(metrics.EnvironmentLiveSince); !slices.Equal(got, want) {
			t.Errorf("live since: %v, want %v", got, want)
		}
	}
	at := func(env string, tm time.Time) string { return fmt.Sprintf("[%s]=%v", env, float64(tm.Unix())) }
	const both = "environments:\n  - name: staging\n  - name: production\n"
	push(1, hour(0), "environments:\n  - name: staging\n  - name: production\n    production: false\n")
	since(at("production", hour(0)), at("staging", hour(0)))
	push(2, hour(1), both) // production is a production environment from now on
	since(at("production", hour(1)), at("staging", hour(0)))
	push(3, hour(2), both)
	since(at("production", hour(1)), at("staging", hour(0)))
	push(4, hour(3), "environments:\n  - name: production\n") // staging removed
	since(at("production", hour(1)))
	push(5, hour(4), both) // and named again
	since(at("production", hour(1)), at("staging", hour(4)))
}
