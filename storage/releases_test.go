package storage_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/lastmile-app/lastmile/pipeline"
	"github.com/lastmile-app/lastmile/storage"
	"github.com/lastmile-app/lastmile/storage/storagetest"
)

// A release whose first deployment waited too long for its required
// contexts is stopped, saying since when it waited: since GitHub first
// refused the deployment (a later refusal does not move that), not since
// the sweep's cutoff. Not while the repository's installation is
// suspended.
func TestExpireWaitingSaysSinceWhenTheDeploymentWaited(t *testing.T) {
	ctx := context.Background()
	db := storagetest.Open(t)
	t0 := time.Date(2026, 3, 2, 9, 0, 0, 0, time.UTC)
	now := t0
	db.Now = func() time.Time { return now }
	repo, rel, intent := firstIntent(t, db, "required_contexts: [build]\nenvironments:\n  - name: test\n")
	for _, at := range []time.Duration{0, time.Hour} { // refused, then again when a status made lastmile ask
		now = t0.Add(at)
		if _, err := db.Resume(ctx, repo.ID, rel.SHA); err != nil {
			t.Fatal(err)
		}
		if err := db.Refused(ctx, intent.ID, pipeline.DeploymentWaiting, "waiting for required contexts: build (pending)"); err != nil {
			t.Fatal(err)
		}
	}

	now = t0.Add(26 * time.Hour)
	// Not while its installation is suspended: GitHub sends no status
	// then, and the unsuspension has the release ask again.
	if _, err := db.SetInstallation(ctx, pipeline.InstallationState{ID: repo.InstallationID, State: pipeline.InstallationSuspended, Since: t0}); err != nil {
		t.Fatal(err)
	}
	if n, err := db.ExpireWaiting(ctx, now.Add(-24*time.Hour)); n != 0 || err != nil {
		t.Fatalf("ExpireWaiting, the installation suspended: %d, %v; want none", n, err)
	}
	if _, err := db.SetInstallation(ctx, pipeline.InstallationState{ID: repo.InstallationID, State: pipeline.InstallationActive}); err != nil {
		t.Fatal(err)
	}
	if n, err := db.ExpireWaiting(ctx, now.Add(-24*time.Hour)); n != 1 || err != nil {
		t.Fatalf("ExpireWaiting: %d, %v; want the one deployment", n, err)
	}
	got, err := db.ReleaseOf(ctx, repo.ID, rel.SHA)
	if err != nil {
		t.Fatal(err)
	}
	if want := "waiting since 2026-03-02T09:00:00Z (waiting for required contexts: build (pending))"; got.State != pipeline.ReleaseStopped ||
		got.StopKind != pipeline.StopRefused || !strings.Contains(got.StopReason, want) {
		t.Errorf("release: %s, %s, %q; want stopped, refused, saying %q", got.State, got.StopKind, got.StopReason, want)
	}
}

// The sweep's consecutive looks (after from, until to) see each ended hold
// once, even one that ends exactly at a look, and a first look from the
// beginning sees one that ended long before (lastmile down for days); a
// hold of a repository with no active release, or of a deployment that
// ended, is not listed.
func TestHoldEndedSeesEachEndOnce(t *testing.T) {
	ctx := context.Background()
	db := storagetest.Open(t)
	t0 := time.Date(2026, 3, 2, 9, 0, 0, 0, time.UTC)
	now := t0
	db.Now = func() time.Time { return now }
	repo, _, intent := firstIntent(t, db, "environments:\n  - name: test\n")
	if err := db.Created(ctx, intent.ID, 1001, t0); err != nil {
		t.Fatal(err)
	}
	d, err := db.Deployment(ctx, 1001)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := db.RecordStatus(ctx, d, pipeline.StatusInfo{GitHubID: 1, State: pipeline.DeploymentInProgress, CreatedAt: t0}); err != nil {
		t.Fatal(err)
	}
	end := t0.Add(pipeline.HoldRunning)
	seen := func(from, to time.Time) int {
		t.Helper()
		repos, err := db.HoldEnded(ctx, from, to)
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range repos {
			if r != repo {
				t.Errorf("listed %+v, want %+v", r, repo)
			}
		}
		return len(repos)
	}
	if n := seen(end.Add(-time.Minute), end) + seen(end, end.Add(time.Minute)); n != 1 {
		t.Errorf("a hold ending at a look seen %d times over two consecutive looks, want once", n)
	}
	if n := seen(t0, end.Add(-time.Millisecond)); n != 0 {
		t.Errorf("seen %d times before it ended", n)
	}
	if n := seen(time.Time{}, end.Add(49*time.Hour)); n != 1 {
		t.Errorf("a first look from the beginning, two days after: seen %d times, want once", n)
	}
	if _, err := db.RecordStatus(ctx, d, pipeline.StatusInfo{GitHubID: 2, State: pipeline.DeploymentSuccess, CreatedAt: t0.Add(time.Hour)}); err != nil {
		t.Fatal(err)
	}
	if n := seen(time.Time{}, end.Add(49*time.Hour)); n != 0 {
		t.Errorf("a deployment that ended: seen %d times", n)
	}
}

// firstIntent records acme/shop, a release of one commit with the
// configuration given, and the intent to deploy it to its first
// environment.
func firstIntent(t *testing.T, db *storage.DB, config string) (pipeline.Repo, *pipeline.Release, *pipeline.Deployment) {
	t.Helper()
	ctx := context.Background()
	repo := pipeline.Repo{ID: 42, Owner: "acme", Name: "shop", InstallationID: 7}
	cfg, err := pipeline.ParseConfig([]byte(config))
	if err != nil {
		t.Fatal(err)
	}
	if err := db.SaveRepo(ctx, repo, time.Time{}); err != nil {
		t.Fatal(err)
	}
	rel := &pipeline.Release{Repo: repo, SHA: "c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1", Ref: "refs/heads/main",
		Config: cfg, State: pipeline.ReleaseActive}
	if _, err := db.RecordRelease(ctx, rel, nil); err != nil {
		t.Fatal(err)
	}
	if err := db.Apply(ctx, repo, []pipeline.Action{pipeline.CreateDeployment{Release: rel, Stage: 0}}); err != nil {
		t.Fatal(err)
	}
	work, err := db.Work(ctx, repo.ID)
	if err != nil || len(work) != 1 {
		t.Fatalf("work: %v, %v; want the intent to deploy to the first environment", work, err)
	}
	return repo, rel, work[0]
}
