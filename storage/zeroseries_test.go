package storage_test

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/lastmile-app/lastmile/metrics"
	"github.com/lastmile-app/lastmile/pipeline"
)

// environmentsWithSeries lists the environments that have a series of
// lastmile_deployments_total and of every delivery histogram in a scrape,
// and fails the test when the two disagree.
func (l *caseLedger) environmentsWithSeries() []string {
	l.t.Helper()
	snap, err := l.db.MetricsSnapshot(context.Background())
	if err != nil {
		l.t.Fatal(err)
	}
	seen := func(labels [][]string) []string {
		var out []string
		for _, ls := range labels {
			if !slices.Contains(out, ls[1]) {
				out = append(out, ls[1])
			}
		}
		slices.Sort(out)
		return out
	}
	var counters [][]string
	for _, s := range snap.Counters[metrics.DeploymentsTotal] {
		counters = append(counters, s.Labels)
	}
	envs := seen(counters)
	for _, name := range []string{metrics.LeadTime, metrics.DeploymentDuration, metrics.ApprovalWait, metrics.TimeToRestore} {
		var hs [][]string
		for _, h := range snap.Histograms[name] {
			hs = append(hs, h.Labels)
		}
		if got := seen(hs); !slices.Equal(got, envs) {
			l.t.Fatalf("%s has series for %v, lastmile_deployments_total for %v", name, got, envs)
		}
	}
	return envs
}

// An environment a configuration stops naming before lastmile deployed
// there leaves no series behind (a configuration renamed push after push
// would otherwise add series to every scrape for good), and gets its zero
// series again when named again; one lastmile deployed to — even a
// deployment not ended yet — keeps them.
func TestRetiredEnvironmentNeverDeployedLeavesNoSeries(t *testing.T) {
	t0 := time.Date(2026, 3, 2, 9, 0, 0, 0, time.UTC)
	min := func(n int) time.Time { return t0.Add(time.Duration(n) * time.Minute) }
	l := newCaseLedger(t)
	check := func(when string, want ...string) {
		t.Helper()
		if got := l.environmentsWithSeries(); !slices.Equal(got, want) {
			t.Errorf("%s: series for %v, want %v", when, got, want)
		}
	}

	l.release(1, "qa-1", min(0))
	check("qa-1 named", "qa-1")
	l.release(2, "qa-2", min(1))
	check("qa-1 renamed qa-2 before any deployment", "qa-2")
	l.release(3, "QA-1", min(2))
	check("qa-1 named again, in another case", "QA-1")

	r4 := l.release(4, "staging", min(3))
	d4 := l.deploy(r4, min(4)) // in flight: its end will count there
	l.release(5, "production", min(5))
	check("staging renamed while deploying", "production", "staging")
	l.status(d4, pipeline.DeploymentSuccess, min(6))
	var staging string
	snap, err := l.db.MetricsSnapshot(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range snap.Counters[metrics.DeploymentsTotal] {
		if s.Labels[1] == "staging" && s.Labels[2] == "success" {
			staging = strings.Join(s.Labels, "/")
			if s.Value != 1 {
				t.Errorf("%s = %v, want 1", staging, s.Value)
			}
		}
	}
	if staging == "" {
		t.Error("the success in the retired staging is not counted")
	}

	// Leaving lastmile retires every environment: those never deployed to
	// lose their series.
	if err := l.db.RetireEnvironments(context.Background(), l.repo.ID); err != nil {
		t.Fatal(err)
	}
	check("the repository left lastmile", "staging")
}

// Series are kept by name: two repositories under one name (one deleted or
// renamed before lastmile heard of it, another under that name) share them,
// and one retiring an environment the other still names leaves them.
func TestRetiredEnvironmentKeepsTheSeriesOfItsNamesake(t *testing.T) {
	t0 := time.Date(2026, 3, 2, 9, 0, 0, 0, time.UTC)
	older := newCaseLedger(t)
	newer := &caseLedger{t: t, db: older.db, repo: pipeline.Repo{ID: 43, Owner: "acme", Name: "shop", InstallationID: 7}, github: 5000}
	if err := newer.db.SaveRepo(context.Background(), newer.repo, time.Time{}); err != nil {
		t.Fatal(err)
	}
	older.release(1, "qa", t0)
	newer.release(2, "qa", t0.Add(time.Minute))
	older.release(3, "production", t0.Add(2*time.Minute))
	if got, want := older.environmentsWithSeries(), []string{"production", "qa"}; !slices.Equal(got, want) {
		t.Errorf("qa retired by one repository, live in its namesake: series for %v, want %v", got, want)
	}
	newer.release(4, "production", t0.Add(3*time.Minute))
	if got, want := older.environmentsWithSeries(), []string{"production"}; !slices.Equal(got, want) {
		t.Errorf("qa retired by both: series for %v, want %v", got, want)
	}
}

// ...and stay once a repository of the same name deployed there, even
// after that one retired the environment too: they hold its deployments.
func TestRetiredEnvironmentKeepsTheSeriesANamesakeDeployedTo(t *testing.T) {
	t0 := time.Date(2026, 3, 2, 9, 0, 0, 0, time.UTC)
	min := func(n int) time.Time { return t0.Add(time.Duration(n) * time.Minute) }
	older := newCaseLedger(t)
	newer := &caseLedger{t: t, db: older.db, repo: pipeline.Repo{ID: 43, Owner: "acme", Name: "shop", InstallationID: 7}, github: 5000}
	if err := newer.db.SaveRepo(context.Background(), newer.repo, time.Time{}); err != nil {
		t.Fatal(err)
	}
	older.release(1, "qa", min(0))
	r2 := newer.release(2, "qa", min(1))
	d := newer.deploy(r2, min(2))
	newer.status(d, pipeline.DeploymentSuccess, min(3))
	newer.release(3, "production", min(4))
	older.release(4, "production", min(5))
	if got, want := older.environmentsWithSeries(), []string{"production", "qa"}; !slices.Equal(got, want) {
		t.Errorf("qa retired by both, deployed to by one: series for %v, want %v", got, want)
	}
}
