package storage_test

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/lastmile-app/lastmile/metrics"
	"github.com/lastmile-app/lastmile/pipeline"
	"github.com/lastmile-app/lastmile/storage"
	"github.com/lastmile-app/lastmile/storage/storagetest"
)

// GitHub's environment names ignore case, and a deployment_review payload
// may spell one otherwise than the configuration does: the review is still
// linked to lastmile's deployment there, and its approval wait is observed
// under the configuration's spelling, the one every other series of the
// environment (lastmile_environment_info among them) carries — whether
// lastmile's deployment is the one reviewed (staging) or a workflow's job
// owns the environment (production).
func TestApprovalWaitUnderTheConfigurationsSpelling(t *testing.T) {
	ctx := context.Background()
	db := storagetest.Open(t)
	t0 := time.Date(2026, 3, 2, 9, 0, 0, 0, time.UTC)
	db.Now = func() time.Time { return t0 }
	repo, rel, intent := firstIntent(t, db, "environments:\n  - name: staging\n  - name: production\n    production: true\n")
	if err := db.Created(ctx, intent.ID, 1001, t0); err != nil {
		t.Fatal(err)
	}
	for _, rv := range []struct {
		env string
		run int64
	}{{"Staging", 11}, {"PRODUCTION", 12}} {
		for i, a := range []pipeline.ReviewAction{pipeline.ReviewRequested, pipeline.ReviewApproved} {
			if err := db.RecordReview(ctx, pipeline.Review{Repo: repo, DeliveryID: rv.env + string(a), Action: a,
				Environments: []string{rv.env}, RunID: rv.run, HeadSHA: rel.SHA, Actor: "alice",
				Since: t0.Add(time.Minute), At: t0.Add(time.Minute + time.Duration(i)*20*time.Minute)}); err != nil {
				t.Fatal(err)
			}
		}
	}

	d, err := db.Deployment(ctx, 1001)
	if err != nil {
		t.Fatal(err)
	}
	if d.RunID != 11 {
		t.Errorf("lastmile's staging deployment is linked to run %d, want 11 (the run reviewed in Staging)", d.RunID)
	}
	snap, err := db.MetricsSnapshot(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var waits []string
	for _, s := range snap.Histograms[metrics.ApprovalWait] {
		if s.Count > 0 {
			waits = append(waits, s.Labels[1])
			if s.Count != 1 || s.Sum != 1200 {
				t.Errorf("approval wait in %s: %d observed, sum %v; want one of 1200 s", s.Labels[1], s.Count, s.Sum)
			}
		}
	}
	slices.Sort(waits)
	if !slices.Equal(waits, []string{"production", "staging"}) {
		t.Errorf("approval waits observed in %q, want in [production staging], as the configuration spells them", waits)
	}
}

// A rejection recorded before lastmile's deployment could be linked to the
// run (the answer to its creation not yet stored) is found once the run is
// linked, though the review spells the environment otherwise.
func TestRejectionFoundThroughTheRunWhateverTheCase(t *testing.T) {
	ctx := context.Background()
	db := storagetest.Open(t)
	t0 := time.Date(2026, 3, 2, 9, 0, 0, 0, time.UTC)
	db.Now = func() time.Time { return t0 }
	repo, rel, intent := firstIntent(t, db, "environments:\n  - name: staging\n")
	if err := db.RecordReview(ctx, pipeline.Review{Repo: repo, DeliveryID: "r1", Action: pipeline.ReviewRejected,
		Environments: []string{"Staging"}, RunID: 11, HeadSHA: rel.SHA, Actor: "alice", Comment: "not today",
		Since: t0, At: t0.Add(time.Minute)}); err != nil {
		t.Fatal(err)
	}
	if err := db.Created(ctx, intent.ID, 1001, t0); err != nil {
		t.Fatal(err)
	}
	d, err := db.Deployment(ctx, 1001)
	if err != nil {
		t.Fatal(err)
	}
	if err := db.LinkRun(ctx, d.ID, 11); err != nil {
		t.Fatal(err)
	}
	if d, err = db.Deployment(ctx, 1001); err != nil {
		t.Fatal(err)
	}
	rv, err := db.Rejection(ctx, d)
	if err != nil || rv == nil || rv.Actor != "alice" || rv.Comment != "not today" {
		t.Errorf("rejection of the staging deployment: %+v, %v; want alice's, found through run 11", rv, err)
	}
}

// A rejection that an approval followed (a re-run approved) is not the
// current attempt's; a rejection of a later attempt is.
func TestRejectionOfTheCurrentAttemptOnly(t *testing.T) {
	ctx := context.Background()
	db, repo, rel, d, t0 := stagingOfRun11(t)
	for i, rv := range []struct {
		action pipeline.ReviewAction
		actor  string
		want   string
	}{{pipeline.ReviewRejected, "bob", "bob"}, {pipeline.ReviewApproved, "alice", ""}, {pipeline.ReviewRejected, "carol", "carol"}} {
		if err := db.RecordReview(ctx, pipeline.Review{Repo: repo, DeliveryID: fmt.Sprint("r", i), Action: rv.action,
			Environments: []string{"staging"}, RunID: 11, HeadSHA: rel.SHA, Actor: rv.actor, At: t0.Add(time.Duration(i+1) * time.Minute)}); err != nil {
			t.Fatal(err)
		}
		got, err := db.Rejection(ctx, d)
		if err != nil || (got == nil) != (rv.want == "") || (got != nil && got.Actor != rv.want) {
			t.Errorf("after %s's %s: rejection %+v, %v; want %q's", rv.actor, rv.action, got, err, rv.want)
		}
	}
}

// GitHub's times are whole seconds: lastmile's end of a rejected attempt
// (its run ended without a result) is often stamped in the second of the
// rejection. It is still that attempt's end, so a re-run that then fails
// without having reported in_progress (its job failed before the Action's
// first step) is a later attempt: the deployment is no longer the
// rejection's, and the release stopped on a failure.
func TestRejectedAttemptsEndInTheSameSecond(t *testing.T) {
	ctx := context.Background()
	db, repo, rel, d, t0 := stagingOfRun11(t)
	rejectedAt := t0.Add(time.Minute)
	if err := db.RecordReview(ctx, pipeline.Review{Repo: repo, DeliveryID: "r1", Action: pipeline.ReviewRejected,
		Environments: []string{"staging"}, RunID: 11, HeadSHA: rel.SHA, Actor: "bob", Comment: "not today", At: rejectedAt}); err != nil {
		t.Fatal(err)
	}
	status := func(id int64, at time.Time, why string) *pipeline.Deployment {
		t.Helper()
		d, err := db.Deployment(ctx, 1001)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := db.RecordStatus(ctx, d, pipeline.StatusInfo{GitHubID: id, State: pipeline.DeploymentFailure, Description: why,
			Creator: "lastmile-app[bot]", ByLastmile: true, CreatedAt: at}); err != nil {
			t.Fatal(err)
		}
		if d, err = db.Deployment(ctx, 1001); err != nil {
			t.Fatal(err)
		}
		return d
	}
	if d := status(1, rejectedAt, "the run ended without a result"); !d.Rejected {
		t.Fatalf("after the rejected attempt's end: rejected %v, want true", d.Rejected)
	}
	d = status(2, rejectedAt.Add(2*time.Minute), "the re-run's job failed")
	if d.Rejected || d.Reason != "the re-run's job failed" {
		t.Errorf("after a re-run's failure: rejected %v, reason %q; want the failure's, not bob's rejection", d.Rejected, d.Reason)
	}
}

// stagingOfRun11 is a database whose one release's deployment to staging
// (GitHub's 1001, created at t0, the database's clock) is linked to run 11.
func stagingOfRun11(t *testing.T) (*storage.DB, pipeline.Repo, *pipeline.Release, *pipeline.Deployment, time.Time) {
	t.Helper()
	ctx := context.Background()
	db := storagetest.Open(t)
	t0 := time.Date(2026, 3, 2, 9, 0, 0, 0, time.UTC)
	db.Now = func() time.Time { return t0 }
	repo, rel, intent := firstIntent(t, db, "environments:\n  - name: staging\n")
	if err := db.Created(ctx, intent.ID, 1001, t0); err != nil {
		t.Fatal(err)
	}
	d, err := db.Deployment(ctx, 1001)
	if err != nil {
		t.Fatal(err)
	}
	if err := db.LinkRun(ctx, d.ID, 11); err != nil {
		t.Fatal(err)
	}
	if d, err = db.Deployment(ctx, 1001); err != nil {
		t.Fatal(err)
	}
	return db, repo, rel, d, t0
}
