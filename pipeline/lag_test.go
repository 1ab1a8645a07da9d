package pipeline_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/lastmile-app/lastmile/pipeline"
)

// lagGitHub is a GitHub that does not show one commit yet (a replica not
// caught up with its push): every comparison of it is 404.
type lagGitHub struct {
	*fakeGitHub
	unseen string
}

func (g *lagGitHub) Compare(ctx context.Context, r pipeline.Repo, base, head string) (pipeline.Comparison, error) {
	if base == g.unseen || head == g.unseen {
		return pipeline.Comparison{}, pipeline.ErrNotFound
	}
	return g.fakeGitHub.Compare(ctx, r, base, head)
}

func (g *lagGitHub) Relation(ctx context.Context, r pipeline.Repo, base, head string) (string, error) {
	c, err := g.Compare(ctx, r, base, head)
	return c.Status, err
}

// A comparison answered 404 because GitHub does not show the pushed commit
// yet is no replaced history: the push is not ignored, nor released as a
// baseline, but handled again (an error: the worker retries it), and
// released once GitHub shows the commit.
func TestATransient404IsRetriedNotTakenForAReplacedHistory(t *testing.T) {
	for _, tc := range []struct {
		name  string
		first bool // the repository's first release
	}{{"after a missed push", false}, {"a first release, forced", true}} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t, c0, c1, c2, c3)
			if !tc.first {
				if err := h.push(c0, c1, false); err != nil {
					t.Fatal(err)
				}
			}
			lag := &lagGitHub{fakeGitHub: h.gh, unseen: c3}
			h.engine.GitHub = lag
			h.gh.mu.Lock()
			h.gh.head = c3
			h.gh.mu.Unlock()
			push := pipeline.Push{Repo: shop, DeliveryID: "push-c2-c3", Ref: "refs/heads/main", Before: c2, After: c3,
				Forced: tc.first, Truncated: tc.first, DefaultBranch: "main", Pusher: "octocat", PushedAt: time.Now(),
				Commits: []pipeline.Commit{{SHA: c3, Title: "c3", Timestamp: time.Now().Add(-time.Hour)}}}
			err := h.engine.HandlePush(context.Background(), push)
			var ignored *pipeline.Ignored
			if err == nil || errors.As(err, &ignored) {
				t.Fatalf("push of c3, GitHub not showing it yet: %v; want an error, retried", err)
			}
			lag.unseen = "" // GitHub caught up
			if err := h.engine.HandlePush(context.Background(), push); err != nil {
				t.Fatalf("push of c3 handled again: %v", err)
			}
			rel, err := h.db.LatestRelease(context.Background(), shop.ID)
			if err != nil || rel.SHA != c3 || rel.Baseline {
				t.Errorf("release %+v (%v); want c3's, not a baseline", rel, err)
			}
		})
	}
}
