package simulator

import "time"

// Builders of the repository-level webhooks: push, deployment,
// deployment_status, status and check_suite. Workflow-related ones live in
// workflow_events.go. Every builder is called with Simulator.mu held.

func shortSHA(sha string) string { return sha[:12] }

// pushCommitJSON renders a commit as push events list it. distinct: no
// push listed it before (GitHub's "whether this commit is distinct from
// any that have been pushed before").
func (st *state) pushCommitJSON(r *repo, c *commit, distinct bool) obj {
	person := func(p gitPerson) obj {
		o := obj{"name": p.name, "email": p.email, "date": p.date.Format(time.RFC3339)}
		if p.login != "" {
			o["username"] = p.login
		}
		return o
	}
	added, removed, modified := []any{}, []any{}, []any{}
	for _, ch := range diffTrees(r.parentFiles(c), c.files) {
		switch ch.status {
		case "added":
			added = append(added, ch.path)
		case "removed":
			removed = append(removed, ch.path)
		default:
			modified = append(modified, ch.path)
		}
	}
	return obj{
		"id":        c.sha,
		"tree_id":   c.treeSHA,
		"distinct":  distinct,
		"message":   c.message,
		"timestamp": c.committer.date.Format(time.RFC3339),
		"url":       st.repoHTML(r) + "/commit/" + c.sha,
		"author":    person(c.author),
		"committer": person(c.committer),
		"added":     added,
		"removed":   removed,
		"modified":  modified,
	}
}

func (st *state) enqueuePush(r *repo, branch, before, after string, forced bool, created []*commit, sender *account, pusherName, pusherEmail string) {
	html := st.repoHTML(r)
	deleted := after == zeroSHA
	isNew := before == zeroSHA
	var compare string
	switch {
	case deleted:
		compare = html + "/compare/" + shortSHA(before) + "...000000000000"
	case isNew && len(created) <= 1:
		compare = html + "/commit/" + after
	case isNew:
		compare = html + "/compare/" + branch
	default:
		compare = html + "/compare/" + shortSHA(before) + "..." + shortSHA(after)
	}
	// GitHub lists at most PushCommitLimit commits; we keep the newest.
	listed := created
	if limit := st.s.opts.PushCommitLimit; len(listed) > limit {
		listed = listed[len(listed)-limit:]
	}
	commits := make([]any, 0, len(listed))
	for _, c := range listed {
		commits = append(commits, st.pushCommitJSON(r, c, !c.pushed))
	}
	var head any
	if !deleted {
		c := r.commits[after]
		head = st.pushCommitJSON(r, c, !c.pushed)
	}
	for _, c := range created {
		c.pushed = true
	}
	pusher := obj{"name": pusherName, "email": nil}
	if pusherEmail != "" {
		pusher["email"] = pusherEmail
	}
	p := st.eventBase(r, sender)
	p["repository"] = st.repoJSON(r, true)
	p["ref"] = "refs/heads/" + branch
	p["before"] = before
	p["after"] = after
	p["created"] = isNew
	p["deleted"] = deleted
	p["forced"] = forced
	p["base_ref"] = nil
	p["compare"] = compare
	p["commits"] = commits
	p["head_commit"] = head
	p["pusher"] = pusher
	st.enqueue("push", r, p)
	st.s.startPushRuns(r, branch, after, sender, p)
}

// enqueueDeployment sends "deployment created". For deployments Actions
// created for a job, workflow and workflow_run are set.
func (st *state) enqueueDeployment(r *repo, d *deployment) {
	p := st.eventBase(r, d.creator)
	p["action"] = "created"
	p["deployment"] = st.deploymentJSON(r, d)
	p["workflow"] = nil
	p["workflow_run"] = nil
	if d.run != nil {
		p["workflow"] = st.workflowJSON(r, d.run)
		p["workflow_run"] = st.deploymentWorkflowRunJSON(r, d.run)
	}
	st.enqueue("deployment", r, p)
}

func (st *state) enqueueDeploymentStatus(r *repo, d *deployment, ds *deploymentStatus) {
	if ds.state == "inactive" {
		// "A webhook event is not fired for deployment statuses with an
		// `inactive` state" (GitHub's description of deployment_status):
		// neither for one posted through the API nor for auto_inactive's.
		return
	}
	p := st.eventBase(r, ds.creator)
	p["action"] = "created"
	p["deployment_status"] = st.deploymentStatusJSON(r, d, ds)
	p["deployment"] = st.deploymentJSON(r, d)
	p["check_run"] = nil
	p["workflow_run"] = nil
	if d.run != nil {
		p["workflow"] = st.workflowJSON(r, d.run)
		p["workflow_run"] = st.deploymentWorkflowRunJSON(r, d.run)
		if d.job != nil {
			p["check_run"] = st.checkRunJSON(r, d.job)
		}
	}
	st.enqueue("deployment_status", r, p)
}

