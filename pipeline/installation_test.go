package pipeline_test

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/lastmile-app/lastmile/pipeline"
)

// refusingGitHub is GitHub once the App lost the repository: it refuses
// every call, as the real one does (the installation's token is 404), and
// records that the call was made.
type refusingGitHub struct {
	mu    sync.Mutex
	calls []string
}

var errNoInstallation = errors.New("installation token for installation 7: GitHub answered 404 Not Found")

func (g *refusingGitHub) call(name string) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.calls = append(g.calls, name)
	return errNoInstallation
}

func (g *refusingGitHub) made() []string {
	g.mu.Lock()
	defer g.mu.Unlock()
	return append([]string(nil), g.calls...)
}

func (g *refusingGitHub) ReadFile(context.Context, pipeline.Repo, string, string) ([]byte, error) {
	return nil, g.call("ReadFile")
}
func (g *refusingGitHub) Compare(context.Context, pipeline.Repo, string, string) (pipeline.Comparison, error) {
	return pipeline.Comparison{}, g.call("Compare")
}
func (g *refusingGitHub) Relation(context.Context, pipeline.Repo, string, string) (string, error) {
	return "", g.call("Relation")
}
func (g *refusingGitHub) CreateDeployment(context.Context, pipeline.Repo, pipeline.DeploymentRequest) (int64, time.Time, error) {
	return 0, time.Time{}, g.call("CreateDeployment")
}
func (g *refusingGitHub) FindDeployment(context.Context, pipeline.Repo, string, string, pipeline.Marker) (int64, time.Time, error) {
	return 0, time.Time{}, g.call("FindDeployment")
}
func (g *refusingGitHub) LatestDeploymentStatus(context.Context, pipeline.Repo, int64) (pipeline.StatusInfo, error) {
	return pipeline.StatusInfo{}, g.call("LatestDeploymentStatus")
}
func (g *refusingGitHub) DeploymentStatuses(context.Context, pipeline.Repo, int64) ([]pipeline.StatusInfo, error) {
	return nil, g.call("DeploymentStatuses")
}
func (g *refusingGitHub) CreateDeploymentStatus(context.Context, pipeline.Repo, int64, pipeline.StatusRequest) (pipeline.StatusInfo, error) {
	return pipeline.StatusInfo{}, g.call("CreateDeploymentStatus")
}
func (g *refusingGitHub) CreateCommitStatus(context.Context, pipeline.Repo, string, pipeline.CommitStatus) error {
	return g.call("CreateCommitStatus")
}
func (g *refusingGitHub) ReviewProtectionRule(context.Context, pipeline.Repo, int64, string, string, string) error {
	return g.call("ReviewProtectionRule")
}
func (g *refusingGitHub) WorkflowRun(context.Context, pipeline.Repo, int64) (pipeline.WorkflowRun, error) {
	return pipeline.WorkflowRun{}, g.call("WorkflowRun")
}
func (g *refusingGitHub) RunsInProgress(context.Context, pipeline.Repo, string, string, int64) (int, error) {
	return 0, g.call("RunsInProgress")
}
func (g *refusingGitHub) Installation(context.Context, int64) (pipeline.InstallationState, error) {
	return pipeline.InstallationState{}, g.call("Installation")
}
func (g *refusingGitHub) RepoInstallation(context.Context, pipeline.Repo) (int64, error) {
	return 0, g.call("RepoInstallation")
}
func (g *refusingGitHub) JobLog(context.Context, pipeline.Repo, int64, int) ([]byte, bool, error) {
	return nil, false, g.call("JobLog")
}

// api is a second repository of shop's installation.
var api = pipeline.Repo{ID: 43, Owner: "acme", Name: "api", InstallationID: 7}

// pushTo delivers a push of sha to repo's main.
func (h *harness) pushTo(repo pipeline.Repo, before, sha string) error {
	return h.engine.HandlePush(context.Background(), pipeline.Push{Repo: repo, DeliveryID: repo.Name + "-" + sha[:4],
		Ref: "refs/heads/main", Before: before, After: sha, DefaultBranch: "main", Pusher: "octocat", PushedAt: time.Now(),
		Commits: []pipeline.Commit{{SHA: sha, Title: "commit " + sha, Timestamp: time.Now().Add(-time.Hour)}}})
}

// installationEvent hands lastmile an installation event and returns the
// note it finished the delivery with.
func (h *harness) installationEvent(ev pipeline.InstallationEvent) string {
	h.t.Helper()
	if ev.InstallationID == 0 {
		ev.InstallationID = 7
	}
	if ev.Account == "" {
		ev.Account = "acme"
	}
	if ev.At.IsZero() {
		ev.At = time.Now()
	}
	err := h.engine.HandleInstallation(context.Background(), ev)
	var ignored *pipeline.Ignored
	if !errors.As(err, &ignored) || ignored.DeliveryState() != pipeline.DeliveryDone {
		h.t.Fatalf("installation %s: %v; want it done, with a note", ev.Action, err)
	}
	return ignored.Reason
}

func (h *harness) releaseState(repo pipeline.Repo, sha string) *pipeline.Release {
	h.t.Helper()
	rel, err := h.db.ReleaseOf(context.Background(), repo.ID, sha)
	if err != nil {
		h.t.Fatalf("release of %s in %s: %v", sha[:2], repo.FullName(), err)
	}
	return rel
}

