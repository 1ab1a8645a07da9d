package app

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/lastmile-app/lastmile/githubapp/simulator"
	"github.com/lastmile-app/lastmile/pipeline"
)

// A deployment_protection_rule request GitHub sent just before the
// repository was removed from the installation is handled after the
// removal: GitHub refuses lastmile's answer (404), and the delivery is
// ignored, saying why — not retried until dead.
func TestProtectionRuleOfARemovedRepositoryIsIgnored(t *testing.T) {
	sb := sandbox(t, func(c *Config) { c.MaxAttempts = 4 })
	full, _ := protectedStaging(sb, simulator.WorkflowOptions{CreateDeployment: true, NextEnvironments: []string{"staging"}})
	sb.Sim.HoldWebhooks(simulator.WebhookHold{Event: "deployment_protection_rule"})
	sb.Sim.Push(full, "main", simulator.CommitSpec{Message: "Add lastmile", Files: map[string]string{".github/lastmile.yml": testThenStaging}})
	waitFor(t, sb, "the protection rule request held", func(s *simulator.Simulator) bool { return len(s.HeldWebhooks()) == 1 })
	settle(t, sb)
	if err := sb.Sim.RemoveRepositoryFromInstallation(full, "octocat"); err != nil {
		t.Fatal(err)
	}
	deliveredSoon(t, sb, "installation_repositories", "removed")
	settle(t, sb)
	sb.Sim.ReleaseWebhooks()
	settle(t, sb)
	ds, err := sb.App.DB().ListDeliveries(context.Background(), storageFilterAll())
	if err != nil {
		t.Fatal(err)
	}
	seen := false
	for _, d := range ds {
		if d.Event == "deployment_protection_rule" {
			seen = true
			if d.State != pipeline.DeliveryIgnored || !strings.Contains(d.Note, "was removed from the lastmile App's installation") {
				t.Errorf("the protection rule request of a repository removed from the installation: %s after %d attempts, note %q, error %q; want ignored, saying why",
					d.State, d.Attempts, d.Note, d.LastError)
			}
		}
	}
	if !seen {
		t.Error("no deployment_protection_rule delivery in the inbox")
	}
}

// A release waits for staging's reviewers when the installation is
// suspended; a reviewer approves meanwhile and the deploy succeeds (its
// webhooks are blocked: GitHub does not send them later). Once the
// installation is unsuspended lastmile reads back its deployment's
// statuses and goes on to production.
func TestDeployDuringASuspensionIsLearntOnceUnsuspended(t *testing.T) {
	sb, inst, push, review := suspendedWhileStagingWaits(t)
	const repo = "acme/shop"
	if err := sb.Sim.Approve(repo, review.RunID, "staging", "bob", "ok"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, sb, "staging deployed", func(s *simulator.Simulator) bool { return succeededIn(s, repo, push.After, "staging") })
	settle(t, sb)
	if err := sb.Sim.UnsuspendInstallation(inst, "alice"); err != nil {
		t.Fatal(err)
	}
	deliveredSoon(t, sb, "installation", "unsuspend")
	settle(t, sb)
	waitFor(t, sb, "production deployed after the unsuspension", func(s *simulator.Simulator) bool {
		return succeededIn(s, repo, push.After, "production")
	})
}

// A delivery waiting for its installation's unsuspension (put off an hour
// at a time, for as long as the account keeps it suspended) is not the
// inbox's oldest pending delivery: LastmileInboxStuck (critical) must not
// page anyone for a customer's suspension.
func TestSuspensionDoesNotAgeTheInbox(t *testing.T) {
	sb := sandbox(t, nil)
	const repo = "acme/shop"
	inst := sb.Sim.CreateInstallation("acme", "Organization")
	sb.installedRepo(inst, repo, nil)
	first := sb.enroll(repo)
	waitFor(t, sb, "production success", func(s *simulator.Simulator) bool { return succeededIn(s, repo, first.After, "production") })
	settle(t, sb)
	sb.Sim.HoldWebhooks(simulator.WebhookHold{Event: "push"})
	sb.Sim.Push(repo, "main", simulator.CommitSpec{Message: "Feature", Files: map[string]string{"app.txt": "v2"}})
	if err := sb.Sim.SuspendInstallation(inst, "alice"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, sb, "held", func(s *simulator.Simulator) bool { return len(s.HeldWebhooks()) == 1 })
	sb.Sim.ReleaseWebhooks()
	waitUntil(t, "the push to wait", 30*time.Second, func() bool { d := newestPush(t, sb); return d != nil && d.Waits > 0 })
	// Once the deliveries before it are handled (the suspension's own,
	// say), the waiting push is the only one pending: it must not count.
	waitUntil(t, "lastmile_inbox_oldest_pending_age_seconds to leave out the delivery waiting for an unsuspension (next attempt in an hour): "+
		"it counts it, and LastmileInboxStuck pages after ~10 minutes of a suspension", 30*time.Second, func() bool {
		snap, err := sb.App.DB().MetricsSnapshot(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		return snap.OldestPendingSince.IsZero()
	})
	if d := newestPush(t, sb); d == nil || d.State != pipeline.DeliveryPending {
		t.Errorf("the push waiting for the unsuspension: %+v, want pending", d)
	}
}

// suspendedWhileStagingWaits enrolls acme/shop, its staging gated by a
// reviewer, and has alice suspend its installation while staging's deploy
// waits for the review; it returns once lastmile handled the suspension.
func suspendedWhileStagingWaits(t *testing.T) (sb *Sandbox, inst int64, push simulator.PushResult, review simulator.PendingReview) {
	t.Helper()
	sb = sandbox(t, nil)
	const repo = "acme/shop"
	inst = sb.Sim.CreateInstallation("acme", "Organization")
	sb.installedRepo(inst, repo, map[string]simulator.ReviewPolicy{"staging": simulator.Manual()})
	push = sb.enroll(repo)
	review = pendingReview(t, sb, repo, "staging")
	settle(t, sb)
	if err := sb.Sim.SuspendInstallation(inst, "alice"); err != nil {
		t.Fatal(err)
	}
	deliveredSoon(t, sb, "installation", "suspend")
	settle(t, sb)
	return sb, inst, push, review
}
