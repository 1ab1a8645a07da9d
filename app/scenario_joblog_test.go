package app

import (
	"database/sql"
	"encoding/json"
	"fmt"
	"regexp"
	"strings"
	"testing"

	"github.com/lastmile-app/lastmile/githubapp/simulator"
	"github.com/lastmile-app/lastmile/pipeline"
)

// A workflow that owns a deployment: after lastmile's test deployment its
// run deploys production in a job of its own, for which Actions creates
// the deployment (no `deployment: false`; lastmile's configuration has no
// production). lastmile audit shows that job's log kept with Actions'
// production deployment — in text, in JSON and with --logs — as it shows
// the deploy job's with lastmile's test deployment (not its twin).
func TestAuditShowsTheDeployLogOfAWorkflowOwnedDeployment(t *testing.T) {
	sb := sandbox(t, nil)
	repo := sb.repo("shop", nil, simulator.WorkflowOptions{CreateDeployment: true, NextEnvironments: []string{"production"}})
	push := sb.Sim.Push(repo, "main", simulator.CommitSpec{Message: "Add lastmile",
		Files: map[string]string{".github/lastmile.yml": "environments:\n  - name: test\n"}})
	waitFor(t, sb, "the workflow's production success", func(s *simulator.Simulator) bool {
		return succeededIn(s, repo, push.After, "production")
	})
	settle(t, sb)
	db := sb.Config.Database

	code, out, errOut := run(t, db, "audit", "--json", repo, push.After)
	var rec pipeline.AuditRecord
	if code != 0 || json.Unmarshal([]byte(out), &rec) != nil {
		t.Fatalf("audit --json: exit %d\n%s%s", code, out, errOut)
	}
	// The production deployment is Actions' alone; test has lastmile's and
	// the deploy job's twin.
	var production, twin *pipeline.DeploymentRecord
	var prodJob, testJob *pipeline.JobRecord
	for _, env := range rec.Environments {
		for i := range env.Deployments {
			d := &env.Deployments[i]
			for k := range d.Jobs {
				j := &d.Jobs[k]
				if j.LogBytes == 0 {
					continue
				}
				switch {
				case env.Name == "production" && d.Origin == pipeline.OriginExternal && d.TwinOf == 0:
					production, prodJob = d, j
				case env.Name == "test" && d.Origin == pipeline.OriginLastmile:
					testJob = j
				case d.TwinOf != 0:
					twin = d
				}
			}
		}
	}
	if production == nil || prodJob == nil || prodJob.Name != "deploy-production" {
		t.Fatalf("audit --json: no log kept with Actions' production deployment\n%s", out)
	}
	if testJob == nil || testJob.Name != "deploy" {
		t.Errorf("audit --json: the deploy job's log is not kept with lastmile's test deployment\n%s", out)
	}
	if twin != nil {
		t.Errorf("audit --json: the twin %d keeps a log too\n%s", twin.GitHubID, out)
	}

	code, out, errOut = run(t, db, "audit", repo, push.After)
	prod := regexp.MustCompile(fmt.Sprintf(`(?s)  production: .*deployment %d \(created by [^)]*\): success.*job %d "deploy-production": success, log kept \(%d bytes\)`,
		production.GitHubID, prodJob.ID, prodJob.LogBytes))
	if code != 0 || !prod.MatchString(out) {
		t.Errorf("audit: exit %d; the production deployment's job log is not shown as kept\n%s%s", code, out, errOut)
	}

	code, out, errOut = run(t, db, "audit", "--logs", repo, push.After)
	head := fmt.Sprintf("--- log of job %d (deploy-production) in production ---", prodJob.ID)
	if i := strings.Index(out, head); code != 0 || i < 0 || !strings.Contains(out[i:], "Deploying "+push.After+" to production") {
		t.Errorf("audit --logs: exit %d; no log of the production job\n%s%s", code, out, errOut)
	}
	if prodJob.Log != nil {
		t.Errorf("audit --json without --logs holds the log of job %d", prodJob.ID)
	}

	// --json --logs: each kept log in its job's "log", whole.
	j := jobWithLogs(t, db, repo, push.After, prodJob.ID, 0)
	found := j.Log != nil && len(*j.Log) == prodJob.LogBytes && strings.Contains(*j.Log, "Deploying "+push.After+" to production")
	if !found {
		t.Errorf("audit --json --logs: job %d without its whole log (%d bytes): %+v", prodJob.ID, prodJob.LogBytes, j)
	}

	// A kept log that cannot be read is said so (log_error), not left out
	// as if it had not been asked for, and the command fails (exit 1).
	raw, err := sql.Open("sqlite", db)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := raw.Exec(`UPDATE job_logs SET log = x'1f8b0800' WHERE job_id = ?`, prodJob.ID); err != nil {
		t.Fatal(err)
	}
	raw.Close()
	j = jobWithLogs(t, db, repo, push.After, prodJob.ID, 1)
	said := j.Log == nil && j.LogError != ""
	if !said {
		t.Errorf("audit --json --logs: the damaged log of job %d is not said to be unreadable: %+v", prodJob.ID, j)
	}
}

// jobWithLogs is job id of sha's record as lastmile audit --json --logs
// prints it: the last deployment's listing it (the one whose log is kept,
// after its twin's), or the zero job if none does. The command must exit
// with wantCode.
func jobWithLogs(t *testing.T, db, repo, sha string, id int64, wantCode int) pipeline.JobRecord {
	t.Helper()
	code, out, errOut := run(t, db, "audit", "--json", "--logs", repo, sha)
	var rec pipeline.AuditRecord
	if code != wantCode || json.Unmarshal([]byte(out), &rec) != nil {
		t.Fatalf("audit --json --logs: exit %d, want %d\n%s%s", code, wantCode, out, errOut)
	}
	var job pipeline.JobRecord
	for _, env := range rec.Environments {
		for _, d := range env.Deployments {
			for _, j := range d.Jobs {
				if j.ID == id {
					job = j
				}
			}
		}
	}
	return job
}