// The App is uninstalled while c1 waits for staging's reviewers, c2 is on
// its way to test and c3's deployment could not be created yet: every
// release stops, saying who uninstalled the App, the environments are
// retired, and nothing is left for GitHub — neither at once, nor at a later
// advance of the repository (the sweep's), nor when the event is
// redelivered.
func TestUninstallStopsTheReleasesWithoutCallingGitHub(t *testing.T) {
	ctx := context.Background()
	h := newHarness(t, c0, c1, c2, c3)
	h.release(c0, c1, 10, "test")
	h.status(c1, "staging", pipeline.DeploymentQueued, 11, true) // waits for reviewers
	if err := h.push(c1, c2, false); err != nil {
		t.Fatal(err)
	}
	h.gh.mu.Lock()
	h.gh.failNext = []error{errors.New("502 Bad Gateway")}
	h.gh.mu.Unlock()
	if err := h.push(c2, c3, false); err == nil {
		t.Fatal("the push of c3, its deployment's creation failing: no error")
	}
	if work, err := h.db.Work(ctx, shop.ID); err != nil || len(work) == 0 {
		t.Fatalf("work owed before the uninstallation: %d (%v); want c3's intent", len(work), err)
	}
	if got := h.liveEnvs(); len(got) != 3 {
		t.Fatalf("environments before: %v", got)
	}

	gone := &refusingGitHub{}
	h.engine.GitHub = gone
	uninstall := pipeline.InstallationEvent{Action: pipeline.InstallationDeleted, Sender: "octocat",
		Repos: []pipeline.Repo{{ID: shop.ID, Owner: "acme", Name: "shop"}, {ID: 999, Owner: "acme", Name: "never-seen"}}}
	note := h.installationEvent(uninstall)
	if !strings.Contains(note, "acme/shop left lastmile") || strings.Contains(note, "never-seen") {
		t.Errorf("note %q: want it to say acme/shop left lastmile (and nothing of a repository lastmile never saw)", note)
	}

	// c2 was superseded by c3 before; c1 and c3 were on their way.
	const reason = "superseded: the lastmile App was uninstalled from the repository by octocat"
	for _, sha := range []string{c1, c3} {
		rel := h.releaseState(shop, sha)
		if rel.State != pipeline.ReleaseStopped || rel.StopKind != pipeline.StopSuperseded || rel.StopReason != reason {
			t.Errorf("release of %s: %s %s %q; want stopped, superseded: %q", sha[:2], rel.State, rel.StopKind, rel.StopReason, reason)
		}
	}
	if got := h.liveEnvs(); len(got) != 0 {
		t.Errorf("environments after the uninstallation: %v, want none (retired)", got)
	}
	if rel := h.releaseState(shop, c2); rel.State != pipeline.ReleaseStopped {
		t.Errorf("release of c2: %s, want stopped", rel.State)
	}
	if got := h.ledgerState(c1, "staging"); got != pipeline.DeploymentInactive {
		t.Errorf("c1's staging deployment: %s, want inactive (in the record)", got)
	}
	rec, err := h.db.Audit(ctx, shop.FullName(), c1)
	if err != nil {
		t.Fatal(err)
	}
	var last pipeline.StatusInfo
	for _, env := range rec.Environments {
		if env.Name == "staging" && len(env.Deployments) > 0 {
			st := env.Deployments[0].Statuses
			last = st[len(st)-1]
		}
	}
	if last.State != pipeline.DeploymentInactive || last.GitHubID != 0 || last.Creator != "lastmile" ||
		!strings.Contains(last.Description, "not written on GitHub: lastmile no longer has access to the repository") {
		t.Errorf("c1's staging statuses end with %+v; want an inactive recorded by lastmile alone, saying why", last)
	}
	if work, err := h.db.Work(ctx, shop.ID); err != nil || len(work) != 0 {
		t.Errorf("work still owed GitHub: %+v (%v); want none", work, err)
	}
	// c3's intent, whose creation failed: GitHub may have made it, but
	// lastmile can no longer look: abandoned, saying so — not recorded
	// inactive, as if lastmile knew of a deployment.
	rec3, err := h.db.Audit(ctx, shop.FullName(), c3)
	if err != nil {
		t.Fatal(err)
	}
	if d := rec3.Environments[0].Deployments; len(d) != 1 || d[0].State != pipeline.DeploymentAbandoned || len(d[0].Statuses) != 0 ||
		!strings.Contains(d[0].Reason, "lastmile no longer has access to the repository") {
		t.Errorf("c3's test deployment: %+v; want abandoned, no status, saying lastmile has no access", d)
	}
	if st, err := h.db.Installation(ctx, 7); err != nil || st.State != pipeline.InstallationUninstalled || st.By != "octocat" {
		t.Errorf("installation 7: %+v (%v); want recorded uninstalled by octocat", st, err)
	}
	if got, err := h.db.Repos(ctx, []int64{999}); err != nil || len(got) != 0 {
		t.Errorf("a repository lastmile never saw was recorded: %+v (%v)", got, err)
	}

	// Later: the deploy of c1's staging, approved all the same, reports
	// (its webhook reached lastmile before GitHub stopped sending them),
	// the sweep advances the repository, and GitHub redelivers the event.
	if failed, err := h.engine.AdvanceReleased(ctx, []pipeline.Repo{shop}); err != nil || len(failed) != 0 {
		t.Errorf("advance after the uninstallation: %v %v", failed, err)
	}
	if n, err := h.engine.FetchMissingJobLogs(ctx); err != nil || n != 0 {
		t.Errorf("missing job logs: %d %v", n, err)
	}
	if again := h.installationEvent(uninstall); again != note {
		t.Errorf("redelivered: note %q, want %q again", again, note)
	}
	if rel := h.releaseState(shop, c1); rel.StopReason != reason {
		t.Errorf("c1's reason after the redelivery: %q, want %q", rel.StopReason, reason)
	}
	if calls := gone.made(); len(calls) != 0 {
		t.Errorf("GitHub called after the uninstallation: %v", calls)
	}
}

