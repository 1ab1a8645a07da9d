package simulator

import (
	"encoding/json"
	"fmt"
	"net/http"
	"sort"
	"strings"
	"time"
)

const (
	docCreateDeployment       = docsRoot + "/deployments/deployments#create-a-deployment"
	docCreateDeploymentStatus = docsRoot + "/deployments/statuses#create-a-deployment-status"
)

// Deployment is a deployment as stored, with its statuses (oldest first).
type Deployment struct {
	ID                    int64
	SHA                   string
	Ref                   string
	Task                  string
	Environment           string
	OriginalEnvironment   string
	Description           string
	Payload               json.RawMessage
	Creator               string // login
	App                   string // slug of performed_via_github_app
	ProductionEnvironment bool
	TransientEnvironment  bool
	CreatedAt             time.Time
	// WorkflowRunID is set for a deployment Actions created for a job.
	WorkflowRunID int64
	Statuses      []DeploymentStatus
}

// State is the state of the latest status ("" if none).
func (d Deployment) State() string {
	if len(d.Statuses) == 0 {
		return ""
	}
	return d.Statuses[len(d.Statuses)-1].State
}

// DeploymentStatus is a deployment status as stored.
type DeploymentStatus struct {
	ID             int64
	State          string
	Description    string
	Environment    string
	EnvironmentURL string
	LogURL         string
	TargetURL      string
	Creator        string
	CreatedAt      time.Time
}

// Deployments returns a repository's deployments, oldest first.
func (s *Simulator) Deployments(repo string) []Deployment {
	s.mu.Lock()
	defer s.mu.Unlock()
	rp := s.mustRepo(repo)
	out := make([]Deployment, 0, len(rp.deployments))
	for _, d := range rp.deployments {
		out = append(out, d.snapshot())
	}
	return out
}

func (d *deployment) snapshot() Deployment {
	payload, _ := json.Marshal(d.payload)
	x := Deployment{
		ID: d.id, SHA: d.sha, Ref: d.ref, Task: d.task, Environment: d.environment,
		OriginalEnvironment: d.originalEnvironment, Payload: payload, Creator: d.creator.login,
		ProductionEnvironment: d.production, TransientEnvironment: d.transient, CreatedAt: d.createdAt,
	}
	if d.viaApp != nil {
		x.App = d.viaApp.slug
	}
	if d.description != nil {
		x.Description = *d.description
	}
	if d.run != nil {
		x.WorkflowRunID = d.run.id
	}
	for _, ds := range d.statuses {
		x.Statuses = append(x.Statuses, DeploymentStatus{
			ID: ds.id, State: ds.state, Description: ds.description, Environment: ds.environment,
			EnvironmentURL: ds.environmentURL, LogURL: ds.logURL, TargetURL: ds.targetURL,
			Creator: ds.creator.login, CreatedAt: ds.createdAt,
		})
	}
	return x
}

// deploymentRequest is a validated create-deployment body.
type deploymentRequest struct {
	ref              string
	task             string
	autoMerge        bool
	requiredContexts []string // nil: every context on the commit
	payload          any
	environment      string
	description      *string
	transient        bool
	production       *bool
}

