package pipeline_test

// Lead time: which commits a success brings to an environment.

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/lastmile-app/lastmile/metrics"
	"github.com/lastmile-app/lastmile/pipeline"
)

// leadTimes is the count and sum (seconds) of the lead times observed in
// env.
func (h *harness) leadTimes(env string) (uint64, float64) {
	h.t.Helper()
	snap, err := h.db.MetricsSnapshot(context.Background())
	if err != nil {
		h.t.Fatal(err)
	}
	for _, s := range snap.Histograms[metrics.LeadTime] {
		if s.Labels[1] == env {
			return s.Count, s.Sum
		}
	}
	return 0, 0
}

// pushCreatingMain delivers the push that created main at head, listing
// the branch's whole history: history (three years of it, oldest first),
// then head, written an hour ago.
func (h *harness) pushCreatingMain(history int, head string) {
	h.t.Helper()
	now := time.Now()
	var commits []pipeline.Commit
	for i := range history {
		commits = append(commits, pipeline.Commit{SHA: fmt.Sprintf("%040x", i+1), Title: "old",
			Timestamp: now.Add(-time.Duration(3*365-i*20) * 24 * time.Hour)})
	}
	commits = append(commits, pipeline.Commit{SHA: head, Title: "add lastmile", Timestamp: now.Add(-time.Hour)})
	h.gh.mu.Lock()
	h.gh.head = head
	h.gh.mu.Unlock()
	if err := h.engine.HandlePush(context.Background(), pipeline.Push{Repo: shop, DeliveryID: "create-main",
		Ref: "refs/heads/main", Before: strings.Repeat("0", 40), After: head, DefaultBranch: "main", Pusher: "octocat",
		PushedAt: now, Commits: commits}); err != nil {
		h.t.Fatal(err)
	}
}

// A new repository's first push carries its whole history (before is all
// zeros): the release is a baseline. Its commits are kept for the audit,
// but only the commit pushed has a lead time — not three years of history
// (DevLake's mistake, peers.md §10).
func TestBranchCreatingFirstPushIsABaseline(t *testing.T) {
	h := newHarness(t, c0, c1)
	h.pushCreatingMain(50, c1)
	h.promote(c1, 10, "test", "staging", "production")
	for _, env := range []string{"test", "staging", "production"} {
		n, sum := h.leadTimes(env)
		if n != 1 || sum > 2*3600 {
			t.Errorf("%s: %d lead times observed, %.0f days in all; want 1 (the commit pushed, an hour old)", env, n, sum/86400)
		}
	}
	rec, err := h.db.Audit(context.Background(), "acme/shop", c1)
	if err != nil {
		t.Fatal(err)
	}
	if !rec.Release.Baseline || len(rec.Commits) != 51 {
		t.Errorf("audit: baseline %v, %d commits; want a baseline release keeping all 51", rec.Release.Baseline, len(rec.Commits))
	}
	// Pushed again (a redelivery): the same release, nothing observed again.
	h.pushCreatingMain(50, c1)
	if n, _ := h.leadTimes("production"); n != 1 {
		t.Errorf("production after the push was delivered again: %d lead times, want 1", n)
	}
}

// The releases after a baseline walk back through it to the environment's
// first success: they bring its commit, not the history it lists.
func TestReleasesAfterABaselineLeaveItsHistoryOut(t *testing.T) {
	h := newHarness(t, c0, c1, c2)
	h.pushCreatingMain(50, c1)
	h.status(c1, "test", pipeline.DeploymentSuccess, 10, true)
	h.status(c1, "staging", pipeline.DeploymentFailure, 11, true)
	h.release(c1, c2, 20, "test", "staging", "production")
	want := map[string]uint64{"test": 2, "staging": 2, "production": 2} // c1 and c2
	for env, w := range want {
		if n, sum := h.leadTimes(env); n != w || sum > 4*3600 {
			t.Errorf("%s: %d lead times observed, %.0f days in all; want %d (c1 and c2, hours old)", env, n, sum/86400, w)
		}
	}
}

// A push that creates the branch again later (it was deleted) is no
// baseline: the repository has releases, and its commits are those since
// the latest.
func TestBranchCreatedAgainIsNoBaseline(t *testing.T) {
	h := newHarness(t, c0, c1, c2)
	h.release(c0, c1, 10, "test", "staging", "production")
	if err := h.push(strings.Repeat("0", 40), c2, false); err != nil {
		t.Fatal(err)
	}
	h.promote(c2, 20, "test", "staging", "production")
	rel, err := h.db.ReleaseOf(context.Background(), shop.ID, c2)
	if err != nil {
		t.Fatal(err)
	}
	if rel.Baseline {
		t.Error("the release of the branch created again is a baseline")
	}
	if n, _ := h.leadTimes("production"); n != 2 {
		t.Errorf("production: %d lead times observed, want 2 (c1, c2)", n)
	}
}