// Of two repositories of an installation, one is removed from it: it leaves
// lastmile, saying who removed it; the other goes on as before. A removal
// from another installation (the repository was transferred, and is
// recorded under the new one) changes nothing.
func TestRemovedRepositoryLeavesTheOtherUntouched(t *testing.T) {
	h := newHarness(t, c0, c1, c2)
	if err := h.pushTo(shop, c0, c1); err != nil {
		t.Fatal(err)
	}
	if err := h.pushTo(api, c0, c2); err != nil { // another commit: the fake GitHub tells deployments apart by commit
		t.Fatal(err)
	}
	note := h.installationEvent(pipeline.InstallationEvent{InstallationID: 8, Action: pipeline.RepositoriesRemoved, Sender: "mallory",
		Repos: []pipeline.Repo{api}})
	if !strings.Contains(note, "no repository lastmile knows left it") {
		t.Errorf("removal from another installation: note %q", note)
	}
	if rel := h.releaseState(api, c2); rel.State != pipeline.ReleaseActive {
		t.Fatalf("api's release after a removal from installation 8: %s, want active", rel.State)
	}

	h.gh.setReaches(api.ID, 0)
	note = h.installationEvent(pipeline.InstallationEvent{Action: pipeline.RepositoriesRemoved, Sender: "octocat", Repos: []pipeline.Repo{api}})
	if !strings.Contains(note, "acme/api left lastmile") || strings.Contains(note, "acme/shop") {
		t.Errorf("note %q", note)
	}
	if rel := h.releaseState(api, c2); rel.State != pipeline.ReleaseStopped ||
		rel.StopReason != "superseded: the repository was removed from lastmile's installation by octocat" {
		t.Errorf("api's release: %s %q", rel.State, rel.StopReason)
	}
	if rel := h.releaseState(shop, c1); rel.State != pipeline.ReleaseActive {
		t.Errorf("shop's release: %s %q, want active", rel.State, rel.StopReason)
	}
	if st, err := h.db.Installation(context.Background(), 7); !errors.Is(err, pipeline.ErrNotFound) {
		t.Errorf("installation 7 after a removal: %+v (%v); want nothing recorded: it is installed", st, err)
	}
	// shop goes on: its test deployment succeeds, staging's is created.
	h.status(c1, "test", pipeline.DeploymentSuccess, 10, true)
	if h.gh.deployment(c1, "staging") == nil {
		t.Error("shop's release did not go on to staging")
	}
}

// A suspension stops nothing and is recorded with who did it and when;
// the unsuspension, and an installation or repositories added, clear the
// mark, and a stale uninstalled mark too.
func TestSuspensionIsRecordedAndStopsNothing(t *testing.T) {
	ctx := context.Background()
	h := newHarness(t, c0, c1)
	if err := h.push(c0, c1, false); err != nil {
		t.Fatal(err)
	}
	at := time.Now().Add(-time.Minute).Truncate(time.Second)
	h.gh.setInstallation(7, pipeline.InstallationSuspended, at, "alice")
	note := h.installationEvent(pipeline.InstallationEvent{Action: pipeline.InstallationSuspend, Sender: "alice", At: at})
	if !strings.Contains(note, "suspended by alice") {
		t.Errorf("note %q", note)
	}
	if st, err := h.db.Installation(ctx, 7); err != nil || st.State != pipeline.InstallationSuspended || st.By != "alice" || !st.Since.Equal(at) {
		t.Errorf("installation 7: %+v (%v); want suspended by alice at %v", st, err, at)
	}
	if rel := h.releaseState(shop, c1); rel.State != pipeline.ReleaseActive {
		t.Errorf("c1's release after the suspension: %s %q, want active", rel.State, rel.StopReason)
	}
	if got := h.liveEnvs(); len(got) != 3 {
		t.Errorf("environments after the suspension: %v, want all three live", got)
	}
	for _, tc := range []struct {
		stale  pipeline.InstallationAction
		action pipeline.InstallationAction
	}{
		{pipeline.InstallationSuspend, pipeline.InstallationUnsuspend},
		{pipeline.InstallationSuspend, pipeline.RepositoriesAdded},
	} {
		h.gh.setInstallation(7, pipeline.InstallationSuspended, at, "alice")
		h.installationEvent(pipeline.InstallationEvent{Action: tc.stale, Sender: "alice"})
		h.gh.setInstallation(7, pipeline.InstallationActive, time.Time{}, "")
		h.installationEvent(pipeline.InstallationEvent{Action: tc.action, Sender: "bob", Repos: []pipeline.Repo{api}})
		if st, err := h.db.Installation(ctx, 7); err != nil || st.State != pipeline.InstallationActive || st.By != "bob" {
			t.Errorf("%s after %s: %+v (%v); want active, by bob", tc.action, tc.stale, st, err)
		}
	}
	// Uninstalled is final: GitHub gives a new installation a new ID, so
	// a creation of this one after its deletion was delivered late.
	h.installationEvent(pipeline.InstallationEvent{Action: pipeline.InstallationDeleted, Sender: "alice"})
	h.gh.setInstallation(7, pipeline.InstallationUninstalled, time.Time{}, "")
	h.installationEvent(pipeline.InstallationEvent{Action: pipeline.InstallationCreated, Sender: "bob", Repos: []pipeline.Repo{api}})
	if st, err := h.db.Installation(ctx, 7); err != nil || st.State != pipeline.InstallationUninstalled || st.By != "alice" {
		t.Errorf("created after deleted: %+v (%v); want still uninstalled, by alice", st, err)
	}
}

