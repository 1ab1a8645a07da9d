package storage_test

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/lastmile-app/lastmile/metrics"
	"github.com/lastmile-app/lastmile/pipeline"
	"github.com/lastmile-app/lastmile/storage"
	"github.com/lastmile-app/lastmile/storage/storagetest"
)

// caseLedger is acme/shop with releases whose configurations spell its
// one environment as the test says, each deployed there by deploy.
type caseLedger struct {
	t      *testing.T
	db     *storage.DB
	repo   pipeline.Repo
	parent int64
	github int64
}

func newCaseLedger(t *testing.T) *caseLedger {
	db := storagetest.Open(t)
	repo := pipeline.Repo{ID: 42, Owner: "acme", Name: "shop", InstallationID: 7}
	if err := db.SaveRepo(context.Background(), repo, time.Time{}); err != nil {
		t.Fatal(err)
	}
	return &caseLedger{t: t, db: db, repo: repo, github: 1000}
}

// release records a release of one commit, building on the previous one,
// whose configuration names env.
func (l *caseLedger) release(n int, env string, at time.Time) *pipeline.Release {
	l.t.Helper()
	cfg, err := pipeline.ParseConfig([]byte("environments:\n  - name: " + env + "\n"))
	if err != nil {
		l.t.Fatal(err)
	}
	sha := fmt.Sprintf("%040d", n)
	rel := &pipeline.Release{Repo: l.repo, SHA: sha, Ref: "refs/heads/main", PushedAt: at, Config: cfg,
		State: pipeline.ReleaseActive, ParentID: l.parent}
	if _, err := l.db.RecordRelease(context.Background(), rel, []pipeline.Commit{{SHA: sha, Author: "o", Timestamp: at, Title: sha}}); err != nil {
		l.t.Fatal(err)
	}
	l.parent = rel.ID
	return rel
}

// deploy creates rel's deployment to its environment, and returns it.
func (l *caseLedger) deploy(rel *pipeline.Release, at time.Time) int64 {
	l.t.Helper()
	ctx := context.Background()
	if err := l.db.Apply(ctx, l.repo, []pipeline.Action{pipeline.CreateDeployment{Release: rel, Stage: 0}}); err != nil {
		l.t.Fatal(err)
	}
	work, err := l.db.Work(ctx, l.repo.ID)
	if err != nil {
		l.t.Fatal(err)
	}
	for _, d := range work {
		if d.ReleaseID == rel.ID && d.State == pipeline.DeploymentIntent {
			l.github++
			if err := l.db.Created(ctx, d.ID, l.github, at); err != nil {
				l.t.Fatal(err)
			}
			return l.github
		}
	}
	l.t.Fatalf("no intent to deploy release #%d", rel.ID)
	return 0
}

func (l *caseLedger) status(github int64, state pipeline.DeploymentState, at time.Time) {
	l.t.Helper()
	ctx := context.Background()
	d, err := l.db.Deployment(ctx, github)
	if err != nil {
		l.t.Fatal(err)
	}
	l.github++
	if _, err := l.db.RecordStatus(ctx, d, pipeline.StatusInfo{GitHubID: l.github, State: state, CreatedAt: at}); err != nil {
		l.t.Fatal(err)
	}
}

// series lists a metric's series with a value, as "labels=value" (a
// histogram's value is its count).
func (l *caseLedger) series(name string) []string {
	l.t.Helper()
	snap, err := l.db.MetricsSnapshot(context.Background())
	if err != nil {
		l.t.Fatal(err)
	}
	var out []string
	for _, s := range snap.Gauges[name] {
		out = append(out, fmt.Sprintf("%v=%v", s.Labels[1:], s.Value))
	}
	for _, h := range snap.Histograms[name] {
		if h.Count > 0 {
			out = append(out, fmt.Sprintf("%v=%d/%v", h.Labels[1:], h.Count, h.Sum))
		}
	}
	slices.Sort(out)
	return out
}

