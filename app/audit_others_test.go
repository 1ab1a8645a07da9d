package app

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/lastmile-app/lastmile/pipeline"
	"github.com/lastmile-app/lastmile/storage"
)

// An environment the release's configuration does not name, where someone
// deployed the release's commit by hand, is in the record for that
// deployment: the text, the JSON and the read API say it is not one of
// the release's environments and what the deployment came to, where the
// text said "not reached" above a deployment that succeeded, and the JSON
// had no outcome, which reads as a release that never got there.
func TestAuditOfAnEnvironmentOnlyOthersDeployedTo(t *testing.T) {
	const token = "0123456789abcdef-token"
	sb := sandbox(t, func(c *Config) { c.APIToken = token })
	ctx := context.Background()
	db := sb.App.DB()
	repo, sha, t0 := siteRelease(t, db)
	d, err := db.RecordExternal(ctx, repo, pipeline.DeploymentInfo{GitHubID: 5001, SHA: sha, Environment: "qa", Creator: "alice", CreatedAt: t0})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := db.RecordStatus(ctx, d, pipeline.StatusInfo{GitHubID: 6001, State: pipeline.DeploymentSuccess, CreatedAt: t0.Add(time.Minute)}); err != nil {
		t.Fatal(err)
	}

	code, out, errOut := run(t, sb.Config.Database, "audit", "acme/site", sha)
	for _, want := range []string{
		"\n  production [production]: not reached\n",
		"\n  qa: not one of this release's environments (its configuration does not name it); deployed by others: success\n" +
			"    deployment 5001 (created by alice): success",
	} {
		if code != 0 || !strings.Contains(out, want) {
			t.Errorf("audit: exit %d; lacks %q\n%s%s", code, want, out, errOut)
		}
	}
	type env struct {
		Name          string                   `json:"name"`
		Outcome       pipeline.DeploymentState `json:"outcome"`
		Configured    *bool                    `json:"configured"`
		OthersOutcome pipeline.DeploymentState `json:"others_outcome"`
		Deployments   []json.RawMessage        `json:"deployments"`
	}
	check := func(what, body string) {
		t.Helper()
		var rec struct {
			Environments []env `json:"environments"`
		}
		if err := json.Unmarshal([]byte(body), &rec); err != nil || len(rec.Environments) != 2 {
			t.Fatalf("%s: %v\n%s", what, err, body)
		}
		prod, qa := rec.Environments[0], rec.Environments[1]
		if prod.Name != "production" || prod.Configured == nil || !*prod.Configured || prod.Outcome != "" || prod.OthersOutcome != "" {
			t.Errorf("%s: production %+v; want configured, not reached", what, prod)
		}
		if qa.Name != "qa" || qa.Configured == nil || *qa.Configured || qa.Outcome != "" ||
			qa.OthersOutcome != pipeline.DeploymentSuccess || len(qa.Deployments) != 1 {
			t.Errorf("%s: qa %+v; want not configured, no outcome of lastmile's, others' success, alice's deployment", what, qa)
		}
	}
	code, out, errOut = run(t, sb.Config.Database, "audit", "--json", "acme/site", sha)
	if code != 0 {
		t.Fatalf("audit --json: exit %d %s", code, errOut)
	}
	check("audit --json", out)
	code, body := request(t, http.MethodGet, sb.URL()+"/api/v1/releases/acme/site/"+sha, "Bearer "+token)
	if code != http.StatusOK {
		t.Fatalf("GET the release: %d %s", code, body)
	}
	check("GET the release", body)
}

// A workflow's own deployment (a job of a run on push that asked lastmile
// as the protection rule) counts in the metrics, and the record says so,
// with the run's event.
func TestAuditSaysAWorkflowsOwnDeploymentCounts(t *testing.T) {
	sb := sandbox(t, nil)
	ctx := context.Background()
	db := sb.App.DB()
	repo, sha, t0 := siteRelease(t, db)
	d, err := db.RecordExternal(ctx, repo, pipeline.DeploymentInfo{GitHubID: 5001, SHA: sha, Environment: "production",
		Creator: "alice", CreatedAt: t0, WorkflowRunID: 7001, WorkflowRunEvent: "push"})
	if err != nil {
		t.Fatal(err)
	}
	// Its job asked lastmile, the environment's protection rule.
	if err := db.RecordProtectionDecision(ctx, &pipeline.ProtectionDecision{Repo: repo, DeliveryID: "rule-1", RunID: 7001,
		Environment: "production", SHA: sha, State: pipeline.ProtectionApproved, Comment: "lastmile approves", DecidedAt: t0}); err != nil {
		t.Fatal(err)
	}
	if _, err := db.RecordStatus(ctx, d, pipeline.StatusInfo{GitHubID: 6001, State: pipeline.DeploymentSuccess, CreatedAt: t0.Add(time.Minute)}); err != nil {
		t.Fatal(err)
	}
	code, out, errOut := run(t, sb.Config.Database, "audit", "acme/site", sha)
	if want := "deployment 5001 (created by alice, the job's own in a run on push (counted)): success"; code != 0 || !strings.Contains(out, want) {
		t.Errorf("audit: exit %d; lacks %q\n%s%s", code, want, out, errOut)
	}
	code, out, errOut = run(t, sb.Config.Database, "audit", "--json", "acme/site", sha)
	if want := `"workflow_owned": true`; code != 0 || !strings.Contains(out, want) {
		t.Errorf("audit --json: exit %d; lacks %q\n%s%s", code, want, out, errOut)
	}
}

// siteRelease records acme/site and its release of one commit, whose
// configuration names production alone: the repository, the commit and
// its push time.
func siteRelease(t *testing.T, db *storage.DB) (pipeline.Repo, string, time.Time) {
	t.Helper()
	ctx := context.Background()
	t0 := time.Date(2026, 3, 2, 9, 0, 0, 0, time.UTC)
	repo := pipeline.Repo{ID: 990001, Owner: "acme", Name: "site", InstallationID: 990002}
	if err := db.SaveRepo(ctx, repo, t0); err != nil {
		t.Fatal(err)
	}
	cfg, err := pipeline.ParseConfig([]byte("environments:\n  - name: production\n"))
	if err != nil {
		t.Fatal(err)
	}
	sha := strings.Repeat("c1", 20)
	rel := &pipeline.Release{Repo: repo, SHA: sha, Ref: "refs/heads/main", PushedAt: t0, Config: cfg, State: pipeline.ReleaseActive}
	if _, err := db.RecordRelease(ctx, rel, []pipeline.Commit{{SHA: sha, Author: "alice", Timestamp: t0, Title: "Add lastmile"}}); err != nil {
		t.Fatal(err)
	}
	return repo, sha, t0
}
