package pipeline_test

// The delivery series as Prometheus sees them: each must be exposed at 0
// before its first increment, or increase() and the recording rules never
// count that first event; and each lives under the repository's current
// name and the environments its configuration names.

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
	"github.com/lastmile-app/lastmile/storage"
)

// scraper stands for Prometheus: scrape reads the delivery counters and
// histograms (their counts) as /metrics shows them, and remembers the
// value each series had when it was first seen.
type scraper struct {
	h     *harness
	first map[string]float64
	last  map[string]float64
}

func newScraper(h *harness) *scraper {
	return &scraper{h: h, first: map[string]float64{}}
}

func (s *scraper) scrape() {
	s.h.t.Helper()
	snap, err := s.h.db.MetricsSnapshot(context.Background())
	if err != nil {
		s.h.t.Fatal(err)
	}
	now := map[string]float64{}
	for _, c := range snap.Counters[metrics.DeploymentsTotal] {
		now[metrics.DeploymentsTotal+"{"+strings.Join(c.Labels, ",")+"}"] = c.Value
	}
	for name, list := range snap.Histograms {
		for _, h := range list {
			now[name+"_count{"+strings.Join(h.Labels, ",")+"}"] = float64(h.Count)
		}
	}
	for k, v := range now {
		if _, ok := s.first[k]; !ok {
			s.first[k] = v
		}
	}
	s.last = now
}

// startedAboveZero lists the series first seen with a value above 0.
func (s *scraper) startedAboveZero() []string {
	var out []string
	for k, v := range s.first {
		if v != 0 {
			out = append(out, k)
		}
	}
	slices.Sort(out)
	return out
}

// of keeps the series of the last scrape whose labels begin with repo.
func (s *scraper) of(repo string) map[string]float64 {
	out := map[string]float64{}
	for k, v := range s.last {
		if strings.Contains(k, "{"+repo+",") {
			out[k] = v
		}
	}
	return out
}

func (h *harness) environmentGauges() []string {
	h.t.Helper()
	snap, err := h.db.MetricsSnapshot(context.Background())
	if err != nil {
		h.t.Fatal(err)
	}
	var out []string
	for _, name := range []string{metrics.EnvironmentInfo, metrics.LastSuccess} {
		for _, s := range snap.Gauges[name] {
			out = append(out, name+"{"+strings.Join(s.Labels, ",")+"}")
		}
	}
	slices.Sort(out)
	return out
}