// An environment respelled in case only is one environment, as on GitHub:
// live under the configuration's spelling, also while a release from before
// the respelling still deploys there; its last success carries over; and a
// failure under one spelling is restored by a success under the other,
// whatever order lastmile hears of them in.
func TestEnvironmentRespelledInCaseIsOneEnvironment(t *testing.T) {
	t0 := time.Date(2026, 3, 2, 9, 0, 0, 0, time.UTC)
	min := func(n int) time.Time { return t0.Add(time.Duration(n) * time.Minute) }
	l := newCaseLedger(t)

	r1 := l.release(1, "Production", min(0))
	d1 := l.deploy(r1, min(1))
	l.status(d1, pipeline.DeploymentInProgress, min(1))
	l.status(d1, pipeline.DeploymentSuccess, min(2))
	r2 := l.release(2, "Production", min(3))
	d2 := l.deploy(r2, min(4))
	l.status(d2, pipeline.DeploymentInProgress, min(5))

	// The configuration respells the environment: the environment, its
	// last success and its info follow the new spelling.
	r3 := l.release(3, "production", min(6))
	want := []string{fmt.Sprintf("[production]=%v", float64(min(2).Unix()))}
	if got := l.series(metrics.LastSuccess); !slices.Equal(got, want) {
		t.Errorf("last success after the respelling: %v, want %v", got, want)
	}
	wantInfo := []string{"[production true]=1"}
	if got := l.series(metrics.EnvironmentInfo); !slices.Equal(got, wantInfo) {
		t.Errorf("environment info after the respelling: %v, want %v", got, wantInfo)
	}

	// Release 3 succeeds at 30; release 2's deploy, started under the old
	// spelling, failed at 10, heard of only now: measured to that success.
	d3 := l.deploy(r3, min(20))
	l.status(d3, pipeline.DeploymentInProgress, min(21))
	l.status(d3, pipeline.DeploymentSuccess, min(30))
	l.status(d2, pipeline.DeploymentFailure, min(10))
	if got, want := l.series(metrics.TimeToRestore), []string{"[Production]=1/1200"}; !slices.Equal(got, want) {
		t.Errorf("time to restore: %v, want %v (the old spelling's failure at 10 to the new one's success at 30)", got, want)
	}
	// Each commit's lead time once: release 1's when it reached the
	// environment, releases 2's and 3's with release 3's success.
	wantLead := []string{"[Production]=1/120", fmt.Sprintf("[production]=2/%v", float64(27*60+24*60))}
	if got := l.series(metrics.LeadTime); !slices.Equal(got, wantLead) {
		t.Errorf("lead times: %v, want %v", got, wantLead)
	}

	// A release from before the respelling deploys to the environment
	// again: it stays live under the configuration's spelling.
	r4 := l.release(4, "Production", min(40))
	l.release(5, "production", min(42))
	l.deploy(r4, min(43))
	if got := l.series(metrics.EnvironmentInfo); !slices.Equal(got, wantInfo) {
		t.Errorf("environment info after a deployment under the old spelling: %v, want %v", got, wantInfo)
	}
}

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

// A commit dated after the success that brought it to the environment (its
// committer's clock ahead) has no lead time: it is left out of the
// histogram, not counted as the fastest; the commits around it are measured.
func TestLeadTimeLeavesOutCommitsDatedAfterTheirDeployment(t *testing.T) {
	t0 := time.Date(2026, 3, 2, 9, 0, 0, 0, time.UTC)
	min := func(n int) time.Time { return t0.Add(time.Duration(n) * time.Minute) }
	l := newCaseLedger(t)

	r1 := l.release(1, "production", min(0))
	d1 := l.deploy(r1, min(1))
	l.status(d1, pipeline.DeploymentInProgress, min(1))
	l.status(d1, pipeline.DeploymentSuccess, min(2))
	// Release 2's commit says 09:30; its deployment succeeded at 09:12 by
	// GitHub's clock.
	r2 := l.release(2, "production", min(30))
	d2 := l.deploy(r2, min(10))
	l.status(d2, pipeline.DeploymentInProgress, min(11))
	l.status(d2, pipeline.DeploymentSuccess, min(12))
	r3 := l.release(3, "production", min(40))
	d3 := l.deploy(r3, min(41))
	l.status(d3, pipeline.DeploymentInProgress, min(41))
	l.status(d3, pipeline.DeploymentSuccess, min(45))

	if got, want := l.series(metrics.LeadTime), []string{"[production]=2/420"}; !slices.Equal(got, want) {
		t.Errorf("lead times: %v, want %v (120 s and 300 s; the commit dated after its deployment left out)", got, want)
	}
}

// The audit record's JSON lists an environment the release has not reached
// with "deployments": [] — a list, as its other lists are, not null.
func TestAuditJSONListsNoDeploymentsAsEmpty(t *testing.T) {
	l := newCaseLedger(t)
	rel := l.release(1, "production", time.Date(2026, 3, 2, 9, 0, 0, 0, time.UTC))
	rec, err := l.db.Audit(context.Background(), l.repo.FullName(), rel.SHA)
	if err != nil {
		t.Fatal(err)
	}
	b, err := json.Marshal(rec)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(b), `"name":"production","production":true,"deployments":[]`) {
		t.Errorf("audit JSON of a release not deployed yet: %s; want production with \"deployments\":[]", b)
	}
}
