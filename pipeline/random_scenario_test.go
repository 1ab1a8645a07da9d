package pipeline_test

// Randomized scenario testing of the promotion engine: many seeds, each a
// random sequence of pushes (normal, rollbacks, forward force pushes),
// deployment statuses (the lastmile Action's, re-runs, GitHub's automatic
// inactive), reviews and workflow runs, delivered late, out of order or
// twice. Invariants are checked after every step.
//
//	go test ./pipeline -run TestRandomScenarios -count=1     (200 seeds; 20 under -race)
//	LASTMILE_FUZZ_SEEDS=500 LASTMILE_FUZZ_STEPS=40 LASTMILE_FUZZ_MODE=adversarial go test ./pipeline -run TestRandomScenarios
//	LASTMILE_FUZZ_SEED=17 LASTMILE_FUZZ_VERBOSE=1 go test ./pipeline -run TestRandomScenarios -v   (one seed, its event log)
//
// Modes: "realistic" (default) posts statuses only as the lastmile Action
// would (it skips inactive and finished deployments, re-runs only failed
// ones, and never re-deploys over a newer success); "adversarial" posts any
// status on any deployment; "both" runs each seed in both modes.

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/lastmile-app/lastmile/metrics"
	"github.com/lastmile-app/lastmile/pipeline"
	"github.com/lastmile-app/lastmile/storage"
)

// treeGitHub is the harness's fake GitHub with a commit graph (rollbacks and
// force pushes make branches of history), a virtual clock, and checks on
// every deployment lastmile creates.
type treeGitHub struct {
	*fakeGitHub
	s *scenario
	// createThenFail: the next CreateDeployment creates the deployment but
	// answers with an error (a timeout after GitHub acted).
	createThenFail bool
	failNextCreate bool
}

// contextState is the required context "build" of a commit on GitHub.
func (s *scenario) contextState(sha string) string {
	if st, ok := s.build[sha]; ok {
		return st
	}
	return "pending"
}

func (g *treeGitHub) Relation(ctx context.Context, r pipeline.Repo, base, head string) (string, error) {
	cmp, err := g.Compare(ctx, r, base, head)
	return cmp.Status, err
}

func (g *treeGitHub) Compare(_ context.Context, _ pipeline.Repo, base, head string) (pipeline.Comparison, error) {
	s := g.s
	if head == "main" {
		head = s.head
	}
	if base == "main" {
		base = s.head
	}
	return compareIn(s.parent, base, head, s.commit)
}

func (g *treeGitHub) FindDeployment(ctx context.Context, r pipeline.Repo, sha, env string, m pipeline.Marker) (int64, time.Time, error) {
	id, _, err := g.fakeGitHub.FindDeployment(ctx, r, sha, env, m)
	return id, g.s.created[id], err
}

func (g *treeGitHub) CreateDeployment(ctx context.Context, r pipeline.Repo, req pipeline.DeploymentRequest) (int64, time.Time, error) {
	s := g.s
	if g.failNextCreate {
		g.failNextCreate = false
		return 0, time.Time{}, errors.New("502 Bad Gateway")
	}
	m := req.Payload.Lastmile
	if len(req.RequiredContexts) > 0 {
		if st := s.contextState(req.SHA); st != "success" {
			s.logf("  GitHub refuses the deployment of %s: build is %s", sh(req.SHA), st)
			return 0, time.Time{}, &pipeline.RefusedError{Status: 409, Message: "Conflict: Commit status checks failed for " + sh(req.SHA),
				Contexts: []pipeline.ContextState{{Context: "build", State: st}}}
		}
	}
	// Invariant 1: one deployment per release and environment.
	g.mu.Lock()
	for _, d := range g.deps {
		if d.payload.Lastmile.Release == m.Release && d.payload.Lastmile.Index == m.Index && d.payload.Lastmile.Instance != "" {
			s.violate("inv1: a second deployment of release #%d to %s (the first is %d)", m.Release, req.Environment, d.id)
		}
	}
	// Invariant 2: stage k only after a success of the same release at k-1.
	if m.Index > 0 {
		ok := false
		for _, d := range g.deps {
			if d.payload.Lastmile.Release == m.Release && d.payload.Lastmile.Index == m.Index-1 && d.sha == req.SHA {
				for _, st := range d.statuses {
					if st.State == pipeline.DeploymentSuccess {
						ok = true
					}
				}
			}
		}
		if !ok {
			s.violate("inv2: release #%d (%s) deployed to %s without a success in stage %d", m.Release, sh(req.SHA), req.Environment, m.Index-1)
		}
	}
	// Invariant 3: in every environment, deployments in release order.
	if last := s.lastCreated[req.Environment]; last > m.Release {
		s.violate("inv3: release #%d deployed to %s after release #%d was", m.Release, req.Environment, last)
	}
	s.lastCreated[req.Environment] = max(s.lastCreated[req.Environment], m.Release)
	g.mu.Unlock()

	id, _, err := g.fakeGitHub.CreateDeployment(ctx, r, req)
	if err != nil {
		return id, time.Time{}, err
	}
	at := s.now()
	s.created[id] = at
	s.logf("  GitHub: deployment %d created: release #%d %s → %s", id, m.Release, sh(req.SHA), req.Environment)
	// GitHub sends a deployment event, and runs the deploy workflow.
	info := s.info(id)
	s.queue(fmt.Sprintf("deployment event %d", id), func() error {
		return s.h.engine.HandleDeployment(context.Background(), pipeline.NewDeployment{Repo: shop, Deployment: info})
	})
	s.runs[id] = &runModel{id: 700000 + id, attempt: 1}
	if g.createThenFail {
		g.createThenFail = false
		return 0, time.Time{}, errors.New("timeout awaiting response headers")
	}
	return id, at, nil
}

type runModel struct {
	id        int64
	attempt   int
	started   bool // in_progress posted in this attempt
	completed bool // workflow_run completed sent for this attempt
	rejected  bool
}

