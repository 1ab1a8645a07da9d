package pipeline_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/lastmile-app/lastmile/pipeline"
)

const zeroSHA = "0000000000000000000000000000000000000000"

// pushBranch moves branch from before to after (zeroSHA: the branch is
// created; deleted: it is removed) and delivers the push at once.
func (h *harness) pushBranch(branch, before, after string, forced, deleted bool) error {
	h.t.Helper()
	if !deleted {
		h.gh.mu.Lock()
		h.gh.head = after
		h.gh.mu.Unlock()
	}
	now := time.Now()
	return h.engine.HandlePush(context.Background(), pipeline.Push{Repo: shop,
		DeliveryID: "push-" + branch + "-" + before[:4] + "-" + after[:4], Ref: "refs/heads/" + branch,
		Before: before, After: after, Forced: forced, Deleted: deleted, DefaultBranch: "main", Pusher: "octocat",
		PushedAt: now, Commits: []pipeline.Commit{{SHA: after, Title: "commit " + after, Timestamp: now.Add(-time.Hour)}}})
}

// A pipeline branch deleted and created again at an older commit is a
// rollback, as a force push to it is: the release the branch no longer
// holds stops, and the older commit is released again.
func TestBranchDeletedAndCreatedAgainIsARollback(t *testing.T) {
	h := newHarness(t, c0, c1, c2)
	h.gh.config = "branch: release\n" + threeEnvs
	if err := h.pushBranch("release", c0, c1, false, false); err != nil {
		t.Fatal(err)
	}
	h.promote(c1, 10, "test", "staging", "production")
	if err := h.pushBranch("release", c1, c2, false, false); err != nil {
		t.Fatal(err)
	}
	h.promote(c2, 20, "test")
	var ign *pipeline.Ignored
	if err := h.pushBranch("release", c2, zeroSHA, false, true); !errors.As(err, &ign) {
		t.Fatalf("push deleting the branch: %v; want it ignored", err)
	}
	if err := h.pushBranch("release", zeroSHA, c1, false, false); err != nil {
		t.Fatalf("push creating the branch again at c1: %v", err)
	}
	rel, err := h.db.ReleaseOf(context.Background(), shop.ID, c2)
	if err != nil {
		t.Fatal(err)
	}
	if rel.State != pipeline.ReleaseStopped || rel.StopKind != pipeline.StopSuperseded ||
		!strings.Contains(rel.StopReason, "release was deleted and created again at "+c1[:7]) {
		t.Errorf("c2's release: %s %s %q; want it superseded, the branch created again without it", rel.State, rel.StopKind, rel.StopReason)
	}
	if n := h.gh.count(c1, "test"); n != 2 {
		t.Errorf("c1 deployed to test %d times; want 2 (the rollback released again)", n)
	}
	h.status(c2, "staging", pipeline.DeploymentSuccess, 21, true)
	if h.gh.deployment(c2, "production") != nil {
		t.Errorf("c2, no longer on the branch, was deployed to production")
	}
}

// An invalid configuration pushed to the default branch while the
// pipeline branch is another is said on its commit, and is no release: the
// pipeline branch goes on as it was, even after a force push of main.
func TestInvalidConfigOffThePipelineBranch(t *testing.T) {
	for _, forced := range []bool{false, true} {
		t.Run(map[bool]string{false: "push", true: "force push"}[forced], func(t *testing.T) {
			h := newHarness(t, c0, c1, c2)
			valid := "branch: release\n" + threeEnvs
			h.gh.config = valid
			if err := h.pushBranch("release", zeroSHA, c0, false, false); err != nil {
				t.Fatal(err)
			}
			h.promote(c0, 10, "test")
			h.gh.config = "environments: [\n"
			if err := h.pushBranch("main", c2, c1, forced, false); err != nil {
				t.Fatalf("push of an invalid configuration to main: %v", err)
			}
			if rel, err := h.db.ReleaseOf(context.Background(), shop.ID, c1); !errors.Is(err, pipeline.ErrNotFound) {
				t.Errorf("push to main, not the pipeline branch, recorded as a release: %+v, %v", rel, err)
			}
			if rel, err := h.db.ReleaseOf(context.Background(), shop.ID, c0); err != nil || rel.State != pipeline.ReleaseActive {
				t.Fatalf("release of c0 on the pipeline branch: %+v, %v; want it active", rel, err)
			}
			h.gh.config = valid
			if err := h.pushBranch("release", c0, c2, false, false); err != nil {
				t.Fatalf("push of release to c2: %v", err)
			}
			h.promote(c0, 10, "staging")
			if h.gh.deployment(c2, "test") == nil {
				t.Errorf("c2, pushed to the pipeline branch, not deployed to test")
			}
		})
	}
}

