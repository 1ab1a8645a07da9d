package simulator

import (
	"strconv"
	"time"
)

// Renderers of Actions objects (workflow, workflow run, job) and of the
// webhooks the workflow player sends. Called with Simulator.mu held.

func (st *state) runHTML(r *repo, ru *run) string {
	return st.repoHTML(r) + "/actions/runs/" + itoa(ru.id)
}

func (st *state) workflowJSON(r *repo, ru *run) obj {
	api := st.repoAPI(r)
	created := r.createdAt
	return obj{
		"id":         ru.workflowID,
		"node_id":    nodeID("Workflow", ru.workflowID),
		"name":       ru.opts.Name,
		"path":       ru.opts.Path,
		"state":      "active",
		"created_at": ts(created),
		"updated_at": ts(created),
		"url":        api + "/actions/workflows/" + itoa(ru.workflowID),
		"html_url":   st.repoHTML(r) + "/blob/" + r.defaultBranch + "/" + ru.opts.Path,
		"badge_url":  st.repoHTML(r) + "/workflows/" + ru.opts.Name + "/badge.svg",
	}
}

// minimalRepoJSON is the repository shape nested in workflow runs.
func (st *state) minimalRepoJSON(r *repo) obj {
	full := st.repoJSON(r, false)
	keep := []string{"id", "node_id", "name", "full_name", "private", "owner", "html_url", "description", "fork", "url",
		"forks_url", "keys_url", "collaborators_url", "teams_url", "hooks_url", "issue_events_url", "events_url",
		"assignees_url", "branches_url", "tags_url", "blobs_url", "git_tags_url", "git_refs_url", "trees_url",
		"statuses_url", "languages_url", "stargazers_url", "contributors_url", "subscribers_url", "subscription_url",
		"commits_url", "git_commits_url", "comments_url", "issue_comment_url", "contents_url", "compare_url",
		"merges_url", "archive_url", "downloads_url", "issues_url", "pulls_url", "milestones_url",
		"notifications_url", "labels_url", "releases_url", "deployments_url"}
	out := obj{}
	for _, k := range keep {
		out[k] = full[k]
	}
	if len(r.properties) > 0 { // in GitHub's description of the shape, unlike those above not in its examples
		out["custom_properties"] = r.properties
	}
	return out
}

func (st *state) workflowRunJSON(r *repo, ru *run) obj {
	api := st.repoAPI(r) + "/actions/runs/" + itoa(ru.id)
	c := r.commits[ru.sha]
	person := func(p gitPerson) obj { return obj{"name": p.name, "email": p.email} }
	var conclusion any
	if ru.conclusion != "" {
		conclusion = ru.conclusion
	}
	var headBranch any
	if ru.branch != "" {
		headBranch = ru.branch
	}
	return obj{
		"id":                   ru.id,
		"name":                 ru.opts.Name,
		"node_id":              nodeID("WorkflowRun", ru.id),
		"head_branch":          headBranch,
		"head_sha":             ru.sha,
		"path":                 ru.opts.Path,
		"display_title":        ru.opts.Name,
		"run_number":           ru.number,
		"event":                ru.on,
		"status":               ru.status,
		"conclusion":           conclusion,
		"workflow_id":          ru.workflowID,
		"check_suite_id":       ru.checkSuiteID,
		"check_suite_node_id":  nodeID("CheckSuite", ru.checkSuiteID),
		"url":                  api,
		"html_url":             st.runHTML(r, ru),
		"pull_requests":        []any{},
		"created_at":           ts(ru.createdAt),
		"updated_at":           ts(ru.updatedAt),
		"actor":                st.userJSON(ru.actor),
		"triggering_actor":     st.userJSON(ru.actor),
		"run_attempt":          ru.attempt,
		"referenced_workflows": []any{},
		"run_started_at":       ts(ru.startedAt), // "Resets on re-run"
		"jobs_url":             api + "/jobs",
		"logs_url":             api + "/logs",
		"check_suite_url":      st.repoAPI(r) + "/check-suites/" + itoa(ru.checkSuiteID),
		"artifacts_url":        api + "/artifacts",
		"cancel_url":           api + "/cancel",
		"rerun_url":            api + "/rerun",
		"previous_attempt_url": previousAttempt(api, ru.attempt),
		"workflow_url":         st.repoAPI(r) + "/actions/workflows/" + itoa(ru.workflowID),
		"head_commit": obj{
			"id":        c.sha,
			"tree_id":   c.treeSHA,
			"message":   c.message,
			"timestamp": ts(c.committer.date),
			"author":    person(c.author),
			"committer": person(c.committer),
		},
		"repository":      st.minimalRepoJSON(r),
		"head_repository": st.minimalRepoJSON(r),
	}
}