type delivery struct {
	name string
	fn   func() error
}

type scenario struct {
	t           *testing.T
	h           *harness
	gh          *treeGitHub
	rng         *rand.Rand
	adversarial bool
	verbose     bool
	contexts    bool              // the configuration requires the "build" context
	build       map[string]string // commit → state of its build context

	clock  time.Time
	parent map[string]string // commit → parent ("" for the root)
	ctime  map[string]time.Time
	nsha   int
	head   string
	npush  int
	nrule  int

	pending, delivered []delivery
	seen               map[int64]bool // GitHub status IDs whose webhook is queued
	runs               map[int64]*runModel
	created            map[int64]time.Time
	lastCreated        map[string]int64

	prevCounters map[string]float64
	prevHist     map[string]uint64

	log        []string
	violations []string
}

func (s *scenario) now() time.Time {
	s.clock = s.clock.Add(time.Millisecond)
	return s.clock
}

func (s *scenario) logf(format string, args ...any) {
	s.log = append(s.log, fmt.Sprintf(format, args...))
}

func (s *scenario) violate(format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	s.violations = append(s.violations, msg)
	s.logf("!! VIOLATION %s", msg)
}

func (s *scenario) ancestry(sha string) []string { return ancestryIn(s.parent, sha) }

func (s *scenario) commit(sha string) pipeline.Commit {
	return pipeline.Commit{SHA: sha, Title: "commit " + sh(sha), Author: "dev", Timestamp: s.ctime[sha]}
}

func (s *scenario) newCommit(parent string) string {
	s.nsha++
	sha := strings.Repeat(fmt.Sprintf("c%03x", s.nsha), 10)
	s.parent[sha] = parent
	s.ctime[sha] = s.clock.Add(-time.Duration(1+s.rng.IntN(120)) * time.Minute)
	return sha
}

func (s *scenario) queue(name string, fn func() error) {
	s.pending = append(s.pending, delivery{name, fn})
}

func (s *scenario) info(id int64) pipeline.DeploymentInfo {
	d := s.gh.byIDLocked(id)
	return pipeline.DeploymentInfo{GitHubID: d.id, SHA: d.sha, Environment: d.env, Payload: mustJSON(s.t, d.payload),
		Creator: "lastmile[bot]", CreatedAt: s.created[id]}
}

func (f *fakeGitHub) byIDLocked(id int64) *fakeDeployment {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.byID(id)
}

// push moves main to after (a new commit, a rollback, a force push
// forward) and queues its webhook.
func (s *scenario) push(after string, forced bool, commits []pipeline.Commit) {
	before := s.head
	s.head = after
	s.npush++
	p := pipeline.Push{Repo: shop, DeliveryID: fmt.Sprintf("push-%d", s.npush), Ref: "refs/heads/main", Before: before, After: after,
		Forced: forced, DefaultBranch: "main", Pusher: "octocat", PushedAt: s.clock, Commits: commits}
	guessed := s.rng.IntN(8) == 0
	p.Truncated = s.rng.IntN(10) == 0
	name := fmt.Sprintf("push-%d %s→%s forced=%v guessed=%v truncated=%v", s.npush, sh(before), sh(after), forced, guessed, p.Truncated)
	s.logf("push-%d: main %s → %s (forced %v, no pushed_at %v, truncated %v), %d commits", s.npush, sh(before), sh(after), forced, guessed, p.Truncated, len(commits))
	var received time.Time
	s.queue(name, func() error {
		q := p
		if guessed { // no pushed_at in the payload: lastmile knows when it received it (first)
			if received.IsZero() {
				received = s.clock
			}
			q.PushedAt, q.PushedAtGuessed = received, true
		}
		return s.h.engine.HandlePush(context.Background(), q)
	})
}

func latestState(d *fakeDeployment) pipeline.DeploymentState {
	if len(d.statuses) == 0 {
		return ""
	}
	return d.statuses[len(d.statuses)-1].State
}

// deployState is what a deploy that has begun goes by: the latest status
// but an inactive lastmile wrote, which does not stop it (the Action checks
// for one only before it starts).
func deployState(d *fakeDeployment) pipeline.DeploymentState {
	for _, st := range slices.Backward(d.statuses) {
		if st.State != pipeline.DeploymentInactive || st.Creator != lastmileBot {
			return st.State
		}
	}
	return ""
}

// post has the deploy workflow (or GitHub) post a status and queues its
// webhook.
func (s *scenario) post(d *fakeDeployment, state pipeline.DeploymentState, who string) {
	run := s.runs[d.id]
	s.gh.mu.Lock()
	st := s.gh.post(d.id, state, fmt.Sprintf("https://github.com/acme/shop/actions/runs/%d", run.id))
	st.CreatedAt = s.now()
	st.Creator = actionsBot // the Action's GITHUB_TOKEN, or Actions itself: who only names it in the log
	d.statuses[len(d.statuses)-1] = st
	s.gh.mu.Unlock()
	s.seen[st.GitHubID] = true
	s.logf("  %s posts %s on %d (release #%d %s→%s), status %d", who, state, d.id, d.payload.Lastmile.Release, sh(d.sha), d.env, st.GitHubID)
	s.queueStatus(d, st)
}

func (s *scenario) queueStatus(d *fakeDeployment, st pipeline.StatusInfo) {
	info := s.info(d.id)
	s.queue(fmt.Sprintf("status %d %s on %d", st.GitHubID, st.State, d.id), func() error {
		return s.h.engine.HandleDeploymentStatus(context.Background(), pipeline.NewDeploymentStatus{Repo: shop, Deployment: info, Status: st})
	})
}