// The installation uninstalled lists a repository that lastmile recorded
// under another installation (the App installed again, or the repository
// transferred to another account where it is installed; the deletion
// delivered late): that repository stays.
func TestUninstallLeavesARepositoryRecordedUnderAnother(t *testing.T) {
	h := newHarness(t, c0, c1)
	web := pipeline.Repo{ID: 44, Owner: "globex", Name: "web", InstallationID: 5}
	if err := h.pushTo(web, c0, c1); err != nil {
		t.Fatal(err)
	}
	h.installationEvent(pipeline.InstallationEvent{Action: pipeline.InstallationDeleted, Sender: "octocat", Repos: []pipeline.Repo{web}})
	if rel := h.releaseState(web, c1); rel.State != pipeline.ReleaseActive {
		t.Errorf("web's release, recorded under installation 5, after installation 7's deletion: %s %q; want active", rel.State, rel.StopReason)
	}
}

// A repository transferred to another account where the App is installed
// is added to that installation and removed from the first, in either
// order: GitHub says the second reaches it, so it stays in lastmile, its
// release going on, recorded under the second.
func TestTransferredRepositoryStays(t *testing.T) {
	for _, addedFirst := range []bool{true, false} {
		t.Run(map[bool]string{true: "added first", false: "removed first"}[addedFirst], func(t *testing.T) {
			h := newHarness(t, c0, c1, c2)
			if err := h.push(c0, c1, false); err != nil {
				t.Fatal(err)
			}
			moved := shop
			moved.InstallationID = 8
			added := pipeline.InstallationEvent{InstallationID: 8, Action: pipeline.RepositoriesAdded, Sender: "octocat", Repos: []pipeline.Repo{moved}}
			removed := pipeline.InstallationEvent{InstallationID: 7, Action: pipeline.RepositoriesRemoved, Sender: "octocat", Repos: []pipeline.Repo{shop}}
			h.gh.setReaches(shop.ID, 8)
			if addedFirst {
				h.installationEvent(added)
				h.installationEvent(removed)
			} else {
				h.installationEvent(removed)
				h.installationEvent(added)
			}
			if rel := h.releaseState(shop, c1); rel.State != pipeline.ReleaseActive {
				t.Errorf("c1's release after the transfer: %s %q; want active", rel.State, rel.StopReason)
			}
			if repos, err := h.db.InstallationRepos(context.Background(), 8); err != nil || len(repos) != 1 {
				t.Errorf("repositories of installation 8: %v (%v); want acme/shop", repos, err)
			}
			// Its next push, through installation 8, is a release.
			h.gh.mu.Lock()
			h.gh.head = c2
			h.gh.mu.Unlock()
			if err := h.pushTo(moved, c1, c2); err != nil {
				t.Fatal(err)
			}
			if rel := h.releaseState(shop, c2); rel.State != pipeline.ReleaseActive {
				t.Errorf("c2's release after the transfer: %s %q; want active", rel.State, rel.StopReason)
			}
		})
	}
}

// A release stopped by a failure, which a re-run could carry on, is
// withdrawn too when the App is uninstalled; the inactive lastmile would
// write on its failed deployment (so that a re-run deploys nothing) cannot
// be written any more: it is recorded as lastmile's alone, and nothing is
// left for GitHub.
func TestUninstallWithdrawsAFailedReleaseWithoutCallingGitHub(t *testing.T) {
	ctx := context.Background()
	h := newHarness(t, c0, c1)
	h.release(c0, c1, 10, "test")
	h.status(c1, "staging", pipeline.DeploymentFailure, 11, true)
	if rel := h.releaseState(shop, c1); rel.State != pipeline.ReleaseStopped || rel.StopKind != pipeline.StopFailed {
		t.Fatalf("c1's release after staging failed: %s %s", rel.State, rel.StopKind)
	}
	gone := &refusingGitHub{}
	h.engine.GitHub = gone
	h.installationEvent(pipeline.InstallationEvent{Action: pipeline.InstallationDeleted, Sender: "octocat"})
	rel := h.releaseState(shop, c1)
	if rel.StopKind != pipeline.StopSuperseded || !strings.HasSuffix(rel.StopReason, "; then superseded: the lastmile App was uninstalled from the repository by octocat") {
		t.Errorf("c1's release: %s %q; want superseded, its first reason kept", rel.StopKind, rel.StopReason)
	}
	if work, err := h.db.Work(ctx, shop.ID); err != nil || len(work) != 0 {
		t.Errorf("work still owed GitHub: %+v (%v); want none", work, err)
	}
	if got := h.ledgerState(c1, "staging"); got != pipeline.DeploymentInactive {
		t.Errorf("c1's failed staging deployment: %s, want inactive in the record", got)
	}
	if failed, err := h.engine.AdvanceReleased(ctx, []pipeline.Repo{shop}); err != nil || len(failed) != 0 {
		t.Errorf("advance after the uninstallation: %v %v", failed, err)
	}
	if calls := gone.made(); len(calls) != 0 {
		t.Errorf("GitHub called after the uninstallation: %v", calls)
	}
}