func (st *state) jobHTML(r *repo, j *job) string {
	return st.runHTML(r, j.run) + "/job/" + itoa(j.id)
}

func (st *state) workflowJobJSON(r *repo, j *job) obj {
	api := st.repoAPI(r)
	nullable := func(s string) any {
		if s == "" {
			return nil
		}
		return s
	}
	nullTime := func(t time.Time) any {
		if t.IsZero() {
			return nil
		}
		return ts(t)
	}
	steps := []any{}
	for i, s := range j.steps {
		steps = append(steps, obj{
			"name":         s.name,
			"status":       s.status,
			"conclusion":   nullable(s.conclusion),
			"number":       i + 1,
			"started_at":   nullTime(s.startedAt),
			"completed_at": nullTime(s.completedAt),
		})
	}
	var runnerID, runnerGroupID any
	if j.runnerName != "" {
		runnerID, runnerGroupID = int64(1), int64(1)
	}
	var runnerGroup any
	if j.runnerName != "" {
		runnerGroup = "GitHub Actions"
	}
	started := j.startedAt
	if started.IsZero() {
		started = j.createdAt
	}
	return obj{
		"id":                j.id,
		"run_id":            j.run.id,
		"workflow_name":     j.run.opts.Name,
		"head_branch":       nullable(j.run.branch),
		"run_url":           api + "/actions/runs/" + itoa(j.run.id),
		"run_attempt":       j.attempt,
		"node_id":           nodeID("CheckRun", j.id),
		"head_sha":          j.run.sha,
		"url":               api + "/actions/jobs/" + itoa(j.id),
		"html_url":          st.jobHTML(r, j),
		"status":            j.status,
		"conclusion":        nullable(j.conclusion),
		"created_at":        ts(j.createdAt),
		"started_at":        ts(started),
		"completed_at":      nullTime(j.completedAt),
		"name":              j.name,
		"steps":             steps,
		"check_run_url":     api + "/check-runs/" + itoa(j.id),
		"labels":            []any{"ubuntu-latest"},
		"runner_id":         runnerID,
		"runner_name":       nullable(j.runnerName),
		"runner_group_id":   runnerGroupID,
		"runner_group_name": runnerGroup,
	}
}

func (st *state) enqueueWorkflowRun(r *repo, ru *run, action string) {
	p := st.eventBase(r, ru.actor)
	p["action"] = action
	p["workflow"] = st.workflowJSON(r, ru)
	p["workflow_run"] = st.workflowRunJSON(r, ru)
	st.enqueue("workflow_run", r, p)
}

func (st *state) enqueueWorkflowJob(r *repo, j *job, action string) {
	p := st.eventBase(r, j.run.actor)
	p["action"] = action
	p["workflow_job"] = st.workflowJobJSON(r, j)
	// Only queued carries the deployment Actions created for the job: the
	// waiting event of the same job in GitHub's examples (run 4747967848)
	// has none.
	if j.twin != nil && action == "queued" {
		p["deployment"] = st.deploymentJSON(r, j.twin)
	}
	st.enqueue("workflow_job", r, p)
}

// jobRunJSON is the short job shape of deployment_review events. Its id
// and page are not the workflow job's: in GitHub's example (run
// 5453085689) the id is one of another numbering, under /jobs/.
func (st *state) jobRunJSON(r *repo, j *job) obj {
	return obj{
		"id":          j.jobRunID,
		"name":        j.name,
		"status":      j.status,
		"conclusion":  nil,
		"html_url":    st.runHTML(r, j.run) + "/jobs/" + itoa(j.jobRunID),
		"created_at":  ts(j.createdAt),
		"updated_at":  ts(st.s.clock()),
		"environment": j.environment,
	}
}

