package simulator

import (
	"net/http"
	"sort"
	"strings"
	"time"
	"unicode/utf8"
)

// CommitStatus is a commit status as stored.
type CommitStatus struct {
	ID          int64
	SHA         string
	State       string
	Context     string
	Description string
	TargetURL   string
	Creator     string
	CreatedAt   time.Time
}

// addCommitStatus stores a status and sends the status webhook. Call with
// s.mu held.
func (st *state) addCommitStatus(r *repo, c *commit, state, context string, desc, target *string, creator *account) *commitStatus {
	if context == "" {
		context = "default"
	}
	cs := &commitStatus{
		id: st.id(), sha: c.sha, state: state, context: context,
		description: desc, targetURL: target, creator: creator, createdAt: st.s.clock(),
	}
	r.statuses[c.sha] = append(r.statuses[c.sha], cs)
	st.enqueueStatus(r, c, cs)
	return cs
}

// latestStatuses returns the newest status of each context, by contextKey:
// "This field is case-insensitive", so "CI" and "ci" are one context, shown
// as its newest status spells it.
func (r *repo) latestStatuses(sha string) map[string]*commitStatus {
	out := map[string]*commitStatus{}
	for _, cs := range r.statuses[sha] {
		out[contextKey(cs.context)] = cs
	}
	return out
}

// contextKey is the key of a commit status context, which GitHub compares
// without regard to case.
func contextKey(context string) string { return strings.ToLower(context) }

// maxStatusesPerContext is GitHub's limit of statuses per SHA and context
// in a repository: "Attempts to create more than 1000 statuses will result
// in a validation error."
const maxStatusesPerContext = 1000

// statusesFull reports whether the context, compared as contextKey does,
// already has the most statuses GitHub keeps for the commit sha.
func (r *repo) statusesFull(sha, context string) bool {
	n := 0
	for _, cs := range r.statuses[sha] {
		if contextKey(cs.context) == contextKey(context) {
			n++
		}
	}
	return n >= maxStatusesPerContext
}

