package app

import (
	"bytes"
	"context"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/lastmile-app/lastmile/githubapp/simulator"
	"github.com/lastmile-app/lastmile/metrics"
	"github.com/lastmile-app/lastmile/pipeline"
)

// The App's installation lifecycle, end to end: lastmile against the
// simulator, which uninstalls, suspends and removes as GitHub does and
// sends the webhooks GitHub sends every App, with a real SQLite file.

// installedRepo creates repository full under installation inst, with the
// environments' reviewers and a workflow whose jobs run for lastmile's
// deployments.
func (sb *Sandbox) installedRepo(inst int64, full string, reviewed map[string]simulator.ReviewPolicy) {
	sb.Sim.CreateRepo(inst, full, simulator.RepoOptions{})
	for env, policy := range reviewed {
		sb.Sim.SetEnvironment(full, env, simulator.EnvironmentOptions{Reviewers: []string{"alice", "bob"}, Review: policy})
	}
	sb.Sim.SetWorkflow(full, simulator.WorkflowOptions{JobsIf: "lastmile"})
}

// enroll pushes the configuration of the three environments to repo's main.
func (sb *Sandbox) enroll(repo string) simulator.PushResult {
	return sb.Sim.Push(repo, "main", simulator.CommitSpec{Message: "Add lastmile", Files: map[string]string{".github/lastmile.yml": threeEnvs}})
}

// pendingReview waits for the one review repo's workflow waits for.
func pendingReview(t *testing.T, sb *Sandbox, repo, env string) simulator.PendingReview {
	t.Helper()
	var got simulator.PendingReview
	waitFor(t, sb, env+" review requested", func(s *simulator.Simulator) bool {
		for _, r := range s.PendingReviews(repo) {
			if r.Environment == env {
				got = r
				return true
			}
		}
		return false
	})
	return got
}

// lastmileCalls lists the calls lastmile made to GitHub for repo from the
// nth request on (the workflow's own, with its GITHUB_TOKEN, aside), and
// its token requests for installation inst.
func lastmileCalls(sb *Sandbox, from int, repo string, inst int64) (repoCalls, tokens []simulator.RequestRecord) {
	token := "/app/installations/" + itoa(inst) + "/access_tokens"
	for _, r := range sb.Sim.Requests()[from:] {
		switch {
		case r.Auth == simulator.AuthWorkflow:
		case strings.HasPrefix(r.Path, "/repos/"+repo+"/"):
			repoCalls = append(repoCalls, r)
		case r.Path == token:
			tokens = append(tokens, r)
		}
	}
	return repoCalls, tokens
}

func itoa(n int64) string { return strconv.FormatInt(n, 10) }

// deliveredSoon waits for the simulator to deliver a webhook of event and
// action.
func deliveredSoon(t *testing.T, sb *Sandbox, event, action string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := sb.Sim.WaitForDelivery(ctx, 0, event, action); err != nil {
		t.Fatalf("waiting for the %s %s webhook: %v", event, action, err)
	}
}

