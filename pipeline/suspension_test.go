package pipeline_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/lastmile-app/lastmile/pipeline"
)

// Installation events are recorded as GitHub says the installation stands
// when they are handled, not as the event says: an unsuspension delivered
// after a later suspension, or a repository added before a suspension and
// delivered after it, leaves the installation suspended; and an
// unsuspension is not lost because GitHub's clock (suspended_at) runs
// ahead of lastmile's (when it received the unsuspension).
func TestLateInstallationEventsRecordWhatGitHubSays(t *testing.T) {
	ctx := context.Background()
	h := newHarness(t, c0, c1)
	if err := h.push(c0, c1, false); err != nil {
		t.Fatal(err)
	}
	state := func(when string, want pipeline.InstallationStatus) {
		t.Helper()
		if st, err := h.db.Installation(ctx, 7); err != nil || st.State != want {
			t.Errorf("%s: %+v (%v); want %s", when, st, err, want)
		}
	}
	t1 := time.Now().Add(-time.Hour).Truncate(time.Second)
	h.gh.setInstallation(7, pipeline.InstallationSuspended, t1, "alice")
	h.installationEvent(pipeline.InstallationEvent{Action: pipeline.InstallationSuspend, Sender: "alice", At: t1})
	// Unsuspended, suspended again at t3: the unsuspension is delivered last.
	t3 := t1.Add(30 * time.Minute)
	h.gh.setInstallation(7, pipeline.InstallationSuspended, t3, "carol")
	h.installationEvent(pipeline.InstallationEvent{Action: pipeline.InstallationSuspend, Sender: "carol", At: t3})
	note := h.installationEvent(pipeline.InstallationEvent{Action: pipeline.InstallationUnsuspend, Sender: "bob"})
	state("after a late unsuspension", pipeline.InstallationSuspended)
	if !strings.Contains(note, "unsuspend by bob delivered late") {
		t.Errorf("note %q: want it to say the unsuspension came late", note)
	}
	if st, _ := h.db.Installation(ctx, 7); !st.Since.Equal(t3) || st.By != "carol" {
		t.Errorf("suspension recorded: %+v; want carol's at %v", st, t3)
	}
	h.installationEvent(pipeline.InstallationEvent{Action: pipeline.RepositoriesAdded, Sender: "alice", Repos: []pipeline.Repo{api}})
	state("after a late repository added", pipeline.InstallationSuspended)

	// GitHub's clock a minute ahead: the suspension's suspended_at is
	// later than when lastmile receives the unsuspension that follows.
	ahead := time.Now().Add(time.Minute).Truncate(time.Second)
	h.gh.setInstallation(7, pipeline.InstallationSuspended, ahead, "alice")
	h.installationEvent(pipeline.InstallationEvent{Action: pipeline.InstallationSuspend, Sender: "alice", At: ahead})
	h.gh.setInstallation(7, pipeline.InstallationActive, time.Time{}, "")
	h.installationEvent(pipeline.InstallationEvent{Action: pipeline.InstallationUnsuspend, Sender: "alice", At: time.Now()})
	state("after the unsuspension, GitHub's clock ahead", pipeline.InstallationActive)
	if failed, err := h.engine.AdvanceReleased(ctx, []pipeline.Repo{shop}); err != nil || len(failed) != 0 {
		t.Errorf("the sweep's advance after the unsuspension: kept %v for later (%v)", failed, err)
	}
	// And a suspension delivered after its own unsuspension changes nothing.
	h.installationEvent(pipeline.InstallationEvent{Action: pipeline.InstallationSuspend, Sender: "alice", At: ahead})
	state("after a late suspension", pipeline.InstallationActive)
}

// A repository removed from the installation and added back, the two
// deliveries arriving in the reverse order: GitHub says the installation
// reaches it, so it stays in lastmile, recorded under the installation,
// its release going on.
func TestRemovedAndAddedBackDeliveredOutOfOrder(t *testing.T) {
	ctx := context.Background()
	h := newHarness(t, c0, c1)
	if err := h.push(c0, c1, false); err != nil {
		t.Fatal(err)
	}
	h.installationEvent(pipeline.InstallationEvent{Action: pipeline.RepositoriesAdded, Sender: "octocat", Repos: []pipeline.Repo{shop}})
	note := h.installationEvent(pipeline.InstallationEvent{Action: pipeline.RepositoriesRemoved, Sender: "octocat", Repos: []pipeline.Repo{shop}})
	if !strings.Contains(note, "no repository lastmile knows left it") {
		t.Errorf("note %q", note)
	}
	if rel := h.releaseState(shop, c1); rel.State != pipeline.ReleaseActive {
		t.Errorf("c1's release: %s %q; want active", rel.State, rel.StopReason)
	}
	if gone, err := h.db.Detached(ctx, shop.ID); err != nil || gone {
		t.Errorf("Detached = %v (%v); want false", gone, err)
	}
	if repos, err := h.db.InstallationRepos(ctx, 7); err != nil || len(repos) != 1 {
		t.Errorf("repositories of installation 7: %+v (%v); want acme/shop", repos, err)
	}
	// Removed for good: the repository leaves lastmile, and its next push
	// through the installation (GitHub added it back) records it again.
	h.gh.setReaches(shop.ID, 0)
	h.installationEvent(pipeline.InstallationEvent{Action: pipeline.RepositoriesRemoved, Sender: "octocat", Repos: []pipeline.Repo{shop}})
	if gone, _ := h.db.Detached(ctx, shop.ID); !gone {
		t.Error("removed for good: not recorded as removed")
	}
	if rel := h.releaseState(shop, c1); rel.State != pipeline.ReleaseStopped {
		t.Errorf("c1's release after the removal: %s, want stopped", rel.State)
	}
	h.gh.setReaches(shop.ID, 7)
	h.installationEvent(pipeline.InstallationEvent{Action: pipeline.RepositoriesAdded, Sender: "octocat", Repos: []pipeline.Repo{shop}})
	if gone, _ := h.db.Detached(ctx, shop.ID); gone {
		t.Error("added back: still recorded as removed")
	}
}

