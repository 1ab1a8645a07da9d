package pipeline_test

import (
	"context"
	"errors"
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
	h.suspendedBy("alice", t1)
	// Unsuspended, suspended again at t3: the unsuspension is delivered last.
	t3 := t1.Add(30 * time.Minute)
	h.gh.setInstallation(7, pipeline.InstallationSuspended, t3, "carol")
	h.installationEvent(pipeline.InstallationEvent{Action: pipeline.InstallationSuspend, Sender: "carol", At: t3})
	note := h.installationEvent(pipeline.InstallationEvent{Action: pipeline.InstallationUnsuspend, Sender: "bob"})
	state("after a late unsuspension", pipeline.InstallationSuspended)
	if !strings.Contains(note, "(unsuspended by bob, delivered late: GitHub says the installation is suspended)") {
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
	h.suspendedBy("alice", ahead)
	h.gh.setInstallation(7, pipeline.InstallationActive, time.Time{}, "")
	note = h.installationEvent(pipeline.InstallationEvent{Action: pipeline.InstallationUnsuspend, Sender: "alice", At: time.Now()})
	state("after the unsuspension, GitHub's clock ahead", pipeline.InstallationActive)
	// Said as the suspension is ("suspended by"), not in the event's
	// action ("unsuspend").
	if !strings.HasPrefix(note, "installation 7 (") || !strings.Contains(note, ") unsuspended by alice") {
		t.Errorf("the unsuspension's note %q: want it to say the installation was unsuspended by alice", note)
	}
	if failed, err := h.engine.AdvanceReleased(ctx, []pipeline.Repo{shop}); err != nil || len(failed) != 0 {
		t.Errorf("the sweep's advance after the unsuspension: kept %v for later (%v)", failed, err)
	}
	// And a suspension delivered after its own unsuspension changes nothing.
	note = h.installationEvent(pipeline.InstallationEvent{Action: pipeline.InstallationSuspend, Sender: "alice", At: ahead})
	state("after a late suspension", pipeline.InstallationActive)
	if !strings.Contains(note, ") suspended by alice (delivered late: GitHub says it is active)") {
		t.Errorf("the late suspension's note %q", note)
	}
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
			h.suspendedBy("alice", suspended)
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
	h := stagingWaitsSuspended(t)
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

// A protection-rule request that waits for a deploy in progress is
// answered at the unsuspension when the catch-up reads back that the
// deploy succeeded while the installation was suspended (no webhook came),
// not 24 hours later by the sweep.
func TestCatchUpAnswersWaitingProtectionRules(t *testing.T) {
	ctx := context.Background()
	h := newHarness(t, c0, c1)
	if err := h.push(c0, c1, false); err != nil {
		t.Fatal(err)
	}
	h.status(c1, "test", pipeline.DeploymentInProgress, 10, true)
	req := pipeline.ProtectionRuleRequest{Repo: shop, DeliveryID: "rule-1", Environment: "staging", SHA: c1, RunID: 66}
	if err := h.engine.HandleProtectionRule(ctx, req); err != nil {
		t.Fatal(err)
	}
	if dec, _ := h.db.ProtectionDecision(ctx, req); dec == nil || dec.State != pipeline.ProtectionWaiting {
		t.Fatalf("decision %+v; want waiting", dec)
	}
	suspended := time.Now().Add(-time.Minute).Truncate(time.Second)
	h.suspendedBy("alice", suspended)
	h.status(c1, "test", pipeline.DeploymentSuccess, 10, false) // meanwhile, unheard of
	h.gh.setInstallation(7, pipeline.InstallationActive, time.Time{}, "")
	h.installationEvent(pipeline.InstallationEvent{Action: pipeline.InstallationUnsuspend, Sender: "alice"})
	if got := h.ledgerState(c1, "test"); got != pipeline.DeploymentSuccess {
		t.Fatalf("c1's test: %s; want success read back", got)
	}
	if n, err := h.engine.AnswerLongWaitingProtectionRules(ctx); err != nil || n != 0 {
		t.Logf("sweep: %d %v", n, err)
	}
	if dec, _ := h.db.ProtectionDecision(ctx, req); dec.State != pipeline.ProtectionApproved || !dec.Posted {
		t.Errorf("after the catch-up read back c1's test success: request %s, posted %v (%s); want approved, posted", dec.State, dec.Posted, dec.Comment)
	}
}

// The sweep finds an installation recorded suspended active on GitHub
// (its unsuspension's delivery lost), and GitHub fails a read-back: the
// installation stays recorded suspended, so the next sweep catches up
// again, and the release goes on.
func TestRecheckSuspendedCatchesUpAgainAfterAFailure(t *testing.T) {
	ctx := context.Background()
	h := stagingWaitsSuspended(t)
	h.status(c1, "staging", pipeline.DeploymentSuccess, 11, false) // unheard of
	h.gh.setInstallation(7, pipeline.InstallationActive, time.Time{}, "")
	h.gh.mu.Lock()
	h.gh.failLists = 1
	h.gh.mu.Unlock()
	if _, err := h.engine.RecheckSuspended(ctx); err == nil || !strings.Contains(err.Error(), "read back") {
		t.Fatalf("first recheck, GitHub failing the read-back: %v; want the error", err)
	}
	if st, _ := h.db.Installation(ctx, 7); st.State != pipeline.InstallationSuspended {
		t.Errorf("installation 7 after a failed catch-up: %s, want suspended still (to be caught up again)", st.State)
	}
	// The sweep tries again a minute later (lastRecheck not moved on).
	if n, err := h.engine.RecheckSuspended(ctx); n != 1 || err != nil {
		t.Errorf("second recheck: %d, %v; want the installation caught up", n, err)
	}
	if st, _ := h.db.Installation(ctx, 7); st.State != pipeline.InstallationActive {
		t.Errorf("installation 7 after the second recheck: %s, want active", st.State)
	}
	if h.gh.deployment(c1, "production") == nil {
		t.Error("c1's staging success (during the suspension) never read back: no production deployment after the sweep tried again")
	}
}

// A repository added is the first word that a suspended installation is
// active again, and GitHub fails a read-back: the delivery fails, and its
// next attempt catches up again.
func TestAddedRepositoryCatchesUpAgainAfterAFailure(t *testing.T) {
	ctx := context.Background()
	h := stagingWaitsSuspended(t)
	h.status(c1, "staging", pipeline.DeploymentSuccess, 11, false)
	h.gh.setInstallation(7, pipeline.InstallationActive, time.Time{}, "")
	h.gh.mu.Lock()
	h.gh.failLists = 1
	h.gh.mu.Unlock()
	ev := pipeline.InstallationEvent{InstallationID: 7, Account: "acme", Action: pipeline.RepositoriesAdded, Sender: "bob",
		At: time.Now(), Repos: []pipeline.Repo{api}}
	if err := h.engine.HandleInstallation(ctx, ev); err == nil || !strings.Contains(err.Error(), "read back") {
		t.Fatalf("added, GitHub failing the read-back: %v; want the handling to fail", err)
	}
	h.installationEvent(ev) // the worker tries again
	if h.gh.deployment(c1, "production") == nil {
		t.Error("retry of the failed delivery did not catch up: no production deployment of c1")
	}
}

// A repository GitHub no longer lets lastmile reach (deleted, or removed
// while the installation was suspended: GitHub sends no webhook then)
// does not fail the unsuspension at every attempt: asked, GitHub says no
// installation reaches it, and it leaves lastmile.
func TestUnsuspensionLeavesAnUnreachableRepository(t *testing.T) {
	ctx := context.Background()
	h := newHarness(t, c0, c1)
	h.gh.config = "required_contexts: [build]\n" + threeEnvs
	h.gh.failNext = []error{pendingBuild()}
	if err := h.push(c0, c1, false); err != nil {
		t.Fatal(err)
	}
	suspended := time.Now().Add(-time.Minute).Truncate(time.Second)
	h.suspendedBy("alice", suspended)
	h.gh.setInstallation(7, pipeline.InstallationActive, time.Time{}, "")
	h.gh.setReaches(shop.ID, 0) // GitHub: no installation reaches it
	notFound := errors.New("POST https://api.github.com/repos/acme/shop/deployments: 404 Not Found []")
	ev := pipeline.InstallationEvent{InstallationID: 7, Account: "acme", Action: pipeline.InstallationUnsuspend, Sender: "alice", At: time.Now()}
	failed := 0
	for attempt := 1; attempt <= 10; attempt++ {
		h.gh.mu.Lock()
		h.gh.failNext = []error{notFound}
		h.gh.mu.Unlock()
		err := h.engine.HandleInstallation(ctx, ev)
		var ignored *pipeline.Ignored
		if !errors.As(err, &ignored) {
			failed++
			t.Logf("attempt %d: %v", attempt, err)
		}
	}
	if failed > 0 {
		t.Errorf("the unsuspension failed %d of 10 attempts (MaxAttempts: dead) for a repository GitHub no longer lets lastmile reach", failed)
	}
	if rel := h.releaseState(shop, c1); rel.State != pipeline.ReleaseStopped || !strings.Contains(rel.StopReason, "no installation of the lastmile App reaches the repository") {
		t.Errorf("c1's release: %s %q; want stopped, saying lastmile no longer reaches the repository", rel.State, rel.StopReason)
	}
	if gone, _ := h.db.Detached(ctx, shop.ID); !gone {
		t.Error("the unreachable repository is not recorded as reached through no installation")
	}
}

// A suspension and its unsuspension both handled after the unsuspension
// (lastmile behind its inbox, or a short suspension): the push GitHub
// refused as suspended meanwhile, put off for an hour, is due at once.
func TestUnsuspensionWakesPutOffDeliveries(t *testing.T) {
	ctx := context.Background()
	h := newHarness(t, c0, c1)
	h.installationEvent(pipeline.InstallationEvent{Action: pipeline.InstallationCreated, Sender: "alice", At: time.Now().Add(-time.Hour)})
	d := &pipeline.Delivery{ID: "push-1", Event: "push", InstallationID: 7, RepositoryID: shop.ID, Repository: shop.FullName(),
		ReceivedAt: time.Now(), Body: []byte(`{}`)}
	if _, err := h.db.Accept(ctx, d, "push", "accepted"); err != nil {
		t.Fatal(err)
	}
	got, err := h.db.GetDelivery(ctx, "push-1")
	if err != nil {
		t.Fatal(err)
	}
	putOff := time.Now().Add(time.Hour)
	if err := h.db.PostponeDelivery(ctx, got.Seq, "installation 7 is suspended: waiting until it is unsuspended (not an attempt)", putOff); err != nil {
		t.Fatal(err)
	}
	// GitHub: suspended, then unsuspended; both events handled after.
	suspendedAt := time.Now().Add(-time.Minute).Truncate(time.Second)
	h.gh.setInstallation(7, pipeline.InstallationActive, time.Time{}, "")
	h.installationEvent(pipeline.InstallationEvent{Action: pipeline.InstallationSuspend, Sender: "alice", At: suspendedAt})
	h.installationEvent(pipeline.InstallationEvent{Action: pipeline.InstallationUnsuspend, Sender: "alice"})
	got, _ = h.db.GetDelivery(ctx, "push-1")
	if got.NextAttemptAt.After(time.Now().Add(time.Minute)) {
		t.Errorf("the push put off while the installation was suspended: next attempt %v; want due at once after the unsuspension", got.NextAttemptAt)
	}
}

// stagingWaitsSuspended is c1 released, passed test, its staging
// deployment queued (waiting for reviewers), when alice suspended the
// installation an hour ago.
func stagingWaitsSuspended(t *testing.T) *harness {
	t.Helper()
	h := newHarness(t, c0, c1)
	h.release(c0, c1, 10, "test")
	h.status(c1, "staging", pipeline.DeploymentQueued, 11, true)
	h.suspendedBy("alice", time.Now().Add(-time.Hour).Truncate(time.Second))
	return h
}

// suspendedBy has GitHub suspend installation 7 at at, by login, and
// lastmile handle the suspension.
func (h *harness) suspendedBy(login string, at time.Time) {
	h.t.Helper()
	h.gh.setInstallation(7, pipeline.InstallationSuspended, at, login)
	h.installationEvent(pipeline.InstallationEvent{Action: pipeline.InstallationSuspend, Sender: login, At: at})
}

// An installation recorded as suspended that GitHub no longer has was
// uninstalled while lastmile heard nothing (the deletion's delivery lost
// too): the sweep records it uninstalled, its repositories leave lastmile,
// and it is not asked about again every ten minutes.
func TestRecheckSuspendedFindsAnUninstallation(t *testing.T) {
	ctx := context.Background()
	h := stagingWaitsSuspended(t)
	h.gh.setInstallation(7, pipeline.InstallationUninstalled, time.Time{}, "")
	if n, err := h.engine.RecheckSuspended(ctx); err != nil || n != 1 {
		t.Fatalf("uninstalled on GitHub: RecheckSuspended = %d, %v; want 1", n, err)
	}
	if st, err := h.db.Installation(ctx, 7); err != nil || st.State != pipeline.InstallationUninstalled || st.Account != "acme" {
		t.Errorf("installation 7: %+v (%v); want deleted, account acme kept", st, err)
	}
	rel, err := h.db.ReleaseOf(ctx, shop.ID, c1)
	if err != nil || rel.State != pipeline.ReleaseStopped || rel.StopKind != pipeline.StopSuperseded ||
		!strings.Contains(rel.StopReason, "the lastmile App was uninstalled") {
		t.Errorf("c1's release: %+v (%v); want stopped, superseded by the uninstallation", rel, err)
	}
	h.gh.mu.Lock()
	asked := h.gh.installs
	h.gh.mu.Unlock()
	if n, err := h.engine.RecheckSuspended(ctx); err != nil || n != 0 {
		t.Fatalf("second sweep: RecheckSuspended = %d, %v; want 0", n, err)
	}
	h.gh.mu.Lock()
	defer h.gh.mu.Unlock()
	if h.gh.installs != asked {
		t.Errorf("the second sweep asked GitHub about the uninstalled installation again (%d reads, %d before)", h.gh.installs, asked)
	}
}
