package storage_test

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/lastmile-app/lastmile/pipeline"
	"github.com/lastmile-app/lastmile/storage"
)

// A release stopped for an invalid configuration has no stages: the
// history says so with [], as for any other release, not null.
func TestHistoryOfAConfigErrorHasNoStages(t *testing.T) {
	ctx := context.Background()
	l := newCaseLedger(t)
	rel := &pipeline.Release{Repo: l.repo, SHA: fmt.Sprintf("%040d", 9), Ref: "refs/heads/main", PushedAt: time.Now(),
		State: pipeline.ReleaseStopped, StopKind: pipeline.StopConfigError, StopReason: "environments: empty list"}
	if _, err := l.db.RecordRelease(ctx, rel, nil); err != nil {
		t.Fatal(err)
	}
	list, err := l.db.History(ctx, storage.HistoryFilter{})
	if err != nil {
		t.Fatal(err)
	}
	b, err := json.Marshal(list)
	if err != nil {
		t.Fatal(err)
	}
	if len(list) != 1 || !strings.Contains(string(b), `"stages":[]`) {
		t.Errorf("history of a release stopped for its configuration: %s; want one release with \"stages\":[]", b)
	}
}

// history --env lists the releases deployed to the environment: those
// with a deployment there that exists on GitHub, unless it was withdrawn
// (made inactive, or owing GitHub that status) before its deploy began.
func TestHistoryOfAnEnvironmentListsTheReleasesDeployedThere(t *testing.T) {
	ctx := context.Background()
	t0 := time.Date(2026, 3, 2, 9, 0, 0, 0, time.UTC)
	l := newCaseLedger(t)
	n := 0
	// release records a release whose deployment to production is at
	// the intent, and returns the release and the intent.
	release := func() (*pipeline.Release, *pipeline.Deployment) {
		t.Helper()
		n++
		rel := l.release(n, "production", t0.Add(time.Duration(n)*time.Hour))
		if err := l.db.Apply(ctx, l.repo, []pipeline.Action{pipeline.CreateDeployment{Release: rel, Stage: 0}}); err != nil {
			t.Fatal(err)
		}
		work, err := l.db.Work(ctx, l.repo.ID)
		if err != nil {
			t.Fatal(err)
		}
		for _, d := range work {
			if d.ReleaseID == rel.ID && d.State == pipeline.DeploymentIntent {
				return rel, d
			}
		}
		t.Fatalf("no intent to deploy release #%d", rel.ID)
		return nil, nil
	}
	created := func(d *pipeline.Deployment, statuses ...pipeline.DeploymentState) int64 {
		t.Helper()
		l.github++
		github := l.github
		if err := l.db.Created(ctx, d.ID, github, t0); err != nil {
			t.Fatal(err)
		}
		for _, s := range statuses {
			l.status(github, s, t0)
		}
		return github
	}
	want := map[int64]string{}

	rel, _ := release()
	want[rel.ID] = "" // an intent: not created on GitHub yet
	rel, d := release()
	if err := l.db.Refused(ctx, d.ID, pipeline.DeploymentWaiting, "required contexts not green"); err != nil {
		t.Fatal(err)
	}
	want[rel.ID] = ""
	rel, d = release()
	if err := l.db.Refused(ctx, d.ID, pipeline.DeploymentAbandoned, "GitHub refused it"); err != nil {
		t.Fatal(err)
	}
	want[rel.ID] = ""
	rel, d = release()
	created(d, pipeline.DeploymentQueued, pipeline.DeploymentInactive)
	want[rel.ID] = "" // withdrawn before it began
	rel, d = release()
	github := created(d, pipeline.DeploymentQueued)
	dep, err := l.db.Deployment(ctx, github)
	if err != nil {
		t.Fatal(err)
	}
	if err := l.db.Apply(ctx, l.repo, []pipeline.Action{pipeline.StopRelease{Release: rel, Kind: pipeline.StopSuperseded,
		Reason: "superseded", Deactivate: dep}}); err != nil {
		t.Fatal(err)
	}
	want[rel.ID] = "" // withdrawn before it began, its inactive still to write
	rel, d = release()
	created(d)
	want[rel.ID] = "created" // waiting for its reviewers, say
	rel, d = release()
	created(d, pipeline.DeploymentInProgress, pipeline.DeploymentInactive)
	want[rel.ID] = "in_progress" // made inactive once it began: its deploy runs on
	rel, d = release()
	created(d, pipeline.DeploymentInProgress, pipeline.DeploymentFailure)
	want[rel.ID] = "failure"
	rel, d = release()
	created(d, pipeline.DeploymentInProgress, pipeline.DeploymentSuccess, pipeline.DeploymentInactive)
	want[rel.ID] = "success" // GitHub's inactive once a newer one succeeds

	list, err := l.db.History(ctx, storage.HistoryFilter{Environment: "Production", Limit: 100})
	if err != nil {
		t.Fatal(err)
	}
	got := map[int64]string{}
	for _, e := range list {
		got[e.Release.ID] = string(e.Stages[0].State)
	}
	for id, state := range want {
		if got[id] != state {
			t.Errorf("release #%d in history --env production: %q, want %q (\"\": not listed)", id, got[id], state)
		}
	}
}
