package storage_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/lastmile-app/lastmile/pipeline"
	"github.com/lastmile-app/lastmile/storage/storagetest"
)

// A release whose first deployment waited too long for its required
// contexts is stopped, saying since when it waited: since GitHub first
// refused the deployment (a later refusal does not move that), not since
// the sweep's cutoff.
func TestExpireWaitingSaysSinceWhenTheDeploymentWaited(t *testing.T) {
	ctx := context.Background()
	db := storagetest.Open(t)
	t0 := time.Date(2026, 3, 2, 9, 0, 0, 0, time.UTC)
	now := t0
	db.Now = func() time.Time { return now }
	repo := pipeline.Repo{ID: 42, Owner: "acme", Name: "shop", InstallationID: 7}
	cfg, err := pipeline.ParseConfig([]byte("required_contexts: [build]\nenvironments:\n  - name: test\n"))
	if err != nil {
		t.Fatal(err)
	}
	if err := db.SaveRepo(ctx, repo); err != nil {
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
		t.Fatalf("work: %v, %v; want the test intent", work, err)
	}
	for _, at := range []time.Duration{0, time.Hour} { // refused, then again when a status made lastmile ask
		now = t0.Add(at)
		if _, err := db.Resume(ctx, repo.ID, rel.SHA); err != nil {
			t.Fatal(err)
		}
		if err := db.Refused(ctx, work[0].ID, pipeline.DeploymentWaiting, "waiting for required contexts: build (pending)"); err != nil {
			t.Fatal(err)
		}
	}

	now = t0.Add(26 * time.Hour)
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