// handleCreateCommitStatus serves POST /repos/{owner}/{repo}/statuses/{sha}.
func (s *Simulator) handleCreateCommitStatus(w http.ResponseWriter, r *http.Request, a *auth) {
	const doc = docsRoot + "/commits/statuses#create-a-commit-status"
	body, ok := decodeBody(w, r, doc)
	if !ok {
		return
	}
	state, present, ok := fieldString(body, "state")
	if !ok {
		writeValidation(w, typeError("state", body["state"], "a string"), doc)
		return
	}
	if !present {
		writeValidation(w, "Invalid request.\n\n\"state\" wasn't supplied.", doc)
		return
	}
	switch state {
	case "error", "failure", "pending", "success":
	default:
		writeValidation(w, "Validation Failed", doc, obj{"resource": "Status", "code": "custom", "field": "state", "message": "state is not included in the list"})
		return
	}
	opt := func(name string) (*string, bool) {
		v, present, ok := fieldString(body, name)
		if !ok {
			writeValidation(w, typeError(name, body[name], "a string"), doc)
			return nil, false
		}
		if !present {
			return nil, true
		}
		return &v, true
	}
	target, ok := opt("target_url")
	if !ok {
		return
	}
	desc, ok := opt("description")
	if !ok {
		return
	}
	ctxName, ok := opt("context")
	if !ok {
		return
	}
	if desc != nil {
		if e := descriptionTooLong("Status", *desc); e != nil {
			writeValidation(w, "Validation Failed", doc, e)
			return
		}
	}
	context := "default"
	if ctxName != nil {
		context = *ctxName
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	st := s.st
	rp := st.lookupRepo(r.PathValue("owner") + "/" + r.PathValue("repo"))
	sha := r.PathValue("sha")
	c := rp.commits[sha]
	if c == nil {
		writeValidation(w, "No commit found for SHA: "+sha, doc)
		return
	}
	if rp.statusesFull(c.sha, context) {
		// GitHub's error names no field: the limit is on the pair.
		writeValidation(w, "Validation Failed", doc, obj{"resource": "Status", "code": "custom", "message": "This SHA and context has reached the maximum number of statuses."})
		return
	}
	cs := st.addCommitStatus(rp, c, state, context, desc, target, st.actor(a))
	s.notifyLocked()
	created := st.commitStatusJSON(rp, cs)
	w.Header().Set("Location", created["url"].(string))
	writeJSON(w, http.StatusCreated, created)
}

// descriptionTooLong is the error GitHub's 422 lists for a commit or
// deployment status (resource "Status" or "DeploymentStatus") whose
// description is over 140 characters; nil if it is not.
func descriptionTooLong(resource, description string) obj {
	if utf8.RuneCountInString(description) <= 140 {
		return nil
	}
	return obj{"resource": resource, "code": "custom", "field": "description", "message": "description is too long (maximum is 140 characters)"}
}

// actor is the user a request acts as.
func (st *state) actor(a *auth) *account {
	if a.kind == AuthWorkflow {
		return st.actionsBot()
	}
	return st.appBot()
}

// viaApp is the App a request acts through.
func (st *state) viaApp(a *auth) *appInfo {
	if a.kind == AuthWorkflow {
		return st.actionsApp()
	}
	return st.theApp()
}

// handleListCommitStatuses serves GET .../commits/{ref}/statuses, newest first.
func (s *Simulator) handleListCommitStatuses(w http.ResponseWriter, r *http.Request, a *auth) {
	s.mu.Lock()
	st := s.st
	rp := st.lookupRepo(r.PathValue("owner") + "/" + r.PathValue("repo"))
	var list []*commitStatus
	if c, ok := rp.resolve(r.PathValue("ref")); ok {
		list = rp.statuses[c.sha]
	}
	p := parsePage(r, 30)
	out := []any{}
	for i := len(list) - 1; i >= 0; i-- {
		out = append(out, st.commitStatusJSON(rp, list[i]))
	}
	lo, hi := p.bounds(len(out))
	n := len(out)
	out = out[lo:hi]
	s.mu.Unlock()
	s.setLink(w, r, p, n)
	writeJSON(w, http.StatusOK, out)
}

// handleCombinedStatus serves GET .../commits/{ref}/status. page and
// per_page page the statuses (one per context); state and total_count are
// of every context.
func (s *Simulator) handleCombinedStatus(w http.ResponseWriter, r *http.Request, a *auth) {
	const doc = docsRoot + "/commits/statuses#get-the-combined-status-for-a-specific-reference"
	s.mu.Lock()
	st := s.st
	rp := st.lookupRepo(r.PathValue("owner") + "/" + r.PathValue("repo"))
	c, ok := rp.resolve(r.PathValue("ref"))
	if !ok {
		s.mu.Unlock()
		writeError(w, http.StatusNotFound, "No commit found for SHA: "+r.PathValue("ref"), doc)
		return
	}
	latest := rp.latestStatuses(c.sha)
	var list []*commitStatus
	for _, cs := range latest {
		list = append(list, cs)
	}
	sort.Slice(list, func(i, j int) bool { return list[i].id < list[j].id })
	p := parsePage(r, 30)
	lo, hi := p.bounds(len(list))
	statuses := make([]any, 0, hi-lo)
	for _, cs := range list[lo:hi] {
		j := st.commitStatusJSON(rp, cs)
		delete(j, "creator")
		statuses = append(statuses, j)
	}
	out := obj{
		"state":       combinedState(list),
		"statuses":    statuses,
		"sha":         c.sha,
		"total_count": len(list),
		"repository":  st.repoJSON(rp, false),
		"commit_url":  st.repoAPI(rp) + "/commits/" + c.sha,
		"url":         st.repoAPI(rp) + "/commits/" + c.sha + "/status",
	}
	s.mu.Unlock()
	s.setLink(w, r, p, len(list))
	writeJSON(w, http.StatusOK, out)
}

// combinedState is GitHub's rule: failure if any context is error or
// failure, pending if any is pending or there are none, else success.
func combinedState(latest []*commitStatus) string {
	if len(latest) == 0 {
		return "pending"
	}
	state := "success"
	for _, cs := range latest {
		switch cs.state {
		case "error", "failure":
			return "failure"
		case "pending":
			state = "pending"
		}
	}
	return state
}

// CommitStatuses returns a commit's statuses, oldest first.
func (s *Simulator) CommitStatuses(repo, sha string) []CommitStatus {
	s.mu.Lock()
	defer s.mu.Unlock()
	rp := s.mustRepo(repo)
	var out []CommitStatus
	if c, ok := rp.resolve(sha); ok {
		for _, cs := range rp.statuses[c.sha] {
			x := CommitStatus{ID: cs.id, SHA: cs.sha, State: cs.state, Context: cs.context, Creator: cs.creator.login, CreatedAt: cs.createdAt}
			if cs.description != nil {
				x.Description = *cs.description
			}
			if cs.targetURL != nil {
				x.TargetURL = *cs.targetURL
			}
			out = append(out, x)
		}
	}
	return out
}