// The repository is renamed (acme/shop to acme/store) while c1's deploys are
// under way, and lastmile learns it from a push under the new name — a
// release, or a push to another branch —; c1's statuses, queued before the
// rename, and a review arrive under the old name. Every series that moves
// after the rename is under the new name and was exposed at 0 first; the
// old name's series keep their totals and stop moving.
func TestRenamedRepositorySeriesStartAtZero(t *testing.T) {
	for name, ref := range map[string]string{"release": "refs/heads/main", "push to another branch": "refs/heads/feature"} {
		t.Run(name, func(t *testing.T) {
			ctx := context.Background()
			h := newHarness(t, c0, c1, c2)
			sc := newScraper(h)
			if err := h.push(c0, c1, false); err != nil {
				t.Fatal(err)
			}
			sc.scrape()
			h.status(c1, "test", pipeline.DeploymentSuccess, 10, true) // staging created as acme/shop
			sc.scrape()
			renamed := shop
			renamed.Name = "store"
			if ref == "refs/heads/main" {
				h.gh.mu.Lock()
				h.gh.head = c2
				h.gh.mu.Unlock()
			}
			now := time.Now()
			err := h.engine.HandlePush(ctx, pipeline.Push{Repo: renamed, DeliveryID: "renamed", Ref: ref,
				Before: c1, After: c2, DefaultBranch: "main", Pusher: "octocat", PushedAt: now,
				Commits: []pipeline.Commit{{SHA: c2, Timestamp: now.Add(-time.Hour)}}})
			var ignored *pipeline.Ignored
			if err != nil && !(ref != "refs/heads/main" && errors.As(err, &ignored)) {
				t.Fatal(err)
			}
			sc.scrape()
			oldName := sc.of("acme/shop")
			if len(oldName) == 0 {
				t.Fatal("no series under the old name before the rename")
			}

			// Delivered under the old name from here on.
			h.status(c1, "staging", pipeline.DeploymentSuccess, 11, true)
			sc.scrape()
			for i, a := range []pipeline.ReviewAction{pipeline.ReviewRequested, pipeline.ReviewApproved} {
				if err := h.engine.HandleReview(ctx, pipeline.Review{Repo: shop, DeliveryID: "review-" + string(a), Action: a,
					Environments: []string{"production"}, RunID: 12, HeadSHA: c1, Actor: "alice",
					Since: now.Add(-time.Minute), At: now.Add(time.Duration(i) * time.Second)}); err != nil {
					t.Fatal(err)
				}
			}
			sc.scrape()
			h.status(c1, "production", pipeline.DeploymentSuccess, 12, true)
			sc.scrape()

			if got := sc.startedAboveZero(); len(got) != 0 {
				t.Errorf("series first exposed above 0 (increase() misses their first event): %v", got)
			}
			if got := sc.of("acme/shop"); !sameSeries(got, oldName) {
				t.Errorf("series under the old name moved after the rename:\n got %v\nwant %v", got, oldName)
			}
			moved := sc.of("acme/store")
			for _, k := range []string{
				metrics.DeploymentsTotal + "{acme/store,staging,success}",
				metrics.DeploymentsTotal + "{acme/store,production,success}",
				metrics.ApprovalWait + "_count{acme/store,production}",
			} {
				if moved[k] == 0 {
					t.Errorf("%s = %v, want the events after the rename counted under the new name", k, moved[k])
				}
			}
			for _, g := range h.environmentGauges() {
				if !strings.Contains(g, "{acme/store,") {
					t.Errorf("%s: environment gauges follow the repository's new name", g)
				}
			}
		})
	}
}

// A push made before the rename, redelivered after lastmile learnt the new
// name (acme/shop to acme/store), carries the old name: it does not take
// the repository back to it. The environments and the delivery series
// stay under the new name, and the repository is found by it.
func TestRedeliveredPushDoesNotRenameTheRepositoryBack(t *testing.T) {
	ctx := context.Background()
	h := newHarness(t, c0, c1, c2)
	sc := newScraper(h)
	before := time.Now().Add(-time.Hour)
	h.gh.mu.Lock()
	h.gh.head = c1
	h.gh.mu.Unlock()
	if err := h.deliverPush(c0, c1, false, before); err != nil {
		t.Fatal(err)
	}
	h.status(c1, "test", pipeline.DeploymentSuccess, 10, true)
	h.pushRenamed(c1, c2)
	sc.scrape()
	oldName := sc.of("acme/shop")

	if err := h.deliverPush(c0, c1, false, before); err != nil { // the redelivery
		var ignored *pipeline.Ignored
		if !errors.As(err, &ignored) {
			t.Fatal(err)
		}
	}
	h.status(c2, "test", pipeline.DeploymentSuccess, 11, true)
	sc.scrape()

	for _, g := range h.environmentGauges() {
		if !strings.Contains(g, "{acme/store,") {
			t.Errorf("%s: environment gauges stay under the repository's new name", g)
		}
	}
	if got := sc.of("acme/shop"); !sameSeries(got, oldName) {
		t.Errorf("series under the old name moved after the redelivery:\n got %v\nwant %v", got, oldName)
	}
	if k := metrics.DeploymentsTotal + "{acme/store,test,success}"; sc.of("acme/store")[k] != 1 {
		t.Errorf("%s = %v, want the deployment after the redelivery counted under the new name", k, sc.of("acme/store")[k])
	}
	if _, err := h.db.Audit(ctx, "acme/store", c2); err != nil {
		t.Errorf("audit by the new name after the redelivery: %v", err)
	}
}

func sameSeries(a, b map[string]float64) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			return false
		}
	}
	return true
}