// parseDeploymentRequest validates the body like GitHub; it returns the
// 422 message when invalid.
func parseDeploymentRequest(body map[string]json.RawMessage) (*deploymentRequest, string) {
	req := &deploymentRequest{task: "deploy", autoMerge: true, environment: "production", payload: obj{}}
	ref, present, ok := fieldString(body, "ref")
	if !ok {
		return nil, typeError("ref", body["ref"], "a string")
	}
	if !present {
		return nil, "Invalid request.\n\n\"ref\" wasn't supplied."
	}
	req.ref = ref
	for _, f := range []struct {
		name string
		dst  *string
	}{{"task", &req.task}, {"environment", &req.environment}} {
		v, present, ok := fieldString(body, f.name)
		if !ok {
			return nil, typeError(f.name, body[f.name], "a string")
		}
		if present {
			*f.dst = v
		}
	}
	if v, present, ok := fieldString(body, "description"); !ok {
		return nil, typeError("description", body["description"], "a string")
	} else if present {
		req.description = &v
	}
	if v, present, ok := fieldBool(body, "auto_merge"); !ok {
		return nil, typeError("auto_merge", body["auto_merge"], "a boolean")
	} else if present {
		req.autoMerge = v
	}
	if v, present, ok := fieldBool(body, "transient_environment"); !ok {
		return nil, typeError("transient_environment", body["transient_environment"], "a boolean")
	} else if present {
		req.transient = v
	}
	if v, present, ok := fieldBool(body, "production_environment"); !ok {
		return nil, typeError("production_environment", body["production_environment"], "a boolean")
	} else if present {
		req.production = &v
	}
	if raw, found := body["required_contexts"]; found && string(raw) != "null" {
		var list []string
		if err := json.Unmarshal(raw, &list); err != nil {
			return nil, typeError("required_contexts", raw, "an array")
		}
		req.requiredContexts = append([]string{}, list...)
	}
	if raw, found := body["payload"]; found && string(raw) != "null" {
		var v any
		_ = json.Unmarshal(raw, &v)
		switch p := v.(type) {
		case map[string]any:
			req.payload = p
		case string:
			// GitHub stores the JSON encoding of what it was given, so a
			// string payload comes back as that string.
			req.payload = p
		default:
			return nil, typeError("payload", raw, "of type object, string")
		}
	}
	if req.ref == "" {
		return nil, "Invalid request.\n\n\"ref\" wasn't supplied."
	}
	return req, ""
}

