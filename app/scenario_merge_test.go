package app

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/lastmile-app/lastmile/githubapp/simulator"
	"github.com/lastmile-app/lastmile/metrics"
)

// The pushes most merges to main make: a pull request merged with a merge
// commit (the push lists the feature branch's commits, pushed before and
// so not distinct, and the merge commit) and a branch fast-forwarded onto
// main. Each is a release that brings those commits, and each commit's
// lead time, from its own timestamp, is observed once per environment.
func TestMergedPullRequestsAreReleasesOfTheirCommits(t *testing.T) {
	ctx := context.Background()
	sb := sandbox(t, nil)
	repo := sb.repo("shop", nil, simulator.WorkflowOptions{})
	inProduction := func(what, sha string) {
		t.Helper()
		waitFor(t, sb, what+" in production", func(s *simulator.Simulator) bool {
			for _, d := range deploymentsInEnv(s, repo, sha, "production") {
				if d.State() == "success" {
					return true
				}
			}
			return false
		})
		settle(t, sb)
	}
	first := sb.Sim.Push(repo, "main", simulator.CommitSpec{Message: "Add lastmile", Files: map[string]string{".github/lastmile.yml": threeEnvs}})
	inProduction("the first release", first.After)
	n0, sum0 := histogramIn(t, sb, metrics.LeadTime, repo, "production")

	now := time.Now().Truncate(time.Second)
	feature := sb.Sim.Push(repo, "feature",
		simulator.CommitSpec{Message: "Checkout: gift cards", Time: now.Add(-3 * time.Hour), Files: map[string]string{"gift.go": "1"}},
		simulator.CommitSpec{Message: "Checkout: gift card limits", Time: now.Add(-2 * time.Hour), Files: map[string]string{"gift.go": "2"}})
	merge := sb.Sim.Merge(repo, "main", "feature", simulator.CommitSpec{Message: "Merge pull request #1 from acme/feature", Time: now})
	inProduction("the merge", merge.After)

	rec, err := sb.App.DB().Audit(ctx, repo, merge.After)
	if err != nil {
		t.Fatal(err)
	}
	var brought []string
	for _, c := range rec.Commits {
		brought = append(brought, c.SHA)
	}
	if want := []string{feature.Commits[0], feature.Commits[1], merge.After}; !slices.Equal(brought, want) {
		t.Errorf("the merge's release brought %v, want the feature's two commits and the merge commit %v", brought, want)
	}
	n1, sum1 := histogramIn(t, sb, metrics.LeadTime, repo, "production")
	if n1-n0 != 3 {
		t.Errorf("lead times observed in production for the merge: %d, want 3", n1-n0)
	}
	// 3 h and 2 h for the feature's commits, a little for the merge commit.
	if got := sum1 - sum0; got < (5*time.Hour).Seconds() || got > (5*time.Hour+10*time.Minute).Seconds() {
		t.Errorf("lead times' sum for the merge: %.0f s, want 5 hours and a little", got)
	}

	next := sb.Sim.Push(repo, "next", simulator.CommitSpec{Message: "Search: synonyms", Time: now.Add(-time.Hour), Files: map[string]string{"search.go": "1"}})
	ff := sb.Sim.FastForward(repo, "main", next.After)
	inProduction("the fast-forward", ff.After)
	if n2, sum2 := histogramIn(t, sb, metrics.LeadTime, repo, "production"); n2-n1 != 1 || sum2-sum1 < time.Hour.Seconds() {
		t.Errorf("lead times for the fast-forward: %d summing %.0f s, want 1 of an hour and a little", n2-n1, sum2-sum1)
	}
}