// collect queues the webhooks of statuses someone else (lastmile) wrote.
func (s *scenario) collect() {
	s.gh.mu.Lock()
	var fresh []struct {
		d  *fakeDeployment
		st pipeline.StatusInfo
	}
	for _, d := range s.gh.deps {
		for _, st := range d.statuses {
			if !s.seen[st.GitHubID] {
				s.seen[st.GitHubID] = true
				fresh = append(fresh, struct {
					d  *fakeDeployment
					st pipeline.StatusInfo
				}{d, st})
			}
		}
	}
	s.gh.mu.Unlock()
	for _, f := range fresh {
		s.logf("  lastmile wrote %s on %d (release #%d → %s)", f.st.State, f.d.id, f.d.payload.Lastmile.Release, f.d.env)
		if run := s.runs[f.d.id]; run != nil && (f.st.State == pipeline.DeploymentFailure || f.st.State == pipeline.DeploymentError) && !run.completed {
			s.violate("inv7: lastmile wrote %s on deployment %d (release #%d → %s), whose run %d has not ended",
				f.st.State, f.d.id, f.d.payload.Lastmile.Release, f.d.env, run.id)
		}
		s.queueStatus(f.d, f.st)
	}
}

func (s *scenario) deps() []*fakeDeployment {
	s.gh.mu.Lock()
	defer s.gh.mu.Unlock()
	return slices.Clone(s.gh.deps)
}

func (s *scenario) pickDeployment() *fakeDeployment {
	deps := s.deps()
	if len(deps) == 0 {
		return nil
	}
	if s.rng.IntN(10) < 6 { // the newest in some environment
		return deps[len(deps)-1-s.rng.IntN(min(3, len(deps)))]
	}
	return deps[s.rng.IntN(len(deps))]
}

// newerSuccess is the Action's check before a re-run deploys again.
func (s *scenario) newerSuccess(d *fakeDeployment) bool {
	for _, o := range s.deps() {
		if o.env == d.env && o.id > d.id && latestState(o) == pipeline.DeploymentSuccess {
			return true
		}
	}
	return false
}

func (s *scenario) runCompleted(d *fakeDeployment, conclusion string) {
	run := s.runs[d.id]
	run.completed = true
	event := "deployment"
	if d.payload.Lastmile.Release == 0 {
		event = "push" // a job's own deployment, in a workflow on push
	}
	wr := pipeline.WorkflowRun{Repo: shop, Action: "completed", RunID: run.id, Name: "Deploy", Event: event, HeadSHA: d.sha,
		Status: "completed", Conclusion: conclusion, URL: fmt.Sprintf("https://github.com/acme/shop/actions/runs/%d", run.id),
		Attempt: run.attempt, CreatedAt: s.created[d.id], UpdatedAt: s.now()}
	s.logf("  run %d (deployment %d, attempt %d) completed: %s", run.id, d.id, run.attempt, conclusion)
	s.queue(fmt.Sprintf("run %d completed %s", run.id, conclusion), func() error {
		return s.h.engine.HandleWorkflowRun(context.Background(), wr)
	})
}

func (s *scenario) runInProgress(d *fakeDeployment) {
	if s.rng.IntN(2) == 0 {
		return
	}
	run := s.runs[d.id]
	wr := pipeline.WorkflowRun{Repo: shop, Action: "in_progress", RunID: run.id, Name: "Deploy", Event: "deployment", HeadSHA: d.sha,
		Status: "in_progress", URL: fmt.Sprintf("https://github.com/acme/shop/actions/runs/%d", run.id),
		Attempt: run.attempt, CreatedAt: s.created[d.id], UpdatedAt: s.now()}
	s.queue(fmt.Sprintf("run %d in_progress (attempt %d)", run.id, run.attempt), func() error {
		return s.h.engine.HandleWorkflowRun(context.Background(), wr)
	})
}

func (s *scenario) review(d *fakeDeployment, action pipeline.ReviewAction) {
	run := s.runs[d.id]
	s.npush++
	rv := pipeline.Review{Repo: shop, DeliveryID: fmt.Sprintf("review-%d", s.npush), Action: action, Environments: []string{d.env},
		RunID: run.id, HeadSHA: d.sha, Actor: "bob", Comment: "no", Since: s.created[d.id], At: s.now()}
	s.logf("  review %s of run %d (deployment %d → %s)", action, run.id, d.id, d.env)
	s.queue(fmt.Sprintf("review %s run %d", action, run.id), func() error {
		return s.h.engine.HandleReview(context.Background(), rv)
	})
}

// act makes something happen on GitHub (not yet delivered).
func (s *scenario) act() {
	r := s.rng.IntN(100)
	switch {
	case r < 14: // a push of new commits
		n := 1 + s.rng.IntN(2)
		var commits []pipeline.Commit
		sha := s.head
		for range n {
			sha = s.newCommit(sha)
			commits = append(commits, s.commit(sha))
		}
		s.push(sha, false, commits)
	case r < 22: // rollback: force push back to an ancestor
		anc := s.ancestry(s.head)
		if len(anc) < 2 {
			return
		}
		s.push(anc[1+s.rng.IntN(len(anc)-1)], true, nil)
	case r < 24: // force push forward, to a commit the branch left behind
		var cands []string
		for sha := range s.parent {
			if sha != s.head && !slices.Contains(s.ancestry(s.head), sha) {
				cands = append(cands, sha)
			}
		}
		slices.Sort(cands)
		if len(cands) == 0 {
			return
		}
		to := cands[s.rng.IntN(len(cands))]
		cmp, _ := s.gh.Compare(context.Background(), shop, s.head, to)
		s.push(to, true, cmp.Commits)
	case r < 26: // a force push to a new commit on top of an ancestor (history rewritten)
		anc := s.ancestry(s.head)
		base := anc[s.rng.IntN(len(anc))]
		sha := s.newCommit(base)
		s.push(sha, true, []pipeline.Commit{s.commit(sha)})
	case r < 28: // GitHub will time out on the next creation, after creating it
		s.gh.createThenFail = true
		s.logf("  GitHub: the next deployment creation times out after creating it")
	case r < 29:
		s.gh.failNextCreate = true
		s.logf("  GitHub: the next deployment creation fails (502)")
	case r < 33 && s.contexts: // a commit's build finishes
		var cands []string
		for sha := range s.parent {
			if s.contextState(sha) == "pending" {
				cands = append(cands, sha)
			}
		}
		slices.Sort(cands)
		if len(cands) == 0 {
			return
		}
		sha := cands[s.rng.IntN(len(cands))]
		st := "success"
		if s.rng.IntN(6) == 0 {
			st = "failure"
		}
		s.setBuild(sha, st)
	case r < 36: // a workflow job asks lastmile, as a protection rule
		s.protectionRule()
	case r < 38: // someone else's deployment (a job's own)
		s.external()
	case r < 41: // a notifier workflow on the deployment event ends
		s.notifier()
	default:
		for range 4 { // until something happens
			d := s.pickDeployment()
			if d == nil {
				return
			}
			n := len(s.pending)
			if s.adversarial {
				s.actAdversarial(d)
			} else {
				s.actRealistic(d)
			}
			if len(s.pending) > n {
				return
			}
		}
	}
}

