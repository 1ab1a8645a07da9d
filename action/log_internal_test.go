package action

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-github/v62/github"

	"github.com/lastmile-app/lastmile/pipeline"
)

// The line that says a status is tried again prints GitHub's answer, free
// text: a line break in it is escaped, so it cannot start a workflow
// command of its own.
func TestTryingAgainEscapesGitHubsAnswer(t *testing.T) {
	var posts atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "application/json")
		if posts.Add(1) == 1 {
			w.WriteHeader(http.StatusBadGateway)
			io.WriteString(w, `{"message":"Bad Gateway\n::warning::injected\r::add-mask::x \u001b[2J \u202e"}`)
			return
		}
		w.WriteHeader(http.StatusCreated)
		io.WriteString(w, `{"id":1,"state":"success"}`)
	}))
	defer srv.Close()
	gh := github.NewClient(nil)
	gh.BaseURL, _ = url.Parse(srv.URL + "/")
	var log strings.Builder
	r := &runner{env: Env{Stdout: &log}.withDefaults(), gh: gh,
		cfg: &config{owner: "acme", repo: "shop", deployment: deploymentEvent{ID: 7}}}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := r.postPersistently(ctx, pipeline.DeploymentSuccess, "https://github.com/acme/shop/actions/runs/1", "Deployed", finalPostTimeout); err != nil {
		t.Fatalf("postPersistently: %v", err)
	}
	lines := strings.FieldsFunc(log.String(), func(r rune) bool { return r == '\n' || r == '\r' })
	if len(lines) != 1 || !strings.HasPrefix(lines[0], "lastmile: post status success on deployment 7") ||
		!strings.Contains(lines[0], `Bad Gateway\n::warning::injected\r::add-mask::x \x1b[2J \u202e`) || !strings.Contains(lines[0], "trying again in 1s") {
		t.Errorf("job log %q, want one line that says the status is tried again, GitHub's answer escaped", log.String())
	}
}