// handleCreateDeployment serves POST /repos/{owner}/{repo}/deployments.
func (s *Simulator) handleCreateDeployment(w http.ResponseWriter, r *http.Request, a *auth) {
	body, ok := decodeBody(w, r, docCreateDeployment)
	if !ok {
		return
	}
	req, msg := parseDeploymentRequest(body)
	if msg != "" {
		writeValidation(w, msg, docCreateDeployment)
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	st := s.st
	rp := st.lookupRepo(r.PathValue("owner") + "/" + r.PathValue("repo"))
	c, ok := rp.resolve(req.ref)
	if !ok {
		writeValidation(w, "No ref found for: "+req.ref, docCreateDeployment)
		return
	}
	branch := strings.TrimPrefix(req.ref, "refs/heads/")
	if _, isBranch := rp.branches[branch]; isBranch && req.autoMerge && branch != rp.defaultBranch {
		def := rp.branches[rp.defaultBranch]
		if !rp.ancestors(c.sha)[def] {
			if _, conflict := st.autoMerge(rp, branch, st.actor(a)); conflict {
				writeJSON(w, http.StatusConflict, obj{"message": fmt.Sprintf("Conflict merging %s into %s.", rp.defaultBranch, branch), "documentation_url": docCreateDeployment})
				return
			}
			s.notifyLocked()
			writeJSON(w, http.StatusAccepted, obj{"message": fmt.Sprintf("Auto-merged %s into %s on deployment.", rp.defaultBranch, branch)})
			return
		}
	}
	if failed := rp.failedContexts(c.sha, req.requiredContexts); failed != nil {
		writeJSON(w, http.StatusConflict, obj{
			"message":           fmt.Sprintf("Conflict: Commit status checks failed for %s", req.ref),
			"documentation_url": docCreateDeployment,
			"errors": []any{obj{
				"contexts": failed,
				"resource": "Deployment",
				"field":    "required_contexts",
				"code":     "invalid",
			}},
		})
		return
	}
	production := req.environment == "production"
	if req.production != nil {
		production = *req.production
	}
	now := s.clock()
	d := &deployment{
		id: st.id(), sha: c.sha, ref: req.ref, task: req.task, payload: req.payload,
		environment: req.environment, originalEnvironment: req.environment, description: req.description,
		creator: st.actor(a), viaApp: st.viaApp(a), production: production, transient: req.transient,
		createdAt: now, updatedAt: now,
	}
	rp.deployments = append(rp.deployments, d)
	st.enqueueDeployment(rp, d)
	// Events caused by a workflow's GITHUB_TOKEN do not start workflows.
	if a.kind != AuthWorkflow {
		s.startRuns(rp, d)
	}
	s.notifyLocked()
	writeJSON(w, http.StatusCreated, st.deploymentJSON(rp, d))
}

// failedContexts checks the commit's statuses and check runs against the
// required contexts (nil: every context seen on the commit, check runs'
// names included). A context is satisfied when its latest status is
// success (statuses compare contexts without regard to case) or when the
// newest check run of that exact name completed with conclusion success.
// Only success counts: GitHub's documentation does not say whether a
// neutral or skipped check run satisfies a context, and a deployment held
// back wrongly is the safer mistake. When one is not satisfied, or was
// never reported, it returns what GitHub puts in the 409's
// errors[0].contexts: every context of the commit with its state — the
// statuses' contexts (in the order they first reported) with their latest
// state, then the check runs' names with their conclusion, or their status
// while not completed. GitHub lists check runs there: the recorded 409s of
// drevops/vortex#1903 show Actions jobs ("build (0)", "deploy") among the
// contexts, and others show conclusions (cancelled, skipped) as states. A
// missing context is not listed, as it has no status or run.
func (r *repo) failedContexts(sha string, required []string) []any {
	latest := r.latestStatuses(sha)
	runs := r.latestCheckRuns(sha)
	satisfied := func(ctx string) bool {
		if cs, ok := latest[contextKey(ctx)]; ok && cs.state == "success" {
			return true
		}
		for _, cr := range runs {
			if cr.name == ctx && cr.status == "completed" && cr.conclusion == "success" {
				return true
			}
		}
		return false
	}
	if required == nil {
		for _, cs := range latest {
			required = append(required, cs.context)
		}
		for _, cr := range runs {
			required = append(required, cr.name)
		}
	}
	failed := false
	for _, ctx := range required {
		failed = failed || !satisfied(ctx)
	}
	if !failed {
		return nil
	}
	var list []*commitStatus
	for _, cs := range latest {
		list = append(list, cs)
	}
	// In the order the contexts first reported.
	first := map[string]int64{}
	for _, cs := range r.statuses[sha] {
		if _, ok := first[contextKey(cs.context)]; !ok {
			first[contextKey(cs.context)] = cs.id
		}
	}
	sort.Slice(list, func(i, j int) bool { return first[contextKey(list[i].context)] < first[contextKey(list[j].context)] })
	out := []any{}
	for _, cs := range list {
		out = append(out, obj{"context": cs.context, "state": cs.state})
	}
	for _, cr := range runs {
		out = append(out, obj{"context": cr.name, "state": cr.state()})
	}
	return out
}

// autoMerge merges the default branch into branch with a merge commit (and
// the push webhook for it). conflict is true when a file changed on both
// sides differently.
func (st *state) autoMerge(r *repo, branch string, actor *account) (*commit, bool) {
	head := r.commits[r.branches[branch]]
	def := r.commits[r.branches[r.defaultBranch]]
	base := map[string]string{}
	if mb := r.mergeBase(head.sha, def.sha); mb != nil {
		base = mb.files
	}
	changes := map[string]string{}
	for _, ch := range diffTrees(base, def.files) {
		mine, inHead := head.files[ch.path]
		was, inBase := base[ch.path]
		if inHead != inBase || mine != was {
			// Changed on the branch too: fine only if both sides agree.
			removed := ch.status == "removed"
			if removed == inHead || (!removed && mine != ch.newContent) {
				return nil, true
			}
		}
		changes[ch.path] = ch.newContent // "" deletes
	}
	spec := CommitSpec{
		Message: fmt.Sprintf("Merge %s into %s", r.defaultBranch, branch),
		// GitHub authors merges it makes itself as GitHub <noreply@github.com>.
		Author: Author{Name: "GitHub", Email: "noreply@github.com"},
		Files:  changes,
	}
	m := st.newCommit(r, []string{head.sha, def.sha}, spec)
	before := r.branches[branch]
	r.branches[branch] = m.sha
	r.pushedAt = st.s.clock()
	st.enqueuePush(r, branch, before, m.sha, false, []*commit{m}, actor, actor.login, "")
	return m, false
}

func (s *Simulator) findDeployment(w http.ResponseWriter, r *http.Request, doc string) (*repo, *deployment) {
	rp := s.st.lookupRepo(r.PathValue("owner") + "/" + r.PathValue("repo"))
	id, ok := pathID(r, "deployment_id")
	if ok {
		for _, d := range rp.deployments {
			if d.id == id {
				return rp, d
			}
		}
	}
	writeError(w, http.StatusNotFound, "Not Found", doc)
	return rp, nil
}

// handleGetDeployment serves GET .../deployments/{id}.
func (s *Simulator) handleGetDeployment(w http.ResponseWriter, r *http.Request, a *auth) {
	s.mu.Lock()
	defer s.mu.Unlock()
	rp, d := s.findDeployment(w, r, docsRoot+"/deployments/deployments#get-a-deployment")
	if d == nil {
		return
	}
	writeJSON(w, http.StatusOK, s.st.deploymentJSON(rp, d))
}

// handleListDeployments serves GET .../deployments, newest first, filtered
// by sha, ref, task and environment, paginated.
func (s *Simulator) handleListDeployments(w http.ResponseWriter, r *http.Request, a *auth) {
	q := r.URL.Query()
	p := parsePage(r, 30)
	s.mu.Lock()
	st := s.st
	rp := st.lookupRepo(r.PathValue("owner") + "/" + r.PathValue("repo"))
	var match []any
	for i := len(rp.deployments) - 1; i >= 0; i-- {
		d := rp.deployments[i]
		// Like GitHub, a filter applies when given and not empty.
		if (q.Get("sha") != "" && q.Get("sha") != d.sha) ||
			(q.Get("ref") != "" && q.Get("ref") != d.ref) ||
			(q.Get("task") != "" && q.Get("task") != d.task) ||
			(q.Get("environment") != "" && q.Get("environment") != d.environment) {
			continue
		}
		match = append(match, st.deploymentJSON(rp, d))
	}
	s.mu.Unlock()
	lo, hi := p.bounds(len(match))
	out := append([]any{}, match[lo:hi]...)
	s.setLink(w, r, p, len(match))
	writeJSON(w, http.StatusOK, out)
}

// handleCreateDeploymentStatus serves POST .../deployments/{id}/statuses.
func (s *Simulator) handleCreateDeploymentStatus(w http.ResponseWriter, r *http.Request, a *auth) {
	const doc = docCreateDeploymentStatus
	// An unknown deployment is 404 whatever the body is: GitHub looks the
	// deployment up before it reads the status.
	s.mu.Lock()
	_, known := s.findDeployment(w, r, doc)
	s.mu.Unlock()
	if known == nil {
		return
	}
	body, ok := decodeBody(w, r, doc)
	if !ok {
		return
	}
	fields := map[string]string{}
	for _, name := range []string{"state", "target_url", "log_url", "description", "environment", "environment_url"} {
		v, present, ok := fieldString(body, name)
		if !ok {
			writeValidation(w, typeError(name, body[name], "a string"), doc)
			return
		}
		if present {
			fields[name] = v
		}
	}
	autoInactive, present, ok := fieldBool(body, "auto_inactive")
	if !ok {
		writeValidation(w, typeError("auto_inactive", body["auto_inactive"], "a boolean"), doc)
		return
	}
	if !present {
		autoInactive = true
	}
	// GitHub does not validate this body against a schema; a missing or
	// unknown state fails the model's validation.
	state := fields["state"]
	switch state {
	case "error", "failure", "inactive", "in_progress", "queued", "pending", "success":
	default:
		writeValidation(w, "Validation Failed", doc, obj{"resource": "DeploymentStatus", "code": "custom", "field": "state", "message": "state is not included in the list"})
		return
	}
	if e := descriptionTooLong("DeploymentStatus", fields["description"]); e != nil {
		writeValidation(w, "Validation Failed", doc, e)
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	rp, d := s.findDeployment(w, r, doc)
	if d == nil {
		return
	}
	ds := s.st.addDeploymentStatus(rp, d, statusInput{
		state: state, description: fields["description"], environment: fields["environment"],
		environmentURL: fields["environment_url"], logURL: fields["log_url"], targetURL: fields["target_url"],
		autoInactive: autoInactive,
	}, s.st.actor(a), s.st.viaApp(a))
	s.notifyLocked()
	created := s.st.deploymentStatusJSON(rp, d, ds)
	// GitHub's 201 names the new status in Location, as its url.
	w.Header().Set("Location", created["url"].(string))
	writeJSON(w, http.StatusCreated, created)
}

type statusInput struct {
	state, description, environment, environmentURL, logURL, targetURL string
	autoInactive                                                       bool
}

// addDeploymentStatus stores a status, applies auto_inactive and sends the
// deployment_status webhooks. Call with s.mu held.
func (st *state) addDeploymentStatus(r *repo, d *deployment, in statusInput, creator *account, via *appInfo) *deploymentStatus {
	now := st.s.clock()
	env := in.environment
	if env == "" {
		env = d.environment
	} else {
		d.environment = env
	}
	target := in.targetURL
	if in.logURL != "" {
		target = in.logURL
	}
	logURL := in.logURL
	if logURL == "" {
		logURL = target
	}
	ds := &deploymentStatus{
		id: st.id(), state: in.state, description: in.description, environment: env,
		environmentURL: in.environmentURL, logURL: logURL, targetURL: target,
		creator: creator, viaApp: via, createdAt: now,
	}
	d.statuses = append(d.statuses, ds)
	d.updatedAt = now
	st.enqueueDeploymentStatus(r, d, ds)
	if in.state == "success" && in.autoInactive {
		// "Adds a new inactive status to all prior non-transient,
		// non-production environment deployments with the same repository
		// and environment name as the created status's deployment. An
		// inactive status is only added to deployments that had a success
		// state."
		for _, prior := range r.deployments {
			if prior == d || prior.id > d.id || !strings.EqualFold(prior.environment, d.environment) || prior.transient || prior.production {
				continue
			}
			if n := len(prior.statuses); n == 0 || prior.statuses[n-1].state != "success" {
				continue
			}
			in := &deploymentStatus{
				id: st.id(), state: "inactive", environment: prior.environment,
				creator: creator, viaApp: via, createdAt: now,
				environmentURL: prior.statuses[len(prior.statuses)-1].environmentURL,
			}
			prior.statuses = append(prior.statuses, in)
			prior.updatedAt = now
			st.enqueueDeploymentStatus(r, prior, in)
		}
	}
	return ds
}

// handleListDeploymentStatuses serves GET .../deployments/{id}/statuses,
// newest first.
func (s *Simulator) handleListDeploymentStatuses(w http.ResponseWriter, r *http.Request, a *auth) {
	p := parsePage(r, 30)
	s.mu.Lock()
	rp, d := s.findDeployment(w, r, docsRoot+"/deployments/statuses#list-deployment-statuses")
	if d == nil {
		s.mu.Unlock()
		return
	}
	all := []any{}
	for i := len(d.statuses) - 1; i >= 0; i-- {
		all = append(all, s.st.deploymentStatusJSON(rp, d, d.statuses[i]))
	}
	s.mu.Unlock()
	lo, hi := p.bounds(len(all))
	s.setLink(w, r, p, len(all))
	writeJSON(w, http.StatusOK, all[lo:hi])
}

// handleGetDeploymentStatus serves GET .../deployments/{id}/statuses/{status_id}.
func (s *Simulator) handleGetDeploymentStatus(w http.ResponseWriter, r *http.Request, a *auth) {
	const doc = docsRoot + "/deployments/statuses#get-a-deployment-status"
	s.mu.Lock()
	defer s.mu.Unlock()
	rp, d := s.findDeployment(w, r, doc)
	if d == nil {
		return
	}
	id, _ := pathID(r, "status_id")
	for _, ds := range d.statuses {
		if ds.id == id {
			writeJSON(w, http.StatusOK, s.st.deploymentStatusJSON(rp, d, ds))
			return
		}
	}
	writeError(w, http.StatusNotFound, "Not Found", doc)
}