// A suspension delivered after GitHub deleted the installation (its
// deletion not yet delivered, or lost): the installation is recorded
// uninstalled, as the deletion would record it, and its repositories'
// releases stop; the deletion, delivered later, changes nothing more.
func TestInstallationEventOfAnInstallationGitHubNoLongerHas(t *testing.T) {
	ctx := context.Background()
	h := newHarness(t, c0, c1)
	h.release(c0, c1, 10, "test")
	h.gh.setInstallation(7, pipeline.InstallationUninstalled, time.Time{}, "")
	note := h.installationEvent(pipeline.InstallationEvent{Action: pipeline.InstallationSuspend, Sender: "alice"})
	if !strings.Contains(note, "delivered late") || !strings.Contains(note, "no longer has it") {
		t.Errorf("note %q; want it to say GitHub no longer has the installation", note)
	}
	if st, err := h.db.Installation(ctx, 7); err != nil || st.State != pipeline.InstallationUninstalled {
		t.Errorf("installation 7: %+v (%v); want deleted", st, err)
	}
	rel := h.releaseState(shop, c1)
	if rel.State != pipeline.ReleaseStopped || !strings.Contains(rel.StopReason, "the lastmile App was uninstalled") {
		t.Errorf("c1's release: %s (%s); want stopped by the uninstallation", rel.State, rel.StopReason)
	}
	h.installationEvent(pipeline.InstallationEvent{Action: pipeline.InstallationDeleted, Sender: "octocat"})
	if st, err := h.db.Installation(ctx, 7); err != nil || st.State != pipeline.InstallationUninstalled {
		t.Errorf("installation 7 after the deletion's delivery: %+v (%v); want deleted", st, err)
	}
	if again := h.releaseState(shop, c1); again.StopReason != rel.StopReason {
		t.Errorf("the deletion's delivery changed the stopped release's reason: %q, was %q", again.StopReason, rel.StopReason)
	}
}

// readHookGitHub is GitHub that runs before, once, as lastmile reads a
// repository's configuration: what happens meanwhile on another queue.
type readHookGitHub struct {
	*fakeGitHub
	before func()
}

func (g *readHookGitHub) ReadFile(ctx context.Context, r pipeline.Repo, path, sha string) ([]byte, error) {
	if f := g.before; f != nil {
		g.before = nil
		f()
	}
	return g.fakeGitHub.ReadFile(ctx, r, path, sha)
}

// A push handled while the repository's removal from the installation (or
// the App's uninstallation) is handled on another queue: its configuration
// read before GitHub refused the App, the departure recorded before the
// release would be. No release is recorded on its way in a repository
// that left lastmile; the push is ignored, saying why.
func TestPushHandledWhileTheRepositoryLeaves(t *testing.T) {
	for _, tc := range []struct {
		name string
		ev   pipeline.InstallationEvent
	}{
		{"removed", pipeline.InstallationEvent{Action: pipeline.RepositoriesRemoved, Sender: "octocat", Repos: []pipeline.Repo{shop}}},
		{"uninstalled", pipeline.InstallationEvent{Action: pipeline.InstallationDeleted, Sender: "octocat"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := context.Background()
			h := newHarness(t, c0, c1)
			if err := h.engine.HandlePush(ctx, pipeline.Push{Repo: shop, DeliveryID: "first", Ref: "refs/heads/main",
				Before: c0, After: c0, DefaultBranch: "main", Pusher: "octocat", PushedAt: time.Now()}); err != nil {
				t.Fatal(err)
			}
			h.engine.GitHub = &readHookGitHub{fakeGitHub: h.gh, before: func() {
				h.gh.setReaches(shop.ID, 0)
				h.installationEvent(tc.ev)
			}}
			err := h.push(c0, c1, false)
			var ignored *pipeline.Ignored
			if !errors.As(err, &ignored) || !strings.Contains(ignored.Reason, "left lastmile") {
				t.Fatalf("the push: %v; want it ignored, the repository having left lastmile", err)
			}
			if rel, err := h.db.ReleaseOf(ctx, shop.ID, c1); err == nil {
				t.Errorf("c1's release recorded (%s) after the repository left lastmile", rel.State)
			}
			if h.gh.deployment(c1, "test") != nil {
				t.Error("c1 deployed to test after the repository left lastmile")
			}
		})
	}
}

