package simulator

import "time"

// RequestRecord is one REST request the Simulator answered.
type RequestRecord struct {
	Method string
	Path   string
	Query  string // raw query string
	// Status is what the client received (0: the connection was closed).
	Status int
	// AppliedStatus is the status the request really had when a
	// FaultAppliedLost fault hid it from the client.
	AppliedStatus  int
	Time           time.Time
	Auth           AuthKind
	InstallationID int64
	Fault          bool // an injected fault shaped the answer
}

// Requests returns the REST requests answered so far, oldest first.
func (s *Simulator) Requests() []RequestRecord {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]RequestRecord(nil), s.st.requests...)
}

// ResetRequests forgets the recorded requests.
func (s *Simulator) ResetRequests() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.st.requests = nil
	s.notifyLocked()
}

// CountRequests counts recorded requests with method ("" = any) whose path
// matches pattern (same syntax as Fault.Path).
func (s *Simulator) CountRequests(method, pattern string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for _, r := range s.st.requests {
		if (method == "" || method == r.Method) && pathMatches(pattern, r.Path) {
			n++
		}
	}
	return n
}