// liveEnvironments lists repo's environments in lastmile_environment_info.
func liveEnvironments(t *testing.T, sb *Sandbox, repo string) []string {
	t.Helper()
	snap, err := sb.App.DB().MetricsSnapshot(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	var envs []string
	for _, s := range snap.Gauges[metrics.EnvironmentInfo] {
		if s.Labels[0] == repo {
			envs = append(envs, s.Labels[1])
		}
	}
	return envs
}

// newestPush is the newest push delivery in lastmile's inbox, or nil.
func newestPush(t *testing.T, sb *Sandbox) *pipeline.Delivery {
	t.Helper()
	ds, err := sb.App.DB().ListDeliveries(context.Background(), storageFilterAll())
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range ds { // newest first
		if d.Event == "push" {
			return d
		}
	}
	return nil
}

func deadDeliveries(t *testing.T, sb *Sandbox) int64 {
	t.Helper()
	stats, err := sb.App.DB().InboxStats(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return stats[pipeline.DeliveryDead]
}

// A release waits for staging's reviewers when the organisation uninstalls
// the App: the release stops, saying who uninstalled it; the environments
// are retired; lastmile calls GitHub no more for the repository — not when
// the reviewer approves all the same and the deploy runs, nor for a push
// whose webhook GitHub sent before the uninstallation, which is ignored,
// saying why, rather than retried until dead.
func TestUninstallStopsTheReleaseWaitingForApproval(t *testing.T) {
	sb := sandbox(t, nil)
	const repo = "acme/shop"
	inst := sb.Sim.CreateInstallation("acme", "Organization")
	sb.installedRepo(inst, repo, map[string]simulator.ReviewPolicy{"staging": simulator.Manual()})
	push := sb.enroll(repo)
	review := pendingReview(t, sb, repo, "staging")
	settle(t, sb)
	if got := liveEnvironments(t, sb, repo); len(got) != 3 {
		t.Fatalf("environments before: %v", got)
	}

	// A push whose webhook GitHub has not sent yet when the App is
	// uninstalled.
	sb.Sim.HoldWebhooks(simulator.WebhookHold{Event: "push"})
	late := sb.Sim.Push(repo, "main", simulator.CommitSpec{Message: "late", Files: map[string]string{"app.txt": "v2"}})
	mark := len(sb.Sim.Requests())
	sb.Sim.DeleteInstallation(inst, "octocat")
	deliveredSoon(t, sb, "installation", "deleted")
	settle(t, sb)

	rel := releaseOf(t, sb, repo, push.After)
	const reason = "superseded: the lastmile App was uninstalled from the repository by octocat"
	if rel.State != pipeline.ReleaseStopped || rel.StopKind != pipeline.StopSuperseded || rel.StopReason != reason {
		t.Errorf("release: %s %s %q; want stopped: %q", rel.State, rel.StopKind, rel.StopReason, reason)
	}
	if got := liveEnvironments(t, sb, repo); len(got) != 0 {
		t.Errorf("environments after the uninstallation: %v, want none (retired)", got)
	}
	rec, err := sb.App.DB().Audit(context.Background(), repo, push.After)
	if err != nil {
		t.Fatal(err)
	}
	for _, env := range rec.Environments {
		if env.Name != "staging" {
			continue
		}
		st := env.Deployments[0].Statuses
		if last := st[len(st)-1]; last.State != pipeline.DeploymentInactive || last.GitHubID != 0 || !strings.Contains(last.Description, "not written on GitHub") {
			t.Errorf("staging's last status: %+v; want an inactive recorded by lastmile alone", last)
		}
	}
	if d := deploymentsByEnv(sb, repo, push.After)["staging"]; len(d) != 1 || d[0].State() == "inactive" {
		t.Errorf("staging's deployment on GitHub: %+v; lastmile cannot write its inactive", d)
	}

	// The reviewer approves all the same: the deploy runs, its webhooks do
	// not reach lastmile. Then GitHub sends the push held back.
	if err := sb.Sim.Approve(repo, review.RunID, "staging", "alice", "ok"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, sb, "staging deployed", func(s *simulator.Simulator) bool { return succeededIn(s, repo, push.After, "staging") })
	waitFor(t, sb, "the push held", func(s *simulator.Simulator) bool { return len(s.HeldWebhooks()) == 1 })
	if n := sb.Sim.ReleaseWebhooks(); n != 1 {
		t.Fatalf("released %d webhooks, want the push", n)
	}
	settle(t, sb)
	want := "the lastmile App was uninstalled from installation " + itoa(inst) + " (acme) by octocat"
	if d := newestPush(t, sb); d.State != pipeline.DeliveryIgnored || !strings.Contains(d.Note, want) || d.Attempts != 1 {
		t.Errorf("the late push: %s after %d attempts, note %q; want ignored at its first, the note saying %q", d.State, d.Attempts, d.Note, want)
	}
	if n := deadDeliveries(t, sb); n != 0 {
		t.Errorf("%d dead deliveries, want none\n%s", n, describe(sb))
	}
	calls, tokens := lastmileCalls(sb, mark, repo, inst)
	if len(calls) != 0 {
		t.Errorf("lastmile called GitHub for %s after the uninstallation: %+v", repo, calls)
	}
	if len(tokens) != 1 || tokens[0].Status != 404 {
		t.Errorf("token requests after the uninstallation: %+v; want the late push's one, refused (404)", tokens)
	}
	if _, err := sb.App.DB().ReleaseOf(context.Background(), rel.Repo.ID, late.After); err == nil {
		t.Error("the late push made a release")
	}
}

// A push delivered just before the installation is suspended (its webhook
// sent, the suspension's after it) waits — not an attempt, never dead,
// saying why — and the release already deployed stays as it was; once the
// installation is unsuspended, the push is handled at once and its release
// goes through every environment.
func TestSuspendedInstallationDeliveriesWaitUntilUnsuspended(t *testing.T) {
	sb := sandbox(t, nil)
	const repo = "acme/shop"
	inst := sb.Sim.CreateInstallation("acme", "Organization")
	sb.installedRepo(inst, repo, nil)
	first := sb.enroll(repo)
	waitFor(t, sb, "production success", func(s *simulator.Simulator) bool { return succeededIn(s, repo, first.After, "production") })
	settle(t, sb)

	// The push's webhook goes out first, the suspension's right after.
	sb.Sim.HoldWebhooks(simulator.WebhookHold{Event: "push"})
	sb.Sim.HoldWebhooks(simulator.WebhookHold{Event: "installation"})
	second := sb.Sim.Push(repo, "main", simulator.CommitSpec{Message: "Feature", Files: map[string]string{"app.txt": "v2"}})
	if err := sb.Sim.SuspendInstallation(inst, "alice"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, sb, "the push and the suspension held", func(s *simulator.Simulator) bool { return len(s.HeldWebhooks()) == 2 })
	if n := sb.Sim.ReleaseWebhooks(); n != 2 {
		t.Fatalf("released %d webhooks, want the push and the suspension", n)
	}
	var push *pipeline.Delivery
	waitUntil(t, "the push to wait for the unsuspension", 30*time.Second, func() bool {
		st, err := sb.App.DB().Installation(context.Background(), inst)
		push = newestPush(t, sb)
		return err == nil && st.State == pipeline.InstallationSuspended && push.Waits > 0
	})
	if push.State != pipeline.DeliveryPending || push.Attempts != 0 || !strings.Contains(push.LastError, "waiting until it is unsuspended (not an attempt)") ||
		!strings.Contains(push.LastError, "This installation has been suspended") || push.NextAttemptAt.Before(time.Now().Add(30*time.Minute)) {
		t.Errorf("the push: %s, %d attempts, next at %v, last error %q; want pending, no attempt, put off, saying why",
			push.State, push.Attempts, push.NextAttemptAt, push.LastError)
	}
	var out, errOut bytes.Buffer
	if code := Main(context.Background(), []string{"deliveries", "--database", sb.Config.Database, "--state", "pending"},
		func(string) string { return "" }, &out, &errOut); code != 0 {
		t.Fatalf("lastmile deliveries: %d %s", code, errOut.String())
	}
	if !strings.Contains(out.String(), "retry at ") || !strings.Contains(out.String(), "This installation has been suspended") {
		t.Errorf("lastmile deliveries --state pending:\n%s\nwant the push, to be retried, saying the installation is suspended", out.String())
	}
	if rel := releaseOf(t, sb, repo, first.After); rel.State != pipeline.ReleaseCompleted {
		t.Errorf("the first release after the suspension: %s %q, want completed", rel.State, rel.StopReason)
	}
	if _, err := sb.App.DB().ReleaseOf(context.Background(), push.RepositoryID, second.After); err == nil {
		t.Error("a release was made while the installation was suspended")
	}

	// Unsuspended: the push is due at once (it was put off for an hour).
	if err := sb.Sim.UnsuspendInstallation(inst, "alice"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, sb, "the second push in production", func(s *simulator.Simulator) bool {
		return succeededIn(s, repo, second.After, "production")
	})
	settle(t, sb)
	if d, err := sb.App.DB().GetDelivery(context.Background(), push.ID); err != nil || d.State != pipeline.DeliveryDone || d.Attempts != 1 {
		t.Errorf("the push after the unsuspension: %+v (%v); want done at its first attempt", d, err)
	}
	if rel := releaseOf(t, sb, repo, second.After); rel.State != pipeline.ReleaseCompleted {
		t.Errorf("the second release: %s %q, want completed", rel.State, rel.StopReason)
	}
	if n := deadDeliveries(t, sb); n != 0 {
		t.Errorf("%d dead deliveries, want none\n%s", n, describe(sb))
	}
}

// Of two repositories of an installation, both waiting for staging's
// reviewers, one is removed from the installation: its release stops,
// saying who removed it, and lastmile calls GitHub no more for it; the
// other goes on to production once approved.
func TestRemovedRepositoryLeavesTheOtherOfItsInstallation(t *testing.T) {
	sb := sandbox(t, nil)
	inst := sb.Sim.CreateInstallation("acme", "Organization")
	manual := map[string]simulator.ReviewPolicy{"staging": simulator.Manual()}
	sb.installedRepo(inst, "acme/shop", manual)
	sb.installedRepo(inst, "acme/api", manual)
	shop, api := sb.enroll("acme/shop"), sb.enroll("acme/api")
	shopReview := pendingReview(t, sb, "acme/shop", "staging")
	pendingReview(t, sb, "acme/api", "staging")
	settle(t, sb)

	mark := len(sb.Sim.Requests())
	if err := sb.Sim.RemoveRepositoryFromInstallation("acme/api", "octocat"); err != nil {
		t.Fatal(err)
	}
	deliveredSoon(t, sb, "installation_repositories", "removed")
	settle(t, sb)
	if rel := releaseOf(t, sb, "acme/api", api.After); rel.State != pipeline.ReleaseStopped ||
		rel.StopReason != "superseded: the repository was removed from lastmile's installation by octocat" {
		t.Errorf("acme/api's release: %s %q", rel.State, rel.StopReason)
	}
	if got := liveEnvironments(t, sb, "acme/api"); len(got) != 0 {
		t.Errorf("acme/api's environments: %v, want none", got)
	}
	if got := liveEnvironments(t, sb, "acme/shop"); len(got) != 3 {
		t.Errorf("acme/shop's environments: %v, want all three", got)
	}

	if err := sb.Sim.Approve("acme/shop", shopReview.RunID, "staging", "alice", "ok"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, sb, "acme/shop in production", func(s *simulator.Simulator) bool {
		return succeededIn(s, "acme/shop", shop.After, "production")
	})
	settle(t, sb)
	if rel := releaseOf(t, sb, "acme/shop", shop.After); rel.State != pipeline.ReleaseCompleted {
		t.Errorf("acme/shop's release: %s %q, want completed", rel.State, rel.StopReason)
	}
	// One question, as the App, where acme/api stands now; nothing else.
	calls, _ := lastmileCalls(sb, mark, "acme/api", inst)
	if len(calls) != 1 || calls[0].Method != http.MethodGet || calls[0].Path != "/repos/acme/api/installation" || calls[0].Status != http.StatusNotFound {
		t.Errorf("lastmile's calls for acme/api after its removal: %+v; want one GET of its installation (404)", calls)
	}
	if n := deadDeliveries(t, sb); n != 0 {
		t.Errorf("%d dead deliveries, want none\n%s", n, describe(sb))
	}
}

// GitHub sends no webhooks while an installation is suspended, and none of
// them later. At the unsuspension lastmile reads back what it missed: a
// required context that turned green (the release waiting for it goes
// on), and a reviewer's rejection (the run ended without a result on the
// deployment: lastmile writes the failure, and the release stops).
func TestUnsuspensionCatchesUpWithWhatGitHubDidNotSend(t *testing.T) {
	t.Run("required context green", func(t *testing.T) {
		sb := sandbox(t, nil)
		const repo = "acme/shop"
		inst := sb.Sim.CreateInstallation("acme", "Organization")
		sb.installedRepo(inst, repo, nil)
		push := sb.Sim.Push(repo, "main", simulator.CommitSpec{Message: "Add lastmile",
			Files: map[string]string{".github/lastmile.yml": "required_contexts: [build]\n" + threeEnvs}})
		sb.Sim.SetCommitStatus(repo, push.After, "build", "pending")
		waitFor(t, sb, "a 409 for build", func(s *simulator.Simulator) bool { return deploymentConflicts(s, repo) > 0 })
		settle(t, sb)
		if err := sb.Sim.SuspendInstallation(inst, "alice"); err != nil {
			t.Fatal(err)
		}
		deliveredSoon(t, sb, "installation", "suspend")
		settle(t, sb)
		sb.Sim.SetCommitStatus(repo, push.After, "build", "success") // its webhook is never sent
		if err := sb.Sim.UnsuspendInstallation(inst, "alice"); err != nil {
			t.Fatal(err)
		}
		deliveredSoon(t, sb, "installation", "unsuspend")
		waitFor(t, sb, "the release in production", func(s *simulator.Simulator) bool {
			return succeededIn(s, repo, push.After, "production")
		})
	})
	t.Run("rejected", func(t *testing.T) {
		sb, inst, push, review := suspendedWhileStagingWaits(t)
		const repo = "acme/shop"
		if err := sb.Sim.Reject(repo, review.RunID, "staging", "bob", "no"); err != nil {
			t.Fatal(err)
		}
		waitFor(t, sb, "the rejected run's end, during the suspension", func(s *simulator.Simulator) bool {
			run, ok := s.Run(repo, review.RunID)
			return ok && run.Status == "completed"
		})
		if err := sb.Sim.UnsuspendInstallation(inst, "alice"); err != nil {
			t.Fatal(err)
		}
		deliveredSoon(t, sb, "installation", "unsuspend")
		waitFor(t, sb, "the failure lastmile owes staging's deployment", func(s *simulator.Simulator) bool {
			for _, d := range deploymentsByEnv(sb, repo, push.After)["staging"] {
				if st := d.Statuses; len(st) > 0 && st[len(st)-1].State == "failure" {
					return true
				}
			}
			return false
		})
		settle(t, sb)
		if rel := releaseOf(t, sb, repo, push.After); rel.State != pipeline.ReleaseStopped || rel.StopKind != pipeline.StopFailed {
			t.Errorf("release after the unsuspension: %s %s %q; want stopped, failed", rel.State, rel.StopKind, rel.StopReason)
		}
	})
}

// GitHub revokes the installation token lastmile keeps (or it expires
// before lastmile's clock says so): the delivery that meets the refusal
// (401) is handled at its first attempt all the same, with a new token.
func TestRevokedInstallationTokenCostsNoAttempt(t *testing.T) {
	sb := sandbox(t, nil)
	const repo = "acme/shop"
	inst := sb.Sim.CreateInstallation("acme", "Organization")
	sb.installedRepo(inst, repo, nil)
	sb.enroll(repo)
	settle(t, sb)

	sb.Sim.ExpireTokens()
	mark := len(sb.Sim.Requests())
	push := sb.Sim.Push(repo, "main", simulator.CommitSpec{Message: "v2", Files: map[string]string{"app.txt": "v2"}})
	settle(t, sb)
	if d := newestPush(t, sb); d.State != pipeline.DeliveryDone || d.Attempts != 1 || d.LastError != "" {
		t.Errorf("the push after the token was revoked: %s after %d attempts, error %q; want done at its first", d.State, d.Attempts, d.LastError)
	}
	calls, tokens := lastmileCalls(sb, mark, repo, inst)
	if len(calls) == 0 || calls[0].Status != http.StatusUnauthorized || len(tokens) != 1 || tokens[0].Status != http.StatusCreated {
		t.Errorf("calls after the revocation %+v, tokens %+v; want the first refused (401), then one new token", calls, tokens)
	}
	for i, c := range calls {
		if i > 0 && c.Status == http.StatusUnauthorized {
			t.Errorf("a call refused with the new token: %+v", c)
		}
	}
	waitFor(t, sb, "v2 in production", func(s *simulator.Simulator) bool { return succeededIn(s, repo, push.After, "production") })
}