// The App installed again (a new installation, with a new ID) on an
// account whose repository lastmile knows: the repository is recorded as
// reached through the new installation from its `created` event on (its
// suspension's catch-up, its uninstallation, reach it), not from its next
// push only.
func TestInstallationCreatedAttachesKnownRepositories(t *testing.T) {
	ctx := context.Background()
	h := newHarness(t, c0, c1)
	if err := h.push(c0, c1, false); err != nil {
		t.Fatal(err)
	}
	h.gh.setInstallation(7, pipeline.InstallationUninstalled, time.Time{}, "")
	h.installationEvent(pipeline.InstallationEvent{Action: pipeline.InstallationDeleted, Sender: "octocat"})
	again := shop
	again.InstallationID = 9
	h.gh.setReaches(shop.ID, 9)
	note := h.installationEvent(pipeline.InstallationEvent{InstallationID: 9, Action: pipeline.InstallationCreated, Sender: "octocat",
		Repos: []pipeline.Repo{again, {ID: 99, Owner: "acme", Name: "unknown", InstallationID: 9}}})
	if !strings.Contains(note, "acme/shop is reached through installation 9") {
		t.Errorf("note %q; want it to say acme/shop is reached through installation 9", note)
	}
	if repos, err := h.db.InstallationRepos(ctx, 9); err != nil || len(repos) != 1 || repos[0].ID != shop.ID {
		t.Errorf("repositories of installation 9: %v (%v); want acme/shop", repos, err)
	}
	if repos, err := h.db.Repos(ctx, []int64{99}); err != nil || len(repos) != 0 {
		t.Errorf("repository 99, unknown to lastmile: %v (%v); want it not recorded from the created event", repos, err)
	}
}

// A push made before the repository was removed from the installation
// (to another branch), handled after the removal; the repository is added
// back (that event lost): the next push, made after, is released — what
// the late push had lastmile remember of the repository (its installation,
// which the store did not record over the removal) does not keep the next
// from recording it again.
func TestPushAfterTheRepositoryIsAddedBackWithoutItsEvent(t *testing.T) {
	ctx := context.Background()
	h := newHarness(t, c0, c1, c2, c3)
	if err := h.push(c0, c1, false); err != nil {
		t.Fatal(err)
	}
	removedAt := time.Now()
	h.gh.setReaches(shop.ID, 0)
	h.installationEvent(pipeline.InstallationEvent{Action: pipeline.RepositoriesRemoved, Sender: "octocat", Repos: []pipeline.Repo{shop}})
	err := h.engine.HandlePush(ctx, pipeline.Push{Repo: shop, DeliveryID: "feature", Ref: "refs/heads/feature",
		Before: c1, After: c2, DefaultBranch: "main", Pusher: "octocat", PushedAt: removedAt.Add(-time.Minute)})
	var ignored *pipeline.Ignored
	if !errors.As(err, &ignored) {
		t.Fatalf("the push to a feature branch made before the removal: %v; want it ignored", err)
	}
	if gone, err := h.db.Detached(ctx, shop.ID); err != nil || !gone {
		t.Fatalf("acme/shop detached: %v (%v); want the late push not to record its installation over the removal", gone, err)
	}
	h.gh.setReaches(shop.ID, 7) // added back; its event lost
	h.gh.mu.Lock()
	h.gh.head = c3
	h.gh.mu.Unlock()
	if err := h.deliverPush(c2, c3, false, removedAt.Add(time.Minute)); err != nil {
		t.Fatalf("the push made after the repository was added back: %v; want it released", err)
	}
	if rel := h.releaseState(shop, c3); rel.State != pipeline.ReleaseActive {
		t.Errorf("c3's release: %s %q; want active", rel.State, rel.StopReason)
	}
}

// A created or added event whose installation GitHub does not show
// (not yet: an installation just made) records nothing: the installation
// is not taken for uninstalled, and its repositories stay.
func TestInstallationNotShownYetIsNotUninstalled(t *testing.T) {
	ctx := context.Background()
	h := newHarness(t, c0, c1, c2)
	if err := h.push(c0, c1, false); err != nil {
		t.Fatal(err)
	}
	h.gh.setInstallation(7, pipeline.InstallationUninstalled, time.Time{}, "") // GitHub's 404, for now
	for _, action := range []pipeline.InstallationAction{pipeline.RepositoriesAdded, pipeline.InstallationCreated} {
		note := h.installationEvent(pipeline.InstallationEvent{Action: action, Sender: "octocat",
			Repos: []pipeline.Repo{{ID: 77, Owner: "acme", Name: "api", InstallationID: 7}}})
		if !strings.Contains(note, "nothing recorded") {
			t.Errorf("%s: note %q; want it to say nothing was recorded", action, note)
		}
	}
	if st, err := h.db.Installation(ctx, 7); err == nil && st.State == pipeline.InstallationUninstalled {
		t.Errorf("installation 7 recorded %s after a 404 on a created or added event", st.State)
	}
	if rel := h.releaseState(shop, c1); rel.State != pipeline.ReleaseActive {
		t.Errorf("c1's release: %s %q; want active", rel.State, rel.StopReason)
	}
}

// reachingGitHub answers 404, as GitHub does, to reads of a repository
// through an installation that no longer reaches it.
type reachingGitHub struct {
	*fakeGitHub
	reach map[int64]int64 // repository: the installation that reaches it
}

func (g *reachingGitHub) wrong(r pipeline.Repo) bool {
	id, ok := g.reach[r.ID]
	return ok && id != r.InstallationID
}

func (g *reachingGitHub) ReadFile(ctx context.Context, r pipeline.Repo, path, sha string) ([]byte, error) {
	if g.wrong(r) {
		return nil, pipeline.ErrNotFound
	}
	return g.fakeGitHub.ReadFile(ctx, r, path, sha)
}