func (s *scenario) actAdversarial(d *fakeDeployment) {
	states := []pipeline.DeploymentState{pipeline.DeploymentQueued, pipeline.DeploymentInProgress, pipeline.DeploymentSuccess,
		pipeline.DeploymentFailure, pipeline.DeploymentError}
	switch r := s.rng.IntN(100); {
	case r < 75:
		s.post(d, states[s.rng.IntN(len(states))], "action")
	case r < 82:
		s.review(d, pipeline.ReviewRejected)
	case r < 85:
		s.review(d, pipeline.ReviewRequested)
		s.review(d, pipeline.ReviewApproved)
	default:
		s.runCompleted(d, []string{"success", "failure", "cancelled", "timed_out"}[s.rng.IntN(4)])
	}
}

// actRealistic does what the deploy workflow (register job, gated deploy
// job running the lastmile Action), a reviewer, or GitHub would next.
func (s *scenario) actRealistic(d *fakeDeployment) {
	run := s.runs[d.id]
	latest := latestState(d)
	r := s.rng.IntN(100)
	switch {
	case r < 15 && latest == "" && !run.completed: // register job
		s.post(d, pipeline.DeploymentQueued, "action")
	case r < 22 && !run.started && !run.completed:
		// The deploy job waits for a reviewer, who rejects it: the run fails.
		s.review(d, pipeline.ReviewRejected)
		run.rejected = true
		s.runCompleted(d, "failure")
	case r < 50 && !run.started && !run.completed:
		// The deploy job starts: the Action reads the latest status first.
		if latest == pipeline.DeploymentInactive || latest.Terminal() {
			s.logf("  Action skips deployment %d (%s)", d.id, latest)
			run.completed = true
			s.runCompleted(d, "success")
			return
		}
		if s.rng.IntN(4) == 0 {
			s.review(d, pipeline.ReviewRequested)
			s.review(d, pipeline.ReviewApproved)
		}
		run.started = true
		s.runInProgress(d)
		s.post(d, pipeline.DeploymentInProgress, "action")
	case r < 75 && run.started && deployState(d) == pipeline.DeploymentInProgress:
		// The deploy ends (or is cancelled), and so does its run.
		switch x := s.rng.IntN(10); {
		case x < 7:
			s.post(d, pipeline.DeploymentSuccess, "action")
			if s.rng.IntN(2) == 0 {
				s.autoInactive(d)
			}
			if s.rng.IntN(3) > 0 {
				s.runCompleted(d, "success")
			}
		case x < 9:
			s.post(d, pipeline.DeploymentFailure, "action")
			if s.rng.IntN(3) > 0 {
				s.runCompleted(d, "failure")
			}
		default:
			s.post(d, pipeline.DeploymentError, "action")
			s.runCompleted(d, "cancelled")
		}
	case r < 80 && run.started && deployState(d) == pipeline.DeploymentInProgress && !run.completed:
		// The runner is lost: the run ends without a final status.
		s.runCompleted(d, []string{"failure", "cancelled", "timed_out"}[s.rng.IntN(3)])
	case r < 90 && (latest == pipeline.DeploymentFailure || latest == pipeline.DeploymentError) && run.completed:
		// Someone re-runs the failed jobs: attempt 2 deploys again unless
		// a newer deployment to the environment has succeeded since.
		run.attempt++
		run.started, run.completed, run.rejected = false, false, false
		s.logf("  re-run of run %d (deployment %d), attempt %d", run.id, d.id, run.attempt)
		if s.newerSuccess(d) {
			s.logf("  Action skips the re-run: a newer deployment to %s succeeded", d.env)
			s.runCompleted(d, "success")
			return
		}
		run.started = true
		s.runInProgress(d)
		s.post(d, pipeline.DeploymentInProgress, "action")
	case r < 95 && !run.completed && !run.started && latest != pipeline.DeploymentInProgress:
		// Cancelled while it waited (concurrency group, or by hand).
		s.runCompleted(d, "cancelled")
	}
}

func (s *scenario) setBuild(sha, st string) {
	s.build[sha] = st
	s.logf("  build of %s: %s", sh(sha), st)
	ev := pipeline.ContextsChanged{Repo: shop, SHA: sha, Context: "build", State: st}
	s.queue(fmt.Sprintf("status build %s %s", st, sh(sha)), func() error {
		return s.h.engine.HandleContexts(context.Background(), ev)
	})
}

func (s *scenario) commits() []string {
	var all []string
	for sha := range s.parent {
		all = append(all, sha)
	}
	slices.Sort(all)
	return all
}

