package main

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"sort"
	"sync"
	"sync/atomic"
	"time"
)

// githubStub answers the GitHub calls lastmile's worker makes for a push to
// a repository that is not enrolled: an installation token, then a 404 for
// .github/lastmile.yml. The worker then records the delivery as ignored
// (not enrolled) — the full handling path, without GitHub. It also answers
// lastmile's start-up check of the App's credentials (GET /app).
type githubStub struct {
	Latency time.Duration // added to every answer, to mimic GitHub's

	tokens   atomic.Int64
	contents atomic.Int64
	other    atomic.Int64

	mu     sync.Mutex
	others map[string]int64 // unexpected calls, by "METHOD path"

	srv *http.Server
	ln  net.Listener
}

func startGitHubStub(latency time.Duration) (*githubStub, error) {
	s := &githubStub{Latency: latency, others: map[string]int64{}}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /app/installations/{id}/access_tokens", func(w http.ResponseWriter, r *http.Request) {
		s.wait(r.Context())
		s.tokens.Add(1)
		w.Header().Set("Content-Type", "application/json; charset=utf-8")
		w.WriteHeader(http.StatusCreated)
		fmt.Fprintf(w, `{"token":"x","expires_at":%q,"permissions":{"contents":"read","deployments":"write","statuses":"write"},"repository_selection":"all"}`,
			time.Now().Add(time.Hour).UTC().Format(time.RFC3339))
	})
	mux.HandleFunc("GET /app", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json; charset=utf-8")
		fmt.Fprint(w, `{"id":1,"slug":"lastmile-loadgen","name":"lastmile-loadgen","installations_count":1}`)
	})
	mux.HandleFunc("GET /repos/{owner}/{repo}/contents/.github/lastmile.yml", func(w http.ResponseWriter, r *http.Request) {
		s.wait(r.Context())
		s.contents.Add(1)
		w.Header().Set("Content-Type", "application/json; charset=utf-8")
		w.WriteHeader(http.StatusNotFound)
		fmt.Fprint(w, `{"message":"Not Found","documentation_url":"https://docs.github.com/rest/repos/contents#get-repository-content","status":"404"}`)
	})
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		s.other.Add(1)
		s.mu.Lock()
		if len(s.others) < 100 {
			s.others[r.Method+" "+r.URL.Path]++
		}
		s.mu.Unlock()
		w.Header().Set("Content-Type", "application/json; charset=utf-8")
		w.WriteHeader(http.StatusNotFound)
		fmt.Fprint(w, `{"message":"Not Found"}`)
	})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	s.ln = ln
	s.srv = &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go s.srv.Serve(ln)
	return s, nil
}

func (s *githubStub) wait(ctx context.Context) {
	if s.Latency <= 0 {
		return
	}
	t := time.NewTimer(s.Latency)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
	}
}

// URL is the REST API root to give lastmile (LASTMILE_GITHUB_URL).
func (s *githubStub) URL() string { return "http://" + s.ln.Addr().String() + "/" }

// Unexpected lists calls the stub does not know, most frequent first.
func (s *githubStub) Unexpected() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []string
	for k, n := range s.others {
		out = append(out, fmt.Sprintf("%s ×%d", k, n))
	}
	sort.Strings(out)
	return out
}

func (s *githubStub) Close() { _ = s.srv.Close() }