func (g *reachingGitHub) Relation(ctx context.Context, r pipeline.Repo, base, head string) (string, error) {
	if g.wrong(r) {
		return "", pipeline.ErrNotFound
	}
	return g.fakeGitHub.Relation(ctx, r, base, head)
}

func (g *reachingGitHub) Compare(ctx context.Context, r pipeline.Repo, base, head string) (pipeline.Comparison, error) {
	if g.wrong(r) {
		return pipeline.Comparison{}, pipeline.ErrNotFound
	}
	return g.fakeGitHub.Compare(ctx, r, base, head)
}

// transferToOther transfers shop to the account "other", whose
// installation 8 reaches it now: GitHub says so, and lastmile has handled
// the installation event that added it there.
func (h *harness) transferToOther() {
	h.t.Helper()
	moved := shop
	moved.Owner, moved.InstallationID = "other", 8
	h.gh.setReaches(shop.ID, 8)
	h.installationEvent(pipeline.InstallationEvent{InstallationID: 8, Account: "other", Action: pipeline.RepositoriesAdded, Repos: []pipeline.Repo{moved}})
}

// A push made before the repository was transferred to another account,
// handled after the transfer's installation events (it waited in the
// inbox): it is read through the installation that reaches the repository
// now — through its own, GitHub answers 404, which would take the
// repository out of lastmile as though its configuration were removed.
func TestPushHandledAfterATransferIsReadThroughTheNewInstallation(t *testing.T) {
	h := newHarness(t, c0, c1, c2)
	h.mustPush(c0, c1, false)
	pushedAt := time.Now()
	h.gh.mu.Lock()
	h.gh.head = c2
	h.gh.mu.Unlock()
	h.transferToOther()
	h.installationEvent(pipeline.InstallationEvent{InstallationID: 7, Action: pipeline.RepositoriesRemoved, Repos: []pipeline.Repo{shop}})
	h.engine.GitHub = &reachingGitHub{fakeGitHub: h.gh, reach: map[int64]int64{shop.ID: 8}}
	if err := h.deliverPush(c1, c2, false, pushedAt); err != nil { // the payload names installation 7
		t.Fatalf("the push made before the transfer: %v", err)
	}
	if envs := h.liveEnvs(); len(envs) != 3 {
		t.Errorf("live environments %v, want the three: the repository left lastmile", envs)
	}
	rel := h.releaseState(shop, c2)
	if rel == nil || rel.Repo.InstallationID != 8 {
		t.Fatalf("c2's release: %+v, want one recorded through installation 8", rel)
	}
	if old := h.releaseState(shop, c1); old.StopKind == pipeline.StopSuperseded && strings.Contains(old.StopReason, "left lastmile") {
		t.Errorf("c1: %s %q", old.State, old.StopReason)
	}
}

// Reaching: an event received before its repository was recorded as moved
// to another installation goes through that one; one received after, and
// one of a repository detached since, through its own.
func TestReachingGoesByWhenTheRepositoryMoved(t *testing.T) {
	ctx := context.Background()
	h := newHarness(t, c0, c1)
	h.mustPush(c0, c1, false)
	before := time.Now().Add(-time.Minute)
	moved := shop
	moved.Owner, moved.InstallationID = "other", 8
	h.installationEvent(pipeline.InstallationEvent{InstallationID: 8, Account: "other", Action: pipeline.RepositoriesAdded, Repos: []pipeline.Repo{moved}})
	after := time.Now().Add(time.Minute)
	for _, tc := range []struct {
		received time.Time
		want     int64
	}{{before, 8}, {after, 7}} {
		if got, err := h.engine.Reaching(ctx, shop.ID, 7, "", tc.received); err != nil || got != tc.want {
			t.Errorf("received %v: installation %d, %v; want %d", tc.received, got, err, tc.want)
		}
	}
	h.gh.setReaches(shop.ID, 0) // removed: no installation reaches it
	h.installationEvent(pipeline.InstallationEvent{InstallationID: 8, Action: pipeline.RepositoriesRemoved, Repos: []pipeline.Repo{moved}})
	if got, err := h.engine.Reaching(ctx, shop.ID, 7, "", before); err != nil || got != 7 {
		t.Errorf("detached: installation %d, %v; want the event's, 7", got, err)
	}
}

// A delivery whose first attempts failed before its repository was
// transferred, redelivered at lastmile's request after the transfer was
// recorded, goes by GitHub's first attempt (recorded with the request):
// through the installation that reaches the repository now — through the
// payload's, GitHub answers 404, and the delivery would be retried until
// dead. One received as late that lastmile did not ask for goes through
// its own (a transfer back, its events not handled yet).
func TestReachingARedeliveryGoesByItsFirstAttempt(t *testing.T) {
	ctx := context.Background()
	h := newHarness(t, c0, c1)
	h.mustPush(c0, c1, false)
	failed := pipeline.HookDelivery{GUID: "guid-failed", AttemptID: 41, Event: "deployment_status", FirstAttempt: time.Now().Add(-time.Hour)}
	if err := h.db.RedeliveryRequested(ctx, failed, false, time.Now(), time.Now().Add(-72*time.Hour)); err != nil {
		t.Fatal(err)
	}
	h.transferToOther()
	redelivered := time.Now().Add(time.Minute)
	for _, tc := range []struct {
		guid string
		want int64
	}{{"guid-failed", 8}, {"guid-not-asked-for", 7}, {"", 7}} {
		if got, err := h.engine.Reaching(ctx, shop.ID, 7, tc.guid, redelivered); err != nil || got != tc.want {
			t.Errorf("delivery %q received after the transfer: installation %d, %v; want %d", tc.guid, got, err, tc.want)
		}
	}
}

