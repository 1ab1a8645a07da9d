package simulator

import "net/http"

// handleGetApp serves GET /app: the App the JWT authenticates, with the
// number of its installations (GitHub adds installations_count only when
// an App asks about itself).
func (s *Simulator) handleGetApp(w http.ResponseWriter, r *http.Request, a *auth) {
	s.mu.Lock()
	body := s.st.appJSON(s.st.theApp())
	n := 0
	for _, inst := range s.st.installations {
		if !inst.deleted {
			n++
		}
	}
	body["installations_count"] = n
	s.mu.Unlock()
	writeJSON(w, http.StatusOK, body)
}