func (h *harness) environmentInfo() []string {
	h.t.Helper()
	snap, err := h.db.MetricsSnapshot(context.Background())
	if err != nil {
		h.t.Fatal(err)
	}
	var envs []string
	for _, s := range snap.Gauges[metrics.EnvironmentInfo] {
		envs = append(envs, s.Labels[1]+"="+s.Labels[2])
	}
	slices.Sort(envs)
	return envs
}

// production is renamed prod while c1 is still on its way: c1 finishes in
// production (its configuration's), c2 (the new configuration) goes to
// prod. production stays retired: no dashboard shows it, and the "no
// production deployment" alert does not fire for it after 7 days.
func TestRemovedEnvironmentStaysRetiredWhenAnOlderReleaseDeploysThere(t *testing.T) {
	h := newHarness(t, c0, c1, c2)
	if err := h.push(c0, c1, false); err != nil {
		t.Fatal(err)
	}
	h.status(c1, "test", pipeline.DeploymentSuccess, 10, true)
	h.gh.config = "environments:\n  - name: test\n  - name: staging\n  - name: prod\n"
	if err := h.push(c1, c2, false); err != nil {
		t.Fatal(err)
	}
	h.status(c1, "staging", pipeline.DeploymentSuccess, 11, true)
	if h.gh.deployment(c1, "production") == nil {
		t.Fatal("c1, released with production in its configuration, was not deployed there")
	}
	h.status(c1, "production", pipeline.DeploymentSuccess, 12, true)
	if got := h.deploymentsCounted()["production/success"]; got != 1 {
		t.Errorf("production successes: %v, want c1's counted", got)
	}
	h.promote(c2, 20, "test", "staging", "prod")
	want := []string{"prod=true", "staging=false", "test=false"}
	if got := h.environmentInfo(); !slices.Equal(got, want) {
		t.Errorf("environment_info after c1 reached production and c2 prod: %v, want %v", got, want)
	}
}

// The configuration spells an environment in another case than the
// release that deploys there: GitHub's names ignore case, so it is the
// same environment, and it stays live — once, under the configuration's
// spelling (as an environment renamed otherwise, the old spelling's series
// keep their history and leave the dashboards).
func TestEnvironmentNamedInAnotherCaseStaysLive(t *testing.T) {
	h := newHarness(t, c0, c1, c2)
	if err := h.push(c0, c1, false); err != nil {
		t.Fatal(err)
	}
	h.status(c1, "test", pipeline.DeploymentSuccess, 10, true)
	h.gh.config = "environments:\n  - name: test\n  - name: staging\n  - name: Production\n"
	if err := h.push(c1, c2, false); err != nil {
		t.Fatal(err)
	}
	h.status(c1, "staging", pipeline.DeploymentSuccess, 11, true)
	h.status(c1, "production", pipeline.DeploymentSuccess, 12, true)
	if got := h.environmentInfo(); !slices.Equal(got, []string{"Production=true", "staging=false", "test=false"}) {
		t.Errorf("environment_info after c1 reached production, which the configuration names Production: %v", got)
	}
}

// A deploy that ends within a scrape interval of its deployment's creation
// (right after the previous environment's success) is still counted by
// increase(): its environment's series are exposed at 0 from the moment
// the release naming it is recorded, not from its first deployment there.
// Prometheus scrapes here after the push, and then only once staging and
// production have each been deployed, start to end.
func TestQuickFirstDeploySeenAtZero(t *testing.T) {
	h := newHarness(t, c0, c1)
	sc := newScraper(h)
	if err := h.push(c0, c1, false); err != nil {
		t.Fatal(err)
	}
	sc.scrape()
	h.promote(c1, 10, "test", "staging", "production")
	sc.scrape()
	if got := sc.startedAboveZero(); len(got) != 0 {
		t.Errorf("series first exposed above 0 (increase() misses their first event): %v", got)
	}
	for _, env := range []string{"test", "staging", "production"} {
		if k := metrics.DeploymentsTotal + "{acme/shop," + env + ",success}"; sc.last[k] != 1 {
			t.Errorf("%s = %v, want 1", k, sc.last[k])
		}
	}
}

