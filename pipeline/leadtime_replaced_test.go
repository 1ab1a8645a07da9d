package pipeline_test

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/lastmile-app/lastmile/pipeline"
)

// Lead time across a history replaced by an unrelated one (an orphan branch
// force-pushed over the pipeline branch, a history rewritten): GitHub's
// comparison across the two histories answers 404. The old history is
// c0 → c1 → c2, the new one x1 → x2 → x3 → x4, with x3a amended on x2.
const (
	x1  = "e1e1e1e1e1e1e1e1e1e1e1e1e1e1e1e1e1e1e1e1"
	x2  = "e2e2e2e2e2e2e2e2e2e2e2e2e2e2e2e2e2e2e2e2"
	x3  = "e3e3e3e3e3e3e3e3e3e3e3e3e3e3e3e3e3e3e3e3"
	x3a = "eaeaeaeaeaeaeaeaeaeaeaeaeaeaeaeaeaeaeaea"
	x4  = "e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4"
)

// orphanGitHub is graphGitHub answering 404, as GitHub does, to the
// comparison of two commits that share no ancestor.
type orphanGitHub struct{ *graphGitHub }

func (o *orphanGitHub) unrelated(base, head string) bool {
	o.mu.Lock()
	if len(head) != 40 {
		head = o.head
	}
	o.mu.Unlock()
	ba, ha := o.ancestry(base), o.ancestry(head)
	return len(ba) > 0 && len(ha) > 0 && ba[len(ba)-1] != ha[len(ha)-1]
}

func (o *orphanGitHub) Compare(ctx context.Context, r pipeline.Repo, base, head string) (pipeline.Comparison, error) {
	if o.unrelated(base, head) {
		o.mu.Lock()
		o.compares = append(o.compares, sh(base)+"..."+sh(head)+"(404)")
		o.mu.Unlock()
		return pipeline.Comparison{}, pipeline.ErrNotFound
	}
	return o.graphGitHub.Compare(ctx, r, base, head)
}

func (o *orphanGitHub) Relation(ctx context.Context, r pipeline.Repo, base, head string) (string, error) {
	if o.unrelated(base, head) {
		return "", pipeline.ErrNotFound
	}
	return o.graphGitHub.Relation(ctx, r, base, head)
}

func newOrphanHarness(t *testing.T) (*harness, *orphanGitHub) {
	h, g := newGraphHarness(t, c0, "", c1, c0, c2, c1, x1, "", x2, x1, x3, x2, x3a, x2, x4, x3)
	o := &orphanGitHub{g}
	h.engine.GitHub = o
	return h, o
}

// pushListing has lastmile hear of a push whose payload lists commits.
func (h *harness) pushListing(id, before, after string, forced bool, commits ...string) {
	h.t.Helper()
	h.gh.mu.Lock()
	h.gh.head = after
	h.gh.mu.Unlock()
	var list []pipeline.Commit
	for _, sha := range commits {
		list = append(list, pipeline.Commit{SHA: sha, Title: "commit " + sh(sha), Timestamp: time.Now().Add(-2 * time.Hour)})
	}
	if err := h.engine.HandlePush(context.Background(), pipeline.Push{Repo: shop, DeliveryID: id, Ref: "refs/heads/main",
		Before: before, After: after, Forced: forced, DefaultBranch: "main", Pusher: "octocat", PushedAt: time.Now(),
		Commits: list}); err != nil {
		h.t.Fatal(err)
	}
}

// The force push that replaced the history was not delivered; the next
// push, an ordinary one, lists its own commits whole: they count (only
// the history before it is new to lastmile). Listing none (a fast-forward
// to commits pushed before), its commits x3 and x4 are those GitHub
// compares x2...x4 with (one history): they count alike.
func TestLeadTimeAfterAMissedReplacementCountsThePushsCommits(t *testing.T) {
	for name, listed := range map[string][]string{"listed whole": {x3, x4}, "listing none": nil} {
		t.Run(name, func(t *testing.T) {
			h, _ := newOrphanHarness(t)
			h.release(c0, c1, 10, "test", "staging", "production")
			h.gh.mu.Lock()
			h.gh.head = x2 // the replacement, never delivered
			h.gh.mu.Unlock()
			before := h.observed()
			h.pushListing("after-missed", x2, x4, false, listed...)
			h.promote(x4, 20, "test", "staging", "production")
			h.wantObserved(before, map[string]uint64{"test": 2, "staging": 2, "production": 2}, " for x3 and x4")
		})
	}
}

// After a replacement, whose head x2 failed in staging, an amended head
// x3a (a force push within the new history) brings x2 as well beyond
// test: the comparison with the old history's c1 (404) is given up, and
// the commits are compared from the replacement's x2 instead.
func TestLeadTimeAfterAReplacementThenAnAmendedHead(t *testing.T) {
	h, g := newOrphanHarness(t)
	h.release(c0, c1, 10, "test", "staging", "production")
	h.pushListing("replace", c1, x2, true, x1, x2)
	h.status(x2, "test", pipeline.DeploymentSuccess, 20, true)
	h.status(x2, "staging", pipeline.DeploymentFailure, 21, true)
	h.pushListing("x3", x2, x3, false, x3)
	h.pushListing("amend", x3, x3a, true, x3a)
	before := h.observed()
	g.asked()
	h.promote(x3a, 30, "test", "staging", "production")
	h.wantObserved(before, map[string]uint64{"test": 1, "staging": 2, "production": 2}, " for x3a (x3a in test; x2 and x3a beyond)")
	if asked := g.asked(); !slices.Contains(asked, sh(x2)+"..."+sh(x3a)) {
		t.Errorf("compares asked: %v; want the replacement's x2...x3a", asked)
	}
}