func (s *scenario) protectionRule() {
	all := s.commits()
	sha := all[s.rng.IntN(len(all))]
	envs := []string{"test", "staging", "production"}
	env := envs[s.rng.IntN(3)]
	s.nrule++
	req := pipeline.ProtectionRuleRequest{Repo: shop, DeliveryID: fmt.Sprintf("rule-%d", s.nrule), Environment: env, SHA: sha,
		Ref: "main", Event: "push", RunID: 900000 + int64(s.nrule)}
	s.logf("  protection rule asked: %s → %s (run %d)", sh(sha), env, req.RunID)
	s.queue(fmt.Sprintf("protection rule %s→%s", sh(sha), env), func() error {
		err := s.h.engine.HandleProtectionRule(context.Background(), req)
		if err != nil {
			return err
		}
		dec, derr := s.h.db.ProtectionDecision(context.Background(), req)
		if derr != nil {
			s.violate("inv10: no decision recorded for %s: %v", req.DeliveryID, derr)
			return nil
		}
		s.logf("  decision: %s (%s)", dec.State, dec.Comment)
		if dec.State == "approved" && env != "test" {
			prev := envs[slices.Index(envs, env)-1]
			ok := false
			for _, d := range s.deps() {
				if d.sha == sha && d.env == prev {
					for _, st := range d.statuses {
						ok = ok || st.State == pipeline.DeploymentSuccess
					}
				}
			}
			if !ok {
				s.violate("inv10: protection rule approved %s to %s, which never succeeded in %s", sh(sha), env, prev)
			}
		}
		return nil
	})
}

// external is a deployment lastmile did not create, with GitHub's
// statuses.
func (s *scenario) external() {
	all := s.commits()
	sha := all[s.rng.IntN(len(all))]
	env := []string{"test", "staging", "production"}[s.rng.IntN(3)]
	s.gh.mu.Lock()
	s.gh.lastID++
	d := &fakeDeployment{id: 1000 + s.gh.lastID, sha: sha, env: env}
	s.gh.deps = append(s.gh.deps, d)
	s.gh.mu.Unlock()
	s.created[d.id] = s.now()
	s.runs[d.id] = &runModel{id: 800000 + d.id, attempt: 1}
	info := s.info(d.id)
	info.Creator = "github-actions[bot]"
	info.WorkflowRunID = s.runs[d.id].id
	s.logf("  external deployment %d: %s → %s", d.id, sh(sha), env)
	// Its workflow (on push) was seen to start.
	if err := s.h.engine.HandleWorkflowRun(context.Background(), pipeline.WorkflowRun{Repo: shop, Action: "in_progress", RunID: s.runs[d.id].id,
		Name: "CI", Event: "push", HeadSHA: sha, Status: "in_progress", Attempt: 1, CreatedAt: s.created[d.id], UpdatedAt: s.now()}); err != nil {
		s.violate("inv6: workflow_run in_progress: %v", err)
	}
	s.queue(fmt.Sprintf("deployment event %d (external)", d.id), func() error {
		return s.h.engine.HandleDeployment(context.Background(), pipeline.NewDeployment{Repo: shop, Deployment: info})
	})
	s.post(d, pipeline.DeploymentInProgress, "github")
	s.post(d, []pipeline.DeploymentState{pipeline.DeploymentSuccess, pipeline.DeploymentFailure}[s.rng.IntN(2)], "github")
}

// notifier: another workflow on the deployment event, triggered by a
// deployment of lastmile's, ends. It fails only once that deployment has
// finished (otherwise lastmile cannot tell it from the deploy run, a known
// limit covered by TestFailingNotifierWhileTheDeployRunStarts).
func (s *scenario) notifier() {
	d := s.pickDeployment()
	if d == nil || d.payload.Lastmile.Release == 0 {
		return
	}
	conclusion := "success"
	if latestState(d).Terminal() && s.rng.IntN(2) == 0 {
		conclusion = "failure"
	}
	s.nrule++
	id := 600000 + int64(s.nrule)
	wr := pipeline.WorkflowRun{Repo: shop, Action: "completed", RunID: id, Name: "Notify", Event: "deployment", HeadSHA: d.sha,
		Status: "completed", Conclusion: conclusion, URL: fmt.Sprintf("https://github.com/acme/shop/actions/runs/%d", id),
		Attempt: 1, CreatedAt: s.created[d.id], UpdatedAt: s.now()}
	s.logf("  notifier run %d of deployment %d (%s → %s) completed: %s", id, d.id, sh(d.sha), d.env, conclusion)
	s.queue(fmt.Sprintf("notifier run %d completed %s", id, conclusion), func() error {
		return s.h.engine.HandleWorkflowRun(context.Background(), wr)
	})
}

// autoInactive is GitHub marking the earlier successful deployments of a
// non-production environment inactive after a success.
func (s *scenario) autoInactive(d *fakeDeployment) {
	if d.env == "production" {
		return
	}
	for _, o := range s.deps() {
		if o.env == d.env && o.id < d.id && latestState(o) == pipeline.DeploymentSuccess {
			s.post(o, pipeline.DeploymentInactive, "github")
		}
	}
}

// deliver hands lastmile one webhook: the oldest, one out of order, or one
// again.
func (s *scenario) deliver() {
	var dl delivery
	switch r := s.rng.IntN(100); {
	case r < 8 && len(s.delivered) > 0:
		dl = s.delivered[s.rng.IntN(len(s.delivered))]
		s.logf("deliver again: %s", dl.name)
	case len(s.pending) == 0:
		return
	case r < 65:
		dl, s.pending = s.pending[0], s.pending[1:]
		s.logf("deliver: %s", dl.name)
	default:
		i := s.rng.IntN(len(s.pending))
		dl = s.pending[i]
		s.pending = slices.Delete(s.pending, i, i+1)
		s.logf("deliver out of order: %s", dl.name)
	}
	s.handle(dl)
}

// queueSweep queues the sweep's look at the work owed to GitHub that no
// delivery sees to (a dead delivery's), as a delivery that comes again
// while something is owed.
func (s *scenario) queueSweep() {
	s.queue("sweep: advance owing", func() error {
		ctx := context.Background()
		if _, err := s.h.engine.AdvanceOwing(ctx); err != nil {
			return err
		}
		owing, err := s.h.db.Owing(ctx)
		if err != nil {
			return err
		}
		if len(owing) > 0 {
			return &pipeline.LookAgain{Reason: "work still owed (the sweep paced)"}
		}
		return nil
	})
}