// restCommitJSON renders a commit as the REST API's "commit" object.
func (st *state) restCommitJSON(r *repo, c *commit, withFiles bool) obj {
	api := st.repoAPI(r)
	parents := make([]any, len(c.parents))
	for i, p := range c.parents {
		parents[i] = obj{"sha": p, "url": api + "/commits/" + p, "html_url": st.repoHTML(r) + "/commit/" + p}
	}
	gitUser := func(p gitPerson) obj {
		return obj{"name": p.name, "email": p.email, "date": ts(p.date)}
	}
	var author any
	if c.author.login != "" {
		author = st.userJSON(st.accountFor(c.author.login))
	}
	o := obj{
		"url":          api + "/commits/" + c.sha,
		"sha":          c.sha,
		"node_id":      nodeID("Commit", c.seq),
		"html_url":     st.repoHTML(r) + "/commit/" + c.sha,
		"comments_url": api + "/commits/" + c.sha + "/comments",
		"commit": obj{
			"url":           api + "/git/commits/" + c.sha,
			"author":        gitUser(c.author),
			"committer":     gitUser(c.committer),
			"message":       c.message,
			"tree":          obj{"sha": c.treeSHA, "url": api + "/git/trees/" + c.treeSHA},
			"comment_count": 0,
			"verification": obj{
				"verified": false, "reason": "unsigned", "signature": nil, "payload": nil, "verified_at": nil,
			},
		},
		"author":    author,
		"committer": author,
		"parents":   parents,
	}
	if withFiles {
		files, adds, dels := st.diffEntries(r, r.parentFiles(c), c.files, c.sha)
		o["files"] = files
		o["stats"] = obj{"total": adds + dels, "additions": adds, "deletions": dels}
	}
	return o
}

// diffEntries renders file changes as REST "diff-entry" objects.
func (st *state) diffEntries(r *repo, old, new map[string]string, headSHA string) ([]any, int, int) {
	api := st.repoAPI(r)
	var out []any
	var adds, dels int
	for _, ch := range diffTrees(old, new) {
		a, d := lineCount(ch.newContent), lineCount(ch.oldContent)
		content := ch.newContent
		if ch.status == "removed" {
			content = ch.oldContent
		}
		adds += a
		dels += d
		out = append(out, obj{
			"sha":          blobSHA(content),
			"filename":     ch.path,
			"status":       ch.status,
			"additions":    a,
			"deletions":    d,
			"changes":      a + d,
			"blob_url":     st.repoHTML(r) + "/blob/" + headSHA + "/" + ch.path,
			"raw_url":      st.repoHTML(r) + "/raw/" + headSHA + "/" + ch.path,
			"contents_url": api + "/contents/" + ch.path + "?ref=" + headSHA,
		})
	}
	if out == nil {
		out = []any{}
	}
	return out, adds, dels
}

func (st *state) enqueueStatus(r *repo, c *commit, cs *commitStatus) {
	var branches []any
	for name, sha := range r.branches {
		if sha == c.sha {
			branches = append(branches, obj{
				"name":      name,
				"commit":    obj{"sha": sha, "url": st.repoAPI(r) + "/commits/" + sha},
				"protected": false,
			})
		}
	}
	if branches == nil {
		branches = []any{}
	}
	p := st.eventBase(r, cs.creator)
	rest := st.commitStatusJSON(r, cs)
	p["id"] = cs.id
	p["sha"] = c.sha
	p["name"] = r.fullName()
	p["target_url"] = rest["target_url"]
	p["avatar_url"] = rest["avatar_url"]
	p["context"] = cs.context
	p["description"] = rest["description"]
	p["state"] = cs.state
	p["commit"] = st.restCommitJSON(r, c, false)
	p["branches"] = branches
	p["created_at"] = ts(cs.createdAt)
	p["updated_at"] = ts(cs.createdAt)
	st.enqueue("status", r, p)
}

// enqueueCheckSuiteCompleted sends check_suite completed for a suite of the
// CI App on commit c; runs is its latest_check_runs_count.
func (st *state) enqueueCheckSuiteCompleted(r *repo, c *commit, suite *checkSuite, conclusion string, runs int) {
	id := suite.id
	api := st.repoAPI(r)
	var branch any
	for name, sha := range r.branches {
		if sha == c.sha {
			branch = name
			break
		}
	}
	before := zeroSHA
	if len(c.parents) > 0 {
		before = c.parents[0]
	}
	person := func(p gitPerson) obj { return obj{"name": p.name, "email": p.email} }
	p := st.eventBase(r, st.botOf(st.ciApp(), 0))
	p["action"] = "completed"
	p["check_suite"] = obj{
		"id":                      id,
		"node_id":                 nodeID("CheckSuite", id),
		"head_branch":             branch,
		"head_sha":                c.sha,
		"status":                  "completed",
		"conclusion":              conclusion,
		"url":                     api + "/check-suites/" + itoa(id),
		"before":                  before,
		"after":                   c.sha,
		"pull_requests":           []any{},
		"app":                     st.appJSON(st.ciApp()),
		"created_at":              ts(suite.createdAt),
		"updated_at":              ts(suite.updatedAt),
		"rerequestable":           true,
		"runs_rerequestable":      true,
		"latest_check_runs_count": runs,
		"check_runs_url":          api + "/check-suites/" + itoa(id) + "/check-runs",
		"head_commit": obj{
			"id":        c.sha,
			"tree_id":   c.treeSHA,
			"message":   c.message,
			"timestamp": ts(c.committer.date),
			"author":    person(c.author),
			"committer": person(c.committer),
		},
	}
	st.enqueue("check_suite", r, p)
}

// deploymentWorkflowRunJSON is the workflow run as deployment and
// deployment_status events carry it: without head_commit (null in GitHub's
// schema).
func (st *state) deploymentWorkflowRunJSON(r *repo, ru *run) obj {
	o := st.workflowRunJSON(r, ru)
	o["head_commit"] = nil
	return o
}
