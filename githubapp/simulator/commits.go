package simulator

import (
	"net/http"
	"strings"
)

// handleCompare serves GET /repos/{owner}/{repo}/compare/{base}...{head}.
func (s *Simulator) handleCompare(w http.ResponseWriter, r *http.Request, a *auth) {
	const doc = docsRoot + "/commits/commits#compare-two-commits"
	base, head, ok := strings.Cut(r.PathValue("basehead"), "...")
	if !ok {
		writeError(w, http.StatusNotFound, "Not Found", doc)
		return
	}
	s.mu.Lock()
	st := s.st
	rp := st.lookupRepo(r.PathValue("owner") + "/" + r.PathValue("repo"))
	bc, ok1 := rp.resolve(base)
	hc, ok2 := rp.resolve(head)
	if !ok1 || !ok2 {
		s.mu.Unlock()
		writeError(w, http.StatusNotFound, "Not Found", doc)
		return
	}
	ahead := rp.between(bc.sha, hc.sha)
	behind := rp.between(hc.sha, bc.sha)
	mb := rp.mergeBase(bc.sha, hc.sha)
	if mb == nil {
		// Unrelated histories (an orphan branch, a history rewritten):
		// GitHub compares nothing and answers 404.
		s.mu.Unlock()
		writeError(w, http.StatusNotFound, "No common ancestor between "+base+" and "+head+".", doc)
		return
	}
	status := "diverged"
	switch {
	case bc.sha == hc.sha:
		status = "identical"
	case len(behind) == 0:
		status = "ahead"
	case len(ahead) == 0:
		status = "behind"
	}
	q := r.URL.Query()
	paged := q.Has("page") || q.Has("per_page")
	list := ahead
	var p page
	if paged {
		p = parsePage(r, 30)
		lo, hi := p.bounds(len(ahead))
		list = ahead[lo:hi]
	} else if len(list) > 250 {
		list = list[len(list)-250:]
	}
	commits := make([]any, len(list))
	for i, c := range list {
		commits[i] = st.restCommitJSON(rp, c, false)
	}
	html := st.repoHTML(rp)
	out := obj{
		"url":               st.repoAPI(rp) + "/compare/" + base + "..." + head,
		"html_url":          html + "/compare/" + base + "..." + head,
		"permalink_url":     html + "/compare/" + rp.owner.login + ":" + bc.sha[:7] + "..." + rp.owner.login + ":" + hc.sha[:7],
		"diff_url":          html + "/compare/" + base + "..." + head + ".diff",
		"patch_url":         html + "/compare/" + base + "..." + head + ".patch",
		"base_commit":       st.restCommitJSON(rp, bc, false),
		"merge_base_commit": nil,
		"status":            status,
		"ahead_by":          len(ahead),
		"behind_by":         len(behind),
		"total_commits":     len(ahead),
		"commits":           commits,
	}
	out["merge_base_commit"] = st.restCommitJSON(rp, mb, false)
	if !paged || p.page == 1 {
		files, _, _ := st.diffEntries(rp, mb.files, hc.files, hc.sha)
		out["files"] = files
	}
	s.mu.Unlock()
	if paged {
		s.setLink(w, r, p, len(ahead))
	}
	writeJSON(w, http.StatusOK, out)
}

// handleGetCommit serves GET /repos/{owner}/{repo}/commits/{ref}.
func (s *Simulator) handleGetCommit(w http.ResponseWriter, r *http.Request, a *auth) {
	const doc = docsRoot + "/commits/commits#get-a-commit"
	s.mu.Lock()
	defer s.mu.Unlock()
	rp := s.st.lookupRepo(r.PathValue("owner") + "/" + r.PathValue("repo"))
	c, ok := rp.resolve(r.PathValue("ref"))
	if !ok {
		writeValidation(w, "No commit found for SHA: "+r.PathValue("ref"), doc)
		return
	}
	writeJSON(w, http.StatusOK, s.st.restCommitJSON(rp, c, true))
}