// run handles the delivery, a panic of its handler returned as an error.
func (dl delivery) run() (err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("panic: %v", p)
		}
	}()
	return dl.fn()
}

func (s *scenario) handle(dl delivery) {
	err := dl.run()
	var ignored *pipeline.Ignored
	var again *pipeline.LookAgain
	switch {
	case err == nil:
		s.delivered = append(s.delivered, dl)
	case errors.As(err, &ignored):
		s.logf("  ignored: %s", ignored.Reason)
		s.delivered = append(s.delivered, dl)
	case errors.As(err, &again):
		s.logf("  look again: %s", again.Reason)
		s.pending = append(s.pending, dl)
	case (strings.Contains(err.Error(), "502 Bad Gateway") || strings.Contains(err.Error(), "timeout awaiting")) &&
		s.rng.IntN(4) == 0 && (strings.HasPrefix(dl.name, "push") || strings.HasPrefix(dl.name, "status ")):
		// The delivery goes dead (GitHub failed it attempt after attempt):
		// what it recorded as owed is left to the sweep (AdvanceOwing).
		s.logf("  failed (GitHub error), dead: %v", err)
		s.delivered = append(s.delivered, dl)
		s.queueSweep()
	case strings.Contains(err.Error(), "502 Bad Gateway") || strings.Contains(err.Error(), "timeout awaiting"):
		s.logf("  failed (GitHub error, retried later): %v", err)
		s.pending = append(s.pending, dl)
	default:
		s.violate("inv6: %s returned %v", dl.name, err)
		s.delivered = append(s.delivered, dl)
	}
	s.collect()
}

// check verifies the invariants that can be read after a step.
func (s *scenario) check() {
	ctx := context.Background()
	deps := s.deps()
	// 1. One lastmile deployment per release and environment.
	type key struct {
		rel int64
		idx int
	}
	byKey := map[key]int{}
	for _, d := range deps {
		if d.payload.Lastmile.Release != 0 {
			byKey[key{d.payload.Lastmile.Release, d.payload.Lastmile.Index}]++
		}
	}
	for k, n := range byKey {
		if n > 1 {
			s.violate("inv1: %d deployments of release #%d at stage %d", n, k.rel, k.idx)
		}
	}
	// 8. A lastmile deployment is linked to its own workflow run only.
	for _, d := range deps {
		if d.payload.Lastmile.Release == 0 || s.runs[d.id] == nil {
			continue
		}
		ld, err := s.h.db.Deployment(ctx, d.id)
		if err != nil {
			continue // not recorded yet (creation answer lost)
		}
		if ld.RunID != 0 && ld.RunID != s.runs[d.id].id {
			s.violate("inv8: deployment %d (release #%d → %s) is linked to run %d, its run is %d", d.id, d.payload.Lastmile.Release, d.env, ld.RunID, s.runs[d.id].id)
		}
	}
	// 4. Persistent counters and histogram counts never decrease.
	snap, err := s.h.db.MetricsSnapshot(ctx)
	if err != nil {
		s.t.Fatal(err)
	}
	counters := map[string]float64{}
	for _, series := range snap.Counters[storage.MetricDeployments] {
		counters[strings.Join(series.Labels, "/")] += series.Value
	}
	hist := map[string]uint64{}
	for name, list := range snap.Histograms {
		for _, series := range list {
			hist[name+"/"+strings.Join(series.Labels, "/")] = series.Count
		}
	}
	for k, v := range s.prevCounters {
		if counters[k] < v {
			s.violate("inv4: counter %s went from %v to %v", k, v, counters[k])
		}
	}
	for k, v := range s.prevHist {
		if hist[k] < v {
			s.violate("inv4: histogram %s count went from %v to %v", k, v, hist[k])
		}
	}
	s.prevCounters, s.prevHist = counters, hist
	// 5. Lead time at most once per commit and environment; time to
	// restore at most once per failure; each deployment counted once.
	commits := len(s.parent)
	fails, lastmileDeps, succeeded, failedDeps := map[string]int{}, map[string]int{}, map[string]int{}, map[string]int{}
	for _, d := range deps {
		if d.payload.Lastmile.Release == 0 {
			// A workflow's own deployment (its run on push) counts as
			// lastmile's do, where the ledger says it does.
			rec, err := s.h.db.Deployment(context.Background(), d.id)
			if err != nil || !rec.Counts() {
				continue
			}
		}
		lastmileDeps[d.env]++
		ok, failed := false, false
		for _, st := range d.statuses {
			if st.State == pipeline.DeploymentFailure || st.State == pipeline.DeploymentError {
				fails[d.env]++
				failed = true
			}
			ok = ok || st.State == pipeline.DeploymentSuccess
		}
		if ok {
			succeeded[d.env]++
		}
		if failed {
			failedDeps[d.env]++
		}
	}
	for _, env := range []string{"test", "staging", "production"} {
		if n := hist[metrics.LeadTime+"/acme/shop/"+env]; n > uint64(commits) {
			s.violate("inv5: %d lead times observed in %s, only %d commits exist", n, env, commits)
		}
		if n := hist[metrics.TimeToRestore+"/acme/shop/"+env]; n > uint64(fails[env]) {
			s.violate("inv5: %d times to restore observed in %s, only %d failures", n, env, fails[env])
		}
		// A deployment is counted at most once as a success and once as
		// a failure or error; its duration once.
		success := counters["acme/shop/"+env+"/success"]
		failed := counters["acme/shop/"+env+"/failure"] + counters["acme/shop/"+env+"/error"]
		if failed > float64(failedDeps[env]) {
			s.violate("inv5b: %v failed deployments counted in %s, %d deployments failed there", failed, env, failedDeps[env])
		}
		if success > float64(succeeded[env]) {
			s.violate("inv5b: %v successes counted in %s, %d deployments succeeded there", success, env, succeeded[env])
		}
		if n := float64(hist[metrics.DeploymentDuration+"/acme/shop/"+env]); n > float64(lastmileDeps[env]) || n < max(success, failed) || n > success+failed {
			s.violate("inv5b: %v durations observed in %s, %v successes and %v failures counted, %d deployments",
				n, env, success, failed, lastmileDeps[env])
		}
	}
}

