package storage_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/lastmile-app/lastmile/pipeline"
	"github.com/lastmile-app/lastmile/storage"
	"github.com/lastmile-app/lastmile/storage/storagetest"
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

// A deploy job GitHub had no log for: the record says so, with no log kept
// (what is kept is lastmile's placeholder, which says why: retention
// leaves it); the log GitHub serves later is kept as any other.
func TestAuditOfAJobGitHubHadNoLogFor(t *testing.T) {
	ctx := context.Background()
	db := storagetest.Open(t)
	t0 := time.Date(2026, 3, 2, 9, 0, 0, 0, time.UTC)
	db.Now = func() time.Time { return t0 }
	repo, rel, intent := firstIntent(t, db, "environments:\n  - name: production\n")
	if err := db.Created(ctx, intent.ID, 1001, t0); err != nil {
		t.Fatal(err)
	}
	if err := db.LinkRun(ctx, intent.ID, 77); err != nil {
		t.Fatal(err)
	}
	job := pipeline.WorkflowJob{Repo: repo, RunID: 77, JobID: 88, Name: "deploy", Status: "completed", Conclusion: "success",
		StartedAt: t0, CompletedAt: t0.Add(time.Minute)}
	if err := db.RecordWorkflowJob(ctx, job); err != nil {
		t.Fatal(err)
	}
	record := func() (pipeline.JobRecord, string) {
		t.Helper()
		rec, err := db.Audit(ctx, "acme/shop", rel.SHA)
		if err != nil {
			t.Fatal(err)
		}
		j := rec.Environments[0].Deployments[0].Jobs[0]
		b, err := json.Marshal(j)
		if err != nil {
			t.Fatal(err)
		}
		return j, string(b)
	}
	if err := db.SaveMissingJobLog(ctx, intent.ID, job, []byte("(GitHub had no log for this job)\n")); err != nil {
		t.Fatal(err)
	}
	j, b := record()
	if !j.LogMissing || j.LogBytes != 0 || j.LogPruned || !strings.Contains(b, `"log_missing":true`) || strings.Contains(b, "log_bytes") ||
		!strings.Contains(b, `"log_missing_why":"GitHub had no log for it"`) {
		t.Errorf("job GitHub had no log for: %s; want log_missing, why, and no log_bytes", b)
	}
	// Its placeholder is no log to serve (GET /api/v1/jobs/ID/log: 404).
	noLog := func(when string) {
		t.Helper()
		if log, err := db.JobLog(ctx, job.JobID); !errors.Is(err, pipeline.ErrNotFound) || !strings.Contains(fmt.Sprint(err), "GitHub had no log") {
			t.Errorf("JobLog of a job GitHub had no log for, %s: %q, %v; want not found, saying why", when, log, err)
		}
	}
	noLog("kept")
	if _, err := db.Prune(ctx, t0.Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	if j, b := record(); !j.LogMissing || j.LogPruned || j.LogMissingWhy != "GitHub had no log for it" {
		t.Errorf("job GitHub had no log for, retention run: %s; want log_missing and why, not log_pruned", b)
	}
	noLog("retention run")
	if err := db.SaveJobLog(ctx, intent.ID, job, []byte("deployed\n"), false); err != nil {
		t.Fatal(err)
	}
	if j, b := record(); j.LogMissing || j.LogBytes != len("deployed\n") {
		t.Errorf("job whose log GitHub served later: %s; want its log_bytes, not log_missing", b)
	}
	if log, err := db.JobLog(ctx, job.JobID); err != nil || string(log) != "deployed\n" {
		t.Errorf("JobLog once GitHub served it: %q, %v", log, err)
	}
}

// audit of a commit that is no release's head, but one a release brought,
// shows the newest release that brought it, saying so; a commit no release
// brought is not found, and an abbreviation of several commits (heads or
// not) is refused.
func TestAuditOfACommitAReleaseBrought(t *testing.T) {
	ctx := context.Background()
	l := newCaseLedger(t)
	t0 := time.Date(2026, 3, 2, 9, 0, 0, 0, time.UTC)
	cfg, err := pipeline.ParseConfig([]byte("environments:\n  - name: production\n"))
	if err != nil {
		t.Fatal(err)
	}
	release := func(commits ...string) *pipeline.Release {
		t.Helper()
		var cs []pipeline.Commit
		for i, sha := range commits {
			cs = append(cs, pipeline.Commit{SHA: sha, Author: "octocat", Timestamp: t0.Add(time.Duration(i) * time.Minute), Title: "commit " + sha[:4]})
		}
		rel := &pipeline.Release{Repo: l.repo, SHA: commits[len(commits)-1], Ref: "refs/heads/main", PushedAt: t0, Config: cfg,
			State: pipeline.ReleaseActive, ParentID: l.parent}
		if _, err := l.db.RecordRelease(ctx, rel, cs); err != nil {
			t.Fatal(err)
		}
		l.parent = rel.ID
		return rel
	}
	sha := func(prefix string) string { return prefix + strings.Repeat("0", 40-len(prefix)) }
	r1 := release(sha("a1a1a1a1"), sha("b2b2b2b2"), sha("c3c3c3c3"))
	r2 := release(sha("c3c3c3c3d4"), sha("e5e5e5e5"))
	// A force push back before b2, then b2 pushed again with a new head:
	// r3 brings b2 again.
	r3 := release(sha("b2b2b2b2"), sha("f6f6f6f6"))
	// A rollback to r1's head, then a roll-forward that brings r2's head
	// (and what it brought) again: r5 brings e5, the head of r2.
	r4 := release(sha("c3c3c3c3"))
	r5 := release(sha("c3c3c3c3d4"), sha("e5e5e5e5"), sha("a7a7a7a7"))

	for _, tc := range []struct {
		sha     string
		release int64 // asked for; 0: the newest
		want    *pipeline.Release
		brought string
		others  []int64
	}{
		{sha: "a1a1a1a", want: r1, brought: sha("a1a1a1a1")},
		{sha: sha("c3c3c3c3d4"), want: r5, brought: sha("c3c3c3c3d4"), others: []int64{r2.ID}},
		{sha: sha("c3c3c3c3"), want: r4, others: []int64{r1.ID}},
		{sha: "e5e5e5e", want: r2, others: []int64{r5.ID}},
		{sha: "e5e5e5e", release: r5.ID, want: r5, brought: sha("e5e5e5e5"), others: []int64{r2.ID}},
		{sha: sha("c3c3c3c3"), release: r1.ID, want: r1, others: []int64{r4.ID}},
		{sha: "b2b2b2b", want: r3, brought: sha("b2b2b2b2"), others: []int64{r1.ID}},
		{sha: "b2b2b2b", release: r1.ID, want: r1, brought: sha("b2b2b2b2"), others: []int64{r3.ID}},
	} {
		rec, err := l.db.AuditRelease(ctx, "acme/shop", tc.sha, tc.release)
		if err != nil {
			t.Errorf("audit %s (release %d): %v", tc.sha, tc.release, err)
			continue
		}
		brought := ""
		if rec.BroughtCommit != nil {
			brought = rec.BroughtCommit.SHA
		}
		if rec.Release.ID != tc.want.ID || rec.Release.SHA != tc.want.SHA || brought != tc.brought ||
			fmt.Sprint(rec.OtherReleases) != fmt.Sprint(tc.others) || len(rec.Environments) != 1 {
			t.Errorf("audit %s (release %d): release #%d at %s, brought %q, others %v; want release #%d at %s, brought %q, others %v",
				tc.sha, tc.release, rec.Release.ID, rec.Release.SHA, brought, rec.OtherReleases,
				tc.want.ID, tc.want.SHA, tc.brought, tc.others)
		}
	}
	b, err := l.db.Audit(ctx, "acme/shop", "a1a1a1a")
	if err != nil {
		t.Fatal(err)
	}
	if j, _ := json.Marshal(b); !strings.Contains(string(j), `"brought_commit":{"sha":"`+sha("a1a1a1a1")+`"`) {
		t.Errorf("the audit JSON of a brought commit lacks brought_commit: %s", j)
	}

	for _, tc := range []struct {
		sha     string
		release int64
		want    error
		msg     string
	}{
		{sha: "9999999", want: pipeline.ErrNotFound, msg: "no release of that commit"},
		{sha: "a1a1a1a", release: r2.ID, want: pipeline.ErrNotFound, msg: fmt.Sprintf("release #%d is not a release of that commit", r2.ID)},
		{sha: "c3c3c3c3", want: pipeline.ErrInvalid, msg: "the abbreviation matches several commits"},
	} {
		_, err := l.db.AuditRelease(ctx, "acme/shop", tc.sha, tc.release)
		if !errors.Is(err, tc.want) || !strings.Contains(fmt.Sprint(err), tc.msg) {
			t.Errorf("audit %s (release %d): %v; want %v, %q", tc.sha, tc.release, err, tc.want, tc.msg)
		}
	}
}

// An environment the release's configuration does not name is in its
// record for the deployments of the commit others made there (by hand):
// no outcome of lastmile's, and OthersOutcome says what those came to —
// read as a lastmile deployment's outcome is, success once it succeeded.
func TestAuditOfAnEnvironmentOnlyOthersDeployedTo(t *testing.T) {
	ctx := context.Background()
	db := storagetest.Open(t)
	t0 := time.Date(2026, 3, 2, 9, 0, 0, 0, time.UTC)
	db.Now = func() time.Time { return t0 }
	repo, rel, _ := firstIntent(t, db, "environments:\n  - name: production\n")
	status := func(d *pipeline.Deployment, id int64, state pipeline.DeploymentState, at time.Time) {
		t.Helper()
		if _, err := db.RecordStatus(ctx, d, pipeline.StatusInfo{GitHubID: id, State: state, CreatedAt: at}); err != nil {
			t.Fatal(err)
		}
	}
	qa := func() (*pipeline.EnvironmentRecord, pipeline.DeploymentState) {
		t.Helper()
		rec, err := db.Audit(ctx, "acme/shop", rel.SHA)
		if err != nil {
			t.Fatal(err)
		}
		for i := range rec.Environments {
			if env := &rec.Environments[i]; env.Name == "qa" {
				return env, storage.OthersOutcome(env)
			}
		}
		t.Fatalf("the record has no qa: %+v", rec.Environments)
		return nil, ""
	}
	first, err := db.RecordExternal(ctx, repo, pipeline.DeploymentInfo{GitHubID: 5001, SHA: rel.SHA, Environment: "qa", Creator: "alice", CreatedAt: t0})
	if err != nil {
		t.Fatal(err)
	}
	if env, others := qa(); env.Outcome != "" || others != pipeline.DeploymentCreated {
		t.Errorf("qa, alice's deployment just created: outcome %q, others' %q; want none of lastmile's, created", env.Outcome, others)
	}
	status(first, 6001, pipeline.DeploymentSuccess, t0.Add(time.Minute))
	status(first, 6002, pipeline.DeploymentInactive, t0.Add(2*time.Minute))
	if env, others := qa(); env.Outcome != "" || others != pipeline.DeploymentSuccess {
		t.Errorf("qa, alice's deployment succeeded then made inactive: outcome %q, others' %q; want none of lastmile's, success", env.Outcome, others)
	}
	// The newest of them says what the environment came to.
	second, err := db.RecordExternal(ctx, repo, pipeline.DeploymentInfo{GitHubID: 5002, SHA: rel.SHA, Environment: "qa", Creator: "bob", CreatedAt: t0.Add(time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	status(second, 6003, pipeline.DeploymentFailure, t0.Add(61*time.Minute))
	status(second, 6004, pipeline.DeploymentInactive, t0.Add(62*time.Minute))
	if env, others := qa(); len(env.Deployments) != 2 || others != pipeline.DeploymentFailure {
		t.Errorf("qa, bob's deployment failed after alice's succeeded: %d deployments, others' %q; want 2, failure", len(env.Deployments), others)
	}
}

// A commit no release brought, that lastmile decided about as a protection
// rule (a hotfix on another branch deployed by hand), is not found — but
// the error holds the decisions, which no record shows; a commit lastmile
// knows nothing of has none.
func TestAuditOfACommitWithDecisionsButNoRelease(t *testing.T) {
	ctx := context.Background()
	db := storagetest.Open(t)
	t0 := time.Date(2026, 3, 2, 9, 0, 0, 0, time.UTC)
	repo, _, _ := firstIntent(t, db, "environments:\n  - name: production\n")
	hotfix := strings.Repeat("d4", 20)
	for i, state := range []string{pipeline.ProtectionRejected, pipeline.ProtectionRejected} {
		d := &pipeline.ProtectionDecision{Repo: repo, DeliveryID: fmt.Sprintf("delivery-%d", i), RunID: int64(70 + i), Environment: "production",
			SHA: hotfix, State: state, Comment: "lastmile rejects: no release of this commit", DecidedAt: t0.Add(time.Duration(i) * time.Hour)}
		if err := db.RecordProtectionDecision(ctx, d); err != nil {
			t.Fatal(err)
		}
	}
	_, err := db.Audit(ctx, "acme/shop", hotfix[:7])
	var none *storage.NoReleaseError
	if !errors.Is(err, pipeline.ErrNotFound) || !errors.As(err, &none) || len(none.Decisions) != 2 ||
		none.Decisions[0].RunID != 70 || none.Decisions[1].RunID != 71 || none.Decisions[0].SHA != hotfix ||
		!strings.Contains(err.Error(), "no release of that commit; lastmile decided on deployments of it, as their protection rule (2 decisions)") {
		t.Errorf("audit of a commit lastmile decided about, without a release: %v (%+v); want not found, with its 2 decisions", err, none)
	}
	_, err = db.Audit(ctx, "acme/shop", "9999999")
	if !errors.Is(err, pipeline.ErrNotFound) || !errors.As(err, &none) || len(none.Decisions) != 0 || !strings.HasSuffix(err.Error(), "no release of that commit") {
		t.Errorf("audit of a commit lastmile knows nothing of: %v; want not found, no decisions", err)
	}
}