// After a replacement whose head failed in staging, a push forward brings
// x2 beyond test too.
func TestLeadTimeAfterAReplacementThenForward(t *testing.T) {
	h, _ := newOrphanHarness(t)
	h.release(c0, c1, 10, "test", "staging", "production")
	h.pushListing("replace", c1, x2, true, x1, x2)
	h.status(x2, "test", pipeline.DeploymentSuccess, 20, true)
	h.status(x2, "staging", pipeline.DeploymentFailure, 21, true)
	before := h.observed()
	h.pushListing("x3", x2, x3, false, x3)
	h.promote(x3, 30, "test", "staging", "production")
	h.wantObserved(before, map[string]uint64{"test": 1, "staging": 2, "production": 2}, " for x3")
}

// The first push lastmile hears of replaced the history, its list whole:
// a baseline, as when the list is cut short — only the commit pushed
// counts, not the rewritten history with its old dates.
func TestLeadTimeOfAFirstPushThatReplacedTheHistory(t *testing.T) {
	h, _ := newOrphanHarness(t)
	h.pushListing("first-replace", c2, x4, true, x1, x2, x3, x4)
	h.promote(x4, 10, "test", "staging", "production")
	if got, want := h.observed(), map[string]uint64{"test": 1, "staging": 1, "production": 1}; !sameCounts(got, want) {
		t.Errorf("lead times observed: %v, want %v (the commit pushed only)", got, want)
	}
}

// Replaced, then rolled back to the old history's c2 (which had failed in
// staging): c2 reaches staging and production then, nothing new in test.
func TestLeadTimeOfARollbackToTheHistoryReplaced(t *testing.T) {
	h, _ := newOrphanHarness(t)
	h.release(c0, c1, 10, "test", "staging", "production")
	h.pushListing("c2", c1, c2, false, c2)
	h.status(c2, "test", pipeline.DeploymentSuccess, 12, true)
	h.status(c2, "staging", pipeline.DeploymentFailure, 13, true)
	h.pushListing("replace", c2, x2, true, x1, x2)
	h.promote(x2, 20, "test")
	before := h.observed()
	h.pushListing("back", x2, c2, true)
	h.promote(c2, 30, "test", "staging", "production")
	h.wantObserved(before, map[string]uint64{"test": 0, "staging": 1, "production": 1}, " for the rollback to c2")
}

// A push whose comparison with the latest release holds more commits than
// lastmile lists (a history imported or merged in whole) is released as one
// that replaced the history: what it lists is kept, only the commit pushed
// counts for lead time — not the imported history's thousands of old
// commits, nor an error retried for ever.
func TestLeadTimeOfAPushTooLargeToCompare(t *testing.T) {
	h, g := newGraphHarness(t, c0, "", c1, c0, c2, c1, c3, c2)
	h.release(c0, c1, 10, "test", "staging", "production")
	g.asked()
	g.failCompares, g.failWith = 100, fmt.Errorf("compare c1c1...c3c3: %w (25000, more than 10000)", pipeline.ErrComparisonTooLarge)
	before := h.observed()
	h.pushListing("import", c1, c3, true, c2, c3)
	h.promote(c3, 20, "test", "staging", "production")
	h.wantObserved(before, map[string]uint64{"test": 1, "staging": 1, "production": 1}, " for c3 alone")
	// Asked at the push, and once more for the first success's lead time
	// (as for a history replaced), given up at once: not per environment.
	if asked := g.asked(); !slices.Equal(asked, []string{"c1c1...c3c3", "c1c1...c3c3"}) {
		t.Errorf("comparisons asked for: %v, want c1c1...c3c3 twice", asked)
	}
}

// The first push lastmile hears of, forced, compares with its before: a
// comparison too large to list makes it a baseline as well.
func TestLeadTimeOfAFirstPushTooLargeToCompare(t *testing.T) {
	h, g := newGraphHarness(t, c0, "", c1, c0, c2, c1, c3, c2)
	g.failCompares, g.failWith = 100, fmt.Errorf("compare c1c1...c3c3: %w (25000, more than 10000)", pipeline.ErrComparisonTooLarge)
	h.pushListing("first-import", c1, c3, true, c2, c3)
	h.promote(c3, 10, "test", "staging", "production")
	if got, want := h.observed(), map[string]uint64{"test": 1, "staging": 1, "production": 1}; !sameCounts(got, want) {
		t.Errorf("lead times observed: %v, want %v (the commit pushed only)", got, want)
	}
}

// A push listing no commits (the branch moved to commits pushed before)
// whose comparison is too large to list is no baseline: the branch moved
// forward from its before, which the release counts from.
func TestAPushListingNoCommitsTooLargeToCompareIsNoBaseline(t *testing.T) {
	h, g := newGraphHarness(t, c0, "", c1, c0, c2, c1, c3, c2)
	h.release(c0, c1, 10, "test", "staging", "production")
	g.failCompares, g.failWith = 100, fmt.Errorf("compare c1c1...c3c3: %w (25000, more than 10000)", pipeline.ErrComparisonTooLarge)
	h.pushListing("fast-forward", c1, c3, false)
	rel, err := h.db.ReleaseOf(context.Background(), shop.ID, c3)
	if err != nil {
		t.Fatal(err)
	}
	if rel.Baseline || rel.Base != c1 {
		t.Errorf("c3's release: baseline %v, base %q; want no baseline, counted from c1", rel.Baseline, rel.Base)
	}
}
