package app

import (
	"strings"
	"testing"
	"time"

	"github.com/lastmile-app/lastmile/githubapp/simulator"
)

// Just after GitHub gives lastmile a new installation token, its replicas
// may not know it: a GET with it is answered 404. The configuration file
// read so is no file gone — which would take the repository out of
// lastmile —: the read is made again a second later, and the push is
// deployed.
func TestANewTokenNotKnownYetDoesNotTakeTheRepositoryOut(t *testing.T) {
	sb := sandbox(t, nil)
	repo := sb.repo("shop", nil, simulator.WorkflowOptions{})
	first := sb.Sim.Push(repo, "main", simulator.CommitSpec{Message: "Add lastmile", Files: map[string]string{".github/lastmile.yml": threeEnvs}})
	waitFor(t, sb, "the first release in production", func(s *simulator.Simulator) bool {
		return len(deploymentsInEnv(s, repo, first.After, "production")) == 1
	})
	settle(t, sb)

	// The token lastmile holds expires; the next one is unknown to the API
	// for half a second.
	sb.Sim.ExpireTokens()
	sb.Sim.SetTokenLag(500 * time.Millisecond)
	since := len(sb.Sim.Requests())
	second := sb.Sim.Push(repo, "main", simulator.CommitSpec{Message: "Change", Files: map[string]string{"v": "2"}})
	waitFor(t, sb, "the second release deployed to test", func(s *simulator.Simulator) bool {
		return len(deploymentsInEnv(s, repo, second.After, "test")) == 1
	})
	settle(t, sb)
	lagged := false
	for _, r := range sb.Sim.Requests()[since:] {
		lagged = lagged || r.Method == "GET" && strings.HasSuffix(r.Path, "/contents/.github/lastmile.yml") && r.Status == 404
	}
	if !lagged {
		t.Fatal("the configuration was never read with a token GitHub did not know yet: the test tests nothing")
	}
	rel, err := sb.App.DB().Audit(t.Context(), repo, second.After)
	if err != nil {
		t.Fatal(err)
	}
	if rel.Release.State != "active" && rel.Release.State != "completed" {
		t.Errorf("the second release is %s (%s), want it on its way", rel.Release.State, rel.Release.StopReason)
	}
}