func runScenario(t *testing.T, seed uint64, steps int, adversarial, verbose bool) (violations, log []string) {
	h := newHarness(t)
	s := &scenario{t: t, h: h, rng: rand.New(rand.NewPCG(seed, 0x5eed)), adversarial: adversarial, verbose: verbose,
		clock: time.Date(2026, 3, 2, 9, 0, 0, 0, time.UTC), parent: map[string]string{}, ctime: map[string]time.Time{}, seen: map[int64]bool{},
		runs: map[int64]*runModel{}, created: map[int64]time.Time{}, lastCreated: map[string]int64{}, build: map[string]string{}}
	if s.rng.IntN(3) == 0 {
		s.contexts = true
		h.gh.config = "required_contexts: [build]\n" + threeEnvs
	}
	s.gh = &treeGitHub{fakeGitHub: h.gh, s: s}
	h.engine.GitHub = s.gh
	h.engine.Now = s.now
	h.db.Now = s.now
	h.gh.now = s.now // the statuses lastmile writes, on the same clock
	// The first push: a root commit and one on top.
	root := s.newCommit("")
	s.head = root
	first := s.newCommit(root)
	if s.contexts {
		s.build[first] = "success"
	}
	s.push(first, false, []pipeline.Commit{s.commit(first)})
	s.handle(s.pending[0])
	s.pending = s.pending[1:]
	s.check()
	for range steps {
		if s.rng.IntN(20) == 0 {
			s.clock = s.clock.Add(time.Duration(5+s.rng.IntN(20)) * time.Minute)
		} else {
			s.clock = s.clock.Add(time.Duration(s.rng.IntN(90)) * time.Second)
		}
		if s.rng.IntN(100) < 45 {
			s.act()
		} else {
			s.deliver()
		}
		s.check()
		if len(s.violations) > 0 {
			break
		}
	}
	// Drain: everything still pending reaches lastmile (in order).
	s.drain()
	if len(s.violations) == 0 && !adversarial {
		s.resultsOwed()
	}
	if len(s.violations) == 0 && !adversarial {
		s.liveness()
	}
	return s.violations, s.log
}

func (s *scenario) drain() {
	for i := 0; len(s.pending) > 0 && len(s.violations) == 0 && i < 200; i++ {
		s.clock = s.clock.Add(10 * time.Second)
		dl := s.pending[0]
		s.pending = s.pending[1:]
		s.logf("drain: %s", dl.name)
		s.handle(dl)
		s.check()
	}
}

// resultsOwed (invariant 11): every run ends (GitHub cancels one that
// waits too long); with everything delivered, a lastmile deployment whose
// run ended without reporting a result has one, written by lastmile.
func (s *scenario) resultsOwed() {
	for _, d := range s.deps() {
		if run := s.runs[d.id]; run != nil && !run.completed && d.payload.Lastmile.Release != 0 {
			switch latestState(d) {
			case pipeline.DeploymentSuccess, pipeline.DeploymentInactive:
				s.runCompleted(d, "success")
			case pipeline.DeploymentFailure, pipeline.DeploymentError:
				s.runCompleted(d, "failure")
			default:
				s.runCompleted(d, "cancelled")
			}
		}
	}
	s.drain()
	for _, d := range s.deps() {
		run := s.runs[d.id]
		if run == nil || !run.completed || d.payload.Lastmile.Release == 0 {
			continue
		}
		if st := latestState(d); !st.Terminal() {
			s.violate("inv11: run %d of deployment %d (%s) ended, and the deployment is still %q on GitHub", run.id, d.id, d.env, st)
		}
	}
}

// liveness: with everything delivered, the latest release, deployed with
// success everywhere, completes.
func (s *scenario) liveness() {
	ctx := context.Background()
	s.logf("liveness:")
	if s.contexts && s.contextState(s.head) != "success" {
		// Still running, or failed and re-run green: the release that
		// waited for it goes on.
		s.setBuild(s.head, "success")
		s.drain()
	}
	for range 6 {
		rel, err := s.h.db.LatestRelease(ctx, shop.ID)
		if err != nil {
			return
		}
		if rel.SHA != s.head {
			s.violate("inv9: the latest release #%d is of %s, main is at %s", rel.ID, sh(rel.SHA), sh(s.head))
			return
		}
		if rel.State != pipeline.ReleaseActive {
			if rel.State == pipeline.ReleaseStopped && rel.StopKind == pipeline.StopSuperseded {
				s.violate("inv9: the latest release #%d is superseded: %s", rel.ID, rel.StopReason)
			}
			s.logf("  latest release #%d: %s %s %s", rel.ID, rel.State, rel.StopKind, rel.StopReason)
			if rel.State == pipeline.ReleaseCompleted {
				s.reached()
			}
			return
		}
		var d *fakeDeployment
		for _, o := range s.deps() {
			if o.payload.Lastmile.Release == rel.ID {
				d = o
			}
		}
		if d == nil {
			s.violate("inv9: the latest release #%d is active with no deployment", rel.ID)
			return
		}
		latest := latestState(d)
		switch {
		case latest == pipeline.DeploymentSuccess:
		case latest.Terminal():
			run := s.runs[d.id]
			run.attempt++
			run.started, run.completed = true, false
			s.post(d, pipeline.DeploymentInProgress, "action")
			s.post(d, pipeline.DeploymentSuccess, "action")
		default:
			s.runs[d.id].started = true
			s.post(d, pipeline.DeploymentInProgress, "action")
			s.post(d, pipeline.DeploymentSuccess, "action")
		}
		s.runCompleted(d, "success")
		s.drain()
	}
	rel, _ := s.h.db.LatestRelease(ctx, shop.ID)
	if rel.State == pipeline.ReleaseActive {
		s.violate("inv9: the latest release #%d is still active after succeeding everywhere", rel.ID)
	}
	if rel.State == pipeline.ReleaseCompleted {
		s.reached()
	}
}