// The environments a configuration names are the pipeline's from the push
// on, deployed to or not: lastmile_environment_info lists them and their
// series are at 0. One that never had a success has no last-success
// timestamp: LastmileNoProductionDeploy counts from its live-since time.
func TestConfiguredEnvironmentsAreListedBeforeTheirFirstDeployment(t *testing.T) {
	h := newHarness(t, c0, c1)
	if err := h.push(c0, c1, false); err != nil {
		t.Fatal(err)
	}
	if h.gh.deployment(c1, "staging") != nil {
		t.Fatal("staging deployed before test succeeded")
	}
	want := []string{"production=true", "staging=false", "test=false"}
	if got := h.environmentInfo(); !slices.Equal(got, want) {
		t.Errorf("environment_info once c1 is released: %v, want %v", got, want)
	}
	sc := newScraper(h)
	sc.scrape()
	for _, k := range []string{
		metrics.DeploymentsTotal + "{acme/shop,production,success}",
		metrics.DeploymentsTotal + "{acme/shop,production,failure}",
		metrics.LeadTime + "_count{acme/shop,production}",
		metrics.TimeToRestore + "_count{acme/shop,production}",
	} {
		if v, ok := sc.last[k]; !ok || v != 0 {
			t.Errorf("%s = %v (exposed %v), want 0", k, v, ok)
		}
	}
	h.status(c1, "test", pipeline.DeploymentSuccess, 10, true)
	h.status(c1, "staging", pipeline.DeploymentFailure, 11, true)
	got := h.environmentGauges()
	if !slices.Contains(got, metrics.EnvironmentInfo+"{acme/shop,production,true}") {
		t.Errorf("production, never deployed to, left environment_info: %v", got)
	}
	if slices.Contains(got, metrics.LastSuccess+"{acme/shop,production}") {
		t.Errorf("production has a last success without a deployment: %v", got)
	}
}

// The configuration spells an environment otherwise ("Staging" becomes
// "staging") while an older release is on its way there: that release's
// deployment to "Staging" does not make the old spelling live beside the
// new one.
func TestRespelledEnvironmentIsLiveOnce(t *testing.T) {
	h := newHarness(t, c0, c1, c2)
	h.gh.config = "environments:\n  - name: test\n  - name: Staging\n  - name: production\n"
	if err := h.push(c0, c1, false); err != nil {
		t.Fatal(err)
	}
	h.status(c1, "test", pipeline.DeploymentInProgress, 10, true)
	h.gh.config = "environments:\n  - name: test\n  - name: staging\n  - name: production\n"
	if err := h.push(c1, c2, false); err != nil {
		t.Fatal(err)
	}
	h.status(c1, "test", pipeline.DeploymentSuccess, 10, true)
	if h.gh.deployment(c1, "Staging") == nil {
		t.Fatal("c1's deployment to Staging not created")
	}
	if got := h.liveEnvs(); !slices.Equal(got, []string{"production", "staging", "test"}) {
		t.Errorf("live environments %v; want production, staging, test", got)
	}
}

// The history and the audit record name environments as GitHub does,
// without regard to case: `lastmile history --env production` lists a
// release deployed to the configuration's "Production", and a deployment
// lastmile did not create, to "production", is recorded under that
// environment rather than as another one.
func TestHistoryAndAuditIgnoreTheCaseOfEnvironments(t *testing.T) {
	ctx := context.Background()
	h := newHarness(t, c0, c1)
	h.gh.config = "environments:\n  - name: test\n  - name: Production\n"
	h.release(c0, c1, 10, "test", "Production")
	for _, env := range []string{"Production", "production", "PRODUCTION"} {
		list, err := h.db.History(ctx, storage.HistoryFilter{Environment: env})
		if err != nil {
			t.Fatal(err)
		}
		if len(list) != 1 {
			t.Errorf("history --env %s: %d releases, want 1", env, len(list))
		}
	}
	external := pipeline.DeploymentInfo{GitHubID: 990, SHA: c1, Environment: "production", Creator: "octocat", CreatedAt: time.Now(), WorkflowRunID: 11}
	if err := h.engine.HandleDeployment(ctx, pipeline.NewDeployment{Repo: shop, Deployment: external}); err != nil {
		t.Fatal(err)
	}
	rec, err := h.db.Audit(ctx, shop.FullName(), c1)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range rec.Environments {
		names = append(names, fmt.Sprintf("%s:%d", e.Name, len(e.Deployments)))
	}
	if !slices.Equal(names, []string{"test:1", "Production:2"}) {
		t.Errorf("audit record's environments (name:deployments) %v, want [test:1 Production:2]", names)
	}
}

