package simulator

import (
	"crypto/rand"
	"encoding/hex"
	"net/http"
)

// handleJobLogs serves GET /repos/{owner}/{repo}/actions/jobs/{job_id}/logs:
// like GitHub, a 302 to a short-lived blob URL that needs no credentials.
func (s *Simulator) handleJobLogs(w http.ResponseWriter, r *http.Request, a *auth) {
	const doc = docsRoot + "/actions/workflow-jobs#download-job-logs-for-a-workflow-run"
	s.mu.Lock()
	defer s.mu.Unlock()
	rp := s.st.lookupRepo(r.PathValue("owner") + "/" + r.PathValue("repo"))
	id, _ := pathID(r, "job_id")
	j := s.st.jobs[id]
	if j == nil || j.run.repo != rp {
		writeError(w, http.StatusNotFound, "Not Found", doc)
		return
	}
	var b [16]byte
	_, _ = rand.Read(b[:])
	key := hex.EncodeToString(b[:])
	s.st.blobs[key] = j.id
	w.Header().Set("Location", s.st.apiURL+"/_simulator/blobs/job-logs/"+key)
	w.WriteHeader(http.StatusFound)
}

// handleLogBlob serves a job log behind a URL from handleJobLogs.
func (s *Simulator) handleLogBlob(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	id, ok := s.st.blobs[r.PathValue("key")]
	var text string
	if ok {
		text = s.st.jobs[id].log.String()
	}
	s.mu.Unlock()
	if !ok {
		http.Error(w, "BlobNotFound", http.StatusNotFound)
		return
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	_, _ = w.Write([]byte(text))
}