func (st *state) reviewersJSON(g *gate) []any {
	out := []any{}
	for _, login := range g.reviewers {
		out = append(out, obj{"type": "User", "reviewer": st.userJSON(st.accountFor(login))})
	}
	return out
}

func (st *state) enqueueReviewRequested(r *repo, j *job, g *gate) {
	p := st.eventBase(r, j.run.actor)
	p["action"] = "requested"
	p["environment"] = j.environment
	p["reviewers"] = st.reviewersJSON(g)
	p["requestor"] = st.userJSON(j.run.actor)
	p["since"] = ts(g.since)
	p["workflow_job_run"] = st.jobRunJSON(r, j)
	p["workflow_run"] = st.workflowRunJSON(r, j.run)
	st.enqueue("deployment_review", r, p)
}

func (st *state) enqueueReviewed(r *repo, j *job, g *gate, approver *account, approved bool, comment string) {
	action := "rejected"
	if approved {
		action = "approved"
	}
	p := st.eventBase(r, approver)
	p["action"] = action
	p["approver"] = st.userJSON(approver)
	p["comment"] = comment
	p["reviewers"] = st.reviewersJSON(g)
	p["since"] = ts(g.since)
	// GitHub's schema has a null name in approved/rejected workflow_job_run.
	short := st.jobRunJSON(r, j)
	short["name"] = nil
	p["workflow_job_run"] = short
	p["workflow_job_runs"] = []any{st.jobRunJSON(r, j)}
	p["workflow_run"] = st.workflowRunJSON(r, j.run)
	st.enqueue("deployment_review", r, p)
}

func (st *state) enqueueProtectionRuleRequested(r *repo, j *job) {
	ru := j.run
	p := st.eventBase(r, ru.actor)
	p["action"] = "requested"
	p["environment"] = j.environment
	p["event"] = ru.on
	p["sha"] = ru.sha
	p["ref"] = ru.ref
	p["deployment_callback_url"] = st.repoAPI(r) + "/actions/runs/" + itoa(ru.id) + "/deployment_protection_rule"
	p["deployment"] = nil
	if j.twin != nil {
		p["deployment"] = st.deploymentJSON(r, j.twin)
	}
	p["pull_requests"] = []any{}
	st.enqueue("deployment_protection_rule", r, p)
}

// checkRunHTML is the page of the check run a job is (a job's ID is its
// check run's).
func (st *state) checkRunHTML(r *repo, j *job) string {
	return st.repoHTML(r) + "/runs/" + itoa(j.id) + "?check_suite_focus=true"
}

// checkRunJSON is a job seen as the check run it is (deployment_status
// events of deployments Actions created for a job carry it).
func (st *state) checkRunJSON(r *repo, j *job) obj {
	html := st.checkRunHTML(r, j)
	var conclusion, completed any
	if j.conclusion != "" {
		conclusion, completed = j.conclusion, ts(j.completedAt)
	}
	started := j.startedAt
	if started.IsZero() {
		started = j.createdAt
	}
	return obj{
		"id":           j.id,
		"name":         j.name,
		"node_id":      nodeID("CheckRun", j.id),
		"head_sha":     j.run.sha,
		"external_id":  newGUID(),
		"url":          st.repoAPI(r) + "/check-runs/" + itoa(j.id),
		"html_url":     html,
		"details_url":  html,
		"status":       j.status,
		"conclusion":   conclusion,
		"started_at":   ts(started),
		"completed_at": completed,
	}
}

// previousAttempt is a run's previous_attempt_url: the API URL of attempt
// n-1, or null on the first attempt.
func previousAttempt(runAPI string, attempt int) any {
	if attempt <= 1 {
		return nil
	}
	return runAPI + "/attempts/" + strconv.Itoa(attempt-1)
}