// At the unsuspension lastmile reads back what GitHub did not tell it
// while the installation was suspended: a deploy that ran (its statuses),
// a run that ended without a result (a reviewer rejected it: lastmile
// writes the failure it owes), and a required context that turned green
// (the release waiting for it is tried again). A failure to read back
// fails the handling, to be tried again.
func TestUnsuspensionCatchesUp(t *testing.T) {
	for _, tc := range []string{"deployed", "rejected", "contexts"} {
		t.Run(tc, func(t *testing.T) {
			ctx := context.Background()
			h := newHarness(t, c0, c1)
			if tc == "contexts" {
				h.gh.config = "required_contexts: [build]\n" + threeEnvs
				h.gh.failNext = []error{pendingBuild()}
				if err := h.push(c0, c1, false); err != nil {
					t.Fatal(err)
				}
			} else {
				h.release(c0, c1, 10, "test")
				h.status(c1, "staging", pipeline.DeploymentQueued, 11, true) // waits for reviewers
			}
			suspended := time.Now().Add(-time.Minute).Truncate(time.Second)
			h.gh.setInstallation(7, pipeline.InstallationSuspended, suspended, "alice")
			h.installationEvent(pipeline.InstallationEvent{Action: pipeline.InstallationSuspend, Sender: "alice", At: suspended})
			// Meanwhile, unheard of:
			switch tc {
			case "deployed":
				h.status(c1, "staging", pipeline.DeploymentInProgress, 11, false)
				h.status(c1, "staging", pipeline.DeploymentSuccess, 11, false)
			case "rejected":
				h.gh.mu.Lock()
				h.gh.runs = map[int64]pipeline.WorkflowRun{11: {RunID: 11, Event: "deployment", HeadSHA: c1, Status: "completed",
					Conclusion: "failure", UpdatedAt: time.Now(), URL: "https://github.com/acme/shop/actions/runs/11"}}
				h.gh.mu.Unlock()
			}
			h.gh.setInstallation(7, pipeline.InstallationActive, time.Time{}, "")
			ev := pipeline.InstallationEvent{InstallationID: 7, Account: "acme", Action: pipeline.InstallationUnsuspend, Sender: "alice", At: time.Now()}
			if tc != "contexts" {
				h.gh.mu.Lock()
				h.gh.failLists = 1
				h.gh.mu.Unlock()
				if err := h.engine.HandleInstallation(ctx, ev); err == nil || !strings.Contains(err.Error(), "read back") {
					t.Fatalf("unsuspension, GitHub failing a read-back: %v; want the handling to fail, to be tried again", err)
				}
			}
			h.installationEvent(ev) // the worker tries again
			switch tc {
			case "deployed":
				if got := h.ledgerState(c1, "staging"); got != pipeline.DeploymentSuccess {
					t.Errorf("c1's staging: %s, want success (read back)", got)
				}
				if h.gh.deployment(c1, "production") == nil {
					t.Error("no production deployment of c1 after the unsuspension")
				}
			case "rejected":
				rel := h.releaseState(shop, c1)
				if rel.State != pipeline.ReleaseStopped || rel.StopKind != pipeline.StopFailed {
					t.Errorf("c1's release: %s %s %q; want stopped, failed", rel.State, rel.StopKind, rel.StopReason)
				}
				h.gh.mu.Lock()
				written := fmt.Sprint(h.gh.written)
				h.gh.mu.Unlock()
				if !strings.Contains(written, "failure") {
					t.Errorf("statuses lastmile wrote: %s; want the failure it owed the run's deployment", written)
				}
			case "contexts":
				if h.gh.deployment(c1, "test") == nil {
					t.Error("c1 still waits for its required context after the unsuspension")
				}
			}
		})
	}
}

// The sweep asks GitHub about installations recorded as suspended: one
// unsuspended while lastmile was down longer than GitHub keeps deliveries
// is found active, and caught up as at an unsuspension.
func TestRecheckSuspendedFindsAnUnsuspension(t *testing.T) {
	ctx := context.Background()
	h := newHarness(t, c0, c1)
	h.release(c0, c1, 10, "test")
	h.status(c1, "staging", pipeline.DeploymentQueued, 11, true)
	suspended := time.Now().Add(-time.Hour).Truncate(time.Second)
	h.gh.setInstallation(7, pipeline.InstallationSuspended, suspended, "alice")
	h.installationEvent(pipeline.InstallationEvent{Action: pipeline.InstallationSuspend, Sender: "alice", At: suspended})
	if n, err := h.engine.RecheckSuspended(ctx); err != nil || n != 0 {
		t.Fatalf("still suspended on GitHub: RecheckSuspended = %d, %v; want 0", n, err)
	}
	h.status(c1, "staging", pipeline.DeploymentSuccess, 11, false)
	h.gh.setInstallation(7, pipeline.InstallationActive, time.Time{}, "")
	if n, err := h.engine.RecheckSuspended(ctx); err != nil || n != 1 {
		t.Fatalf("unsuspended on GitHub: RecheckSuspended = %d, %v; want 1", n, err)
	}
	if st, err := h.db.Installation(ctx, 7); err != nil || st.State != pipeline.InstallationActive {
		t.Errorf("installation 7: %+v (%v); want active", st, err)
	}
	if h.gh.deployment(c1, "production") == nil {
		t.Error("c1's staging success, read back, did not take it to production")
	}
}
