package pipeline_test

import (
	"context"
	"testing"
	"time"

	"github.com/lastmile-app/lastmile/pipeline"
)

// shop, on acme's installation 9, is transferred to globex, where
// the App has been installed (installation 5, an older, smaller ID) — after
// acme uninstalled the App (its deletion lists shop). lastmile handles a
// push of globex/shop through installation 5 before the deletion of
// installation 9 (another queue, or a redelivery): the late deletion must
// not take globex/shop out of lastmile.
func TestLateUninstallDoesNotTakeATransferredRepo(t *testing.T) {
	h := newHarness(t, c0, c1, c2)
	old := pipeline.Repo{ID: 42, Owner: "acme", Name: "shop", InstallationID: 9}
	if err := h.pushTo(old, c0, c1); err != nil {
		t.Fatal(err)
	}
	moved := pipeline.Repo{ID: 42, Owner: "globex", Name: "shop", InstallationID: 5}
	h.gh.mu.Lock()
	h.gh.head = c2
	h.gh.mu.Unlock()
	if err := h.pushTo(moved, c1, c2); err != nil {
		t.Fatal(err)
	}
	h.installationEvent(pipeline.InstallationEvent{InstallationID: 9, Account: "acme", Action: pipeline.InstallationDeleted,
		Sender: "octocat", Repos: []pipeline.Repo{old}})
	if rel := h.releaseState(moved, c2); rel.State != pipeline.ReleaseActive {
		t.Errorf("globex/shop's release (installation 5) after acme's late uninstall (installation 9): %s %q; want active", rel.State, rel.StopReason)
	}
	if envs := h.liveEnvs(); len(envs) != 3 {
		t.Errorf("live environments %v; want globex/shop's three", envs)
	}
}

// suspended at T, unsuspended, then the suspension's delivery is
// handled again (a redelivery: lastmile asks for missed deliveries) after
// the unsuspension. GitHub's suspended_at (T) is older than the
// unsuspension lastmile recorded: the installation must stay active, or
// the sweep leaves its held releases and deploy logs alone for good.
func TestLateSuspendAfterUnsuspendChangesNothing(t *testing.T) {
	ctx := context.Background()
	h := newHarness(t, c0, c1)
	if err := h.push(c0, c1, false); err != nil {
		t.Fatal(err)
	}
	at := time.Now().Add(-time.Hour).Truncate(time.Second)
	h.installationEvent(pipeline.InstallationEvent{Action: pipeline.InstallationSuspend, Sender: "alice", At: at})
	h.installationEvent(pipeline.InstallationEvent{Action: pipeline.InstallationUnsuspend, Sender: "alice", At: at.Add(30 * time.Minute)})
	h.installationEvent(pipeline.InstallationEvent{Action: pipeline.InstallationSuspend, Sender: "alice", At: at}) // redelivered
	if st, err := h.db.Installation(ctx, 7); err != nil || st.State != pipeline.InstallationActive {
		t.Errorf("after suspend(T), unsuspend(T+30m), suspend(T) again: %+v (%v); want active", st, err)
	}
	if failed, err := h.engine.AdvanceReleased(ctx, []pipeline.Repo{shop}); err != nil || len(failed) != 0 {
		t.Errorf("AdvanceReleased of an active installation's repository: kept %v for later (%v); the sweep retries it every minute, never advancing it", failed, err)
	}
}

// shop is transferred from acme (installation 9) to globex, where
// the App is installed (installation 5): GitHub sends installation 5's
// `added` and installation 9's `removed`, in either order. Handled in
// this order (added first), shop stays in lastmile: `added` records it
// under installation 5, so `removed` does not find it under 9.
func TestTransferAddedThenRemovedKeepsTheRepository(t *testing.T) {
	h := newHarness(t, c0, c1)
	old := pipeline.Repo{ID: 42, Owner: "acme", Name: "shop", InstallationID: 9}
	if err := h.pushTo(old, c0, c1); err != nil {
		t.Fatal(err)
	}
	moved := pipeline.Repo{ID: 42, Owner: "globex", Name: "shop", InstallationID: 5}
	h.installationEvent(pipeline.InstallationEvent{InstallationID: 5, Account: "globex", Action: pipeline.RepositoriesAdded,
		Sender: "octocat", Repos: []pipeline.Repo{moved}})
	h.installationEvent(pipeline.InstallationEvent{InstallationID: 9, Account: "acme", Action: pipeline.RepositoriesRemoved,
		Sender: "octocat", Repos: []pipeline.Repo{old}})
	if rel := h.releaseState(old, c1); rel.State != pipeline.ReleaseActive {
		t.Errorf("shop's release after added to 5 then removed from 9: %s %q; want active", rel.State, rel.StopReason)
	}
}

// shop removed from installation 7 and added back; the next push
// takes part again (README: "Installed again, a repository takes part
// from its next push").
func TestRemovedThenAddedThenPushIsARelease(t *testing.T) {
	h := newHarness(t, c0, c1, c2)
	if err := h.push(c0, c1, false); err != nil {
		t.Fatal(err)
	}
	h.installationEvent(pipeline.InstallationEvent{Action: pipeline.RepositoriesRemoved, Sender: "octocat", Repos: []pipeline.Repo{shop}})
	h.installationEvent(pipeline.InstallationEvent{Action: pipeline.RepositoriesAdded, Sender: "octocat", Repos: []pipeline.Repo{shop}})
	if err := h.push(c1, c2, false); err != nil {
		t.Fatal(err)
	}
	if rel := h.releaseState(shop, c2); rel.State != pipeline.ReleaseActive || h.gh.deployment(c2, "test") == nil {
		t.Errorf("c2 after removed+added: %s %q, test deployment %v", rel.State, rel.StopReason, h.gh.deployment(c2, "test"))
	}
	if envs := h.liveEnvs(); len(envs) != 3 {
		t.Errorf("live envs %v", envs)
	}
}
