package simulator

import "net/http"

// Reads of the App's installations (with the App's JWT) and of workflow
// runs (with a token that reaches their repository). Their bodies are those
// the webhooks carry: GitHub's REST schemas "installation" and
// "workflow-run" describe the same objects.

// handleGetInstallation serves GET /app/installations/{installation_id}:
// the installation, suspended or not (suspended_at and suspended_by say
// so); 404 once the App was uninstalled from it, as for an id it never had.
func (s *Simulator) handleGetInstallation(w http.ResponseWriter, r *http.Request, a *auth) {
	const doc = docsRoot + "/apps/apps#get-an-installation-for-the-authenticated-app"
	id, _ := pathID(r, "installation_id")
	s.mu.Lock()
	defer s.mu.Unlock()
	inst := s.st.installations[id]
	if inst == nil || inst.deleted {
		writeError(w, http.StatusNotFound, "Not Found", doc)
		return
	}
	writeJSON(w, http.StatusOK, s.st.installationJSON(inst))
}

// handleGetRepoInstallation serves GET /repos/{owner}/{repo}/installation:
// the installation the App reaches the repository through, suspended or
// not; 404 when none does (the repository removed from it, the App
// uninstalled, or no such repository).
func (s *Simulator) handleGetRepoInstallation(w http.ResponseWriter, r *http.Request, a *auth) {
	const doc = docsRoot + "/apps/apps#get-a-repository-installation-for-the-authenticated-app"
	s.mu.Lock()
	defer s.mu.Unlock()
	rp := s.st.lookupRepo(r.PathValue("owner") + "/" + r.PathValue("repo"))
	if rp == nil || rp.installation.deleted || !rp.installation.has(rp) {
		writeError(w, http.StatusNotFound, "Not Found", doc)
		return
	}
	writeJSON(w, http.StatusOK, s.st.installationJSON(rp.installation))
}

// handleGetWorkflowRun serves GET /repos/{owner}/{repo}/actions/runs/{run_id}:
// the run as it is now (its latest attempt); 404 for a run of another
// repository or none. pull_requests is always empty, so
// exclude_pull_requests changes nothing.
func (s *Simulator) handleGetWorkflowRun(w http.ResponseWriter, r *http.Request, a *auth) {
	const doc = docsRoot + "/actions/workflow-runs#get-a-workflow-run"
	id, _ := pathID(r, "run_id")
	s.mu.Lock()
	defer s.mu.Unlock()
	rp := s.st.lookupRepo(r.PathValue("owner") + "/" + r.PathValue("repo"))
	ru := s.st.runs[id]
	if ru == nil || ru.repo != rp {
		writeError(w, http.StatusNotFound, "Not Found", doc)
		return
	}
	writeJSON(w, http.StatusOK, s.st.workflowRunJSON(rp, ru))
}

// handleListWorkflowRuns serves GET /repos/{owner}/{repo}/actions/runs:
// the repository's runs as they are now, each as GET .../runs/{run_id}
// answers it, newest first, paginated (per_page 30 by default), in
// {"total_count", "workflow_runs"} with total_count counting every run
// the filters keep. Like GitHub, a filter applies when given and not
// empty: head_sha, event (every run of the simulator is on the deployment
// event), branch (head_branch) and status, which GitHub matches against
// either the run's status or its conclusion ("in_progress", "completed",
// "failure"...). actor, created and check_suite_id filter nothing here
// (lastmile sends none), nor does exclude_pull_requests (pull_requests is
// always empty).
func (s *Simulator) handleListWorkflowRuns(w http.ResponseWriter, r *http.Request, a *auth) {
	q := r.URL.Query()
	p := parsePage(r, 30)
	s.mu.Lock()
	st := s.st
	rp := st.lookupRepo(r.PathValue("owner") + "/" + r.PathValue("repo"))
	var match []any
	for i := len(st.runOrder) - 1; i >= 0; i-- {
		ru := st.runs[st.runOrder[i]]
		if ru.repo != rp {
			continue
		}
		status := q.Get("status")
		if (q.Get("head_sha") != "" && q.Get("head_sha") != ru.sha) ||
			(q.Get("event") != "" && q.Get("event") != ru.on) ||
			(q.Get("branch") != "" && q.Get("branch") != ru.branch) ||
			(status != "" && status != ru.status && status != ru.conclusion) {
			continue
		}
		match = append(match, st.workflowRunJSON(rp, ru))
	}
	s.mu.Unlock()
	lo, hi := p.bounds(len(match))
	out := append([]any{}, match[lo:hi]...)
	s.setLink(w, r, p, len(match))
	writeJSON(w, http.StatusOK, obj{"total_count": len(match), "workflow_runs": out})
}