// reached (invariant 12): once main's release has succeeded everywhere,
// every commit of main's history reached every environment, as the lead
// time counts it (environment_commits): whatever rollbacks, force pushes
// and rewrites came before — the root aside, the history before the first
// release.
func (s *scenario) reached() {
	db, err := sql.Open("sqlite", "file:"+s.h.db.Path()+"?mode=ro")
	if err != nil {
		s.t.Fatal(err)
	}
	defer db.Close()
	history := s.ancestry(s.head)
	history = history[:len(history)-1]
	for _, env := range []string{"test", "staging", "production"} {
		rows, err := db.Query(`SELECT sha FROM environment_commits WHERE repository_id = ? AND environment = ?`, shop.ID, env)
		if err != nil {
			s.t.Fatal(err)
		}
		got := map[string]bool{}
		for rows.Next() {
			var sha string
			if err := rows.Scan(&sha); err != nil {
				s.t.Fatal(err)
			}
			got[sha] = true
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			s.t.Fatal(err)
		}
		s.logf("  %s: %d commits reached it for lead time; main's history holds %d", env, len(got), len(history))
		for _, sha := range history {
			if !got[sha] {
				s.violate("inv12: %s is in main's history (at %s), which succeeded in %s, but never reached it for lead time", sh(sha), sh(s.head), env)
				return
			}
		}
	}
}

func TestRandomScenarios(t *testing.T) {
	// 200 seeds take ≈15 s; under the race detector (CI) ten times that,
	// so fewer there.
	defSeeds := 200
	if raceEnabled {
		defSeeds = 20
	}
	seeds, steps := envInt("LASTMILE_FUZZ_SEEDS", defSeeds), envInt("LASTMILE_FUZZ_STEPS", 40)
	first := envInt("LASTMILE_FUZZ_FIRST", 1)
	mode := os.Getenv("LASTMILE_FUZZ_MODE")
	verbose := os.Getenv("LASTMILE_FUZZ_VERBOSE") != ""
	if one := envInt("LASTMILE_FUZZ_SEED", 0); one != 0 {
		first, seeds = one, 1
	}
	modes := []bool{false}
	switch mode {
	case "adversarial":
		modes = []bool{true}
	case "both":
		modes = []bool{false, true}
	}
	failed := map[string]int{}
	stats := map[string]int{}
	for seed := first; seed < first+seeds; seed++ {
		for _, adv := range modes {
			name := fmt.Sprintf("seed%d", seed)
			if adv {
				name += "-adv"
			}
			var violations, log []string
			t.Run(name, func(t *testing.T) {
				violations, log = runScenario(t, uint64(seed), steps, adv, verbose)
			})
			for _, line := range log {
				for _, env := range []string{"test", "staging", "production"} {
					if strings.Contains(line, "created: release") && strings.HasSuffix(line, "→ "+env) {
						stats["created "+env]++
					}
				}
				for _, w := range []string{"ignored", "look again", "lastmile wrote", "re-run", "deliver again", "out of order", "review rejected"} {
					if strings.Contains(line, w) {
						stats[w]++
					}
				}
			}
			if verbose {
				t.Logf("%s:\n%s", name, strings.Join(log, "\n"))
			}
			if len(violations) > 0 {
				kind, _, _ := strings.Cut(violations[0], ":")
				failed[kind]++
				if failed[kind] <= 2 {
					t.Errorf("%s: %s\n%s", name, violations[0], strings.Join(log, "\n"))
				} else {
					t.Errorf("%s: %s", name, violations[0])
				}
			}
		}
	}
	t.Logf("activity: %v", stats)
	if len(failed) > 0 {
		t.Logf("violations by invariant: %v", failed)
	}
}

func envInt(name string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(name)); err == nil {
		return v
	}
	return def
}

func sh(sha string) string {
	if len(sha) > 4 {
		return sha[:4]
	}
	return sha
}

// TestRandomScenarioRegressions replays the seeds that once broke an
// invariant, with the length of run that found them: each names what it
// caught.
func TestRandomScenarioRegressions(t *testing.T) {
	for _, tc := range []struct {
		seed, steps int
		adversarial bool
		caught      string
	}{
		// A review of a rollback's run, once the rollback's deployment had
		// finished, linked the run to the superseded (inactive) deployment
		// of the same commit.
		{819, 60, false, "a run linked to a superseded deployment"},
		// An intent whose creation's answer was lost was abandoned, when a
		// newer release superseded it, without looking for it on GitHub:
		// the deployment GitHub had made ran unowned.
		{722, 60, false, "a lost creation superseded before it was looked for"},
		// A re-run's deploy, made inactive by lastmile, got an error
		// written over it when the first attempt's end was delivered
		// again.
		{6158, 60, false, "an earlier attempt's end judged over a re-run's deploy"},
		{40218, 80, false, "an earlier attempt's end judged over a re-run's deploy"},
		// A force push back to the commit of the latest release, which a
		// re-run's success had found off the branch, released nothing.
		{5786, 60, false, "a push back to a withdrawn latest release's commit"},
		// A force push's release (a rollback, a rewrite) brought its
		// environments, for lead time, only the commits it was compared
		// with the previous release for: those beneath it that had not
		// reached an environment yet never did.
		{2, 40, false, "commits beneath a force push's head left out of lead time"},
		{25, 40, false, "commits beneath a force push's head left out of lead time"},
	} {
		t.Run(fmt.Sprintf("seed%d-%dsteps", tc.seed, tc.steps), func(t *testing.T) {
			violations, log := runScenario(t, uint64(tc.seed), tc.steps, tc.adversarial, false)
			if len(violations) > 0 {
				t.Errorf("(once: %s) %s\n%s", tc.caught, violations[0], strings.Join(log, "\n"))
			}
		})
	}
}