// Actions' own deployment to "test" (a job without `deployment: false`)
// is the twin of lastmile's deployment to the configuration's "Test".
func TestTwinLinkedWhateverTheCaseOfItsEnvironment(t *testing.T) {
	ctx := context.Background()
	h := newHarness(t, c0, c1)
	h.gh.config = "environments:\n  - name: Test\n  - name: Production\n"
	if err := h.push(c0, c1, false); err != nil {
		t.Fatal(err)
	}
	h.status(c1, "Test", pipeline.DeploymentQueued, 10, true) // links run 10
	info := pipeline.DeploymentInfo{GitHubID: 901, SHA: c1, Environment: "test", Creator: "octocat", WorkflowRunID: 10}
	if err := h.engine.HandleDeployment(ctx, pipeline.NewDeployment{Repo: shop, Deployment: info}); err != nil {
		t.Fatal(err)
	}
	ext, err := h.db.Deployment(ctx, 901)
	if err != nil {
		t.Fatal(err)
	}
	ours, err := h.db.Deployment(ctx, h.gh.deployment(c1, "Test").id)
	if err != nil {
		t.Fatal(err)
	}
	if ext.TwinOf != ours.ID {
		t.Errorf("Actions' deployment to %q: twin of %d, want lastmile's deployment to %q (%d)", "test", ext.TwinOf, "Test", ours.ID)
	}
}

// A workflow that owns its deployments (a job without `deployment:
// false`, not run for lastmile's deployment) is gated by reviewers: the
// audit record shows the reviews and the run with that deployment.
func TestAuditShowsTheReviewsOfADeploymentWithoutATwin(t *testing.T) {
	ctx := context.Background()
	h := newHarness(t, c0, c1)
	h.release(c0, c1, 10, "test")
	now := time.Now()
	external := pipeline.DeploymentInfo{GitHubID: 990, SHA: c1, Environment: "production", Creator: "github-actions[bot]",
		CreatedAt: now, WorkflowRunID: 77}
	if err := h.engine.HandleDeployment(ctx, pipeline.NewDeployment{Repo: shop, Deployment: external}); err != nil {
		t.Fatal(err)
	}
	for i, rv := range []pipeline.Review{
		{Action: pipeline.ReviewRequested, Actor: "octocat", Reviewers: []string{"alice"}, At: now},
		{Action: pipeline.ReviewApproved, Actor: "alice", Comment: "go", Since: now, At: now.Add(time.Minute)},
	} {
		rv.Repo, rv.DeliveryID, rv.Environments, rv.RunID, rv.HeadSHA = shop, fmt.Sprintf("review-%d", i), []string{"production"}, 77, c1
		if err := h.engine.HandleReview(ctx, rv); err != nil {
			t.Fatal(err)
		}
	}
	rec, err := h.db.Audit(ctx, shop.FullName(), c1)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range rec.Environments {
		if e.Name != "production" {
			continue
		}
		if len(e.Deployments) != 1 {
			t.Fatalf("production: %d deployments, want Actions' one", len(e.Deployments))
		}
		var got []string
		for _, r := range e.Deployments[0].Reviews {
			got = append(got, fmt.Sprintf("%s by %s", r.Action, r.Actor))
		}
		if !slices.Equal(got, []string{"requested by octocat", "approved by alice"}) {
			t.Errorf("reviews of Actions' deployment to production: %v, want requested by octocat, approved by alice", got)
		}
		return
	}
	t.Errorf("no production in the record: %+v", rec.Environments)
}
