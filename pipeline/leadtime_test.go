package pipeline_test

// Lead time: which commits a success brings to an environment.

import (
	"context"
	"errors"
	"fmt"
	"slices"
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
	return h.histogram(metrics.LeadTime, env)
}

// histogram is the count and sum of the histogram name's series of env.
func (h *harness) histogram(name, env string) (uint64, float64) {
	h.t.Helper()
	snap, err := h.db.MetricsSnapshot(context.Background())
	if err != nil {
		h.t.Fatal(err)
	}
	for _, s := range snap.Histograms[name] {
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
	h.mustPush(strings.Repeat("0", 40), c2, false)
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

// GitHub lists no commits in a push that moves the branch to commits
// pushed before (a merge queue's branch fast-forwarded into main, `git
// push origin feature:main`): the release's commits come from the
// comparison with the previous release's — the first release's, with the
// push's before — and their lead time is observed.
func TestPushListingNoCommitsTakesThemFromTheComparison(t *testing.T) {
	ctx := context.Background()
	h := newHarness(t, c0, c1, c2)
	fastForward := func(before, after string) {
		t.Helper()
		h.gh.mu.Lock()
		h.gh.head = after
		h.gh.mu.Unlock()
		err := h.engine.HandlePush(ctx, pipeline.Push{Repo: shop, DeliveryID: "ff-" + after, Ref: "refs/heads/main",
			Before: before, After: after, DefaultBranch: "main", Pusher: "octocat", PushedAt: time.Now()})
		if err != nil {
			t.Fatal(err)
		}
	}
	before := h.observed()
	fastForward(c0, c1) // the repository's first release
	h.promote(c1, 10, "test", "staging", "production")
	fastForward(c1, c2)
	h.promote(c2, 20, "test", "staging", "production")
	h.wantObserved(before, map[string]uint64{"test": 2, "staging": 2, "production": 2}, " for c1 and c2")
	for _, sha := range []string{c1, c2} {
		rec, err := h.db.Audit(ctx, shop.FullName(), sha)
		if err != nil {
			t.Fatal(err)
		}
		if len(rec.Commits) != 1 || rec.Commits[0].SHA != sha {
			t.Errorf("release of %s: commits %v, want the one it brought", sha[:7], rec.Commits)
		}
	}
	rel, err := h.db.ReleaseOf(ctx, shop.ID, c2)
	if err != nil {
		t.Fatal(err)
	}
	if prev, err := h.db.ReleaseOf(ctx, shop.ID, c1); err != nil || rel.ParentID != prev.ID {
		t.Errorf("c2's release: parent %d, want c1's release (%v)", rel.ParentID, err)
	}
}

// graphGitHub is the harness's fake GitHub over a commit graph (a force
// push may put main on a commit beside its history), counting the
// comparisons lastmile asks for (not Relation's one-commit pages), the
// next failCompares of which fail with failWith.
type graphGitHub struct {
	*fakeGitHub
	parent       map[string]string // commit → its parent ("" for the root)
	compares     []string          // base...head, short
	failCompares int
	failWith     error
}

func newGraphHarness(t *testing.T, edges ...string) (*harness, *graphGitHub) {
	h := newHarness(t)
	g := &graphGitHub{fakeGitHub: h.gh, parent: map[string]string{}}
	for i := 0; i < len(edges); i += 2 {
		g.parent[edges[i]] = edges[i+1]
	}
	h.engine.GitHub = g
	return h, g
}

// ancestry is sha and its ancestors, newest first.
func (g *graphGitHub) ancestry(sha string) []string { return ancestryIn(g.parent, sha) }

// ancestryIn is sha and its ancestors in a commit graph (commit → its
// parent, "" for a root), newest first.
func ancestryIn(parent map[string]string, sha string) []string {
	var out []string
	for ; sha != ""; sha = parent[sha] {
		out = append(out, sha)
	}
	return out
}

// compareIn is GitHub's comparison base...head in a commit graph: 404 for
// a commit it does not hold, the commits of head that base lacks (oldest
// first, as commit makes them).
func compareIn(parent map[string]string, base, head string, commit func(sha string) pipeline.Commit) (pipeline.Comparison, error) {
	if _, ok := parent[base]; !ok {
		return pipeline.Comparison{}, pipeline.ErrNotFound
	}
	if _, ok := parent[head]; !ok {
		return pipeline.Comparison{}, pipeline.ErrNotFound
	}
	ba, ha := ancestryIn(parent, base), ancestryIn(parent, head)
	var c pipeline.Comparison
	switch {
	case base == head:
		c.Status = "identical"
	case slices.Contains(ha, base):
		c.Status = "ahead"
	case slices.Contains(ba, head):
		c.Status = "behind"
	default:
		c.Status = "diverged"
	}
	for _, sha := range slices.Backward(ha) {
		if !slices.Contains(ba, sha) {
			c.Commits = append(c.Commits, commit(sha))
		}
	}
	return c, nil
}

func (g *graphGitHub) compare(base, head string) (pipeline.Comparison, error) {
	g.mu.Lock()
	if len(head) != 40 {
		head = g.head
	}
	g.mu.Unlock()
	return compareIn(g.parent, base, head, func(sha string) pipeline.Commit {
		return pipeline.Commit{SHA: sha, Title: "commit " + sha, Timestamp: time.Now().Add(-2 * time.Hour)}
	})
}

func (g *graphGitHub) Compare(_ context.Context, _ pipeline.Repo, base, head string) (pipeline.Comparison, error) {
	g.mu.Lock()
	g.compares = append(g.compares, sh(base)+"..."+sh(head))
	fail := g.failCompares > 0
	if fail {
		g.failCompares--
	}
	g.mu.Unlock()
	if fail {
		return pipeline.Comparison{}, g.failWith
	}
	return g.compare(base, head)
}

func (g *graphGitHub) Relation(_ context.Context, _ pipeline.Repo, base, head string) (string, error) {
	c, err := g.compare(base, head)
	return c.Status, err
}

// asked returns the comparisons asked for since the last call.
func (g *graphGitHub) asked() []string {
	g.mu.Lock()
	defer g.mu.Unlock()
	out := g.compares
	g.compares = nil
	return out
}

// observed is the lead times observed so far in each environment.
func (h *harness) observed() map[string]uint64 {
	h.t.Helper()
	out := map[string]uint64{}
	for _, env := range []string{"test", "staging", "production"} {
		out[env] = h.leadTimesObserved(env)
	}
	return out
}

// since is, per environment, how many lead times were observed after
// before.
// wantObserved checks the lead times observed in each environment since
// before; what says for what (" for c3's release", say).
func (h *harness) wantObserved(before, want map[string]uint64, what string) {
	h.t.Helper()
	if got := h.since(before); !sameCounts(got, want) {
		h.t.Errorf("lead times observed%s: %v, want %v", what, got, want)
	}
}

// wantAsked checks the comparisons asked of GitHub since g.asked was last
// called.
func (g *graphGitHub) wantAsked(t *testing.T, want []string) {
	t.Helper()
	if asked := g.asked(); !slices.Equal(asked, want) {
		t.Errorf("comparisons asked for: %v, want %v", asked, want)
	}
}

func (h *harness) since(before map[string]uint64) map[string]uint64 {
	h.t.Helper()
	out := map[string]uint64{}
	for env, n := range h.observed() {
		out[env] = n - before[env]
	}
	return out
}

func sameCounts(a, b map[string]uint64) bool {
	for _, env := range []string{"test", "staging", "production"} {
		if a[env] != b[env] {
			return false
		}
	}
	return true
}

// The amended head of c3, beside it on c2.
const c3a = "a3a3a3a3a3a3a3a3a3a3a3a3a3a3a3a3a3a3a3a3"

// Releases that move main forward: each success brings the commits of
// the releases since the environment's last success — GitHub is asked
// nothing for it, as before.
func TestFastForwardReleasesAskNoComparison(t *testing.T) {
	h, g := newGraphHarness(t, c0, "", c1, c0, c2, c1, c3, c2)
	h.release(c0, c1, 10, "test", "staging", "production")
	h.mustPush(c1, c2, false)
	h.status(c2, "test", pipeline.DeploymentSuccess, 20, true)
	h.status(c2, "staging", pipeline.DeploymentFailure, 21, true)
	before := h.observed()
	h.release(c2, c3, 30, "test", "staging", "production")
	h.wantObserved(before, map[string]uint64{"test": 1, "staging": 2, "production": 2}, " for c3's release (c3 in test; c2 and c3 beyond)")
	if asked := g.asked(); len(asked) != 0 {
		t.Errorf("comparisons asked for: %v, want none", asked)
	}
}

// c1 is in production. c2 passes test but fails in staging; c3 is pushed
// on top and passes test. main is force-pushed back to c2 (dropping c3):
// that release brings c2 to staging and production for the first time —
// the commits of c1...c2 there, of c3...c2 (none) in test. One comparison
// (staging's and production's last commit is the same), and none for test,
// whose last commit is the one the release was compared from at its push.
func TestRollbackToAnUndeployedCommitObservesIt(t *testing.T) {
	h, g := newGraphHarness(t, c0, "", c1, c0, c2, c1, c3, c2)
	h.release(c0, c1, 10, "test", "staging", "production")
	h.mustPush(c1, c2, false)
	h.status(c2, "test", pipeline.DeploymentSuccess, 20, true)
	h.status(c2, "staging", pipeline.DeploymentFailure, 21, true)
	h.release(c2, c3, 30, "test")
	g.asked()
	before := h.observed()
	h.mustPush(c3, c2, true)
	g.asked() // the push's own comparison
	h.promote(c2, 40, "test", "staging", "production")
	h.wantObserved(before, map[string]uint64{"test": 0, "staging": 1, "production": 1}, " for the rollback to c2")
	g.wantAsked(t, []string{"c1c1...c2c2"})
	// Delivered again: nothing asked, nothing observed again.
	after := h.observed()
	h.deliver(c2, "production", h.gh.deployment(c2, "production").statuses[0])
	if got := h.since(after); !sameCounts(got, nil) {
		t.Errorf("the success delivered again observed %v", got)
	}
	if asked := g.asked(); len(asked) != 0 {
		t.Errorf("the success delivered again asked for %v", asked)
	}
}

// c2 fails in test, and main is force-pushed back to c1, which every
// environment runs: the rollback brings nothing anywhere, and GitHub is
// asked nothing for it.
func TestRollbackOfAFailedReleaseAsksNothing(t *testing.T) {
	h, g := newGraphHarness(t, c0, "", c1, c0, c2, c1)
	h.release(c0, c1, 10, "test", "staging", "production")
	h.mustPush(c1, c2, false)
	h.status(c2, "test", pipeline.DeploymentFailure, 20, true)
	before := h.observed()
	h.mustPush(c2, c1, true)
	g.asked()
	h.promote(c1, 30, "test", "staging", "production")
	if got := h.since(before); !sameCounts(got, nil) {
		t.Errorf("lead times observed for the rollback to c1: %v, want none", got)
	}
	if asked := g.asked(); len(asked) != 0 {
		t.Errorf("comparisons asked for: %v, want none", asked)
	}
}

// c2 and c3 are pushed after c1 reached production; c2 fails in test,
// and c3 is amended (c3a, on c2) before it got anywhere. The amended
// head's release brings c2 and c3a everywhere: c1...c3a.
func TestAmendedHeadBringsTheCommitsBeneathIt(t *testing.T) {
	h, g := newGraphHarness(t, c0, "", c1, c0, c2, c1, c3, c2, c3a, c2)
	h.release(c0, c1, 10, "test", "staging", "production")
	h.mustPush(c1, c2, false)
	h.status(c2, "test", pipeline.DeploymentFailure, 20, true)
	h.mustPush(c2, c3, false)
	before := h.observed()
	h.mustPush(c3, c3a, true)
	g.asked()
	h.promote(c3a, 30, "test", "staging", "production")
	h.wantObserved(before, map[string]uint64{"test": 2, "staging": 2, "production": 2}, " for the amended head (c2 and c3a)")
	g.wantAsked(t, []string{"c1c1...a3a3"})
}

// A release that moves main forward from a rollback that did not get
// everywhere walks back to the rollback only: where the rollback did not
// succeed, its success brings what GitHub's comparison says.
func TestReleaseOnARollbackObservesWhatTheRollbackBrought(t *testing.T) {
	h, g := newGraphHarness(t, c0, "", c1, c0, c2, c1, c3, c2, c4, c2)
	h.release(c0, c1, 10, "test", "staging", "production")
	h.mustPush(c1, c2, false)
	h.status(c2, "test", pipeline.DeploymentSuccess, 20, true)
	h.status(c2, "staging", pipeline.DeploymentFailure, 21, true)
	h.release(c2, c3, 30, "test")
	h.mustPush(c3, c2, true) // back to c2, which fails in staging again
	h.status(c2, "test", pipeline.DeploymentSuccess, 40, true)
	h.status(c2, "staging", pipeline.DeploymentFailure, 41, true)
	before := h.observed()
	g.asked()
	h.release(c2, c4, 50, "test", "staging", "production")
	h.wantObserved(before, map[string]uint64{"test": 1, "staging": 2, "production": 2}, " for c4's release (c4 in test; c2 and c4 beyond)")
	g.wantAsked(t, []string{"c1c1...c4c4"})
}

// An environment's first success, by a release that does not build on
// the first release naming the environment, brings the commits since that
// release's base: c1 failed in staging, c2 too, and main went back to c1.
func TestFirstSuccessOfARollbackObservesFromTheFirstRelease(t *testing.T) {
	h, g := newGraphHarness(t, c0, "", c1, c0, c2, c1)
	h.mustPush(c0, c1, false)
	h.status(c1, "test", pipeline.DeploymentSuccess, 10, true)
	h.status(c1, "staging", pipeline.DeploymentFailure, 11, true)
	h.mustPush(c1, c2, false)
	h.status(c2, "test", pipeline.DeploymentSuccess, 20, true)
	h.status(c2, "staging", pipeline.DeploymentFailure, 21, true)
	before := h.observed()
	h.mustPush(c2, c1, true)
	g.asked()
	h.promote(c1, 30, "test", "staging", "production")
	h.wantObserved(before, map[string]uint64{"test": 0, "staging": 1, "production": 1}, " for the rollback to c1 (c1 beyond test)")
	g.wantAsked(t, []string{"c0c0...c1c1"})
}

// After a baseline whose commit never got past test, main's next commit is
// amended: the amended release's first success beyond test brings the
// baseline's commit and the amended one — never the history the baseline
// listed. One comparison, c1...c3, for test (its last commit) and beyond
// (the baseline's commit, contained in c3).
func TestFirstSuccessAfterABaselineRewrittenLeavesTheHistoryOut(t *testing.T) {
	h, g := newGraphHarness(t, c0, "", c1, c0, c2, c1, c3, c1)
	h.pushCreatingMain(50, c1)
	h.status(c1, "test", pipeline.DeploymentSuccess, 10, true)
	h.status(c1, "staging", pipeline.DeploymentFailure, 11, true)
	h.mustPush(c1, c2, false)
	h.status(c2, "test", pipeline.DeploymentFailure, 20, true)
	before := h.observed()
	h.mustPush(c2, c3, true) // c2 amended as c3
	g.asked()
	h.promote(c3, 30, "test", "staging", "production")
	h.wantObserved(before, map[string]uint64{"test": 1, "staging": 2, "production": 2}, " for the amended release (c3 in test; c1 and c3 beyond)")
	g.wantAsked(t, []string{"c1c1...c3c3"})
}

// rollbackToUndeployed sets up TestRollbackToAnUndeployedCommitObservesIt's
// rollback to c2, which then succeeds in test, and returns c2's success
// in staging, posted on GitHub, not delivered yet.
func rollbackToUndeployed(t *testing.T) (*harness, *graphGitHub, pipeline.StatusInfo) {
	h, g := newGraphHarness(t, c0, "", c1, c0, c2, c1, c3, c2)
	h.release(c0, c1, 10, "test", "staging", "production")
	h.mustPush(c1, c2, false)
	h.status(c2, "test", pipeline.DeploymentSuccess, 20, true)
	h.status(c2, "staging", pipeline.DeploymentFailure, 21, true)
	h.release(c2, c3, 30, "test")
	h.mustPush(c3, c2, true)
	h.status(c2, "test", pipeline.DeploymentSuccess, 40, true)
	g.asked()
	return h, g, h.status(c2, "staging", pipeline.DeploymentSuccess, 41, false)
}

// tryDeliver hands lastmile the deployment_status webhook of st, and
// returns what handling it returned.
func (h *harness) tryDeliver(sha, env string, st pipeline.StatusInfo) error {
	d := h.gh.deployment(sha, env)
	return h.engine.HandleDeploymentStatus(context.Background(), pipeline.NewDeploymentStatus{Repo: shop,
		Deployment: pipeline.DeploymentInfo{GitHubID: d.id, SHA: sha, Environment: env, Payload: mustJSON(h.t, d.payload)},
		Status:     st})
}

// The comparison a success's lead time needs fails: the delivery is
// retried (the success not recorded meanwhile, nothing promoted), as for
// the engine's other requests, and the comparison made then counts.
func TestLeadComparisonFailingIsAskedAgain(t *testing.T) {
	h, g, st := rollbackToUndeployed(t)
	before := h.observed()
	g.failCompares, g.failWith = 2, errors.New("GET compare: 502 Bad Gateway")
	for attempt := 1; attempt <= 2; attempt++ {
		err := h.tryDeliver(c2, "staging", st)
		if err == nil || !strings.Contains(err.Error(), "502 Bad Gateway") {
			t.Fatalf("attempt %d: %v, want the comparison's failure", attempt, err)
		}
		if got := h.ledgerState(c2, "staging"); got == pipeline.DeploymentSuccess || h.gh.deployment(c2, "production") != nil {
			t.Fatalf("attempt %d: staging %s, production deployment %v: the success was recorded", attempt, got, h.gh.deployment(c2, "production"))
		}
	}
	h.deliver(c2, "staging", st)
	h.promote(c2, 50, "production")
	h.wantObserved(before, map[string]uint64{"staging": 1, "production": 1}, "")
	if asked := g.asked(); len(asked) != 3 {
		t.Errorf("comparisons asked for: %v, want 3 (two failed)", asked)
	}
}

// A comparison that keeps failing is given up at the third failure — at
// once when GitHub has none (404: a commit gone, unrelated histories):
// the success is recorded and promoted, and counts only what the releases
// it builds on tell (the rollback brought no commit); nothing more is
// asked for that release and commit, in any environment.
func TestLeadComparisonFailingIsGivenUp(t *testing.T) {
	for _, tc := range []struct {
		name     string
		err      error
		failures int
	}{
		{"failing", errors.New("GET compare: 502 Bad Gateway"), 3},
		{"not found", pipeline.ErrNotFound, 1},
		{"too large", fmt.Errorf("compare c3c3...c2c2: %w (20000, more than 10000)", pipeline.ErrComparisonTooLarge), 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h, g, st := rollbackToUndeployed(t)
			before := h.observed()
			g.failCompares, g.failWith = 100, tc.err
			for attempt := 1; attempt < tc.failures; attempt++ {
				if err := h.tryDeliver(c2, "staging", st); err == nil {
					t.Fatalf("attempt %d: no error, want the comparison's failure", attempt)
				}
			}
			h.deliver(c2, "staging", st)
			if got := h.ledgerState(c2, "staging"); got != pipeline.DeploymentSuccess {
				t.Fatalf("staging: %s after the comparison was given up, want success", got)
			}
			h.promote(c2, 50, "production")
			if got := h.since(before); !sameCounts(got, nil) {
				t.Errorf("lead times observed: %v, want none (given up)", got)
			}
			if asked := g.asked(); len(asked) != tc.failures {
				t.Errorf("comparisons asked for: %v, want %d", asked, tc.failures)
			}
		})
	}
}

// GitHub's rate limit is no failure of the comparison: however often it
// asks to wait, the comparison is not given up, and once the limit is
// gone the success brings what the comparison lists.
func TestLeadComparisonRateLimitedIsNotAFailure(t *testing.T) {
	h, g, st := rollbackToUndeployed(t)
	before := h.observed()
	g.failCompares, g.failWith = 5, fmt.Errorf("GET compare: 403 API rate limit exceeded: %w", pipeline.ErrGitHubWait)
	for attempt := 1; attempt <= 5; attempt++ {
		err := h.tryDeliver(c2, "staging", st)
		if !errors.Is(err, pipeline.ErrGitHubWait) {
			t.Fatalf("attempt %d: %v, want the rate limit", attempt, err)
		}
	}
	h.deliver(c2, "staging", st)
	h.promote(c2, 50, "production")
	h.wantObserved(before, map[string]uint64{"staging": 1, "production": 1}, " (the comparison made once the limit went)")
}

// failingStatusStore fails the next fail RecordStatus calls: the process
// dies after the comparison was kept, before the success was recorded.
type failingStatusStore struct {
	pipeline.Store
	fail int
}

func (s *failingStatusStore) RecordStatus(ctx context.Context, d *pipeline.Deployment, st pipeline.StatusInfo) (bool, error) {
	if s.fail > 0 {
		s.fail--
		return false, errors.New("disk I/O error")
	}
	return s.Store.RecordStatus(ctx, d, st)
}

// The success handled again after the comparison was kept (a restart, a
// redelivery) takes the kept comparison: GitHub is asked once.
func TestLeadComparisonIsKeptAcrossAttempts(t *testing.T) {
	h, g, st := rollbackToUndeployed(t)
	before := h.observed()
	h.engine.Store = &failingStatusStore{Store: h.db, fail: 1}
	if err := h.tryDeliver(c2, "staging", st); err == nil {
		t.Fatal("the success was recorded through a failing store")
	}
	h.deliver(c2, "staging", st)
	h.promote(c2, 50, "production")
	h.wantObserved(before, map[string]uint64{"staging": 1, "production": 1}, "")
	g.wantAsked(t, []string{"c1c1...c2c2"})
}

// main is created at c1 with 50 commits of history (a baseline). Later it
// is rolled back to an old history commit (h10), a fix c3 is made on it
// and released, then main is force-pushed forward to c2 (on c1). The
// roll-forward's success brings c2 alone: h11..h50, the baseline's
// history, reached every environment with c1, without a lead time.
func TestBaselineHistoryNeverCountsThroughALaterComparison(t *testing.T) {
	hs := func(i int) string { return fmt.Sprintf("%040x", i) }
	edges := []string{hs(1), ""}
	for i := 2; i <= 50; i++ {
		edges = append(edges, hs(i), hs(i-1))
	}
	edges = append(edges, c1, hs(50), c2, c1, c3, hs(10))
	h, g := newGraphHarness(t, edges...)
	h.pushCreatingMain(50, c1)
	h.promote(c1, 10, "test", "staging", "production")
	h.mustPush(c1, hs(10), true) // roll back to last year's h10
	h.promote(hs(10), 20, "test", "staging", "production")
	h.release(hs(10), c3, 30, "test", "staging", "production")
	before := h.observed()
	g.asked()
	h.mustPush(c3, c2, true) // forward again, onto c1's line
	h.promote(c2, 40, "test", "staging", "production")
	h.wantObserved(before, map[string]uint64{"test": 1, "staging": 1, "production": 1}, " by the roll-forward to c2 (c2 alone: c1 reached them before, h11..h50 are the baseline's history)")
}

// A commit whose own release did not get to an environment — superseded
// by a newer release that built on it, or stopped by a failure before a
// newer release carried it on — reached it with that newer release's
// success: its audit record says which, where its lead time is measured
// to, instead of leaving the environment as never reached.
func TestAuditSaysWhichReleaseBroughtTheCommit(t *testing.T) {
	ctx := context.Background()
	for _, stop := range []string{"superseded in staging", "failed in staging"} {
		t.Run(stop, func(t *testing.T) {
			h := newHarness(t, c0, c1, c2)
			h.mustPush(c0, c1, false)
			h.status(c1, "test", pipeline.DeploymentSuccess, 10, true)
			if stop == "failed in staging" {
				h.status(c1, "staging", pipeline.DeploymentFailure, 11, true)
			}
			h.release(c1, c2, 20, "test", "staging", "production")
			rec, err := h.db.Audit(ctx, "acme/shop", c1)
			if err != nil {
				t.Fatal(err)
			}
			newer, err := h.db.Audit(ctx, "acme/shop", c2)
			if err != nil {
				t.Fatal(err)
			}
			for i, env := range rec.Environments {
				mine := newer.Environments[i]
				switch {
				case env.Outcome == pipeline.DeploymentSuccess:
					if env.Name != "test" || env.ReachedWith != nil {
						t.Errorf("c1's release succeeded in %s, reached with %+v; want test only, its own", env.Name, env.ReachedWith)
					}
				case env.ReachedWith == nil:
					t.Errorf("c1 in %s: outcome %q and no release that brought it; c2's release did", env.Name, env.Outcome)
				default:
					d := mine.Deployments[0]
					want := pipeline.Arrival{ReleaseID: newer.Release.ID, SHA: c2, DeploymentID: d.GitHubID, At: d.SucceededAt}
					if got := *env.ReachedWith; got.ReleaseID != want.ReleaseID || got.SHA != want.SHA || got.DeploymentID != want.DeploymentID || !got.At.Equal(want.At) {
						t.Errorf("c1 in %s reached with %+v, want c2's success %+v", env.Name, got, want)
					}
				}
			}
			// c2's own record: its own successes, no other release's.
			for _, env := range newer.Environments {
				if env.Outcome != pipeline.DeploymentSuccess || env.ReachedWith != nil {
					t.Errorf("c2 in %s: outcome %q, reached with %+v; want its own success", env.Name, env.Outcome, env.ReachedWith)
				}
			}
		})
	}
}

// A commit stamped half an hour ahead of its push (its committer's clock
// fast) existed by the push: its lead time in every environment is
// measured from the push, not from its date — by which it would be left
// out of test (deployed before that date) and a minute long in staging.
func TestLeadTimeOfACommitDatedAfterItsPush(t *testing.T) {
	h := newHarness(t, c0, c1)
	now, wait := manualClock(time.Date(2026, 11, 2, 12, 0, 0, 0, time.UTC))
	h.engine.Now, h.db.Now = now, now
	h.gh.mu.Lock()
	h.gh.now, h.gh.head = now, c1
	h.gh.mu.Unlock()
	pushed := now()
	if err := h.engine.HandlePush(context.Background(), pipeline.Push{Repo: shop, DeliveryID: "push-fast-clock",
		Ref: "refs/heads/main", Before: c0, After: c1, DefaultBranch: "main", Pusher: "octocat", PushedAt: pushed,
		Commits: []pipeline.Commit{{SHA: c1, Title: "commit " + c1, Timestamp: pushed.Add(29 * time.Minute)}}}); err != nil {
		t.Fatal(err)
	}
	for i, tc := range []struct {
		env   string
		after time.Duration // since the previous success (the push, for test)
	}{{"test", 10 * time.Minute}, {"staging", 20 * time.Minute}, {"production", 30 * time.Minute}} {
		wait(tc.after)
		h.status(c1, tc.env, pipeline.DeploymentSuccess, int64(10+i), true)
		want := now().Sub(pushed).Seconds()
		if n, sum := h.leadTimes(tc.env); n != 1 || sum != want {
			t.Errorf("lead time in %s: %d observed, %.0f s in all; want 1 of %.0f s, from the push", tc.env, n, sum, want)
		}
	}
}