// A deletion of main made before the repository was transferred, handled
// after the transfer's installation events; main was created again at c1
// since (GitHub shows it there). Read through the installation that
// reaches the repository now, main holds c1: its release goes on. Read
// through the push's, every comparison would be a 404, taken for "the
// branch no longer holds it".
func TestBranchDeletionMadeBeforeATransferIsReadThroughTheNewInstallation(t *testing.T) {
	h := newHarness(t, c0, c1)
	h.mustPush(c0, c1, false)
	h.transferToOther()
	h.installationEvent(pipeline.InstallationEvent{InstallationID: 7, Action: pipeline.RepositoriesRemoved, Repos: []pipeline.Repo{shop}})
	h.engine.GitHub = &reachingGitHub{fakeGitHub: h.gh, reach: map[int64]int64{shop.ID: 8}}
	err := h.engine.HandlePush(context.Background(), pipeline.Push{Repo: shop, DeliveryID: "del-main", Ref: "refs/heads/main",
		Before: c1, After: "0000000000000000000000000000000000000000", Deleted: true, DefaultBranch: "main", Pusher: "octocat",
		PushedAt: time.Now().Add(-time.Hour)})
	var ignored *pipeline.Ignored
	if !errors.As(err, &ignored) {
		t.Fatalf("the deletion: %v", err)
	}
	if rel := h.releaseState(shop, c1); rel.State != pipeline.ReleaseActive {
		t.Errorf("c1: %s %q; want active (main holds c1 again)", rel.State, rel.StopReason)
	}
}

// The repository is transferred to another account (installation 8) and
// back (installation 7). Between the two, a push made before the first
// transfer is handled late, read through 8 (the store kept it). After the
// transfer back, a new push through 7 is handled before the transfer's
// installation events: it is made after the store's installation was
// recorded, and read through its own, 7 — through 8 GitHub would answer
// 404, and the repository leave lastmile as though its configuration
// were removed.
func TestPushAfterATransferBackIsReadThroughItsOwnInstallation(t *testing.T) {
	h := newHarness(t, c0, c1, c2, c3)
	h.mustPush(c0, c1, false)
	h.transferToOther()
	gh := &reachingGitHub{fakeGitHub: h.gh, reach: map[int64]int64{shop.ID: 8}}
	h.engine.GitHub = gh
	h.gh.mu.Lock()
	h.gh.head = c2
	h.gh.mu.Unlock()
	// made before the transfer, handled after it
	if err := h.deliverPush(c1, c2, false, time.Now().Add(-time.Hour)); err != nil {
		t.Fatalf("the push made before the transfer: %v", err)
	}
	// transferred back to installation 7; its events not handled yet
	h.gh.setReaches(shop.ID, 7)
	gh.reach[shop.ID] = 7
	if err := h.push(c2, c3, false); err != nil {
		t.Errorf("a push made after the transfer back, through installation 7: %v", err)
	}
	if envs := h.liveEnvs(); len(envs) != 3 {
		t.Errorf("live environments %v, want the three: the repository left lastmile", envs)
	}
}

// As TestLeadTimeAfterAMissedReplacementCountsThePushsCommits, the push
// after the missed replacement listing no commits (a fast-forward to

// A push made before a transfer, handled after it, whose payload gave no
// pushed_at (its time guessed, as at its receipt): it may be older than
// the transfer, and the installation the transfer's events recorded stays;
// the push is read through it.
func TestPushOfUnknownTimeAfterATransferKeepsItsInstallation(t *testing.T) {
	h := newHarness(t, c0, c1, c2)
	h.mustPush(c0, c1, false)
	h.transferToOther()
	// the push handled a second after the transfer was recorded
	h.db.Now = func() time.Time { return time.Now().Add(time.Second) }
	h.engine.GitHub = &reachingGitHub{fakeGitHub: h.gh, reach: map[int64]int64{shop.ID: 8}}
	h.gh.mu.Lock()
	h.gh.head = c2
	h.gh.mu.Unlock()
	err := h.engine.HandlePush(context.Background(), pipeline.Push{Repo: shop, DeliveryID: "push-guessed", Ref: "refs/heads/main",
		Before: c1, After: c2, DefaultBranch: "main", Pusher: "octocat", PushedAt: time.Now(), PushedAtGuessed: true,
		Commits: []pipeline.Commit{{SHA: c2, Title: "commit", Timestamp: time.Now().Add(-time.Hour)}}})
	if err != nil {
		t.Errorf("the push: %v", err)
	}
	if inst, _, _ := h.db.RecordedInstallation(context.Background(), shop.ID); inst != 8 {
		t.Errorf("recorded installation %d after the push, want 8 (the transfer's)", inst)
	}
	if envs := h.liveEnvs(); len(envs) != 3 {
		t.Errorf("live environments %v, want the three: the repository left lastmile", envs)
	}
}
