package storage_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/lastmile-app/lastmile/pipeline"
	"github.com/lastmile-app/lastmile/storage/storagetest"
)

// A release's deploy failed in staging, then its job was re-run: while the
// re-run deploys (in_progress after the failure), status says it deploys,
// since the re-run began; when the re-run fails too, that it failed, since
// the second failure.
func TestStatusDuringARerun(t *testing.T) {
	ctx := context.Background()
	db := storagetest.Open(t)
	t0 := time.Date(2026, 3, 2, 9, 0, 0, 0, time.UTC)
	db.Now = func() time.Time { return t0 }
	_, _, intent := firstIntent(t, db, "environments:\n  - name: staging\n")
	if err := db.Created(ctx, intent.ID, 1001, t0); err != nil {
		t.Fatal(err)
	}
	latest := func() *pipeline.LatestDeployment {
		t.Helper()
		list, err := db.Status(ctx, "")
		if err != nil || len(list) != 1 || list[0].Latest == nil {
			t.Fatalf("status: %+v, %v; want staging with its latest deployment", list, err)
		}
		return list[0].Latest
	}
	for i, step := range []struct {
		state pipeline.DeploymentState
		want  pipeline.DeploymentState
	}{
		{pipeline.DeploymentQueued, pipeline.DeploymentQueued},
		{pipeline.DeploymentInProgress, pipeline.DeploymentInProgress},
		{pipeline.DeploymentFailure, pipeline.DeploymentFailure},
		{pipeline.DeploymentQueued, pipeline.DeploymentQueued}, // the re-run, waiting for its reviewers, say
		{pipeline.DeploymentInProgress, pipeline.DeploymentInProgress},
		{pipeline.DeploymentFailure, pipeline.DeploymentFailure},
	} {
		d, err := db.Deployment(ctx, 1001)
		if err != nil {
			t.Fatal(err)
		}
		at := t0.Add(time.Duration(i+1) * time.Minute)
		if _, err := db.RecordStatus(ctx, d, pipeline.StatusInfo{GitHubID: int64(i + 1), State: step.state, CreatedAt: at}); err != nil {
			t.Fatal(err)
		}
		if l := latest(); l.State != step.want || !l.Since.Equal(at) {
			t.Errorf("after status %d (%s): latest %s since %s; want %s since %s", i+1, step.state,
				l.State, l.Since.Format(time.TimeOnly), step.want, at.Format(time.TimeOnly))
		}
	}
}

// Two repositories lastmile knows by one name (the first deleted without
// lastmile hearing of it, another created under its name): status lists
// the one by that name now, once.
func TestStatusListsOneRepositoryPerName(t *testing.T) {
	ctx := context.Background()
	db := storagetest.Open(t)
	t0 := time.Date(2026, 3, 2, 9, 0, 0, 0, time.UTC)
	db.Now = func() time.Time { return t0 }
	cfg, err := pipeline.ParseConfig([]byte("environments:\n  - name: staging\n"))
	if err != nil {
		t.Fatal(err)
	}
	for i, id := range []int64{43, 42} { // the newer name event is 42's
		repo := pipeline.Repo{ID: id, Owner: "acme", Name: "shop", InstallationID: 7}
		if err := db.SaveRepo(ctx, repo, t0.Add(time.Duration(i)*time.Hour)); err != nil {
			t.Fatal(err)
		}
		rel := &pipeline.Release{Repo: repo, SHA: fmt.Sprintf("%040d", id), Ref: "refs/heads/main", Config: cfg, State: pipeline.ReleaseActive}
		if _, err := db.RecordRelease(ctx, rel, nil); err != nil {
			t.Fatal(err)
		}
		if err := db.Apply(ctx, repo, []pipeline.Action{pipeline.CreateDeployment{Release: rel, Stage: 0}}); err != nil {
			t.Fatal(err)
		}
	}
	for _, filter := range []string{"", "acme/shop", "ACME/shop"} {
		list, err := db.Status(ctx, filter)
		if err != nil {
			t.Fatal(err)
		}
		if len(list) != 1 || list[0].Repository != "acme/shop" || list[0].Environment != "staging" {
			t.Errorf("status %q: %+v, want acme/shop's staging once", filter, list)
		}
		if len(list) == 1 && (list[0].Latest == nil || list[0].Latest.SHA != fmt.Sprintf("%040d", 42)) {
			t.Errorf("status %q: latest %+v, want repository 42's release (its name the newer)", filter, list[0].Latest)
		}
	}
}
