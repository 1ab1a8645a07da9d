package pipeline_test

// Engine tests with GitHub's deliveries in the orders GitHub does not
// promise to avoid: late, repeated, interrupted. The ledger is the real
// SQLite store; GitHub is a small fake that keeps deployments and statuses
// and knows one linear history. (The scenario tests in app/ run the whole
// service against the GitHub simulator.)

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/lastmile-app/lastmile/metrics"
	"github.com/lastmile-app/lastmile/pipeline"
	"github.com/lastmile-app/lastmile/storage"
	"github.com/lastmile-app/lastmile/storage/storagetest"
)

const threeEnvs = "environments:\n  - name: test\n  - name: staging\n  - name: production\n"

type fakeDeployment struct {
	id        int64
	sha, env  string
	payload   pipeline.DeploymentPayload
	statuses  []pipeline.StatusInfo // oldest first
	createdAt time.Time
}

type fakeGitHub struct {
	mu       sync.Mutex
	config   string
	history  []string // the pipeline branch's commits, oldest first
	head     string   // where main points ("": the newest of history)
	noConfig []string // commits without .github/lastmile.yml
	deps     []*fakeDeployment
	lastID   int64
	creates  int     // CreateDeployment calls
	failNext []error // errors for the next CreateDeployment calls
	loseNext bool    // the next CreateDeployment creates the deployment, but its answer is lost
	// enter, if set, is called as CreateDeployment starts; the function
	// it returns as it ends.
	enter  func() (leave func())
	latest int // LatestDeploymentStatus calls
	listed int // DeploymentStatuses calls
	finds  int // FindDeployment calls
	// failLists is how many DeploymentStatuses calls fail next.
	failLists int
	written   []pipeline.StatusRequest
	answers   []string // protection rule answers: "run environment state"
	// readErr, if set, is ReadFile's answer for the configuration.
	readErr error
	// commitStatuses are the commit statuses created, by commit.
	commitStatuses map[string][]pipeline.CommitStatus
	// lastComment is the comment of the last answer taken.
	lastComment string
	// onRelation, if set, runs as Relation is asked (another handler
	// acting while lastmile judges).
	onRelation func()
	// failAnswers is how many ReviewProtectionRule calls fail next (a 502:
	// GitHub did not take the answer); answerCalls counts the calls.
	failAnswers, answerCalls int
	// refuseRuns: runs whose answers GitHub refuses for good (a 404: the
	// run was deleted); waitsNot: runs that no longer wait for the rule
	// (a 422: answered already, cancelled).
	refuseRuns, waitsNot map[int64]bool
	// now, if set, is GitHub's clock (the time of deployments and
	// statuses); time.Now otherwise.
	now func() time.Time
	// logs are the job logs GitHub has, by job ID (404 for the others);
	// logAsks counts the JobLog calls.
	logs    map[int64]string
	logAsks int
	// installations is where GitHub says each installation stands (absent:
	// active; uninstalled: GitHub has none, 404); installs counts the reads.
	installations map[int64]pipeline.InstallationState
	installs      int
	// reaches is the installation that reaches each repository (absent:
	// the one the caller names; 0: none, 404).
	reaches map[int64]int64
	// runs are the workflow runs GitHub has, by ID (404 for the others);
	// runLists counts the RunsInProgress calls, and failRunLists is how
	// many of the next ones fail.
	runs         map[int64]pipeline.WorkflowRun
	runLists     int
	failRunLists int
}

// setRun makes GitHub have run, as it is now.
func (f *fakeGitHub) setRun(run pipeline.WorkflowRun) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.runs == nil {
		f.runs = map[int64]pipeline.WorkflowRun{}
	}
	f.runs[run.RunID] = run
}

// setInstallation makes GitHub say that installation id stands so.
func (f *fakeGitHub) setInstallation(id int64, state pipeline.InstallationStatus, since time.Time, by string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.installations == nil {
		f.installations = map[int64]pipeline.InstallationState{}
	}
	f.installations[id] = pipeline.InstallationState{ID: id, Account: "acme", State: state, Since: since, By: by}
}

// setReaches makes GitHub say that installation id (0: none) reaches the
// repository.
func (f *fakeGitHub) setReaches(repoID, id int64) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.reaches == nil {
		f.reaches = map[int64]int64{}
	}
	f.reaches[repoID] = id
}

func (f *fakeGitHub) Installation(_ context.Context, id int64) (pipeline.InstallationState, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.installs++
	st, ok := f.installations[id]
	switch {
	case !ok:
		return pipeline.InstallationState{ID: id, Account: "acme", State: pipeline.InstallationActive}, nil
	case st.State == pipeline.InstallationUninstalled:
		return pipeline.InstallationState{}, pipeline.ErrNotFound
	case st.State == pipeline.InstallationActive:
		st.Since, st.By = time.Time{}, "" // GitHub says nothing of an unsuspension
	}
	return st, nil
}

func (f *fakeGitHub) RepoInstallation(_ context.Context, r pipeline.Repo) (int64, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	id, ok := f.reaches[r.ID]
	if !ok {
		return r.InstallationID, nil
	}
	if id == 0 {
		return 0, pipeline.ErrNotFound
	}
	return id, nil
}

func (f *fakeGitHub) WorkflowRun(_ context.Context, r pipeline.Repo, runID int64) (pipeline.WorkflowRun, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	run, ok := f.runs[runID]
	if !ok {
		return pipeline.WorkflowRun{}, pipeline.ErrNotFound
	}
	run.Repo = r
	return run, nil
}

func (f *fakeGitHub) RunsInProgress(_ context.Context, _ pipeline.Repo, sha, event string, except int64) (int, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.runLists++
	if f.failRunLists > 0 {
		f.failRunLists--
		return 0, errors.New("502 Bad Gateway")
	}
	n := 0
	for id, run := range f.runs {
		if id != except && run.HeadSHA == sha && run.Event == event && run.Status != "completed" {
			n++
		}
	}
	return n, nil
}

func (f *fakeGitHub) time() time.Time {
	if f.now != nil {
		return f.now()
	}
	return time.Now()
}

// steppingClock returns a clock that moves one second at each reading.
func steppingClock() func() time.Time {
	var mu sync.Mutex
	t := time.Now().Add(-time.Hour).Truncate(time.Second)
	return func() time.Time {
		mu.Lock()
		defer mu.Unlock()
		t = t.Add(time.Second)
		return t
	}
}

// manualClock is a clock that starts at start (to the second) and moves
// only when wait says.
func manualClock(start time.Time) (now func() time.Time, wait func(time.Duration)) {
	var mu sync.Mutex
	clock := start.Truncate(time.Second)
	now = func() time.Time { mu.Lock(); defer mu.Unlock(); return clock }
	wait = func(d time.Duration) { mu.Lock(); clock = clock.Add(d); mu.Unlock() }
	return now, wait
}

func (f *fakeGitHub) ReadFile(_ context.Context, _ pipeline.Repo, _, sha string) ([]byte, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if slices.Contains(f.noConfig, sha) {
		return nil, pipeline.ErrNotFound
	}
	if f.readErr != nil {
		return nil, f.readErr
	}
	return []byte(f.config), nil
}

func (f *fakeGitHub) Relation(ctx context.Context, r pipeline.Repo, base, head string) (string, error) {
	f.mu.Lock()
	hook := f.onRelation
	f.mu.Unlock()
	if hook != nil {
		hook()
	}
	cmp, err := f.Compare(ctx, r, base, head)
	return cmp.Status, err
}

func (f *fakeGitHub) Compare(_ context.Context, _ pipeline.Repo, base, head string) (pipeline.Comparison, error) {
	f.mu.Lock()
	if len(head) != 40 { // a branch: the fake's one branch, main or another
		head = f.head
		if head == "" {
			head = f.history[len(f.history)-1]
		}
	}
	f.mu.Unlock()
	b, h := slices.Index(f.history, base), slices.Index(f.history, head)
	if b < 0 || h < 0 {
		return pipeline.Comparison{}, pipeline.ErrNotFound
	}
	var c pipeline.Comparison
	switch {
	case b == h:
		c.Status = "identical"
	case b < h:
		c.Status = "ahead"
		for _, sha := range f.history[b+1 : h+1] {
			c.Commits = append(c.Commits, pipeline.Commit{SHA: sha, Title: "commit " + sha, Timestamp: time.Now().Add(-2 * time.Hour)})
		}
	default:
		c.Status = "behind"
	}
	return c, nil
}

func (f *fakeGitHub) CreateDeployment(_ context.Context, _ pipeline.Repo, req pipeline.DeploymentRequest) (int64, time.Time, error) {
	if f.enter != nil {
		defer f.enter()()
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.creates++
	if len(f.failNext) > 0 {
		err := f.failNext[0]
		f.failNext = f.failNext[1:]
		return 0, time.Time{}, err
	}
	f.lastID++
	f.deps = append(f.deps, &fakeDeployment{id: 1000 + f.lastID, sha: req.SHA, env: req.Environment, payload: req.Payload, createdAt: f.time()})
	if f.loseNext {
		f.loseNext = false
		return 0, time.Time{}, errors.New("timeout awaiting response headers")
	}
	return 1000 + f.lastID, f.deps[len(f.deps)-1].createdAt, nil
}

func (f *fakeGitHub) FindDeployment(_ context.Context, _ pipeline.Repo, sha, env string, m pipeline.Marker) (int64, time.Time, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.finds++
	for _, d := range f.deps {
		if d.sha == sha && d.env == env && d.payload.Lastmile == m {
			return d.id, d.createdAt, nil
		}
	}
	return 0, time.Time{}, pipeline.ErrNotFound
}

func (f *fakeGitHub) LatestDeploymentStatus(_ context.Context, _ pipeline.Repo, id int64) (pipeline.StatusInfo, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.latest++
	d := f.byID(id)
	if d == nil || len(d.statuses) == 0 {
		return pipeline.StatusInfo{}, pipeline.ErrNotFound
	}
	return d.statuses[len(d.statuses)-1], nil
}

func (f *fakeGitHub) CreateDeploymentStatus(_ context.Context, _ pipeline.Repo, id int64, req pipeline.StatusRequest) (pipeline.StatusInfo, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.byID(id) == nil {
		return pipeline.StatusInfo{}, fmt.Errorf("deployment %d: %w", id, pipeline.ErrNotFound)
	}
	f.written = append(f.written, req)
	return f.postAs(id, req.State, req.LogURL, lastmileBot), nil
}

// backdate sets the time GitHub gives a status.
func (f *fakeGitHub) backdate(st *pipeline.StatusInfo, at time.Time) {
	f.mu.Lock()
	defer f.mu.Unlock()
	st.CreatedAt = at
	for _, d := range f.deps {
		for i := range d.statuses {
			if d.statuses[i].GitHubID == st.GitHubID {
				d.statuses[i].CreatedAt = at
			}
		}
	}
}

// DeploymentStatuses lists a deployment's statuses, newest first.
func (f *fakeGitHub) DeploymentStatuses(_ context.Context, _ pipeline.Repo, id int64) ([]pipeline.StatusInfo, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.listed++
	if f.failLists > 0 {
		f.failLists--
		return nil, errors.New("502 Bad Gateway")
	}
	d := f.byID(id)
	if d == nil {
		return nil, pipeline.ErrNotFound
	}
	out := slices.Clone(d.statuses)
	slices.Reverse(out)
	return out, nil
}

// The logins GitHub shows on statuses: lastmile's App's bot, and the
// workflow's (the Action's GITHUB_TOKEN).
const (
	lastmileBot = "lastmile[bot]"
	actionsBot  = "github-actions[bot]"
)

// post adds a status to a deployment, as the workflow would.
func (f *fakeGitHub) post(id int64, state pipeline.DeploymentState, logURL string) pipeline.StatusInfo {
	return f.postAs(id, state, logURL, actionsBot)
}

func (f *fakeGitHub) postAs(id int64, state pipeline.DeploymentState, logURL, creator string) pipeline.StatusInfo {
	f.lastID++
	st := pipeline.StatusInfo{GitHubID: 5000 + f.lastID, State: state, LogURL: logURL, Creator: creator, CreatedAt: f.time()}
	if d := f.byID(id); d != nil {
		d.statuses = append(d.statuses, st)
	}
	return st
}

func (f *fakeGitHub) byID(id int64) *fakeDeployment {
	for _, d := range f.deps {
		if d.id == id {
			return d
		}
	}
	return nil
}

// deployment is the newest deployment of sha to env.
func (f *fakeGitHub) deployment(sha, env string) *fakeDeployment {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, d := range slices.Backward(f.deps) {
		if d.sha == sha && d.env == env {
			return d
		}
	}
	return nil
}

// count is how many deployments of sha to env GitHub has.
func (f *fakeGitHub) count(sha, env string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	n := 0
	for _, d := range f.deps {
		if d.sha == sha && d.env == env {
			n++
		}
	}
	return n
}

func (f *fakeGitHub) CreateCommitStatus(_ context.Context, _ pipeline.Repo, sha string, st pipeline.CommitStatus) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.commitStatuses == nil {
		f.commitStatuses = map[string][]pipeline.CommitStatus{}
	}
	f.commitStatuses[sha] = append(f.commitStatuses[sha], st)
	return nil
}

func (f *fakeGitHub) ReviewProtectionRule(_ context.Context, _ pipeline.Repo, run int64, env, state, comment string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.answerCalls++
	if f.refuseRuns[run] {
		return &pipeline.RefusedError{Status: 404, Message: "Not Found"}
	}
	if f.waitsNot[run] {
		return &pipeline.RefusedError{Status: 422, Message: "No pending deployment protection rule for this environment"}
	}
	if f.failAnswers > 0 {
		f.failAnswers--
		return &pipeline.RefusedError{Status: 502, Message: "Bad Gateway"}
	}
	if utf8.RuneCountInString(comment) > 1024 { // as GitHub (and the simulator) refuses it
		return &pipeline.RefusedError{Status: 422, Message: "Validation Failed: comment is too long (maximum is 1024 characters)"}
	}
	f.answers = append(f.answers, fmt.Sprint(run, " ", env, " ", state))
	f.lastComment = comment
	return nil
}

func (f *fakeGitHub) JobLog(_ context.Context, _ pipeline.Repo, jobID int64, _ int) ([]byte, bool, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.logAsks++
	if log, ok := f.logs[jobID]; ok {
		return []byte(log), false, nil
	}
	return nil, false, pipeline.ErrNotFound
}

// Three commits of the pipeline branch, oldest first.
const (
	c0 = "c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0"
	c1 = "c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1"
	c2 = "c2c2c2c2c2c2c2c2c2c2c2c2c2c2c2c2c2c2c2c2"
	c3 = "c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3"
	c4 = "c4c4c4c4c4c4c4c4c4c4c4c4c4c4c4c4c4c4c4c4"
)

var shop = pipeline.Repo{ID: 42, Owner: "acme", Name: "shop", InstallationID: 7}

type harness struct {
	t      *testing.T
	engine *pipeline.Engine
	gh     *fakeGitHub
	db     *storage.DB
}

func newHarness(t *testing.T, history ...string) *harness {
	gh := &fakeGitHub{config: threeEnvs, history: history}
	db := storagetest.Open(t)
	e := &pipeline.Engine{Store: db, GitHub: gh, Log: slog.New(slog.NewTextHandler(io.Discard, nil)), Now: time.Now}
	return &harness{t: t, engine: e, gh: gh, db: db}
}

// push moves main from before to after and delivers the push at once.
func (h *harness) push(before, after string, forced bool) error {
	h.gh.mu.Lock()
	h.gh.head = after
	h.gh.mu.Unlock()
	return h.deliverPush(before, after, forced, time.Now())
}

// deliverPush hands lastmile the webhook of a push made at pushedAt.
func (h *harness) deliverPush(before, after string, forced bool, pushedAt time.Time) error {
	return h.engine.HandlePush(context.Background(), pipeline.Push{Repo: shop, DeliveryID: "push-" + before[:4] + "-" + after[:4],
		Ref: "refs/heads/main", Before: before, After: after, Forced: forced, DefaultBranch: "main", Pusher: "octocat",
		PushedAt: pushedAt, Commits: []pipeline.Commit{{SHA: after, Title: "commit " + after, Timestamp: pushedAt.Add(-time.Hour)}}})
}

// status has the deploy workflow post a status on GitHub; deliver says
// whether its deployment_status webhook reaches lastmile now.
func (h *harness) status(sha, env string, state pipeline.DeploymentState, run int64, deliver bool) pipeline.StatusInfo {
	h.t.Helper()
	d := h.gh.deployment(sha, env)
	if d == nil {
		h.t.Fatalf("no deployment of %s to %s on GitHub", sha, env)
	}
	h.gh.mu.Lock()
	st := h.gh.post(d.id, state, fmt.Sprintf("https://github.com/acme/shop/actions/runs/%d", run))
	h.gh.mu.Unlock()
	if deliver {
		h.deliver(sha, env, st)
	}
	return st
}

// deliver hands lastmile the deployment_status webhook of st.
func (h *harness) deliver(sha, env string, st pipeline.StatusInfo) {
	h.t.Helper()
	d := h.gh.deployment(sha, env)
	err := h.engine.HandleDeploymentStatus(context.Background(), pipeline.NewDeploymentStatus{Repo: shop,
		Deployment: pipeline.DeploymentInfo{GitHubID: d.id, SHA: sha, Environment: env, Payload: mustJSON(h.t, d.payload)},
		Status:     st})
	if err != nil {
		h.t.Fatalf("deployment_status %s of %s in %s: %v", st.State, sha, env, err)
	}
}

func (h *harness) runCompleted(run int64, sha, conclusion string) {
	h.t.Helper()
	err := h.engine.HandleWorkflowRun(context.Background(), pipeline.WorkflowRun{Repo: shop, Action: "completed",
		RunID: run, Event: "deployment", HeadSHA: sha, Status: "completed", Conclusion: conclusion, UpdatedAt: time.Now(),
		URL: fmt.Sprintf("https://github.com/acme/shop/actions/runs/%d", run)})
	if err != nil {
		h.t.Fatalf("workflow_run %d completed: %v", run, err)
	}
}

func (h *harness) ledgerState(sha, env string) pipeline.DeploymentState {
	h.t.Helper()
	d, err := h.db.Deployment(context.Background(), h.gh.deployment(sha, env).id)
	if err != nil {
		h.t.Fatal(err)
	}
	return d.State
}

func (h *harness) deploymentsCounted() map[string]float64 {
	h.t.Helper()
	series, err := h.db.Counters(context.Background(), storage.MetricDeployments)
	if err != nil {
		h.t.Fatal(err)
	}
	out := map[string]float64{}
	for _, s := range series {
		if s.Value != 0 {
			out[s.Labels[1]+"/"+s.Labels[2]] += s.Value
		}
	}
	return out
}

func mustJSON(t *testing.T, p pipeline.DeploymentPayload) []byte {
	t.Helper()
	b, err := json.Marshal(p)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestLatePushIsNotDeployedBackwards(t *testing.T) {
	h := newHarness(t, c0, c1, c2)
	// c1's push failed to reach lastmile; c2's (c1 → c2) did, and later
	// GitHub redelivers c1's (c0 → c1).
	if err := h.push(c1, c2, false); err != nil {
		t.Fatal(err)
	}
	err := h.deliverPush(c0, c1, false, time.Now().Add(-time.Hour))
	var ignored *pipeline.Ignored
	if !errors.As(err, &ignored) {
		t.Fatalf("late push of c1 = %v, want it ignored", err)
	}
	if _, err := h.db.ReleaseOf(context.Background(), shop.ID, c1); !errors.Is(err, pipeline.ErrNotFound) {
		t.Errorf("a release was recorded for the late push of c1 (err %v)", err)
	}
	if h.gh.deployment(c1, "test") != nil {
		t.Error("c1 was deployed to test after c2")
	}
	rel, err := h.db.ReleaseOf(context.Background(), shop.ID, c2)
	if err != nil || rel.State != pipeline.ReleaseActive {
		t.Errorf("release of c2: %+v, %v; want it active", rel, err)
	}

	// A rollback is a force push to an older commit: that one is deployed.
	if err := h.push(c2, c0, true); err != nil {
		t.Fatalf("force push back to c0: %v", err)
	}
	if h.gh.deployment(c0, "test") == nil {
		t.Error("the rollback to c0 was not deployed")
	}
}

// A force push back to c1 that reaches lastmile late, after the branch was
// force-pushed forward to c2 again, must not deploy c1 over c2.
func TestLateForcePushIsNotDeployedOverTheBranchHead(t *testing.T) {
	h := newHarness(t, c0, c1, c2)
	if err := h.push(c0, c1, false); err != nil {
		t.Fatal(err)
	}
	if err := h.push(c1, c2, false); err != nil {
		t.Fatal(err)
	}
	h.gh.head = c1 // the rollback to c1, whose webhook is lost for now
	if err := h.push(c1, c2, true); err != nil {
		t.Fatal(err) // forward to c2 again: c2's release exists
	}
	err := h.deliverPush(c2, c1, true, time.Now().Add(-time.Minute))
	var ignored *pipeline.Ignored
	if !errors.As(err, &ignored) {
		t.Fatalf("late force push to c1 = %v, want it ignored", err)
	}
	if n := h.gh.count(c1, "test"); n != 1 {
		t.Errorf("deployments of c1 to test: %d, want 1 (its first release only)", n)
	}
}

// A push that a force push has undone, delivered late, is not deployed: c2
// was pushed and rolled back to c1 before c2's webhook reached lastmile.
func TestLatePushUndoneByARollbackIsIgnored(t *testing.T) {
	h := newHarness(t, c0, c1, c2)
	h.release(c0, c1, 10, "test", "staging", "production")
	h.gh.head = c2 // pushed, its webhook lost for now
	if err := h.push(c2, c1, true); err != nil {
		t.Fatal(err) // rolled back to c1, which is released already
	}
	err := h.deliverPush(c1, c2, false, time.Now().Add(-time.Hour))
	var ignored *pipeline.Ignored
	if !errors.As(err, &ignored) {
		t.Fatalf("late push of c2 = %v, want it ignored", err)
	}
	if h.gh.deployment(c2, "test") != nil {
		t.Error("c2, undone by the rollback, was deployed")
	}
}

// c2 is pushed, then main is force-pushed back to c1 (the latest release)
// or to c0; GitHub delivers the force push first and c2's push a minute
// later. c2, which the branch no longer has, is not deployed.
func TestPushDeliveredAfterTheRollbackThatUndidItIsIgnored(t *testing.T) {
	for _, back := range []string{c1, c0} {
		t.Run(back[:2], func(t *testing.T) {
			h := newHarness(t, c0, c1, c2)
			if err := h.deliverPush(c0, c1, false, time.Now().Add(-3*time.Minute)); err != nil {
				t.Fatal(err)
			}
			h.gh.head = back
			if err := h.deliverPush(c2, back, true, time.Now().Add(-time.Minute)); err != nil {
				t.Fatalf("the rollback to %s: %v", back[:2], err)
			}
			err := h.deliverPush(c1, c2, false, time.Now().Add(-2*time.Minute))
			var ignored *pipeline.Ignored
			if !errors.As(err, &ignored) {
				t.Fatalf("c2's push, delivered after the rollback = %v, want it ignored", err)
			}
			if h.gh.deployment(c2, "test") != nil {
				t.Error("c2, undone by the rollback, was deployed")
			}
		})
	}
}

// A push without pushed_at (lastmile knows only when it received it),
// redelivered after the rollback that undid it, is checked against the
// branch all the same. GitHub showing the branch where the push moved it
// from might only mean its API has not caught up, so lastmile looks again
// for half a minute before it ignores the push.
func TestPushOfUnknownTimeIsCheckedAgainstTheBranch(t *testing.T) {
	h := newHarness(t, c0, c1, c2)
	if err := h.push(c0, c1, false); err != nil {
		t.Fatal(err)
	}
	h.gh.head = c1 // c2 was pushed, then main was force-pushed back to c1
	if err := h.deliverPush(c2, c1, true, time.Now().Add(-time.Minute)); err != nil {
		t.Fatal(err)
	}
	received := time.Now()
	redelivered := pipeline.Push{Repo: shop, DeliveryID: "push-c2-redelivered",
		Ref: "refs/heads/main", Before: c1, After: c2, DefaultBranch: "main", Pusher: "octocat",
		PushedAt: received, PushedAtGuessed: true, Commits: []pipeline.Commit{{SHA: c2, Title: "commit c2"}}}
	err := h.engine.HandlePush(context.Background(), redelivered)
	var again *pipeline.LookAgain
	if !errors.As(err, &again) {
		t.Fatalf("c2's push of unknown time, just received = %v, want to look again", err)
	}
	var ignored *pipeline.Ignored
	h.engine.Now = func() time.Time { return received.Add(3 * time.Minute) }
	if err := h.engine.HandlePush(context.Background(), redelivered); !errors.As(err, &ignored) {
		t.Fatalf("c2's push of unknown time, three minutes on = %v, want it ignored", err)
	}
	if h.gh.deployment(c2, "test") != nil {
		t.Error("c2, undone by the rollback, was deployed")
	}
}

// The push that removes lastmile's configuration, delivered before an
// older push it came after: the older push is not deployed over it.
func TestLatePushAfterTheConfigurationWasRemovedIsIgnored(t *testing.T) {
	const cA = "cacacacacacacacacacacacacacacacacacacaca"
	h := newHarness(t, c0, c1, cA, c2)
	if err := h.deliverPush(c0, c1, false, time.Now().Add(-3*time.Minute)); err != nil {
		t.Fatal(err)
	}
	h.gh.head, h.gh.noConfig = c2, []string{c2}
	var ignored *pipeline.Ignored
	if err := h.deliverPush(cA, c2, false, time.Now().Add(-time.Minute)); !errors.As(err, &ignored) || !ignored.NotEnrolled ||
		ignored.DeliveryState() != pipeline.DeliveryIgnored {
		t.Fatalf("the push removing the configuration = %v, want it ignored (not enrolled), recorded as ignored", err)
	}
	if err := h.deliverPush(c1, cA, false, time.Now().Add(-2*time.Minute)); !errors.As(err, &ignored) {
		t.Fatalf("the older push of cA, delivered after = %v, want it ignored", err)
	}
	if h.gh.deployment(cA, "test") != nil {
		t.Error("cA was deployed after the configuration was removed")
	}
}

// A rollback whose payload lacks pushed_at is noted at its receipt: the
// push it undid, delivered after it, is not deployed.
func TestPushUndoneByARollbackOfUnknownTimeIsIgnored(t *testing.T) {
	h := newHarness(t, c0, c1, c2)
	if err := h.deliverPush(c0, c1, false, time.Now().Add(-3*time.Minute)); err != nil {
		t.Fatal(err)
	}
	h.gh.head = c1
	if err := h.engine.HandlePush(context.Background(), pipeline.Push{Repo: shop, DeliveryID: "rollback",
		Ref: "refs/heads/main", Before: c2, After: c1, Forced: true, DefaultBranch: "main", Pusher: "octocat",
		PushedAt: time.Now(), PushedAtGuessed: true}); err != nil {
		t.Fatal(err)
	}
	var ignored *pipeline.Ignored
	if err := h.deliverPush(c1, c2, false, time.Now().Add(-2*time.Minute)); !errors.As(err, &ignored) {
		t.Fatalf("c2's push, delivered after the rollback = %v, want it ignored", err)
	}
	if h.gh.deployment(c2, "test") != nil {
		t.Error("c2, undone by the rollback, was deployed")
	}
}

// A push of unknown time is noted at its receipt, apart from pushes of
// known time: a push made just before that receipt, which GitHub's API
// still shows undone, is looked at again rather than dropped as overtaken.
func TestPushReceivedAfterOneOfUnknownTimeIsNotOvertaken(t *testing.T) {
	h := newHarness(t, c0, c1, c2, c3)
	if err := h.deliverPush(c0, c1, false, time.Now().Add(-3*time.Minute)); err != nil {
		t.Fatal(err)
	}
	h.gh.head = c2
	if err := h.engine.HandlePush(context.Background(), pipeline.Push{Repo: shop, DeliveryID: "c2-no-pushed-at",
		Ref: "refs/heads/main", Before: c1, After: c2, DefaultBranch: "main", Pusher: "octocat",
		PushedAt: time.Now(), PushedAtGuessed: true, Commits: []pipeline.Commit{{SHA: c2}}}); err != nil {
		t.Fatal(err)
	}
	// c3 was pushed 2 s ago, before c2's delivery was received; GitHub's
	// API still shows main at c2.
	err := h.deliverPush(c2, c3, false, time.Now().Add(-2*time.Second))
	var again *pipeline.LookAgain
	if !errors.As(err, &again) {
		t.Fatalf("the push of c3 while GitHub still shows c2 = %v, want to look again", err)
	}
	h.gh.head = c3
	if err := h.deliverPush(c2, c3, false, time.Now().Add(-2*time.Second)); err != nil || h.gh.deployment(c3, "test") == nil {
		t.Errorf("the push of c3 looked at again: %v; want c3 deployed", err)
	}
}

// A force push that takes a commit off the branch (a rollback from c2 to
// c1) stops the releases still on their way whose commit the branch no
// longer holds: c2, waiting for reviewers in production, is superseded and
// its deployment made inactive, so an approval given later deploys
// nothing; c1's release of the rollback goes on.
func TestForcePushStopsTheReleasesItTookOffTheBranch(t *testing.T) {
	ctx := context.Background()
	h := newHarness(t, c0, c1, c2)
	h.release(c0, c1, 10, "test", "staging", "production")
	h.release(c1, c2, 20, "test", "staging")
	h.status(c2, "production", pipeline.DeploymentQueued, 22, true) // waits for reviewers
	if err := h.push(c2, c1, true); err != nil {                    // the rollback
		t.Fatal(err)
	}
	rel, err := h.db.ReleaseOf(ctx, shop.ID, c2)
	if err != nil {
		t.Fatal(err)
	}
	if rel.State != pipeline.ReleaseStopped || rel.StopKind != pipeline.StopSuperseded || !strings.Contains(rel.StopReason, "force push") {
		t.Errorf("c2's release after the rollback: %s %s %q; want stopped, superseded by the force push", rel.State, rel.StopKind, rel.StopReason)
	}
	if got := h.ledgerState(c2, "production"); got != pipeline.DeploymentInactive {
		t.Errorf("c2's production deployment after the rollback: %s, want inactive", got)
	}
	again, err := h.db.ReleaseOf(ctx, shop.ID, c1)
	if err != nil || again.State != pipeline.ReleaseActive || h.gh.deployment(c1, "test") == nil {
		t.Errorf("the rollback's release of c1: %+v, %v; want active, deploying to test", again, err)
	}
}

// A rollback while the bad commit's production deploy runs: that deploy is
// left to finish (it cannot be called back), and the rollback's release
// waits for it before deploying to production, so that production ends on
// the rollback, not on whichever of the two finished last.
func TestRollbackWaitsForTheDeployItInterrupts(t *testing.T) {
	h := newHarness(t, c0, c1, c2)
	h.release(c0, c1, 10, "test", "staging", "production")
	h.release(c1, c2, 20, "test", "staging")
	h.status(c2, "production", pipeline.DeploymentInProgress, 22, true)
	if err := h.push(c2, c1, true); err != nil { // the rollback
		t.Fatal(err)
	}
	rollback := func() *fakeDeployment {
		h.gh.mu.Lock()
		defer h.gh.mu.Unlock()
		var last *fakeDeployment
		for _, d := range h.gh.deps {
			if d.sha == c1 && d.env == "production" {
				last = d
			}
		}
		return last
	}
	first := rollback()
	h.promote(c1, 30, "test", "staging")
	if d := rollback(); d != first {
		t.Fatal("the rollback's production deployment was created while c2's production deploy runs")
	}
	h.status(c2, "production", pipeline.DeploymentSuccess, 22, true)
	if d := rollback(); d == first {
		t.Error("the rollback's production deployment was not created once c2's production deploy ended")
	}
}

// A re-run of a failed deploy ("Re-run failed jobs": the same deployment,
// new statuses) deploys in its environment as a first attempt does: while
// it runs, the next release's deployment there is not created (one deploy
// at a time per environment), although the ledger keeps the deployment's
// failure until the re-run ends. A start delivered after the failure it
// came before (a late in_progress of the first attempt), or a re-run's
// start delivered after its end, holds nothing.
func TestRerunInProgressHoldsItsEnvironment(t *testing.T) {
	ctx := context.Background()
	failInStaging := func(h *harness) {
		t.Helper()
		h.release(c0, c1, 10, "test")
		h.status(c1, "staging", pipeline.DeploymentInProgress, 11, true)
		h.status(c1, "staging", pipeline.DeploymentFailure, 11, true)
	}
	t.Run("re-run in progress", func(t *testing.T) {
		h := newHarness(t, c0, c1, c2)
		failInStaging(h)
		h.status(c1, "staging", pipeline.DeploymentInProgress, 11, true) // Re-run failed jobs
		h.release(c1, c2, 20, "test")
		if h.gh.deployment(c2, "staging") != nil {
			t.Fatal("c2's staging deployment was created while c1's re-run deploys to staging")
		}
		if got := h.ledgerState(c1, "staging"); got != pipeline.DeploymentFailure {
			t.Errorf("c1's staging deployment while its re-run runs: %s, want failure", got)
		}
		if rec, err := h.db.Audit(ctx, shop.FullName(), c2); err != nil || !strings.Contains(rec.Waiting, "deployment to staging to end") {
			t.Errorf("c2's audit record while it waits: waiting %q, %v; want it to say it waits for staging", rec.Waiting, err)
		}
		h.status(c1, "staging", pipeline.DeploymentSuccess, 11, true)
		if h.gh.deployment(c2, "staging") == nil {
			t.Error("c2's staging deployment not created once c1's re-run ended")
		}
	})
	t.Run("first attempt's start delivered late", func(t *testing.T) {
		h := newHarness(t, c0, c1, c2)
		h.release(c0, c1, 10, "test")
		started := h.status(c1, "staging", pipeline.DeploymentInProgress, 11, false)
		h.status(c1, "staging", pipeline.DeploymentFailure, 11, true)
		h.deliver(c1, "staging", started)
		h.release(c1, c2, 20, "test")
		if h.gh.deployment(c2, "staging") == nil {
			t.Error("c2's staging deployment not created: c1's failed deploy, whose start came late, holds staging")
		}
	})
	t.Run("re-run's start delivered after its end", func(t *testing.T) {
		h := newHarness(t, c0, c1, c2)
		failInStaging(h)
		started := h.status(c1, "staging", pipeline.DeploymentInProgress, 11, false) // Re-run failed jobs
		h.status(c1, "staging", pipeline.DeploymentFailure, 11, true)
		h.deliver(c1, "staging", started)
		h.release(c1, c2, 20, "test")
		if h.gh.deployment(c2, "staging") == nil {
			t.Error("c2's staging deployment not created: c1's re-run, which has ended, holds staging")
		}
	})
}

// A force push also withdraws a release stopped by a failure that a re-run
// could still carry on: re-running c2's failed staging job after the
// rollback to c1 does not take c2 to production. The same holds after a
// force push to a commit whose configuration is invalid, and after the
// configuration is removed.
func TestRerunDoesNotReviveAWithdrawnRelease(t *testing.T) {
	failInStaging := func(h *harness) {
		t.Helper()
		h.release(c0, c1, 10, "test", "staging", "production")
		h.release(c1, c2, 20, "test")
		h.status(c2, "staging", pipeline.DeploymentInProgress, 21, true)
		h.status(c2, "staging", pipeline.DeploymentFailure, 21, true)
	}
	rerun := func(t *testing.T, h *harness) {
		t.Helper()
		h.status(c2, "staging", pipeline.DeploymentInProgress, 21, true) // Re-run failed jobs
		h.status(c2, "staging", pipeline.DeploymentSuccess, 21, true)
		if h.gh.deployment(c2, "production") != nil {
			t.Error("c2, no longer on the branch, reached production after a re-run")
		}
		rel, err := h.db.ReleaseOf(context.Background(), shop.ID, c2)
		if err != nil || rel.State != pipeline.ReleaseStopped || rel.StopKind != pipeline.StopSuperseded ||
			!strings.Contains(rel.StopReason, "ended in failure; then superseded") {
			t.Errorf("c2's release: %+v, %v; want stopped, superseded, its failure still said", rel, err)
		}
	}
	t.Run("force push", func(t *testing.T) {
		h := newHarness(t, c0, c1, c2)
		failInStaging(h)
		if err := h.push(c2, c1, true); err != nil {
			t.Fatal(err)
		}
		rerun(t, h)
	})
	t.Run("force push to an invalid configuration", func(t *testing.T) {
		h := newHarness(t, c0, c1, c2)
		failInStaging(h)
		h.gh.mu.Lock()
		h.gh.config = "environments: [\n"
		h.gh.mu.Unlock()
		_ = h.push(c2, c1, true) // a config error
		rerun(t, h)
	})
	t.Run("configuration removed", func(t *testing.T) {
		h := newHarness(t, c0, c1, c2, c3)
		h.gh.noConfig = []string{c3}
		failInStaging(h)
		_ = h.push(c2, c3, false) // ignored: the repository leaves
		rerun(t, h)
	})
}

// A configuration that is no regular file at the commit (a symbolic link
// the contents API does not follow, a submodule, a directory) is an
// invalid configuration, said as such: the push is handled, its release
// stopped with the reason, nothing deployed — not a delivery retried until
// it is dead, nor an empty file.
func TestConfigurationThatIsNoFileIsAConfigError(t *testing.T) {
	h := newHarness(t, c0, c1)
	h.gh.mu.Lock()
	h.gh.readErr = fmt.Errorf("%s: %w (a symlink)", pipeline.ConfigPath, pipeline.ErrNotAFile)
	h.gh.mu.Unlock()
	if err := h.push(c0, c1, false); err != nil {
		t.Fatalf("push: %v, want it handled", err)
	}
	rec, err := h.db.Audit(context.Background(), shop.FullName(), c1)
	if err != nil {
		t.Fatal(err)
	}
	want := pipeline.ConfigPath + ": the file is not a regular file (a symlink): it must be a file of the commit itself"
	if rec.Release.State != pipeline.ReleaseStopped || rec.Release.StopReason != want {
		t.Errorf("release: %s, %q; want stopped, %q", rec.Release.State, rec.Release.StopReason, want)
	}
	if h.gh.count(c1, "test") != 0 {
		t.Error("deployed with no configuration read")
	}
}

// An invalid configuration is said on the commit, as the lastmile/config
// status, in the 140 characters GitHub keeps: what is wrong first, the
// file's text shortened, never the reason cut off. The log and the
// release's audit record keep the whole message.
func TestInvalidConfigurationStatusSaysWhatIsWrong(t *testing.T) {
	h := newHarness(t, c0, c1)
	var log bytes.Buffer
	h.engine.Log = slog.New(slog.NewJSONHandler(&log, nil))
	name := "production-eu-west-1-canary-\u200bblue-green-rollout-42-and-a-long-tail-of-text"
	h.gh.mu.Lock()
	h.gh.config = "environments:\n  - name: test\n  - name: \"" + name + "\"\n"
	h.gh.mu.Unlock()
	if err := h.push(c0, c1, false); err != nil {
		t.Fatalf("push: %v", err)
	}
	h.gh.mu.Lock()
	statuses := h.gh.commitStatuses[c1]
	h.gh.mu.Unlock()
	if len(statuses) != 1 {
		t.Fatalf("commit statuses of c1: %+v, want one", statuses)
	}
	st := statuses[0]
	if st.Context != "lastmile/config" || st.State != "failure" {
		t.Errorf("commit status %+v, want lastmile/config failure", st)
	}
	if utf8.RuneCountInString(st.Description) > 140 ||
		!strings.HasPrefix(st.Description, "line 3: environment name contains the invisible character U+200B (ZERO WIDTH SPACE): ") {
		t.Errorf("description %q (%d characters), want at most 140 that say what is wrong first", st.Description, utf8.RuneCountInString(st.Description))
	}
	full := `.github/lastmile.yml line 3: environment name contains the invisible character U+200B (ZERO WIDTH SPACE): "production-eu-west-1-canary-\u200bblue-green-rollout-42-and-a-long-tail-of-text"`
	rec, err := h.db.Audit(context.Background(), shop.FullName(), c1)
	if err != nil {
		t.Fatal(err)
	}
	if rec.Release.StopKind != pipeline.StopConfigError || rec.Release.StopReason != full {
		t.Errorf("audit record: stopped %q, %q; want %q, %q", rec.Release.StopKind, rec.Release.StopReason, pipeline.StopConfigError, full)
	}
	quoted, _ := json.Marshal(full)
	if !strings.Contains(log.String(), string(quoted)) {
		t.Errorf("log %s lacks the whole error %s", log.String(), quoted)
	}
	if len(h.gh.deps) != 0 {
		t.Errorf("%d deployments for an invalid configuration", len(h.gh.deps))
	}
}

// A force push to a commit with an invalid configuration stops the releases
// it took off the branch, as any force push does.
func TestForcePushToAnInvalidConfigurationStopsTheReleasesItTookOff(t *testing.T) {
	h := newHarness(t, c0, c1, c2)
	h.release(c0, c1, 10, "test", "staging", "production")
	h.release(c1, c2, 20, "test")
	h.status(c2, "staging", pipeline.DeploymentQueued, 21, true) // waits for reviewers
	h.gh.mu.Lock()
	h.gh.config = "environments: [\n"
	h.gh.mu.Unlock()
	_ = h.push(c2, c1, true)
	if got := h.ledgerState(c2, "staging"); got != pipeline.DeploymentInactive {
		t.Errorf("c2's staging deployment after the rollback: %s, want inactive", got)
	}
	h.status(c2, "staging", pipeline.DeploymentInProgress, 21, true) // approved all the same
	h.status(c2, "staging", pipeline.DeploymentSuccess, 21, true)
	if h.gh.deployment(c2, "production") != nil {
		t.Error("c2, taken off the branch by a force push, went on to production")
	}
}

// A deployment that never reports an end (its run unknown to lastmile, so
// never judged) holds its environment for pipeline.HoldRunning only: then
// the release waiting behind it goes on, at the sweep's next look.
func TestDeploymentInProgressTooLongStopsHoldingItsEnvironment(t *testing.T) {
	ctx := context.Background()
	h := newHarness(t, c0, c1, c2)
	h.release(c0, c1, 10, "test", "staging")
	started := time.Now()
	h.status(c1, "production", pipeline.DeploymentInProgress, 12, true) // and nothing more, ever
	h.release(c1, c2, 20, "test", "staging")
	if h.gh.deployment(c2, "production") != nil {
		t.Fatal("c2's production deployment created while c1's production deploy runs")
	}
	rec, err := h.db.Audit(ctx, shop.FullName(), c2)
	if err != nil || !strings.Contains(rec.Waiting, "deployment to production to end") {
		t.Errorf("c2's audit record while it waits: waiting %q, %v; want it to say it waits for production", rec.Waiting, err)
	}
	if rec, err := h.db.Audit(ctx, shop.FullName(), c1); err != nil || rec.Waiting != "" {
		t.Errorf("c1's audit record: waiting %q, %v; want nothing (it runs)", rec.Waiting, err)
	}
	var mu sync.Mutex
	now := started
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	h.engine.Now, h.db.Now = clock, clock
	h.gh.mu.Lock()
	h.gh.now = clock // GitHub's too: c2's production deployment is made a day on
	h.gh.mu.Unlock()
	look := func(from, to time.Time) {
		t.Helper()
		mu.Lock()
		now = to
		mu.Unlock()
		repos, err := h.db.HoldEnded(ctx, from, to)
		if err != nil {
			t.Fatal(err)
		}
		if failed, err := h.engine.AdvanceReleased(ctx, repos); err != nil || len(failed) != 0 {
			t.Fatal(failed, err)
		}
	}
	held := started.Add(pipeline.HoldRunning)
	look(started, held.Add(-time.Minute))
	if h.gh.deployment(c2, "production") != nil {
		t.Fatal("c2's production deployment created before the hold ended")
	}
	look(held.Add(-time.Minute), held.Add(time.Minute))
	if h.gh.deployment(c2, "production") == nil {
		t.Error("c2's production deployment not created once c1's deploy stopped holding production")
	}
	if rec, err := h.db.Audit(ctx, shop.FullName(), c2); err != nil || rec.Waiting != "" {
		t.Errorf("c2's audit record once deploying: waiting %q, %v; want nothing", rec.Waiting, err)
	}
}

type workerCtxKey struct{}

// interleavedStore makes the worker's handling of a deployment webhook look
// the deployment up (and find nothing) before an advance running outside
// the worker (the sweep's) records its creation, and go on only once it has.
type interleavedStore struct {
	pipeline.Store
	created     chan struct{}
	createdOnce sync.Once
	looked      chan struct{}
	lookedOnce  sync.Once
}

func (s *interleavedStore) Deployment(ctx context.Context, githubID int64) (*pipeline.Deployment, error) {
	d, err := s.Store.Deployment(ctx, githubID)
	if ctx.Value(workerCtxKey{}) != nil {
		s.lookedOnce.Do(func() { close(s.looked) })
	}
	return d, err
}

func (s *interleavedStore) Instance(ctx context.Context) (string, error) {
	if ctx.Value(workerCtxKey{}) != nil {
		<-s.created
	}
	return s.Store.Instance(ctx)
}

func (s *interleavedStore) Created(ctx context.Context, deploymentID, githubID int64, createdAt time.Time) error {
	err := s.Store.Created(ctx, deploymentID, githubID, createdAt)
	s.createdOnce.Do(func() { close(s.created) })
	return err
}

// The sweep creates a deployment outside the worker's queue, so its
// deployment webhook can be handled while the sweep records the creation:
// the worker, having found no deployment of that ID, waits for the advance
// to end and finds it then, instead of taking lastmile's own deployment for
// an unexpected one and marking it inactive (which stopped the release).
func TestDeploymentCreatedOutsideTheQueueIsNotTakenForAnUnexpectedOne(t *testing.T) {
	ctx := context.Background()
	h := newHarness(t, c0, c1, c2)
	h.release(c0, c1, 10, "test", "staging")
	started := time.Now()
	h.status(c1, "production", pipeline.DeploymentInProgress, 12, true)
	h.release(c1, c2, 20, "test", "staging")
	now := started.Add(pipeline.HoldRunning + time.Minute)
	clock := func() time.Time { return now }
	h.engine.Now, h.db.Now = clock, clock
	is := &interleavedStore{Store: h.db, created: make(chan struct{}), looked: make(chan struct{})}
	h.engine.Store = is
	var wg sync.WaitGroup
	var werr error
	h.gh.enter = func() func() {
		return func() { // as GitHub answers the creation
			d := h.gh.deployment(c2, "production")
			if d == nil {
				return
			}
			h.gh.enter = nil
			wg.Add(1)
			go func() { // the worker, handling the deployment webhook
				defer wg.Done()
				wctx := context.WithValue(ctx, workerCtxKey{}, true)
				werr = h.engine.HandleDeployment(wctx, pipeline.NewDeployment{Repo: shop, Deployment: pipeline.DeploymentInfo{
					GitHubID: d.id, SHA: c2, Environment: "production", Payload: mustJSON(t, d.payload), CreatedAt: d.createdAt}})
			}()
			<-is.looked
		}
	}
	repos, err := h.db.HoldEnded(ctx, started, now)
	if err != nil || len(repos) != 1 {
		t.Fatalf("holds ended: %v, %v; want %s", repos, err, shop.FullName())
	}
	if failed, err := h.engine.AdvanceReleased(ctx, repos); err != nil || len(failed) != 0 {
		t.Fatal(failed, err)
	}
	wg.Wait()
	if werr != nil {
		t.Fatal(werr)
	}
	d := h.gh.deployment(c2, "production")
	if d == nil {
		t.Fatal("no production deployment of c2")
	}
	for _, s := range d.statuses {
		if s.State == pipeline.DeploymentInactive {
			t.Error("lastmile marked its own production deployment of c2 inactive")
		}
	}
	if got := h.ledgerState(c2, "production"); got == pipeline.DeploymentIntent || got == pipeline.DeploymentInactive {
		t.Errorf("c2's production deployment in the ledger: %s", got)
	}
}

// A repository whose configuration file is removed leaves lastmile: its
// environments are retired (dashboards and the "no production deployment"
// alert forget them) — unless a newer push, with a configuration, was
// handled before the removal's delivery arrived.
func TestRemovedConfigurationRetiresTheEnvironments(t *testing.T) {
	all := []string{"production", "staging", "test"}
	var ignored *pipeline.Ignored
	enrolled := func() *harness {
		h := newHarness(t, c0, c1, c2, c3)
		h.gh.noConfig = []string{c2}
		if err := h.deliverPush(c0, c1, false, time.Now().Add(-time.Minute)); err != nil {
			t.Fatal(err)
		}
		h.promote(c1, 10, "test", "staging", "production")
		if got := h.liveEnvs(); !slices.Equal(got, all) {
			t.Fatalf("environments before: %v, want %v", got, all)
		}
		return h
	}
	unknownTime := func(h *harness, id, before, after string) error {
		return h.engine.HandlePush(context.Background(), pipeline.Push{Repo: shop, DeliveryID: id,
			Ref: "refs/heads/main", Before: before, After: after, DefaultBranch: "main", Pusher: "octocat",
			PushedAt: time.Now(), PushedAtGuessed: true, Commits: []pipeline.Commit{{SHA: after}}})
	}

	t.Run("removed", func(t *testing.T) {
		h := enrolled()
		h.gh.head = c2
		if err := h.deliverPush(c1, c2, false, time.Now()); !errors.As(err, &ignored) {
			t.Fatalf("the push removing the configuration = %v, want it ignored", err)
		}
		if got := h.liveEnvs(); len(got) != 0 {
			t.Errorf("environments after the configuration was removed: %v, want none", got)
		}
	})
	t.Run("releases on their way stop", func(t *testing.T) {
		h := newHarness(t, c0, c1, c2)
		h.gh.noConfig = []string{c2}
		h.release(c0, c1, 10, "test")
		h.status(c1, "staging", pipeline.DeploymentQueued, 11, true) // waits for reviewers
		if err := h.push(c1, c2, false); !errors.As(err, &ignored) {
			t.Fatalf("the push removing the configuration = %v, want it ignored", err)
		}
		rel, err := h.db.ReleaseOf(context.Background(), shop.ID, c1)
		if err != nil || rel.State != pipeline.ReleaseStopped || !strings.Contains(rel.StopReason, "left lastmile") {
			t.Errorf("c1's release after the configuration was removed: %+v, %v; want stopped", rel, err)
		}
		if got := h.ledgerState(c1, "staging"); got != pipeline.DeploymentInactive {
			t.Errorf("c1's staging deployment: %s, want inactive", got)
		}
		h.status(c1, "staging", pipeline.DeploymentSuccess, 11, true) // approved and deployed all the same
		if h.gh.deployment(c1, "production") != nil {
			t.Error("production deployment created for a repository that left lastmile")
		}
	})
	t.Run("removed after a push of unknown time received later", func(t *testing.T) {
		h := enrolled()
		pushed := time.Now().Add(-2 * time.Second)
		_ = unknownTime(h, "c1-again", c0, c1) // c1 redelivered, received after c2 was pushed
		h.gh.head = c2
		if err := h.deliverPush(c1, c2, false, pushed); !errors.As(err, &ignored) {
			t.Fatalf("the push removing the configuration = %v, want it ignored", err)
		}
		if got := h.liveEnvs(); len(got) != 0 {
			t.Errorf("environments after the configuration was removed (main at c2): %v, want none", got)
		}
	})
	for name, late := range map[string]func(h *harness) error{
		"late removal":                 func(h *harness) error { return h.deliverPush(c1, c2, false, time.Now().Add(-2*time.Second)) },
		"late removal of unknown time": func(h *harness) error { return unknownTime(h, "c2-late", c1, c2) },
	} {
		t.Run(name, func(t *testing.T) {
			h := enrolled()
			h.gh.head = c3 // put the file back
			if err := h.deliverPush(c2, c3, false, time.Now().Add(-time.Second)); err != nil {
				t.Fatal(err)
			}
			if err := late(h); !errors.As(err, &ignored) {
				t.Fatalf("the late push removing the configuration = %v, want it ignored", err)
			}
			if got := h.liveEnvs(); !slices.Equal(got, all) {
				t.Errorf("environments after a late removal (main is at c3, with the file): %v, want %v", got, all)
			}
		})
	}
	t.Run("removed from the default branch, the pipeline branch another", func(t *testing.T) {
		h := newHarness(t, c0, c1, c2)
		h.gh.config = "branch: release\n" + threeEnvs
		h.gh.noConfig = []string{c2}
		push := func(ref, before, after string) error {
			return h.engine.HandlePush(context.Background(), pipeline.Push{Repo: shop, DeliveryID: "push-" + after[:4],
				Ref: ref, Before: before, After: after, DefaultBranch: "main", Pusher: "octocat", PushedAt: time.Now(),
				Commits: []pipeline.Commit{{SHA: after, Timestamp: time.Now().Add(-time.Hour)}}})
		}
		if err := push("refs/heads/release", c0, c1); err != nil {
			t.Fatal(err)
		}
		h.promote(c1, 10, "test", "staging", "production")
		if err := push("refs/heads/main", c0, c2); !errors.As(err, &ignored) {
			t.Fatalf("the push to main = %v, want it ignored", err)
		}
		if got := h.liveEnvs(); !slices.Equal(got, all) {
			t.Errorf("environments after the file left main (the pipeline branch, release, still has it): %v, want %v", got, all)
		}
	})
}

func (h *harness) liveEnvs() []string {
	h.t.Helper()
	var envs []string
	for _, e := range h.environmentInfo() {
		env, _, _ := strings.Cut(e, "=")
		envs = append(envs, env)
	}
	slices.Sort(envs)
	return envs
}

// GitHub answers the compare from a replica that still has the branch
// where the rollback moved it from: the rollback is retried, not lost; but
// a push minutes old that GitHub shows undone is ignored.
func TestRollbackSeenBeforeGitHubCaughtUpIsRetried(t *testing.T) {
	h := newHarness(t, c0, c1, c2)
	if err := h.push(c0, c1, false); err != nil {
		t.Fatal(err)
	}
	if err := h.push(c1, c2, false); err != nil {
		t.Fatal(err)
	}
	// main is force-pushed back to c1, but GitHub still answers c2.
	err := h.deliverPush(c2, c1, true, time.Now())
	var again *pipeline.LookAgain
	if !errors.As(err, &again) || again.At.After(time.Now().Add(time.Minute)) {
		t.Fatalf("the rollback while GitHub still shows c2 = %v, want to look again within seconds", err)
	}
	h.gh.head = c1 // caught up
	if err := h.deliverPush(c2, c1, true, time.Now()); err != nil {
		t.Fatalf("the rollback retried: %v", err)
	}
	if n := h.gh.count(c1, "test"); n != 2 {
		t.Errorf("deployments of c1 to test: %d, want 2 (the rollback deployed it again)", n)
	}

	// A push forward, of unknown time, while GitHub still shows the branch
	// before it (the pushed commit is ahead of what GitHub shows).
	h.gh.history = append(h.gh.history, c3)
	forward := pipeline.Push{Repo: shop, DeliveryID: "push-c3", Ref: "refs/heads/main", Before: c1, After: c3,
		DefaultBranch: "main", Pusher: "octocat", PushedAt: time.Now(), PushedAtGuessed: true,
		Commits: []pipeline.Commit{{SHA: c3, Title: "commit c3"}}}
	if err := h.engine.HandlePush(context.Background(), forward); !errors.As(err, &again) {
		t.Fatalf("a push of c3 while GitHub still shows c1 = %v, want to look again", err)
	}
	h.gh.head = c3
	if err := h.engine.HandlePush(context.Background(), forward); err != nil || h.gh.deployment(c3, "test") == nil {
		t.Errorf("the push of c3 retried: %v; want c3 deployed", err)
	}

	// A minute after the push (and no newer one handled), the branch
	// really is elsewhere.
	h2 := newHarness(t, c0, c1, c2)
	if err := h2.deliverPush(c0, c1, false, time.Now().Add(-7*time.Minute)); err != nil {
		t.Fatal(err)
	}
	h2.gh.head = c2
	if err := h2.deliverPush(c1, c2, false, time.Now().Add(-6*time.Minute)); err != nil {
		t.Fatal(err)
	}
	var ignored *pipeline.Ignored
	if err := h2.deliverPush(c2, c1, true, time.Now().Add(-time.Minute)); !errors.As(err, &ignored) {
		t.Errorf("a rollback a minute old, the branch at c2 = %v, want it ignored", err)
	}
}

// A push handled long after it happened (a backlog in the inbox) is
// deployed when its commit is still the branch's head.
func TestLatePushStillAtTheHeadIsDeployed(t *testing.T) {
	h := newHarness(t, c0, c1, c2)
	if err := h.push(c0, c1, false); err != nil {
		t.Fatal(err)
	}
	h.gh.head = c2
	if err := h.deliverPush(c1, c2, false, time.Now().Add(-time.Hour)); err != nil {
		t.Fatal(err)
	}
	if h.gh.deployment(c2, "test") == nil {
		t.Error("c2 was not deployed")
	}
}

// A status lastmile cannot write for good (its deployment was deleted on
// GitHub) is given up, said in the record, and holds nothing back.
func TestStatusOnADeletedDeploymentIsGivenUp(t *testing.T) {
	h := newHarness(t, c0, c1, c2)
	if err := h.push(c0, c1, false); err != nil {
		t.Fatal(err)
	}
	old := h.gh.deployment(c1, "test")
	h.gh.mu.Lock()
	h.gh.deps = slices.DeleteFunc(h.gh.deps, func(d *fakeDeployment) bool { return d == old })
	h.gh.mu.Unlock()
	// c2 supersedes c1 in test, whose deployment lastmile makes inactive.
	if err := h.push(c1, c2, false); err != nil {
		t.Fatalf("push of c2: %v", err)
	}
	if h.gh.deployment(c2, "test") == nil {
		t.Fatal("c2 was not deployed to test")
	}
	d, err := h.db.Deployment(context.Background(), old.id)
	if err != nil {
		t.Fatal(err)
	}
	if d.Notify != "" || d.State != pipeline.DeploymentInactive || !strings.Contains(d.Reason, "not written on GitHub") {
		t.Errorf("the deleted deployment: %s, notify %q, reason %q; want inactive, nothing owed, and the reason said", d.State, d.Notify, d.Reason)
	}
	h.status(c2, "test", pipeline.DeploymentSuccess, 21, true)
	if h.gh.deployment(c2, "staging") == nil {
		t.Error("c2 did not go on to staging")
	}
}

// The failure lastmile owes a deploy run that ended without a result, on a
// deployment deleted on GitHub meanwhile: recorded by lastmile alone, it
// still ends the deployment and stops the release.
func TestFailureOnADeletedDeploymentStillEndsIt(t *testing.T) {
	h := newHarness(t, c0, c1)
	if err := h.push(c0, c1, false); err != nil {
		t.Fatal(err)
	}
	h.status(c1, "test", pipeline.DeploymentInProgress, 11, true)
	gone := h.gh.deployment(c1, "test")
	h.gh.mu.Lock()
	h.gh.deps = slices.DeleteFunc(h.gh.deps, func(d *fakeDeployment) bool { return d == gone })
	h.gh.mu.Unlock()
	h.runCompleted(11, c1, "failure")
	d, err := h.db.Deployment(context.Background(), gone.id)
	if err != nil || d.State != pipeline.DeploymentFailure || d.Notify != "" {
		t.Errorf("the deleted deployment: %+v, %v; want failure, nothing owed", d, err)
	}
	if rel, _ := h.db.ReleaseOf(context.Background(), shop.ID, c1); rel.State != pipeline.ReleaseStopped || rel.StopKind != pipeline.StopFailed {
		t.Errorf("release of c1: %s %s, want stopped as failed", rel.State, rel.StopKind)
	}
	if got := h.deploymentsCounted()["test/failure"]; got != 1 {
		t.Errorf("failures counted in test: %v, want 1", got)
	}
}

func TestLateStatusesDoNotMoveADeploymentBack(t *testing.T) {
	h := newHarness(t, c0, c1)
	if err := h.push(c0, c1, false); err != nil {
		t.Fatal(err)
	}
	queued := h.status(c1, "test", pipeline.DeploymentQueued, 11, false)
	running := h.status(c1, "test", pipeline.DeploymentInProgress, 11, false)
	h.status(c1, "test", pipeline.DeploymentSuccess, 11, true)
	// Delivered late, after the success.
	h.deliver(c1, "test", running)
	h.deliver(c1, "test", queued)
	if got := h.ledgerState(c1, "test"); got != pipeline.DeploymentSuccess {
		t.Errorf("test deployment after late statuses: %s, want success", got)
	}
	h.runCompleted(11, c1, "success")
	if len(h.gh.written) != 0 {
		t.Errorf("lastmile wrote %+v on a deployment that succeeded", h.gh.written)
	}

	// On staging: running, then a late queued.
	queued = h.status(c1, "staging", pipeline.DeploymentQueued, 12, false)
	h.status(c1, "staging", pipeline.DeploymentInProgress, 12, true)
	h.deliver(c1, "staging", queued)
	if got := h.ledgerState(c1, "staging"); got != pipeline.DeploymentInProgress {
		t.Errorf("staging deployment after a late queued: %s, want in_progress", got)
	}
	// The statuses are all in the record, late or not.
	rec, err := h.db.Audit(context.Background(), "acme/shop", c1)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, env := range rec.Environments {
		for _, d := range env.Deployments {
			n += len(d.Statuses)
		}
	}
	if n != 5 {
		t.Errorf("%d statuses in the audit record, want all 5", n)
	}
}

func TestRunEndOvertakingTheLastStatus(t *testing.T) {
	h := newHarness(t, c0, c1)
	if err := h.push(c0, c1, false); err != nil {
		t.Fatal(err)
	}
	h.status(c1, "test", pipeline.DeploymentQueued, 11, true)
	success := h.status(c1, "test", pipeline.DeploymentSuccess, 11, false)
	// workflow_run completed is handled before the success's webhook.
	h.runCompleted(11, c1, "success")
	if len(h.gh.written) != 0 {
		t.Errorf("lastmile wrote %+v on a deployment whose success it had not yet heard of", h.gh.written)
	}
	if got := h.ledgerState(c1, "test"); got != pipeline.DeploymentSuccess {
		t.Errorf("test deployment: %s, want success (read from GitHub)", got)
	}
	if h.gh.deployment(c1, "staging") == nil {
		t.Error("staging was not deployed after test succeeded")
	}
	h.deliver(c1, "test", success) // the late webhook changes nothing
	if got, want := h.deploymentsCounted(), map[string]float64{"test/success": 1}; !maps(got, want) {
		t.Errorf("lastmile_deployments_total = %v, want %v", got, want)
	}

	// Other workflows on the deployment event end before the Action's run
	// has reported anything (its first job still builds): a notifier that
	// succeeded, one whose jobs were all skipped. Nothing to write.
	for run, conclusion := range map[int64]string{97: "success", 98: "skipped"} {
		h.runCompleted(run, c1, conclusion)
	}
	if len(h.gh.written) != 0 {
		t.Errorf("lastmile wrote %+v when unrelated runs ended before any report", h.gh.written)
	}
	// Another workflow on the same event (a notifier, run 99) ends while
	// the Action's run 12 is deploying: not a reason to write anything.
	h.status(c1, "staging", pipeline.DeploymentQueued, 12, false)
	h.runCompleted(99, c1, "success")
	if len(h.gh.written) != 0 {
		t.Errorf("lastmile wrote %+v when an unrelated run ended", h.gh.written)
	}
	// A run that really ended without a result still gets lastmile's error.
	h.status(c1, "staging", pipeline.DeploymentInProgress, 12, true)
	h.runCompleted(12, c1, "cancelled")
	if len(h.gh.written) != 1 || h.gh.written[0].State != pipeline.DeploymentError {
		t.Errorf("lastmile wrote %+v after a cancelled run, want one error", h.gh.written)
	}
	if h.gh.latest != 5 {
		t.Errorf("GitHub asked %d times for a deployment's latest status, want 5 (once per run that ended before it)", h.gh.latest)
	}
}

func maps(a, b map[string]float64) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}

func TestContextsEventRetriedAfterAFailedCreation(t *testing.T) {
	h := newHarness(t, c0, c1)
	h.gh.config = "required_contexts: [build]\n" + threeEnvs
	h.gh.failNext = []error{&pipeline.RefusedError{Status: 409, Message: "Conflict: Commit status checks failed for main.",
		Contexts: []pipeline.ContextState{{Context: "build", State: "pending"}}}}
	if err := h.push(c0, c1, false); err != nil {
		t.Fatal(err)
	}
	if h.gh.deployment(c1, "test") != nil {
		t.Fatal("deployed although the required context was pending")
	}
	contextsGreen := pipeline.ContextsChanged{Repo: shop, SHA: c1, Context: "build", State: "success"}
	h.gh.failNext = []error{errors.New("502 Bad Gateway")}
	if err := h.engine.HandleContexts(context.Background(), contextsGreen); err == nil {
		t.Fatal("HandleContexts succeeded although GitHub failed")
	}
	// The worker handles the status event again: at once, GitHub's list
	// might not show yet what the failed attempt made, so it waits…
	var again *pipeline.LookAgain
	if err := h.engine.HandleContexts(context.Background(), contextsGreen); !errors.As(err, &again) {
		t.Fatalf("HandleContexts again at once: %v, want to look again once GitHub would list the deployment", err)
	}
	if n := h.gh.count(c1, "test"); n != 0 {
		t.Fatalf("%d deployments created again at once", n)
	}
	// …and creates it once the list would show it.
	h.engine.Now = func() time.Time { return time.Now().Add(pipeline.CreateListLag) }
	if err := h.engine.HandleContexts(context.Background(), contextsGreen); err != nil {
		t.Fatalf("HandleContexts again: %v", err)
	}
	if h.gh.deployment(c1, "test") == nil {
		t.Error("the retried status event did not create the deployment")
	}
	// And an unrelated status of a commit with nothing waiting is ignored.
	var ignored *pipeline.Ignored
	if err := h.engine.HandleContexts(context.Background(), pipeline.ContextsChanged{Repo: shop, SHA: c0, Context: "build", State: "success"}); !errors.As(err, &ignored) {
		t.Errorf("status with nothing waiting = %v, want ignored", err)
	}
}

// A deployment lastmile owes GitHub, whose delivery gave up (dead after
// GitHub failed it for long, or discarded), is created by the sweep
// (AdvanceOwing) rather than waiting for the repository's next event: once
// GitHub would list a deployment the failed creation may have made, and
// once.
func TestAdvanceOwingCreatesWhatADeadDeliveryOwed(t *testing.T) {
	ctx := context.Background()
	h := newHarness(t, c0, c1)
	now := time.Now()
	h.engine.Now = func() time.Time { return now }
	h.gh.mu.Lock()
	h.gh.failNext = []error{errors.New("502 Bad Gateway")}
	h.gh.mu.Unlock()
	if err := h.push(c0, c1, false); err == nil {
		t.Fatal("the push handled though GitHub failed the deployment's creation")
	}
	// The push's delivery went dead: nothing else will come for shop.
	for i, step := range []struct {
		after    time.Duration
		advanced int
		failed   bool
	}{
		{0, 0, false},               // within CreateListLag of the lost creation: looked at again once GitHub would list it
		{5 * time.Second, 0, false}, // not yet
		{6 * time.Second, 1, false}, // looked for on GitHub, then created
		{time.Hour, 0, false},       // nothing owed any more
	} {
		now = now.Add(step.after)
		n, err := h.engine.AdvanceOwing(ctx)
		if n != step.advanced || (err != nil) != step.failed {
			t.Errorf("sweep %d: %d advanced, %v; want %d, failed %v", i, n, err, step.advanced, step.failed)
		}
	}
	if n := h.gh.count(c1, "test"); n != 1 {
		t.Errorf("%d deployments of c1 to test, want 1", n)
	}
	if h.gh.creates != 2 {
		t.Errorf("%d creation calls, want 2 (the failed one, the sweep's)", h.gh.creates)
	}
}

// An intent the sweep cannot send yet — its environment held by the deploy
// of an older release, whose creation's answer was lost and which lastmile
// found only on looking it up — is not "advanced" at every sweep: it is
// counted only when something is sent, and looked at again after the
// sweep's pauses.
func TestAdvanceOwingPacesAnIntentHeldBack(t *testing.T) {
	ctx := context.Background()
	h := newHarness(t, c0, c1, c2)
	h.gh.loseNext = true
	if err := h.push(c0, c1, false); err == nil {
		t.Fatal("the push handled though the creation's answer was lost")
	}
	d1 := h.gh.deployment(c1, "test")
	if d1 == nil {
		t.Fatal("no deployment of c1 on GitHub")
	}
	h.gh.mu.Lock()
	h.gh.post(d1.id, pipeline.DeploymentInProgress, "https://github.com/acme/shop/actions/runs/31")
	h.gh.mu.Unlock()
	_ = h.push(c1, c2, false) // c1's creation looked up later: c2 waits behind its deploy
	if owing, err := h.db.Owing(ctx); err != nil || len(owing) != 1 {
		t.Fatalf("Owing = %v, %v; want shop", owing, err)
	}
	now := time.Now().Add(pipeline.CreateListLag)
	h.engine.Now = func() time.Time { return now }
	var log strings.Builder // AdvanceOwing logs from this goroutine only
	h.engine.Log = slog.New(slog.NewTextHandler(&log, nil))
	advanced := 0
	for range 30 { // half an hour of sweeps
		now = now.Add(time.Minute)
		n, err := h.engine.AdvanceOwing(ctx)
		if err != nil {
			t.Fatal(err)
		}
		advanced += n
	}
	if h.gh.deployment(c2, "test") != nil {
		t.Fatal("c2 deployed to test while c1's deploy runs there")
	}
	if advanced > 0 {
		t.Errorf("AdvanceOwing counted %d advances with nothing sent", advanced)
	}
	// Looked at after 1, 2, 4, 8 and 16 minutes' pauses: 5 times.
	if looks := strings.Count(log.String(), "deployment waits: a deploy of another release runs"); looks < 1 || looks > 5 {
		t.Errorf("the held intent looked at %d times in half an hour of sweeps, want 1 to 5 (paced)", looks)
	}
}

// pendingBuild is GitHub's 409 while the required context build is pending.
func pendingBuild() error {
	return &pipeline.RefusedError{Status: 409, Message: "Conflict: Commit status checks failed for main.",
		Contexts: []pipeline.ContextState{{Context: "build", State: "pending"}}}
}

// While a release waits for its required contexts, lastmile asks GitHub
// again only on an event that can have turned one green: a required
// context's success (its name compared without regard to case, as GitHub
// does), or a completed check suite — even a failed one, which may hold
// the required check run's success. Statuses that are pending, or of
// another context, change nothing and are ignored.
func TestContextsEventsAskAgainOnlyWhenARequiredContextMayBeGreen(t *testing.T) {
	h := newHarness(t, c0, c1)
	h.gh.config = "required_contexts: [build]\n" + threeEnvs
	h.gh.failNext = []error{pendingBuild(), pendingBuild(), pendingBuild()}
	if err := h.push(c0, c1, false); err != nil {
		t.Fatal(err)
	}
	status := func(context, state string) pipeline.ContextsChanged {
		return pipeline.ContextsChanged{Repo: shop, SHA: c1, Context: context, State: state}
	}
	for _, step := range []struct {
		ev      pipeline.ContextsChanged
		creates int // CreateDeployment calls so far
	}{
		{status("lint", "pending"), 1},
		{status("build", "pending"), 1},
		{status("lint", "success"), 1},
		{status("lint", "failure"), 1},
		{status("Build", "success"), 2}, // build still pending, says GitHub
		{pipeline.ContextsChanged{Repo: shop, SHA: c1, Context: "ci", State: "failure", CheckSuite: true}, 3},
		{status("build", "success"), 4},
	} {
		err := h.engine.HandleContexts(context.Background(), step.ev)
		var ignored *pipeline.Ignored
		if err != nil && !errors.As(err, &ignored) {
			t.Fatalf("%+v: %v", step.ev, err)
		}
		if h.gh.creates != step.creates {
			t.Errorf("after %s %s: %d deployments asked for, want %d", step.ev.Context, step.ev.State, h.gh.creates, step.creates)
		}
	}
	if h.gh.deployment(c1, "test") == nil {
		t.Error("no deployment to test once build is green")
	}
}

// A required context that fails makes lastmile ask GitHub again (the event
// alone is not believed: GitHub does not keep webhooks in order); GitHub's
// 409 listing it failed leaves the release waiting, saying so, for a
// re-run of the check: once it is green, the release is deployed.
func TestRequiredContextFailureWaitsForARerun(t *testing.T) {
	ctx := context.Background()
	h := newHarness(t, c0, c1)
	h.gh.config = "required_contexts: [build]\n" + threeEnvs
	h.gh.failNext = []error{pendingBuild(), &pipeline.RefusedError{Status: 409, Message: "Conflict: Commit status checks failed for main.",
		Contexts: []pipeline.ContextState{{Context: "build", State: "failure"}}}}
	if err := h.push(c0, c1, false); err != nil {
		t.Fatal(err)
	}
	if err := h.engine.HandleContexts(ctx, pipeline.ContextsChanged{Repo: shop, SHA: c1, Context: "build", State: "failure"}); err != nil {
		t.Fatal(err)
	}
	if h.gh.creates != 2 {
		t.Errorf("%d deployments asked for, want 2 (before build failed, and once it failed)", h.gh.creates)
	}
	rel, err := h.db.ReleaseOf(ctx, shop.ID, c1)
	if err != nil {
		t.Fatal(err)
	}
	rec, err := h.db.Audit(ctx, shop.FullName(), c1)
	if err != nil {
		t.Fatal(err)
	}
	waiting := ""
	for _, env := range rec.Environments {
		for _, d := range env.Deployments {
			if d.State == pipeline.DeploymentWaiting {
				waiting = d.Reason
			}
		}
	}
	if rel.State != pipeline.ReleaseActive || !strings.Contains(waiting, "build (failure)") {
		t.Errorf("release: %s %s %q, its deployment waiting for %q; want it active, waiting, saying build failed", rel.State, rel.StopKind, rel.StopReason, waiting)
	}
	// The check is re-run, green.
	if err := h.engine.HandleContexts(ctx, pipeline.ContextsChanged{Repo: shop, SHA: c1, Context: "build", State: "success"}); err != nil {
		t.Fatal(err)
	}
	if h.gh.deployment(c1, "test") == nil {
		t.Error("no deployment to test once build was re-run green")
	}
}

// Two releases wait for their builds. The older one's build turns green
// first: it is deployed, not superseded by the newer one, whose build may
// never pass (GitHub refused its deployment, and it has none). Here it
// fails, and the older release goes on to staging.
func TestReleaseWaitingForItsBuildSupersedesNothing(t *testing.T) {
	ctx := context.Background()
	h := newHarness(t, c0, c1, c2)
	h.gh.config = "required_contexts: [build]\n" + threeEnvs
	h.gh.failNext = []error{pendingBuild(), pendingBuild()}
	if err := h.push(c0, c1, false); err != nil {
		t.Fatal(err)
	}
	if err := h.push(c1, c2, false); err != nil {
		t.Fatal(err)
	}
	state := func(sha string) string {
		t.Helper()
		r, err := h.db.ReleaseOf(ctx, shop.ID, sha)
		if err != nil {
			t.Fatal(err)
		}
		return fmt.Sprintf("%s %s %s", r.State, r.StopKind, r.StopReason)
	}
	if err := h.engine.HandleContexts(ctx, pipeline.ContextsChanged{Repo: shop, SHA: c1, Context: "build", State: "success"}); err != nil {
		t.Fatal(err)
	}
	if h.gh.deployment(c1, "test") == nil {
		t.Fatalf("c1 not deployed to test once its build is green, while c2's still runs: c1 %s", state(c1))
	}
	h.gh.failNext = []error{&pipeline.RefusedError{Status: 409, Message: "Conflict: Commit status checks failed for main.",
		Contexts: []pipeline.ContextState{{Context: "build", State: "failure"}}}}
	if err := h.engine.HandleContexts(ctx, pipeline.ContextsChanged{Repo: shop, SHA: c2, Context: "build", State: "failure"}); err != nil {
		t.Fatal(err)
	}
	h.status(c1, "test", pipeline.DeploymentSuccess, 10, true)
	if h.gh.deployment(c1, "staging") == nil {
		t.Errorf("c1 not deployed to staging after its success in test (c1 %s; c2 %s)", state(c1), state(c2))
	}

	// c1 is deployed to test and queued there when c2 is pushed, its build
	// running: c1 stays. Once c2's build is green GitHub creates c2's
	// deployment, and c1's, not started, is superseded.
	h = newHarness(t, c0, c1, c2)
	h.gh.config = "required_contexts: [build]\n" + threeEnvs
	if err := h.push(c0, c1, false); err != nil {
		t.Fatal(err)
	}
	h.status(c1, "test", pipeline.DeploymentQueued, 10, true)
	h.gh.failNext = []error{pendingBuild()}
	if err := h.push(c1, c2, false); err != nil {
		t.Fatal(err)
	}
	if got := state(c1); got != "active  " {
		t.Errorf("c1, queued in test, once c2 is pushed with its build running: %s, want active", got)
	}
	if err := h.engine.HandleContexts(ctx, pipeline.ContextsChanged{Repo: shop, SHA: c2, Context: "build", State: "success"}); err != nil {
		t.Fatal(err)
	}
	if h.gh.deployment(c2, "test") == nil {
		t.Errorf("c2 not deployed to test once its build is green: %s", state(c2))
	}
	if got := state(c1); !strings.HasPrefix(got, "stopped superseded") {
		t.Errorf("c1, queued in test, once c2 is deployed there: %s, want superseded", got)
	}
}

// Nine releases queue up behind a deploy running in test, their builds
// still running: when it ends, lastmile asks GitHub for each, newest first,
// in one pass (each refused while its build runs) instead of one release
// per round, and the promotion settles.
func TestManyReleasesWaitingForTheirBuildsSettle(t *testing.T) {
	shas := []string{c0}
	for i := 1; i <= 10; i++ {
		shas = append(shas, strings.Repeat(fmt.Sprintf("%x", i), 40))
	}
	h := newHarness(t, shas...)
	h.gh.config = "required_contexts: [build]\nenvironments:\n  - name: test\n"
	if err := h.push(shas[0], shas[1], false); err != nil {
		t.Fatal(err)
	}
	h.status(shas[1], "test", pipeline.DeploymentInProgress, 10, true)
	for i := 2; i <= 10; i++ {
		if err := h.push(shas[i-1], shas[i], false); err != nil {
			t.Fatal(err)
		}
	}
	for range 9 {
		h.gh.failNext = append(h.gh.failNext, pendingBuild())
	}
	before := h.gh.creates
	d := h.gh.deployment(shas[1], "test")
	h.gh.mu.Lock()
	st := h.gh.post(d.id, pipeline.DeploymentSuccess, "https://github.com/acme/shop/actions/runs/10")
	h.gh.mu.Unlock()
	err := h.engine.HandleDeploymentStatus(context.Background(), pipeline.NewDeploymentStatus{Repo: shop,
		Deployment: pipeline.DeploymentInfo{GitHubID: d.id, SHA: shas[1], Environment: "test", Payload: mustJSON(t, d.payload)},
		Status:     st})
	if err != nil {
		t.Fatalf("test's success, with 9 releases whose builds run queued behind it: %v", err)
	}
	if n := h.gh.creates - before; n != 9 {
		t.Errorf("%d deployments asked for once test was free, want 9 (each release once, refused while its build runs)", n)
	}
	// The oldest one's build turns green first: it is deployed.
	if err := h.engine.HandleContexts(context.Background(), pipeline.ContextsChanged{Repo: shop, SHA: shas[2], Context: "build", State: "success"}); err != nil {
		t.Fatal(err)
	}
	if h.gh.deployment(shas[2], "test") == nil {
		t.Error("the oldest waiting release not deployed once its build is green")
	}
}

// GitHub's 422 "the endpoint has been spammed" passes: the intent stays, with
// the reason, and the delivery is handled again a minute or more later
// (LookAgain), when the deployment is created. Refused so again and again,
// the release stops in the end; any other 422 stops it at once.
func TestSpammedDeploymentIsCreatedLater(t *testing.T) {
	ctx := context.Background()
	spammed := func() error {
		return &pipeline.RefusedError{Status: 422, Message: "Validation Failed: the endpoint has been spammed."}
	}
	newClockedHarness := func(t *testing.T) (*harness, time.Time) {
		h := newHarness(t, c0, c1)
		now := time.Now()
		h.engine.Now = func() time.Time { return now }
		return h, now
	}
	release := func(h *harness) *pipeline.Release {
		h.t.Helper()
		rel, err := h.db.ReleaseOf(ctx, shop.ID, c1)
		if err != nil {
			h.t.Fatal(err)
		}
		return rel
	}

	t.Run("once", func(t *testing.T) {
		h, now := newClockedHarness(t)
		h.gh.failNext = []error{spammed()}
		err := h.push(c0, c1, false)
		var again *pipeline.LookAgain
		if !errors.As(err, &again) || again.At.Sub(now) < time.Minute {
			t.Fatalf("push while GitHub says spammed: %v; want to look again in a minute or more", err)
		}
		if rel := release(h); rel.State != pipeline.ReleaseActive {
			t.Fatalf("release: %s %s %q; want it active", rel.State, rel.StopKind, rel.StopReason)
		}
		work, err := h.db.Work(ctx, shop.ID)
		if err != nil || len(work) != 1 || work[0].State != pipeline.DeploymentIntent || !strings.Contains(work[0].Reason, "the endpoint has been spammed") {
			t.Fatalf("the test deployment: %+v, %v; want an intent saying GitHub's answer", work, err)
		}
		if err := h.push(c0, c1, false); err != nil { // the worker handles the push again
			t.Fatal(err)
		}
		if n := h.gh.count(c1, "test"); n != 1 {
			t.Errorf("deployments of c1 to test: %d, want 1", n)
		}
	})

	t.Run("again and again", func(t *testing.T) {
		h, now := newClockedHarness(t)
		for range 50 {
			h.gh.failNext = append(h.gh.failNext, spammed())
		}
		var waits []time.Duration
		for {
			err := h.push(c0, c1, false)
			var again *pipeline.LookAgain
			if !errors.As(err, &again) {
				if err != nil {
					t.Fatal(err)
				}
				break
			}
			if waits = append(waits, again.At.Sub(now)); len(waits) > 20 {
				t.Fatalf("still looking again after %d attempts: %v", len(waits), waits)
			}
		}
		if len(waits) < 2 || !slices.IsSorted(waits) || waits[0] < time.Minute {
			t.Errorf("waits %v; want a few, from a minute, growing", waits)
		}
		if rel := release(h); rel.State != pipeline.ReleaseStopped || rel.StopKind != pipeline.StopRefused ||
			!strings.Contains(rel.StopReason, "the endpoint has been spammed") {
			t.Errorf("release: %s %s %q; want it stopped, refused as spam", rel.State, rel.StopKind, rel.StopReason)
		}
	})

	t.Run("another 422", func(t *testing.T) {
		h, _ := newClockedHarness(t)
		h.gh.failNext = []error{&pipeline.RefusedError{Status: 422, Message: "Validation Failed (No ref found for: c1)"}}
		if err := h.push(c0, c1, false); err != nil {
			t.Fatal(err)
		}
		if rel := release(h); rel.State != pipeline.ReleaseStopped || rel.StopKind != pipeline.StopRefused {
			t.Errorf("release: %s %s %q; want it stopped at once", rel.State, rel.StopKind, rel.StopReason)
		}
	})
}

func TestUnexpectedDeploymentWithLastmilesMarker(t *testing.T) {
	h := newHarness(t, c0, c1)
	if err := h.push(c0, c1, false); err != nil {
		t.Fatal(err)
	}
	first := h.gh.deployment(c1, "test")
	// A second deployment for the same release and stage, with lastmile's
	// marker: created by an attempt whose lookup did not see the first.
	h.gh.mu.Lock()
	dup := &fakeDeployment{id: 9999, sha: c1, env: "test", payload: first.payload}
	h.gh.deps = append(h.gh.deps, dup)
	h.gh.mu.Unlock()
	ev := pipeline.NewDeployment{Repo: shop, Deployment: pipeline.DeploymentInfo{GitHubID: dup.id, SHA: c1,
		Environment: "test", Payload: mustJSON(h.t, dup.payload), CreatedAt: time.Now()}}
	for range 2 { // handled again: same outcome, no error
		if err := h.engine.HandleDeployment(context.Background(), ev); err != nil {
			t.Fatalf("deployment event of the duplicate: %v", err)
		}
	}
	if len(dup.statuses) != 1 || dup.statuses[0].State != pipeline.DeploymentInactive {
		t.Errorf("the duplicate's statuses: %+v, want one inactive", dup.statuses)
	}
	d, err := h.db.Deployment(context.Background(), dup.id)
	if err != nil || d.Origin != pipeline.OriginExternal {
		t.Errorf("the duplicate in the ledger: %+v, %v; want it recorded as not lastmile's", d, err)
	}
	if len(first.statuses) != 0 {
		t.Errorf("the real deployment got statuses %+v", first.statuses)
	}
	// The release goes on with the real one (not the newest of c1 in test).
	h.gh.mu.Lock()
	st := h.gh.post(first.id, pipeline.DeploymentSuccess, "https://github.com/acme/shop/actions/runs/11")
	h.gh.mu.Unlock()
	if err := h.engine.HandleDeploymentStatus(context.Background(), pipeline.NewDeploymentStatus{Repo: shop,
		Deployment: pipeline.DeploymentInfo{GitHubID: first.id, SHA: c1, Environment: "test", Payload: mustJSON(h.t, first.payload)},
		Status:     st}); err != nil {
		t.Fatal(err)
	}
	if h.gh.deployment(c1, "staging") == nil {
		t.Error("staging was not deployed after the real test deployment succeeded")
	}
}

// A deployment carrying lastmile's marker for a waiting intent, but of
// another commit or to another environment (one made before a backup of
// the database was restored, whose release ID names a new release now, or
// a copied payload), is not adopted as that intent's deployment: the
// intent is created when its required contexts turn green.
func TestDeploymentOfAnotherCommitOrEnvironmentIsNotAdopted(t *testing.T) {
	for name, other := range map[string]struct{ sha, env string }{
		"another commit":      {c0, "test"},
		"another environment": {c1, "sandbox"},
		"a copy":              {c1, "test"}, // GitHub refused the intent: no attempt of lastmile's made it
	} {
		t.Run(name, func(t *testing.T) {
			ctx := context.Background()
			h := newHarness(t, c0, c1)
			h.gh.config = "required_contexts: [build]\n" + threeEnvs
			h.gh.failNext = []error{&pipeline.RefusedError{Status: 409, Message: "Conflict: Commit status checks failed for main.",
				Contexts: []pipeline.ContextState{{Context: "build", State: "pending"}}}}
			if err := h.push(c0, c1, false); err != nil {
				t.Fatal(err)
			}
			rel, err := h.db.ReleaseOf(ctx, shop.ID, c1)
			if err != nil {
				t.Fatal(err)
			}
			inst, err := h.db.Instance(ctx)
			if err != nil {
				t.Fatal(err)
			}
			h.gh.mu.Lock()
			old := &fakeDeployment{id: 777, sha: other.sha, env: other.env,
				payload: pipeline.DeploymentPayload{Lastmile: pipeline.Marker{Instance: inst, Release: rel.ID, Stage: "test", Index: 0}}}
			h.gh.deps = append(h.gh.deps, old)
			h.gh.mu.Unlock()
			info := pipeline.DeploymentInfo{GitHubID: old.id, SHA: old.sha, Environment: old.env, Payload: mustJSON(t, old.payload), CreatedAt: time.Now()}
			if err := h.engine.HandleDeployment(ctx, pipeline.NewDeployment{Repo: shop, Deployment: info}); err != nil {
				t.Fatal(err)
			}
			if err := h.engine.HandleDeploymentStatus(ctx, pipeline.NewDeploymentStatus{Repo: shop, Deployment: info,
				Status: pipeline.StatusInfo{GitHubID: 7770, State: pipeline.DeploymentSuccess, CreatedAt: time.Now()}}); err != nil {
				t.Fatal(err)
			}
			if d, err := h.db.Deployment(ctx, old.id); err != nil {
				t.Fatal(err)
			} else if d.Origin != pipeline.OriginExternal {
				t.Errorf("deployment of %s to %s recorded as %s's (release #%d), want as not lastmile's", other.sha[:7], other.env, d.Origin, d.ReleaseID)
			}
			if h.gh.deployment(c1, "staging") != nil {
				t.Fatal("c1 went on to staging although it was never deployed to test")
			}
			if err := h.engine.HandleContexts(ctx, pipeline.ContextsChanged{Repo: shop, SHA: c1, Context: "build", State: "success"}); err != nil {
				t.Fatal(err)
			}
			created := h.gh.deployment(c1, "test")
			if created == nil || created.id == old.id {
				t.Fatalf("c1's deployment to test once build is green: %+v; want a new one", created)
			}
			if d, err := h.db.Deployment(ctx, created.id); err != nil {
				t.Fatal(err)
			} else if d.Origin != pipeline.OriginLastmile || d.ReleaseID != rel.ID {
				t.Errorf("c1's deployment to test recorded as %s's, release #%d; want lastmile's, release #%d", d.Origin, d.ReleaseID, rel.ID)
			}
		})
	}
}

// leadTimesObserved is the number of commits whose lead time to env was
// observed.
func (h *harness) leadTimesObserved(env string) uint64 {
	h.t.Helper()
	snap, err := h.db.MetricsSnapshot(context.Background())
	if err != nil {
		h.t.Fatal(err)
	}
	for _, s := range snap.Histograms[metrics.LeadTime] {
		if s.Labels[1] == env {
			return s.Count
		}
	}
	return 0
}

// release pushes sha (after before) and promotes it through envs.
func (h *harness) release(before, sha string, run int64, envs ...string) {
	h.t.Helper()
	h.mustPush(before, sha, false)
	h.promote(sha, run, envs...)
}

// mustPush is push, failing the test on an error.
func (h *harness) mustPush(before, after string, forced bool) {
	h.t.Helper()
	if err := h.push(before, after, forced); err != nil {
		h.t.Fatal(err)
	}
}

// promote has every deployment of sha succeed, environment after
// environment.
func (h *harness) promote(sha string, run int64, envs ...string) {
	h.t.Helper()
	for i, env := range envs {
		h.status(sha, env, pipeline.DeploymentSuccess, run+int64(i), true)
	}
}

// A rollback: c2 reached production and is bad, and the branch is
// force-pushed back to c1, which production ran before. That is a new
// release of c1, deployed through every environment again; the first
// release of c1 and its record stay as they were.
func TestRollbackToAReleasedCommitDeploysItAgain(t *testing.T) {
	ctx := context.Background()
	h := newHarness(t, c0, c1, c2)
	// A clock that moves 1 ms a reading, so that what happens in order is
	// recorded in order.
	var mu sync.Mutex
	clock := time.Now()
	h.engine.Now = func() time.Time { mu.Lock(); defer mu.Unlock(); clock = clock.Add(time.Millisecond); return clock }
	h.db.Now = h.engine.Now
	external := func(id int64, env string) *pipeline.Deployment {
		t.Helper()
		if err := h.engine.HandleDeployment(ctx, pipeline.NewDeployment{Repo: shop, Deployment: pipeline.DeploymentInfo{
			GitHubID: id, SHA: c1, Environment: env, CreatedAt: h.engine.Now()}}); err != nil {
			t.Fatal(err)
		}
		d, err := h.db.Deployment(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		return d
	}
	decide := func(run int64) {
		t.Helper()
		if err := h.engine.HandleProtectionRule(ctx, pipeline.ProtectionRuleRequest{Repo: shop, DeliveryID: fmt.Sprint("rule-", run),
			Environment: "staging", SHA: c1, RunID: run}); err != nil {
			t.Fatal(err)
		}
	}

	// A deployment of c1 by someone else before lastmile released it: it
	// belongs to no release, and is shown with the first release of c1.
	external(901, "test")
	if err := h.push(c0, c1, false); err != nil {
		t.Fatal(err)
	}
	decide(71)
	h.promote(c1, 10, "test", "staging", "production")
	first, err := h.db.ReleaseOf(ctx, shop.ID, c1)
	if err != nil {
		t.Fatal(err)
	}
	h.release(c1, c2, 20, "test", "staging", "production")

	if err := h.push(c2, c1, true); err != nil {
		t.Fatalf("force push back to c1: %v", err)
	}
	again, err := h.db.ReleaseOf(ctx, shop.ID, c1)
	if err != nil {
		t.Fatal(err)
	}
	if again.ID == first.ID || again.State != pipeline.ReleaseActive || again.ParentID != 0 {
		t.Fatalf("release of the rollback: %+v; want a new active release (first was #%d) building on none", again, first.ID)
	}
	// Handled again (a crash before its delivery was marked done): the
	// same release, not a third.
	if err := h.push(c2, c1, true); err != nil {
		t.Fatal(err)
	}
	if got, _ := h.db.ReleaseOf(ctx, shop.ID, c1); got.ID != again.ID {
		t.Errorf("the rollback handled again made release #%d, want #%d", got.ID, again.ID)
	}
	if n := h.gh.count(c1, "test"); n != 2 {
		t.Fatalf("deployments of c1 to test: %d, want 2 (the release and the rollback)", n)
	}
	if h.gh.deployment(c1, "staging").payload.Lastmile.Release != first.ID {
		t.Error("the rollback went on to staging before it succeeded in test")
	}
	// Someone else's deployments of c1 while the rollback is in test: the
	// one to test is the rollback's twin, the one to production the first
	// release's (the rollback is not there yet).
	if d := external(902, "test"); d.ReleaseID != again.ID {
		t.Errorf("external deployment to test linked to release #%d, want the rollback #%d", d.ReleaseID, again.ID)
	}
	if d := external(903, "production"); d.ReleaseID != first.ID {
		t.Errorf("external deployment to production linked to release #%d, want the first #%d", d.ReleaseID, first.ID)
	}
	decide(72)
	h.promote(c1, 30, "test", "staging", "production")
	for _, env := range []string{"test", "staging", "production"} {
		d := h.gh.deployment(c1, env)
		if h.gh.count(c1, env) != 2 || d.payload.Lastmile.Release != again.ID {
			t.Errorf("%s: %d deployments of c1, newest for release #%d; want 2, the newest for #%d",
				env, h.gh.count(c1, env), d.payload.Lastmile.Release, again.ID)
		}
	}
	if got, _ := h.db.ReleaseOf(ctx, shop.ID, c1); got.State != pipeline.ReleaseCompleted {
		t.Errorf("rollback release: %s, want completed", got.State)
	}
	// Every production deployment counts; the rollback brought no commit,
	// so no lead time is observed for it.
	if got := h.deploymentsCounted()["production/success"]; got != 3 {
		t.Errorf("production successes counted: %v, want 3", got)
	}
	if n := h.leadTimesObserved("production"); n != 2 {
		t.Errorf("lead times in production: %d, want 2 (c1 and c2, once each)", n)
	}

	// The audit record of c1 is the rollback's; the first release is
	// named, and readable by its ID. Each has its own deployments and
	// protection decisions.
	rec, err := h.db.Audit(ctx, "acme/shop", c1)
	if err != nil {
		t.Fatal(err)
	}
	if rec.Release.ID != again.ID || !slices.Equal(rec.OtherReleases, []int64{first.ID}) || len(rec.Commits) != 0 {
		t.Errorf("audit of c1: release #%d, others %v, %d commits; want #%d, [%d], none",
			rec.Release.ID, rec.OtherReleases, len(rec.Commits), again.ID, first.ID)
	}
	old, err := h.db.AuditRelease(ctx, "acme/shop", c1[:7], first.ID)
	if err != nil {
		t.Fatal(err)
	}
	if old.Release.ID != first.ID || !slices.Equal(old.OtherReleases, []int64{again.ID}) || len(old.Commits) != 1 {
		t.Errorf("audit of the first release of c1: #%d, others %v, %d commits", old.Release.ID, old.OtherReleases, len(old.Commits))
	}
	want := map[int64]map[string][]int64{ // release → environment → GitHub IDs of external deployments
		first.ID: {"test": {901}, "production": {903}},
		again.ID: {"test": {902}},
	}
	wantRuns := map[int64]int64{first.ID: 71, again.ID: 72}
	for _, r := range []*pipeline.AuditRecord{rec, old} {
		for _, env := range r.Environments {
			var own int
			var others []int64
			for _, d := range env.Deployments {
				switch {
				case d.Origin == pipeline.OriginLastmile && d.ReleaseID == r.Release.ID:
					own++
				case d.Origin == pipeline.OriginExternal:
					others = append(others, d.GitHubID)
				default:
					t.Errorf("release #%d in %s shows deployment %d of release #%d", r.Release.ID, env.Name, d.GitHubID, d.ReleaseID)
				}
			}
			if own != 1 || env.Outcome != pipeline.DeploymentSuccess || !slices.Equal(others, want[r.Release.ID][env.Name]) {
				t.Errorf("release #%d in %s: %d own deployments, outcome %s, external %v; want 1, success, %v",
					r.Release.ID, env.Name, own, env.Outcome, others, want[r.Release.ID][env.Name])
			}
		}
		if len(r.ProtectionDecisions) != 1 || r.ProtectionDecisions[0].RunID != wantRuns[r.Release.ID] {
			t.Errorf("release #%d: protection decisions %+v, want the one of run %d", r.Release.ID, r.ProtectionDecisions, wantRuns[r.Release.ID])
		}
	}
	if _, err := h.db.AuditRelease(ctx, "acme/shop", c1, 999); !errors.Is(err, pipeline.ErrNotFound) {
		t.Errorf("audit of a release that is not of c1: %v, want not found", err)
	}
}

// After a rollback a commit has a lastmile deployment per release in an
// environment: a deployment Actions created for a job is the twin of the
// one its workflow run deploys, and belongs to that one's release.
func TestExternalDeploymentIsLinkedByItsRun(t *testing.T) {
	ctx := context.Background()
	h := newHarness(t, c0, c1, c2)
	if err := h.push(c0, c1, false); err != nil {
		t.Fatal(err)
	}
	h.status(c1, "test", pipeline.DeploymentQueued, 10, true)
	first, err := h.db.ReleaseOf(ctx, shop.ID, c1)
	if err != nil {
		t.Fatal(err)
	}
	h.status(c1, "test", pipeline.DeploymentSuccess, 10, true)
	h.release(c1, c2, 20, "test")
	if err := h.push(c2, c1, true); err != nil {
		t.Fatal(err)
	}
	h.status(c1, "test", pipeline.DeploymentQueued, 30, true)
	again, err := h.db.ReleaseOf(ctx, shop.ID, c1)
	if err != nil || again.ID == first.ID {
		t.Fatalf("the rollback's release: %+v, %v", again, err)
	}
	for run, want := range map[int64]int64{10: first.ID, 30: again.ID} {
		id := 900 + run
		if err := h.engine.HandleDeployment(ctx, pipeline.NewDeployment{Repo: shop, Deployment: pipeline.DeploymentInfo{
			GitHubID: id, SHA: c1, Environment: "test", WorkflowRunID: run, CreatedAt: time.Now()}}); err != nil {
			t.Fatal(err)
		}
		d, err := h.db.Deployment(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		if d.ReleaseID != want {
			t.Errorf("the deployment Actions created for run %d belongs to release #%d, want #%d", run, d.ReleaseID, want)
		}
	}
}

// A commit that a force push removed from the branch never reaches an
// environment, and gets no lead time there, even when the release that
// replaced it does.
func TestLeadTimeCountsOnlyTheCommitsOfTheDeployedHistory(t *testing.T) {
	h := newHarness(t, c0, c1, c2)
	h.release(c0, c1, 10, "test", "staging", "production")
	if n := h.leadTimesObserved("production"); n != 1 {
		t.Fatalf("lead times in production after c1: %d, want 1", n)
	}
	// c2 fails in staging; the branch is force-pushed back to c0, which
	// goes to production.
	if err := h.push(c1, c2, false); err != nil {
		t.Fatal(err)
	}
	h.status(c2, "test", pipeline.DeploymentSuccess, 20, true)
	h.status(c2, "staging", pipeline.DeploymentFailure, 21, true)
	if err := h.push(c2, c0, true); err != nil {
		t.Fatal(err)
	}
	h.promote(c0, 30, "test", "staging", "production")
	if n := h.leadTimesObserved("production"); n != 1 {
		t.Errorf("lead times in production after the rollback: %d, want still 1 (c2 never reached production)", n)
	}
	// In test, c2 did arrive (with its own release).
	if n := h.leadTimesObserved("test"); n != 2 {
		t.Errorf("lead times in test: %d, want 2 (c1, c2)", n)
	}
}

// A roll-forward after a rollback brings back a commit that production
// already ran: its lead time was observed when it first arrived, and is not
// observed again.
func TestLeadTimeOfACommitIsObservedOncePerEnvironment(t *testing.T) {
	h := newHarness(t, c0, c1, c2)
	h.release(c0, c1, 10, "test", "staging", "production")
	h.release(c1, c2, 20, "test", "staging", "production")
	if err := h.push(c2, c1, true); err != nil { // the rollback
		t.Fatal(err)
	}
	h.promote(c1, 30, "test", "staging", "production")
	// The roll-forward: the branch is force-pushed to c2 again.
	h.gh.mu.Lock()
	h.gh.head = c2
	h.gh.mu.Unlock()
	now := time.Now()
	if err := h.engine.HandlePush(context.Background(), pipeline.Push{Repo: shop, DeliveryID: "roll-forward",
		Ref: "refs/heads/main", Before: c1, After: c2, Forced: true, DefaultBranch: "main", Pusher: "octocat",
		PushedAt: now, Commits: []pipeline.Commit{{SHA: c2, Title: "commit " + c2, Timestamp: now.Add(-time.Hour)}}}); err != nil {
		t.Fatal(err)
	}
	h.promote(c2, 40, "test", "staging", "production")
	if got := h.deploymentsCounted()["production/success"]; got != 4 {
		t.Fatalf("production successes counted: %v, want 4 (c1, c2, the rollback, the roll-forward)", got)
	}
	for _, env := range []string{"test", "staging", "production"} {
		if n := h.leadTimesObserved(env); n != 2 {
			t.Errorf("lead times in %s: %d, want 2 (c1 and c2, once each)", env, n)
		}
	}
}

func (h *harness) restoresObserved(env string) (count uint64, sum float64) {
	h.t.Helper()
	return h.histogram(metrics.TimeToRestore, env)
}

// Time to restore follows the statuses' times, not the order they arrive
// in: a failure that happened before the environment's last success starts
// no clock — it is measured at once to the first success after it, as in
// GitHub's order (this test expected no observation at all before: the
// failure was dropped) — and a success from before a failure restores
// nothing.
func TestTimeToRestoreWithStatusesDeliveredLate(t *testing.T) {
	h := newHarness(t, c0, c1, c2)
	if err := h.push(c0, c1, false); err != nil {
		t.Fatal(err)
	}
	// c1's test deploy runs and fails on GitHub, but lastmile hears of it
	// only after c2, pushed meanwhile, has succeeded there. (c2's push
	// makes c1's deployment inactive, and lastmile reads its statuses
	// back: there are none yet. The deploy workflow here starts it all
	// the same.)
	if err := h.push(c1, c2, false); err != nil {
		t.Fatal(err)
	}
	if h.gh.deployment(c2, "test") == nil {
		t.Fatal("c2 was not deployed to test")
	}
	started := h.status(c1, "test", pipeline.DeploymentInProgress, 11, false)
	late := h.status(c1, "test", pipeline.DeploymentFailure, 11, false) // happened first…
	h.gh.backdate(&started, time.Now().Add(-2*time.Minute))
	h.gh.backdate(&late, time.Now().Add(-time.Minute))
	h.status(c2, "test", pipeline.DeploymentSuccess, 12, true)
	h.deliver(c1, "test", started)
	h.deliver(c1, "test", late) // …delivered after c2's success
	// As in GitHub's order: test failed with c1's deploy and c2's success,
	// about a minute later, restored it.
	if n, sum := h.restoresObserved("test"); n != 1 || sum < 60 || sum > 70 {
		t.Errorf("time to restore observed %d times (%.0f s); want once, from c1's failure to c2's success (60 s)", n, sum)
	}
	// The next success in test sees no failure to restore from.
	if err := h.push(c2, c3, false); err != nil {
		t.Fatal(err)
	}
	h.status(c3, "test", pipeline.DeploymentSuccess, 14, true)
	if n, sum := h.restoresObserved("test"); n != 1 {
		t.Errorf("time to restore observed %d times (%.0f s) after the next success, want still 1", n, sum)
	}
}

// The first attempt's failure, delivered after the re-run's success (GitHub
// redelivered it), stays in the record but does not undo the success.
func TestLateFailureDoesNotOverwriteTheRerunSuccess(t *testing.T) {
	h := newHarness(t, c0, c1)
	if err := h.push(c0, c1, false); err != nil {
		t.Fatal(err)
	}
	h.status(c1, "test", pipeline.DeploymentInProgress, 11, true)
	first := h.status(c1, "test", pipeline.DeploymentFailure, 11, false) // its webhook is lost for now
	h.status(c1, "test", pipeline.DeploymentInProgress, 11, true)        // attempt 2
	h.status(c1, "test", pipeline.DeploymentSuccess, 11, true)
	h.deliver(c1, "test", first)
	if got := h.ledgerState(c1, "test"); got != pipeline.DeploymentSuccess {
		t.Errorf("test deployment after the late failure: %s, want success", got)
	}
	d, err := h.db.Deployment(context.Background(), h.gh.deployment(c1, "test").id)
	if err != nil || d.Reason != "" {
		t.Errorf("test deployment's reason %q (%v), want none", d.Reason, err)
	}
	if rel, _ := h.db.ReleaseOf(context.Background(), shop.ID, c1); rel.State != pipeline.ReleaseActive || h.gh.deployment(c1, "staging") == nil {
		t.Errorf("release of c1: %s %s; want it active and on to staging", rel.State, rel.StopKind)
	}
	// A re-run's success after a failure delivered in order clears the
	// failure's reason.
	h2 := newHarness(t, c0, c1)
	if err := h2.push(c0, c1, false); err != nil {
		t.Fatal(err)
	}
	h2.status(c1, "test", pipeline.DeploymentFailure, 11, true)
	h2.status(c1, "test", pipeline.DeploymentSuccess, 11, true)
	if d, err := h2.db.Deployment(context.Background(), h2.gh.deployment(c1, "test").id); err != nil || d.State != pipeline.DeploymentSuccess || d.Reason != "" {
		t.Errorf("after the re-run's success: %s, reason %q (%v)", d.State, d.Reason, err)
	}
}

// The rejection's review event delivered after the run's end, for which
// lastmile already wrote a failure: the release was rejected, not failed,
// and a rejection starts no time-to-restore clock.
func TestRejectionDeliveredAfterTheRunEnded(t *testing.T) {
	ctx := context.Background()
	h := newHarness(t, c0, c1, c2)
	h.release(c0, c1, 10, "test")
	h.status(c1, "staging", pipeline.DeploymentQueued, 11, true)
	h.runCompleted(11, c1, "failure")
	if len(h.gh.written) != 1 || h.gh.written[0].State != pipeline.DeploymentFailure {
		t.Fatalf("lastmile wrote %+v at the run's end, want a failure", h.gh.written)
	}
	h.deliver(c1, "staging", h.gh.deployment(c1, "staging").statuses[1]) // the failure lastmile wrote, as a webhook
	if err := h.engine.HandleReview(ctx, pipeline.Review{Repo: shop, DeliveryID: "review-1", Action: pipeline.ReviewRejected,
		Environments: []string{"staging"}, RunID: 11, HeadSHA: c1, Actor: "bob", Comment: "not today", At: time.Now()}); err != nil {
		t.Fatal(err)
	}
	rel, err := h.db.ReleaseOf(ctx, shop.ID, c1)
	if err != nil || rel.State != pipeline.ReleaseStopped || rel.StopKind != pipeline.StopRejected || !strings.Contains(rel.StopReason, "rejected by bob: not today") {
		t.Errorf("release of c1: %+v, %v; want stopped as rejected by bob", rel, err)
	}
	h.release(c1, c2, 20, "test", "staging")
	if n, _ := h.restoresObserved("staging"); n != 0 {
		t.Errorf("time to restore observed %d times in staging after a rejection", n)
	}
}

// c1's success in test is delivered after GitHub's automatic inactive for
// it (c2 succeeded there meanwhile): the deployment stays inactive, as on
// GitHub, but its success counts.
func TestSuccessDeliveredAfterTheAutomaticInactive(t *testing.T) {
	h := newHarness(t, c0, c1, c2)
	if err := h.push(c0, c1, false); err != nil {
		t.Fatal(err)
	}
	// c1's deploy runs and succeeds on GitHub; lastmile hears of it only
	// after c2, pushed meanwhile, has succeeded there.
	started := h.status(c1, "test", pipeline.DeploymentInProgress, 11, false)
	late := h.status(c1, "test", pipeline.DeploymentSuccess, 11, false)
	if err := h.push(c1, c2, false); err != nil {
		t.Fatal(err)
	}
	h.status(c2, "test", pipeline.DeploymentSuccess, 12, true)
	h.status(c1, "test", pipeline.DeploymentInactive, 11, true) // GitHub's, after c2's success
	h.deliver(c1, "test", started)
	h.deliver(c1, "test", late)
	d, err := h.db.Deployment(context.Background(), h.gh.deployment(c1, "test").id)
	if err != nil || d.State != pipeline.DeploymentInactive || d.SucceededAt.IsZero() {
		t.Errorf("c1's test deployment: %s, succeeded at %v (%v); want inactive, with its success", d.State, d.SucceededAt, err)
	}
	if got := h.deploymentsCounted()["test/success"]; got != 2 {
		t.Errorf("successes in test: %v, want 2", got)
	}
}

// GitHub's automatic inactive (on a successful deployment, when another
// deployment to the environment succeeds: here the deploy job's own
// Actions deployment) delivered before the success it follows: lastmile
// reads the deployment's statuses back from GitHub, and the release goes
// on, as it would have in GitHub's order — after a first attempt or after
// a re-run of a failed one. An inactive with no success before it still
// stops the release, as superseded.
func TestAutomaticInactiveBeforeTheSuccessDoesNotStopTheRelease(t *testing.T) {
	ctx := context.Background()
	goesOn := func(t *testing.T, h *harness, success pipeline.StatusInfo) {
		t.Helper()
		h.status(c1, "test", pipeline.DeploymentInactive, 11, true) // GitHub's, delivered first
		rel, err := h.db.ReleaseOf(ctx, shop.ID, c1)
		if err != nil {
			t.Fatal(err)
		}
		if rel.State != pipeline.ReleaseActive || h.gh.deployment(c1, "staging") == nil {
			t.Errorf("c1's release after its test deploy succeeded: %s/%s %q, staging deployment %v; want active, deploying to staging",
				rel.State, rel.StopKind, rel.StopReason, h.gh.deployment(c1, "staging") != nil)
		}
		h.deliver(c1, "test", success)
		if got := h.ledgerState(c1, "test"); got != pipeline.DeploymentInactive {
			t.Errorf("c1's test deployment: %s, want inactive", got)
		}
		if got := h.deploymentsCounted()["test/success"]; got != 1 {
			t.Errorf("successes in test: %v, want 1", got)
		}
	}
	t.Run("first attempt", func(t *testing.T) {
		h := newHarness(t, c0, c1)
		if err := h.push(c0, c1, false); err != nil {
			t.Fatal(err)
		}
		h.status(c1, "test", pipeline.DeploymentInProgress, 11, true)
		goesOn(t, h, h.status(c1, "test", pipeline.DeploymentSuccess, 11, false))
	})
	t.Run("re-run", func(t *testing.T) {
		h := newHarness(t, c0, c1)
		if err := h.push(c0, c1, false); err != nil {
			t.Fatal(err)
		}
		h.status(c1, "test", pipeline.DeploymentInProgress, 11, true)
		h.status(c1, "test", pipeline.DeploymentFailure, 11, true)
		h.status(c1, "test", pipeline.DeploymentInProgress, 11, true) // Re-run failed jobs
		goesOn(t, h, h.status(c1, "test", pipeline.DeploymentSuccess, 11, false))
	})
	t.Run("no success", func(t *testing.T) {
		h := newHarness(t, c0, c1)
		if err := h.push(c0, c1, false); err != nil {
			t.Fatal(err)
		}
		h.status(c1, "test", pipeline.DeploymentInProgress, 11, true)
		h.status(c1, "test", pipeline.DeploymentInactive, 11, true) // someone's, over the deploy
		rel, err := h.db.ReleaseOf(ctx, shop.ID, c1)
		if err != nil {
			t.Fatal(err)
		}
		if rel.State != pipeline.ReleaseStopped || rel.StopKind != pipeline.StopSuperseded || h.gh.deployment(c1, "staging") != nil {
			t.Errorf("c1's release after its test deployment was made inactive: %s/%s %q, staging deployment %v; want stopped, superseded",
				rel.State, rel.StopKind, rel.StopReason, h.gh.deployment(c1, "staging") != nil)
		}
	})
}

// The in_progress of a failed deploy delivered after its failure: the
// deploy had started, so the clock runs from the failure.
func TestTimeToRestoreWithInProgressDeliveredAfterTheFailure(t *testing.T) {
	h := newHarness(t, c0, c1, c2)
	if err := h.push(c0, c1, false); err != nil {
		t.Fatal(err)
	}
	running := h.status(c1, "test", pipeline.DeploymentInProgress, 11, false)
	h.status(c1, "test", pipeline.DeploymentFailure, 11, true)
	h.deliver(c1, "test", running)
	if err := h.push(c1, c2, false); err != nil {
		t.Fatal(err)
	}
	h.status(c2, "test", pipeline.DeploymentSuccess, 12, true)
	if n, _ := h.restoresObserved("test"); n != 1 {
		t.Errorf("time to restore observed %d times in test, want 1", n)
	}
}

// A re-run approved after a rejection: its in_progress is no late report
// of the rejected attempt, and starts no clock.
func TestRerunAfterARejectionStartsNoClock(t *testing.T) {
	ctx := context.Background()
	h := newHarness(t, c0, c1)
	h.release(c0, c1, 10, "test")
	h.status(c1, "staging", pipeline.DeploymentQueued, 11, true)
	if err := h.engine.HandleReview(ctx, pipeline.Review{Repo: shop, DeliveryID: "review-1", Action: pipeline.ReviewRejected,
		Environments: []string{"staging"}, RunID: 11, HeadSHA: c1, Actor: "bob", At: time.Now()}); err != nil {
		t.Fatal(err)
	}
	h.runCompleted(11, c1, "failure")
	h.deliver(c1, "staging", h.gh.deployment(c1, "staging").statuses[1]) // the failure lastmile wrote
	h.status(c1, "staging", pipeline.DeploymentInProgress, 11, true)     // re-run, approved
	h.status(c1, "staging", pipeline.DeploymentSuccess, 11, true)
	if n, _ := h.restoresObserved("staging"); n != 0 {
		t.Errorf("time to restore observed %d times in staging after a rejection and its re-run", n)
	}
	if h.ledgerState(c1, "staging") != pipeline.DeploymentSuccess || h.gh.deployment(c1, "production") == nil {
		t.Error("the re-run's success did not carry the release on")
	}
}

// A re-run whose deploy starts and fails breaks the environment as a first
// attempt would: the clock of time to restore starts, whether the first
// attempt was rejected or had succeeded, and the next success stops it.
func TestRerunThatStartsAndFailsStartsTheClock(t *testing.T) {
	for _, first := range []string{"rejected", "succeeded"} {
		t.Run(first, func(t *testing.T) {
			ctx := context.Background()
			h := newHarness(t, c0, c1, c2)
			h.release(c0, c1, 10, "test")
			if first == "rejected" {
				h.status(c1, "staging", pipeline.DeploymentQueued, 11, true)
				if err := h.engine.HandleReview(ctx, pipeline.Review{Repo: shop, DeliveryID: "review-1", Action: pipeline.ReviewRejected,
					Environments: []string{"staging"}, RunID: 11, HeadSHA: c1, Actor: "bob", At: time.Now()}); err != nil {
					t.Fatal(err)
				}
				h.runCompleted(11, c1, "failure")
				h.deliver(c1, "staging", h.gh.deployment(c1, "staging").statuses[1]) // the failure lastmile wrote
			} else {
				h.status(c1, "staging", pipeline.DeploymentInProgress, 11, true)
				h.status(c1, "staging", pipeline.DeploymentSuccess, 11, true)
			}
			if n, _ := h.restoresObserved("staging"); n != 0 {
				t.Fatalf("time to restore observed %d times before the re-run", n)
			}
			h.status(c1, "staging", pipeline.DeploymentInProgress, 11, true) // the re-run starts…
			h.status(c1, "staging", pipeline.DeploymentFailure, 11, true)    // …and breaks staging
			h.status(c1, "staging", pipeline.DeploymentInProgress, 11, true) // a third attempt…
			h.status(c1, "staging", pipeline.DeploymentFailure, 11, true)    // …fails again
			// c1's staging deployment counts once as each outcome it had:
			// a failure (rejected, or its re-run's), and its success.
			want := map[string]float64{"staging/failure": 1}
			if first == "succeeded" {
				want["staging/success"] = 1
			}
			if got := h.deploymentsCounted(); got["staging/failure"] != want["staging/failure"] || got["staging/success"] != want["staging/success"] {
				t.Errorf("deployments counted: %v; want staging %v", got, want)
			}
			h.release(c1, c2, 20, "test", "staging")
			if n, _ := h.restoresObserved("staging"); n != 1 {
				t.Errorf("time to restore observed %d times in staging after the re-run failed and c2 succeeded; want 1", n)
			}
		})
	}
}

// A re-run's failure delivered before its in_progress (GitHub does not
// promise the order): the clock starts at the re-run's failure, not at the
// first attempt's final status an hour before.
func TestRerunsFailureDeliveredBeforeItsStart(t *testing.T) {
	for _, first := range []string{"rejected", "succeeded"} {
		t.Run(first, func(t *testing.T) {
			ctx := context.Background()
			h := newHarness(t, c0, c1, c2)
			h.release(c0, c1, 10, "test")
			anHourAgo := func(st pipeline.StatusInfo) pipeline.StatusInfo {
				st.CreatedAt = st.CreatedAt.Add(-time.Hour)
				return st
			}
			if first == "rejected" {
				h.deliver(c1, "staging", anHourAgo(h.status(c1, "staging", pipeline.DeploymentQueued, 11, false)))
				if err := h.engine.HandleReview(ctx, pipeline.Review{Repo: shop, DeliveryID: "review-1", Action: pipeline.ReviewRejected,
					Environments: []string{"staging"}, RunID: 11, HeadSHA: c1, Actor: "bob", At: time.Now().Add(-time.Hour)}); err != nil {
					t.Fatal(err)
				}
				h.runCompleted(11, c1, "failure")
				h.deliver(c1, "staging", anHourAgo(h.gh.deployment(c1, "staging").statuses[1])) // the failure lastmile wrote
			} else {
				h.deliver(c1, "staging", anHourAgo(h.status(c1, "staging", pipeline.DeploymentInProgress, 11, false)))
				h.deliver(c1, "staging", anHourAgo(h.status(c1, "staging", pipeline.DeploymentSuccess, 11, false)))
			}
			running := h.status(c1, "staging", pipeline.DeploymentInProgress, 11, false)
			h.status(c1, "staging", pipeline.DeploymentFailure, 11, true) // delivered first
			h.deliver(c1, "staging", running)                             // then the re-run's start
			h.release(c1, c2, 20, "test", "staging")
			if n, sum := h.restoresObserved("staging"); n != 1 || sum > 60 {
				t.Errorf("time to restore in staging: %d observations, %.0f s; want 1, from the re-run's failure (seconds, not an hour)", n, sum)
			}
		})
	}
}

// A final status lastmile recorded alone (GitHub refused it) ends an
// attempt like any other: a re-run rejected after it, with no in_progress
// of its own, does not take the first attempt's for its own.
func TestRejectedRerunAfterAFailureOnlyLastmileRecorded(t *testing.T) {
	ctx := context.Background()
	h := newHarness(t, c0, c1, c2, c3)
	h.release(c0, c1, 10, "test")
	h.status(c1, "staging", pipeline.DeploymentInProgress, 11, true)
	d, err := h.db.Deployment(ctx, h.gh.deployment(c1, "staging").id)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := h.db.RecordStatus(ctx, d, pipeline.StatusInfo{State: pipeline.DeploymentError, Creator: "lastmile", CreatedAt: time.Now()}); err != nil {
		t.Fatal(err)
	}
	h.release(c1, c2, 20, "test", "staging")
	if n, _ := h.restoresObserved("staging"); n != 1 {
		t.Fatalf("restores after the failed deploy and c2: %d, want 1", n)
	}
	h.status(c1, "staging", pipeline.DeploymentFailure, 12, true) // a re-run, rejected
	h.release(c2, c3, 30, "test", "staging")
	if n, _ := h.restoresObserved("staging"); n != 1 {
		t.Errorf("restores in staging: %d, want 1 (the rejected re-run never started)", n)
	}
}

// A re-run of a successful deploy is rejected; the first attempt's success
// is delivered after: it counts, but neither undoes the rejection nor
// carries the stopped release on.
func TestSuccessDeliveredAfterTheRerunsFailure(t *testing.T) {
	ctx := context.Background()
	h := newHarness(t, c0, c1)
	// GitHub's times a second apart: a re-run, requested and rejected,
	// comes after the first attempt's end (the rejected attempt's end may
	// share the rejection's second).
	h.gh.now = steppingClock()
	if err := h.push(c0, c1, false); err != nil {
		t.Fatal(err)
	}
	h.status(c1, "test", pipeline.DeploymentQueued, 11, true)
	ok := h.status(c1, "test", pipeline.DeploymentSuccess, 11, false)
	// The re-run waits for a reviewer, who rejects it.
	if err := h.engine.HandleReview(ctx, pipeline.Review{Repo: shop, DeliveryID: "review-1", Action: pipeline.ReviewRejected,
		Environments: []string{"test"}, RunID: 11, HeadSHA: c1, Actor: "bob", At: h.gh.time()}); err != nil {
		t.Fatal(err)
	}
	// The rejected re-run's end, which lastmile writes (a failure the
	// Action wrote would be a later attempt's: one that deployed).
	id := h.gh.deployment(c1, "test").id
	h.gh.mu.Lock()
	failed := h.gh.postAs(id, pipeline.DeploymentFailure, "https://github.com/acme/shop/actions/runs/11", lastmileBot)
	h.gh.mu.Unlock()
	failed.ByLastmile = true
	h.deliver(c1, "test", failed)
	h.deliver(c1, "test", ok)
	rel, _ := h.db.ReleaseOf(ctx, shop.ID, c1)
	if h.ledgerState(c1, "test") != pipeline.DeploymentFailure || rel.State != pipeline.ReleaseStopped || rel.StopKind != pipeline.StopRejected {
		t.Errorf("after the late success: deployment %s, release %s %s; want failure, stopped as rejected", h.ledgerState(c1, "test"), rel.State, rel.StopKind)
	}
	if h.gh.deployment(c1, "staging") != nil {
		t.Error("the release went on to staging")
	}
}

// A failed deploy that had started starts the clock; the next success
// stops it.
// lastSuccess is lastmile_last_success_timestamp_seconds of env.
func (h *harness) lastSuccess(env string) float64 {
	h.t.Helper()
	snap, err := h.db.MetricsSnapshot(context.Background())
	if err != nil {
		h.t.Fatal(err)
	}
	for _, s := range snap.Gauges[metrics.LastSuccess] {
		if s.Labels[1] == env {
			return s.Value
		}
	}
	return 0
}

// A deployment that failed and whose re-run succeeded was deployed: deploy
// frequency (the success count) counts it, beside its failed attempt.
func TestRerunSuccessAfterAFailureIsCountedAsASuccess(t *testing.T) {
	h := newHarness(t, c0, c1)
	if err := h.push(c0, c1, false); err != nil {
		t.Fatal(err)
	}
	h.status(c1, "test", pipeline.DeploymentInProgress, 11, true)
	h.status(c1, "test", pipeline.DeploymentFailure, 11, true)
	h.status(c1, "test", pipeline.DeploymentInProgress, 11, true)
	h.status(c1, "test", pipeline.DeploymentSuccess, 11, true)
	// A redelivered success, and another re-run's, count nothing more.
	last := h.status(c1, "test", pipeline.DeploymentSuccess, 11, true)
	h.deliver(c1, "test", last)
	if got := h.deploymentsCounted(); len(got) != 2 || got["test/failure"] != 1 || got["test/success"] != 1 {
		t.Errorf("lastmile_deployments_total of test: %v; want failure 1 and success 1", got)
	}
}

// A deployment that had succeeded is deployed again (its job re-run), the
// re-run fails, and a third attempt succeeds: that success restores the
// environment and is its latest success, though the deployment had
// succeeded before. The deployment counts once as a success and once as
// a failure.
func TestRerunSuccessOfASucceededDeploymentRestores(t *testing.T) {
	h := newHarness(t, c0, c1)
	if err := h.push(c0, c1, false); err != nil {
		t.Fatal(err)
	}
	h.status(c1, "test", pipeline.DeploymentInProgress, 11, true)
	first := h.status(c1, "test", pipeline.DeploymentSuccess, 11, true)
	h.status(c1, "test", pipeline.DeploymentInProgress, 11, true)
	h.status(c1, "test", pipeline.DeploymentFailure, 11, true)
	h.status(c1, "test", pipeline.DeploymentInProgress, 11, true)
	again := h.status(c1, "test", pipeline.DeploymentSuccess, 11, true)
	if n, _ := h.restoresObserved("test"); n != 1 {
		t.Errorf("time to restore observed %d times in test, want 1 (the third attempt's success)", n)
	}
	if got, want := h.lastSuccess("test"), float64(again.CreatedAt.UnixMilli())/1000; got != want || got == float64(first.CreatedAt.UnixMilli())/1000 {
		t.Errorf("last success of test: %v, want the third attempt's %v", got, want)
	}
	if got := h.deploymentsCounted(); len(got) != 2 || got["test/success"] != 1 || got["test/failure"] != 1 {
		t.Errorf("lastmile_deployments_total of test: %v; want success 1 (counted when it first ended) and failure 1 (its re-run's), the third attempt nothing more", got)
	}
}

// A protection-rule request without sha (older GitHub versions send none,
// nor a deployment) is judged by the commit of its run, known from the
// run's workflow_run event; a run lastmile never heard of is rejected, with
// the reason.
func TestProtectionRuleWithoutShaJudgesTheRunsCommit(t *testing.T) {
	ctx := context.Background()
	h := newHarness(t, c0, c1)
	h.release(c0, c1, 10, "test")
	if err := h.engine.HandleWorkflowRun(ctx, pipeline.WorkflowRun{Repo: shop, Action: "requested", RunID: 81, Event: "deployment",
		HeadSHA: c1, Status: "queued", Attempt: 1, CreatedAt: time.Now(), UpdatedAt: time.Now(),
		URL: "https://github.com/acme/shop/actions/runs/81"}); err != nil {
		t.Fatal(err)
	}
	for run, want := range map[int64]string{81: "approved", 82: "rejected"} {
		req := pipeline.ProtectionRuleRequest{Repo: shop, DeliveryID: fmt.Sprint("rule-", run), Environment: "staging", RunID: run}
		if err := h.engine.HandleProtectionRule(ctx, req); err != nil {
			t.Fatal(err)
		}
		dec, err := h.db.ProtectionDecision(ctx, req)
		if err != nil {
			t.Fatal(err)
		}
		if dec.State != want || (run == 81 && dec.SHA != c1) || (run == 82 && !strings.Contains(dec.Comment, "could not tell which commit")) {
			t.Errorf("run %d: %s of %q (%s), want %s", run, dec.State, dec.SHA, dec.Comment, want)
		}
	}
}

// GitHub does not keep webhooks in order: the next environment's job can
// ask the protection rule before lastmile has the previous environment's
// success. While that deployment runs, the request waits (GitHub is not
// answered), and it is answered when the deployment ends: approved after a
// success, rejected after a failure. A request for a commit with no
// deployment running there is rejected at once.
func TestProtectionRuleWaitsForTheDeploymentBeforeIt(t *testing.T) {
	ctx := context.Background()
	h := newHarness(t, c0, c1, c2)
	if err := h.push(c0, c1, false); err != nil {
		t.Fatal(err)
	}
	judge := func(id, env, sha string, run int64) *pipeline.ProtectionDecision {
		t.Helper()
		req := pipeline.ProtectionRuleRequest{Repo: shop, DeliveryID: id, Environment: env, SHA: sha, RunID: run}
		if err := h.engine.HandleProtectionRule(ctx, req); err != nil {
			t.Fatal(err)
		}
		dec, err := h.db.ProtectionDecision(ctx, req)
		if err != nil {
			t.Fatal(err)
		}
		return dec
	}
	answers := func() []string {
		h.gh.mu.Lock()
		defer h.gh.mu.Unlock()
		return slices.Clone(h.gh.answers)
	}

	h.status(c1, "test", pipeline.DeploymentInProgress, 10, true)
	success := h.status(c1, "test", pipeline.DeploymentSuccess, 10, false) // on GitHub; its webhook comes late
	if dec := judge("rule-1", "staging", c1, 66); dec.State != pipeline.ProtectionWaiting || dec.Posted {
		t.Fatalf("staging job of c1 while its test deploy runs: %s, posted %v (%s); want waiting, not posted", dec.State, dec.Posted, dec.Comment)
	}
	// A redelivery of the request changes nothing.
	if dec := judge("rule-1", "staging", c1, 66); dec.State != pipeline.ProtectionWaiting {
		t.Fatalf("redelivered request: %s", dec.State)
	}
	if got := answers(); len(got) != 0 {
		t.Fatalf("GitHub answered while the test deploy runs: %q", got)
	}
	h.deliver(c1, "test", success)
	if dec := judge("rule-1", "staging", c1, 66); dec.State != pipeline.ProtectionApproved || !dec.Posted {
		t.Errorf("after the test success: %s, posted %v (%s); want approved, posted", dec.State, dec.Posted, dec.Comment)
	}
	if got, want := answers(), []string{"66 staging approved"}; !slices.Equal(got, want) {
		t.Errorf("answers %q, want %q", got, want)
	}

	// c2's test deploy runs and fails: the waiting request is rejected.
	if err := h.push(c1, c2, false); err != nil {
		t.Fatal(err)
	}
	h.status(c2, "test", pipeline.DeploymentInProgress, 20, true)
	if dec := judge("rule-2", "staging", c2, 77); dec.State != pipeline.ProtectionWaiting {
		t.Fatalf("staging job of c2 while its test deploy runs: %s (%s)", dec.State, dec.Comment)
	}
	h.status(c2, "test", pipeline.DeploymentFailure, 20, true)
	if dec := judge("rule-2", "staging", c2, 77); dec.State != pipeline.ProtectionRejected || !dec.Posted {
		t.Errorf("after the test failure: %s, posted %v (%s); want rejected, posted", dec.State, dec.Posted, dec.Comment)
	}
	// Nothing runs in staging for c2: production is rejected at once.
	if dec := judge("rule-3", "production", c2, 88); dec.State != pipeline.ProtectionRejected {
		t.Errorf("production job of c2, never deployed to staging: %s (%s)", dec.State, dec.Comment)
	}
	if got, want := answers(), []string{"66 staging approved", "77 staging rejected", "88 production rejected"}; !slices.Equal(got, want) {
		t.Errorf("answers %q, want %q", got, want)
	}
}

// A request that waited for the deploy before it is decided when that
// deploy's status comes. GitHub failing that answer fails nothing — the
// next environment's deployment is created, later events of the commit
// are handled — and the sweep sends the answer a minute on, within the
// hour. An answer GitHub refuses (404) is tried again, paced, for that
// hour only.
func TestProtectionRuleAnswerGitHubFailsIsSentBySweep(t *testing.T) {
	for _, c := range []struct {
		name    string
		fail    func(f *fakeGitHub)
		answers []string // what GitHub took in the end
	}{
		{"GitHub down", func(f *fakeGitHub) { f.failAnswers = 1000 }, []string{"66 staging approved"}},
		{"the run deleted", func(f *fakeGitHub) { f.refuseRuns = map[int64]bool{66: true} }, nil},
	} {
		t.Run(c.name, func(t *testing.T) {
			ctx := context.Background()
			h := newHarness(t, c0, c1)
			h.approvedNotTaken(c.fail) // fails the test if the handling fails
			if n := h.gh.count(c1, "staging"); n != 1 {
				t.Errorf("%d deployments of c1 to staging, want 1", n)
			}
			h.status(c1, "staging", pipeline.DeploymentInProgress, 20, true) // a later event of the commit
			h.gh.mu.Lock()
			h.gh.failAnswers = 0 // GitHub back
			h.gh.mu.Unlock()
			now := time.Now()
			h.engine.Now = func() time.Time { return now }
			calls := h.answerCalls()
			for range 12 { // 5 minutes apart: an hour, and more
				now = now.Add(5 * time.Minute)
				if _, err := h.engine.AnswerUnpostedProtectionRules(ctx); err != nil && c.answers != nil {
					t.Errorf("sweep: %v", err)
				}
			}
			if got := h.protectionAnswers(); !slices.Equal(got, c.answers) {
				t.Errorf("answers GitHub took %q, want %q", got, c.answers)
			}
			dec, err := h.db.ProtectionDecision(ctx, pipeline.ProtectionRuleRequest{DeliveryID: "rule-1"})
			if err != nil || dec.Posted != (c.answers != nil) {
				t.Errorf("decision after the sweeps: %+v, %v; want posted %v", dec, err, c.answers != nil)
			}
			if tries := h.answerCalls() - calls; c.answers == nil && (tries < 2 || tries > 6) {
				t.Errorf("the refused answer tried %d times by an hour of sweeps, want 2 to 6 (paced, then given up)", tries)
			}
		})
	}
}

// An approval GitHub did not take is judged again before the sweep sends
// it: a newer release has since succeeded in the environment, so
// deploying the older commit there would go backwards — the approval is
// withdrawn and a rejection saying so sent instead, rather than leaving
// the job to wait for GitHub's 30 days. The record keeps the approval
// (GitHub may have taken it, its reply lost) and the withdrawal; the
// request's delivery, retried by an operator, sends nothing more.
func TestUnpostedApprovalJudgedAgainBeforeItIsSent(t *testing.T) {
	ctx := context.Background()
	h := newHarness(t, c0, c1, c2)
	h.approvedNotTaken(func(f *fakeGitHub) { f.failAnswers = 1000 }) // GitHub fails the review calls for a while
	h.mustPush(c1, c2, false)
	h.promote(c2, 20, "test", "staging") // c2 succeeds in staging
	h.gh.mu.Lock()
	h.gh.failAnswers = 0 // GitHub back
	h.gh.mu.Unlock()
	calls := h.answerCalls()
	clock := time.Now().Add(2 * time.Minute)
	h.engine.Now = func() time.Time { return clock }
	if _, err := h.engine.AnswerUnpostedProtectionRules(ctx); err != nil {
		t.Fatal(err)
	}
	if got, want := h.protectionAnswers(), []string{"66 staging rejected"}; !slices.Equal(got, want) {
		t.Errorf("answers GitHub took %q, want %q (c2 has succeeded in staging since)", got, want)
	}
	h.gh.mu.Lock()
	sent := h.gh.lastComment
	h.gh.mu.Unlock()
	if !strings.Contains(sent, "would go backwards") {
		t.Errorf("rejection sent with %q, want it to say why", sent)
	}
	dec, err := h.db.ProtectionDecision(ctx, pipeline.ProtectionRuleRequest{DeliveryID: "rule-1"})
	if err != nil || dec.State != pipeline.ProtectionApproved || !dec.Posted || dec.Withdrawn == nil ||
		dec.Withdrawn.Comment != sent || !dec.Withdrawn.At.Equal(clock.Truncate(time.Millisecond)) {
		t.Fatalf("rule-1 after the sweep: %+v (withdrawn %+v), %v; want the approval, withdrawn at %s for the rejection sent, posted",
			dec, dec.Withdrawn, err, clock)
	}
	// Nothing more by the delivery's retry, nor by the sweep.
	if err := h.engine.HandleProtectionRule(ctx, pipeline.ProtectionRuleRequest{Repo: shop, DeliveryID: "rule-1", Environment: "staging", SHA: c1, RunID: 66}); err != nil {
		t.Fatal(err)
	}
	if _, err := h.engine.AnswerUnpostedProtectionRules(ctx); err != nil {
		t.Fatal(err)
	}
	if got := h.answerCalls() - calls; got != 1 {
		t.Errorf("%d answers sent after GitHub came back, want the one rejection", got)
	}
}

// The rejection that withdrew an approval late in the approval's hour is
// sent again for the hour after the withdrawal: its first sending failed
// too, and GitHub comes back after the approval's hour has passed. And
// one GitHub refuses (422: the run no longer waits — it may have taken
// the approval after all, its reply lost) is recorded as refused, not as
// a rejection GitHub has.
func TestWithdrawingRejectionSentForAnHourAfterTheWithdrawal(t *testing.T) {
	for _, refuses := range []bool{false, true} {
		t.Run(fmt.Sprintf("refused=%v", refuses), func(t *testing.T) {
			ctx := context.Background()
			h := newHarness(t, c0, c1, c2)
			dec := h.approvedNotTaken(func(f *fakeGitHub) { f.failAnswers = 1000 }) // GitHub fails the review calls for a long while
			h.mustPush(c1, c2, false)
			h.promote(c2, 20, "test", "staging") // c2 succeeds in staging: the approval no longer holds
			decided := dec.DecidedAt
			sweep := func(at time.Time) {
				t.Helper()
				h.engine.Now = func() time.Time { return at }
				_, _ = h.engine.AnswerUnpostedProtectionRules(ctx) // GitHub's failures are the errors
			}
			sweep(decided.Add(50 * time.Minute)) // withdrawn; the rejection not taken
			h.gh.mu.Lock()
			h.gh.failAnswers = 0 // GitHub back, after the approval's hour
			if refuses {
				h.gh.waitsNot = map[int64]bool{66: true}
			}
			h.gh.mu.Unlock()
			sweep(decided.Add(62 * time.Minute))
			dec, err := h.db.ProtectionDecision(ctx, pipeline.ProtectionRuleRequest{DeliveryID: "rule-1"})
			if err != nil || dec.Withdrawn == nil || !dec.Posted || dec.Refused != refuses {
				t.Fatalf("rule-1: %+v (withdrawn %+v), %v; want withdrawn, posted, refused %v", dec, dec.Withdrawn, err, refuses)
			}
			want := []string{"66 staging rejected"}
			if refuses {
				want = nil
			}
			if got := h.protectionAnswers(); !slices.Equal(got, want) {
				t.Errorf("answers GitHub took: %q, want %q", got, want)
			}
		})
	}
}

// An approval judged again, and still approved, is sent as recorded once
// judged: another handler that withdrew it while the judging compared
// commits (the sweep, as a redelivery of the request is handled) has the
// rejection sent, not the approval it withdrew.
func TestApprovalWithdrawnWhileJudgedAgainIsNotSent(t *testing.T) {
	ctx := context.Background()
	h := newHarness(t, c0, c1)
	dec := h.approvedNotTaken(func(f *fakeGitHub) { f.failAnswers = 1 })
	h.gh.mu.Lock()
	h.gh.onRelation = func() {
		other := *dec
		if err := h.db.WithdrawProtectionApproval(ctx, &other, "lastmile rejects: withdrawn meanwhile", time.Now()); err != nil {
			t.Error(err)
		}
	}
	h.gh.mu.Unlock()
	// The request's delivery, handled again: judged again, approved.
	if err := h.engine.HandleProtectionRule(ctx, pipeline.ProtectionRuleRequest{Repo: shop, DeliveryID: "rule-1", Environment: "staging", SHA: c1, RunID: 66}); err != nil {
		t.Fatal(err)
	}
	if got, want := h.protectionAnswers(), []string{"66 staging rejected"}; !slices.Equal(got, want) {
		t.Errorf("answers GitHub took: %q, want %q (the approval was withdrawn as it was judged)", got, want)
	}
}

// A rejection GitHub did not take, of a run's first attempt, is not sent
// once a re-run of the run has asked again: GitHub answers by run and
// environment, so it would reject the re-run, now waiting — whose own
// request lastmile approves, the previous environment's re-run having
// succeeded.
func TestUnpostedRejectionOfAnEarlierAttemptNotSentToTheRerun(t *testing.T) {
	ctx := context.Background()
	h := newHarness(t, c0, c1)
	h.release(c0, c1, 10, "test")
	h.status(c1, "staging", pipeline.DeploymentInProgress, 11, true)
	if dec := h.judge("rule-1", "production", c1, 40); dec.State != pipeline.ProtectionWaiting {
		t.Fatalf("rule-1: %s", dec.State)
	}
	h.gh.mu.Lock()
	h.gh.failAnswers = 1000
	h.gh.mu.Unlock()
	h.status(c1, "staging", pipeline.DeploymentFailure, 11, true) // rule-1 rejected, not taken
	if dec, _ := h.db.ProtectionDecision(ctx, pipeline.ProtectionRuleRequest{DeliveryID: "rule-1"}); dec.State != pipeline.ProtectionRejected || dec.Posted {
		t.Fatalf("rule-1 after the failure: %+v; want rejected, not posted", dec)
	}
	// The staging deploy re-run; then run 40 re-run, whose production job
	// asks again.
	h.status(c1, "staging", pipeline.DeploymentInProgress, 11, true)
	if dec := h.judge("rule-2", "production", c1, 40); dec.State != pipeline.ProtectionWaiting {
		t.Fatalf("rule-2: %s %q", dec.State, dec.Comment)
	}
	h.gh.mu.Lock()
	h.gh.failAnswers = 0 // GitHub takes answers again
	h.gh.mu.Unlock()
	h.status(c1, "staging", pipeline.DeploymentSuccess, 11, true)
	now := time.Now().Add(2 * time.Minute) // and the sweep
	h.engine.Now = func() time.Time { return now }
	if _, err := h.engine.AnswerUnpostedProtectionRules(ctx); err != nil {
		t.Fatal(err)
	}
	if got, want := h.protectionAnswers(), []string{"40 production approved"}; !slices.Equal(got, want) {
		t.Errorf("answers GitHub took for run 40, in order: %q; want %q (c1 succeeded in staging)", got, want)
	}
}

// An answer GitHub did not take, of a repository since removed from its
// installation (it left lastmile), is not sent again: lastmile can no
// longer reach it.
func TestUnpostedProtectionAnswerOfARepositoryGoneNotSent(t *testing.T) {
	ctx := context.Background()
	h := newHarness(t, c0, c1)
	if err := h.push(c0, c1, false); err != nil {
		t.Fatal(err)
	}
	h.gh.mu.Lock()
	h.gh.failAnswers = 1
	h.gh.mu.Unlock()
	req := pipeline.ProtectionRuleRequest{Repo: shop, DeliveryID: "rule-9", Environment: "staging", SHA: c1, RunID: 99}
	if err := h.engine.HandleProtectionRule(ctx, req); err == nil {
		t.Fatal("the rejection reported sent though GitHub failed it")
	}
	if err := h.db.DetachRepo(ctx, shop.ID, time.Now()); err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	h.engine.Now = func() time.Time { return now }
	before := h.answerCalls()
	for range 48 {
		now = now.Add(time.Hour)
		if _, err := h.engine.AnswerUnpostedProtectionRules(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if calls := h.answerCalls() - before; calls != 0 {
		t.Errorf("%d answers sent in 2 days for a repository removed from its installation; want none", calls)
	}
}

// An answer GitHub did not take, that no delivery will send again (the
// sweep decided it: the request waited too long), is sent again by the
// sweep, a minute after it was decided at the earliest, then after pauses
// that double while GitHub fails; and no longer once it is an hour old
// (an answer is about the moment it was decided).
func TestUnpostedProtectionAnswersSentAgainBySweep(t *testing.T) {
	ctx := context.Background()
	h := newHarness(t, c0, c1)
	if err := h.push(c0, c1, false); err != nil {
		t.Fatal(err)
	}
	h.status(c1, "test", pipeline.DeploymentInProgress, 10, true) // and never ends
	if dec := h.judge("rule-1", "staging", c1, 66); dec.State != pipeline.ProtectionWaiting {
		t.Fatalf("staging job while the test deploy runs: %s (%s)", dec.State, dec.Comment)
	}
	now := time.Now().Add(pipeline.HoldRunning + time.Minute)
	h.engine.Now = func() time.Time { return now }
	h.db.Now = func() time.Time { return now }
	h.gh.mu.Lock()
	h.gh.failAnswers = 3
	h.gh.mu.Unlock()
	if _, err := h.engine.AnswerLongWaitingProtectionRules(ctx); err == nil {
		t.Fatal("the sweep's rejection reported sent though GitHub failed it")
	}
	dec, err := h.db.ProtectionDecision(ctx, pipeline.ProtectionRuleRequest{DeliveryID: "rule-1"})
	if err != nil || dec.State != pipeline.ProtectionRejected || dec.Posted {
		t.Fatalf("after the failed sweep: %+v, %v; want rejected, not posted", dec, err)
	}
	resend := func(after time.Duration) (int, error) {
		t.Helper()
		now = now.Add(after)
		return h.engine.AnswerUnpostedProtectionRules(ctx)
	}
	// Not within a minute of the decision; then at once, GitHub failing
	// twice more: the second try only after the pause.
	for i, step := range []struct {
		after    time.Duration
		sent     int
		failed   bool
		attempts int // ReviewProtectionRule calls so far
	}{
		{30 * time.Second, 0, false, 1},
		{31 * time.Second, 0, true, 2},  // fails; next in a minute
		{30 * time.Second, 0, false, 2}, // paused
		{31 * time.Second, 0, true, 3},  // fails; next in two minutes
		{time.Minute, 0, false, 3},      // paused
		{time.Minute + time.Second, 1, false, 4},
		{time.Hour, 0, false, 4}, // posted: nothing more to send
	} {
		n, err := resend(step.after)
		if n != step.sent || (err != nil) != step.failed || h.answerCalls() != step.attempts {
			t.Errorf("sweep %d: sent %d, %v, %d attempts; want %d sent, failed %v, %d attempts", i, n, err, h.answerCalls(), step.sent, step.failed, step.attempts)
		}
	}
	if got, want := h.protectionAnswers(), []string{"66 staging rejected"}; !slices.Equal(got, want) {
		t.Errorf("answers %q, want %q", got, want)
	}

	// One decided over an hour ago is left.
	h.gh.mu.Lock()
	h.gh.failAnswers = 1
	h.gh.mu.Unlock()
	req := pipeline.ProtectionRuleRequest{Repo: shop, DeliveryID: "rule-2", Environment: "staging", SHA: c1, RunID: 77}
	if err := h.engine.HandleProtectionRule(ctx, req); err == nil {
		t.Fatal("a rejection reported sent though GitHub failed it")
	}
	before := h.answerCalls()
	if n, err := resend(61 * time.Minute); n != 0 || err != nil || h.answerCalls() != before {
		t.Errorf("61 minutes on: sent %d, %v, %d more attempts; want none", n, err, h.answerCalls()-before)
	}
}

// A re-run of a failed deploy to the previous environment runs as a first
// attempt does: a protection-rule request waits for it rather than being
// rejected, and is answered when the re-run ends.
func TestProtectionRuleWaitsForARerunInProgress(t *testing.T) {
	h := newHarness(t, c0, c1)
	h.release(c0, c1, 10, "test")
	h.status(c1, "staging", pipeline.DeploymentInProgress, 11, true)
	h.status(c1, "staging", pipeline.DeploymentFailure, 11, true)
	h.status(c1, "staging", pipeline.DeploymentInProgress, 11, true) // Re-run failed jobs
	if dec := h.judge("rule-1", "production", c1, 40); dec.State != pipeline.ProtectionWaiting || dec.Posted {
		t.Fatalf("production job of c1 while its staging re-run runs: %s, posted %v (%s); want waiting", dec.State, dec.Posted, dec.Comment)
	}
	h.status(c1, "staging", pipeline.DeploymentSuccess, 11, true)
	if dec := h.judge("rule-1", "production", c1, 40); dec.State != pipeline.ProtectionApproved || !dec.Posted {
		t.Errorf("after the staging re-run succeeded: %s, posted %v (%s); want approved, posted", dec.State, dec.Posted, dec.Comment)
	}
}

// GitHub does not deliver webhooks in order: a staging job's request may
// come while lastmile has heard only the queued of the commit's test
// deploy, its in_progress and success still on their way. It waits for
// them rather than rejecting a commit that has succeeded.
func TestProtectionRuleWaitsForADeployHeardOnlyQueued(t *testing.T) {
	h := newHarness(t, c0, c1)
	if err := h.push(c0, c1, false); err != nil {
		t.Fatal(err)
	}
	h.status(c1, "test", pipeline.DeploymentQueued, 10, true)
	started := h.status(c1, "test", pipeline.DeploymentInProgress, 10, false)
	success := h.status(c1, "test", pipeline.DeploymentSuccess, 10, false)
	if dec := h.judge("rule-1", "staging", c1, 66); dec.State != pipeline.ProtectionWaiting || dec.Posted {
		t.Fatalf("staging job of c1, its test deploy heard queued: %s, posted %v (%s); want waiting", dec.State, dec.Posted, dec.Comment)
	}
	h.deliver(c1, "test", started)
	h.deliver(c1, "test", success)
	if dec := h.judge("rule-1", "staging", c1, 66); dec.State != pipeline.ProtectionApproved || !dec.Posted {
		t.Errorf("after the test success: %s, posted %v (%s); want approved, posted", dec.State, dec.Posted, dec.Comment)
	}
	// lastmile has created c1's staging deployment meanwhile, which no
	// run has taken up: a production job is rejected at once.
	if dec := h.judge("rule-2", "production", c1, 67); dec.State != pipeline.ProtectionRejected {
		t.Errorf("production job of c1, its staging deployment created, not run: %s (%s); want rejected", dec.State, dec.Comment)
	}
}

// In a repository whose workflows own their deployments, no run takes up
// lastmile's own: a job of a commit whose test job failed is rejected at
// once, not held for a day by lastmile's test deployment, which nothing
// will run.
func TestProtectionRuleDoesNotWaitForADeploymentNoRunTookUp(t *testing.T) {
	ctx := context.Background()
	h := newHarness(t, c0, c1)
	if err := h.push(c0, c1, false); err != nil {
		t.Fatal(err)
	}
	info := pipeline.DeploymentInfo{GitHubID: 901, SHA: c1, Environment: "test", Creator: "octocat", CreatedAt: time.Now(), WorkflowRunID: 77}
	if err := h.engine.HandleDeployment(ctx, pipeline.NewDeployment{Repo: shop, Deployment: info}); err != nil {
		t.Fatal(err)
	}
	if err := h.engine.HandleDeploymentStatus(ctx, pipeline.NewDeploymentStatus{Repo: shop, Deployment: info,
		Status: pipeline.StatusInfo{GitHubID: 9010, State: pipeline.DeploymentFailure, CreatedAt: time.Now()}}); err != nil {
		t.Fatal(err)
	}
	if dec := h.judge("rule-88", "staging", c1, 88); dec.State != pipeline.ProtectionRejected {
		t.Errorf("staging job of c1, which failed in test: %s, posted %v (%s); want rejected at once", dec.State, dec.Posted, dec.Comment)
	}
}

// A protection-rule request that waits is answered when lastmile learns how
// the deployment before it ended from its run's end (the success's webhook
// lost), not only from a deployment_status.
func TestWaitingProtectionRuleAnsweredAtTheRunsEnd(t *testing.T) {
	ctx := context.Background()
	h := newHarness(t, c0, c1)
	if err := h.push(c0, c1, false); err != nil {
		t.Fatal(err)
	}
	h.status(c1, "test", pipeline.DeploymentInProgress, 10, true)
	h.status(c1, "test", pipeline.DeploymentSuccess, 10, false) // its webhook is lost
	req := pipeline.ProtectionRuleRequest{Repo: shop, DeliveryID: "rule-1", Environment: "staging", SHA: c1, RunID: 66}
	if err := h.engine.HandleProtectionRule(ctx, req); err != nil {
		t.Fatal(err)
	}
	if dec, err := h.db.ProtectionDecision(ctx, req); err != nil || dec.State != pipeline.ProtectionWaiting {
		t.Fatalf("decision: %+v, %v; want waiting", dec, err)
	}
	h.runCompleted(10, c1, "success")
	if dec, err := h.db.ProtectionDecision(ctx, req); err != nil || dec.State != pipeline.ProtectionApproved || !dec.Posted {
		t.Errorf("decision after the run's end: %+v, %v; want approved, posted", dec, err)
	}
}

// GitHub's environment names ignore case: a job in "staging" is judged by
// the configuration's "Staging", and its commit's success in "Test" counts.
func TestProtectionRuleIgnoresTheCaseOfEnvironmentNames(t *testing.T) {
	ctx := context.Background()
	h := newHarness(t, c0, c1)
	h.gh.config = "environments:\n  - name: Test\n  - name: Staging\n  - name: Production\n"
	h.release(c0, c1, 10, "Test")
	req := pipeline.ProtectionRuleRequest{Repo: shop, DeliveryID: "rule-1", Environment: "staging", SHA: c1, RunID: 66}
	if err := h.engine.HandleProtectionRule(ctx, req); err != nil {
		t.Fatal(err)
	}
	dec, err := h.db.ProtectionDecision(ctx, req)
	if err != nil || dec.State != pipeline.ProtectionApproved {
		t.Errorf("job in %q, configuration %q: %+v, %v; want approved", "staging", "Staging", dec, err)
	}
	// The staging job's own deployment (Actions'), spelled as the workflow
	// spells it, succeeds: production may follow.
	info := pipeline.DeploymentInfo{GitHubID: 901, SHA: c1, Environment: "staging", CreatedAt: time.Now(), WorkflowRunID: 66}
	if err := h.engine.HandleDeployment(ctx, pipeline.NewDeployment{Repo: shop, Deployment: info}); err != nil {
		t.Fatal(err)
	}
	if err := h.engine.HandleDeploymentStatus(ctx, pipeline.NewDeploymentStatus{Repo: shop, Deployment: info,
		Status: pipeline.StatusInfo{GitHubID: 9010, State: pipeline.DeploymentSuccess, CreatedAt: time.Now()}}); err != nil {
		t.Fatal(err)
	}
	req = pipeline.ProtectionRuleRequest{Repo: shop, DeliveryID: "rule-2", Environment: "PRODUCTION", SHA: c1, RunID: 67}
	if err := h.engine.HandleProtectionRule(ctx, req); err != nil {
		t.Fatal(err)
	}
	dec, err = h.db.ProtectionDecision(ctx, req)
	if err != nil || dec.State != pipeline.ProtectionApproved {
		t.Errorf("job in %q after the success in %q: %+v, %v; want approved", "PRODUCTION", "staging", dec, err)
	}
}

// A deployment made through the API, not by lastmile nor by Actions for a
// job, proves nothing to the protection rule, whatever status it was given;
// the one Actions created for a job of a workflow run does.
func TestProtectionRuleIgnoresDeploymentsMadeByHand(t *testing.T) {
	ctx := context.Background()
	h := newHarness(t, c0, c1)
	h.release(c0, c1, 10, "test")
	succeedExternally := func(id, run int64) {
		t.Helper()
		h.externalSuccess(id, c1, "staging", "mallory", run)
	}
	judge := func(run int64) *pipeline.ProtectionDecision {
		t.Helper()
		req := pipeline.ProtectionRuleRequest{Repo: shop, DeliveryID: fmt.Sprint("rule-", run), Environment: "production", SHA: c1, RunID: run}
		if err := h.engine.HandleProtectionRule(ctx, req); err != nil {
			t.Fatal(err)
		}
		dec, err := h.db.ProtectionDecision(ctx, req)
		if err != nil {
			t.Fatal(err)
		}
		return dec
	}
	succeedExternally(901, 0)
	if dec := judge(91); dec.State != "rejected" {
		t.Errorf("production approved on a staging deployment made by hand: %s (%s)", dec.State, dec.Comment)
	}
	succeedExternally(902, 77) // Actions' deployment for a job of run 77
	if dec := judge(92); dec.State != "approved" {
		t.Errorf("production not approved after the staging job's success: %s (%s)", dec.State, dec.Comment)
	}
}

// judge hands lastmile a deployment_protection_rule request for run's job
// deploying sha to env, and returns its recorded decision.
// clockedTestDeploy releases c1 (pushed on c0) and sets GitHub's clock to
// t0, an hour ago in whole seconds, and its job logs to logs; statusAt
// posts, and delivers, a status of c1's test deployment by run 11 (its
// log_url the run's, naming no job) at t0+offset.
func (h *harness) clockedTestDeploy(logs map[int64]string) (t0 time.Time, statusAt func(offset time.Duration, state pipeline.DeploymentState)) {
	h.t.Helper()
	if err := h.push(c0, c1, false); err != nil {
		h.t.Fatal(err)
	}
	t0 = time.Now().Add(-time.Hour).Truncate(time.Second)
	var mu sync.Mutex
	at := t0
	h.gh.mu.Lock()
	h.gh.now = func() time.Time { mu.Lock(); defer mu.Unlock(); return at }
	h.gh.logs = logs
	h.gh.mu.Unlock()
	return t0, func(offset time.Duration, state pipeline.DeploymentState) {
		h.t.Helper()
		mu.Lock()
		at = t0.Add(offset)
		mu.Unlock()
		h.status(c1, "test", state, 11, true)
	}
}

// pushRenamed has lastmile hear of a push from before to after of acme/shop
// renamed acme/store, made now, and returns when.
func (h *harness) pushRenamed(before, after string) time.Time {
	h.t.Helper()
	renamed := shop
	renamed.Name = "store"
	h.gh.mu.Lock()
	h.gh.head = after
	h.gh.mu.Unlock()
	now := time.Now()
	if err := h.engine.HandlePush(context.Background(), pipeline.Push{Repo: renamed, DeliveryID: "renamed", Ref: "refs/heads/main",
		Before: before, After: after, DefaultBranch: "main", Pusher: "octocat", PushedAt: now,
		Commits: []pipeline.Commit{{SHA: after, Timestamp: now.Add(-time.Minute)}}}); err != nil {
		h.t.Fatal(err)
	}
	return now
}

// externalSuccess has lastmile hear of a deployment it did not create
// (GitHubID id, by creator; an Actions job's when run is not 0) and of its
// success.
func (h *harness) externalSuccess(id int64, sha, env, creator string, run int64) {
	h.t.Helper()
	ctx := context.Background()
	info := pipeline.DeploymentInfo{GitHubID: id, SHA: sha, Environment: env, Creator: creator,
		CreatedAt: time.Now(), WorkflowRunID: run}
	if err := h.engine.HandleDeployment(ctx, pipeline.NewDeployment{Repo: shop, Deployment: info}); err != nil {
		h.t.Fatal(err)
	}
	if err := h.engine.HandleDeploymentStatus(ctx, pipeline.NewDeploymentStatus{Repo: shop, Deployment: info,
		Status: pipeline.StatusInfo{GitHubID: id * 10, State: pipeline.DeploymentSuccess, CreatedAt: time.Now()}}); err != nil {
		h.t.Fatal(err)
	}
}

// protectionAnswers is what GitHub took of the protection-rule answers.
// approvedNotTaken has c1 pushed after c0 and its test deploy run while
// rule-1 (run 66's staging job) asks and waits for it; then, fail set on
// GitHub, the deploy's success has lastmile approve rule-1, an answer
// GitHub does not take. It returns the recorded decision.
func (h *harness) approvedNotTaken(fail func(f *fakeGitHub)) *pipeline.ProtectionDecision {
	h.t.Helper()
	if err := h.push(c0, c1, false); err != nil {
		h.t.Fatal(err)
	}
	h.status(c1, "test", pipeline.DeploymentInProgress, 10, true)
	success := h.status(c1, "test", pipeline.DeploymentSuccess, 10, false)
	if dec := h.judge("rule-1", "staging", c1, 66); dec.State != pipeline.ProtectionWaiting {
		h.t.Fatalf("staging job while the test deploy runs: %s (%s)", dec.State, dec.Comment)
	}
	h.gh.mu.Lock()
	fail(h.gh)
	h.gh.mu.Unlock()
	h.deliver(c1, "test", success)
	dec, err := h.db.ProtectionDecision(context.Background(), pipeline.ProtectionRuleRequest{DeliveryID: "rule-1"})
	if err != nil || dec.State != pipeline.ProtectionApproved || dec.Posted {
		h.t.Fatalf("rule-1: %+v, %v; want approved, not posted", dec, err)
	}
	return dec
}

func (h *harness) protectionAnswers() []string {
	h.gh.mu.Lock()
	defer h.gh.mu.Unlock()
	return slices.Clone(h.gh.answers)
}

// answerCalls counts the protection-rule answers sent, taken or not.
func (h *harness) answerCalls() int {
	h.gh.mu.Lock()
	defer h.gh.mu.Unlock()
	return h.gh.answerCalls
}

func (h *harness) judge(delivery, env, sha string, run int64) *pipeline.ProtectionDecision {
	h.t.Helper()
	return h.judgeJob(delivery, env, sha, run, 0) // a request naming no deployment
}

// A deployment made by hand through the API proves nothing either when its
// status's log_url names an Actions run: anyone who may write deployments
// writes any log_url. Only lastmile's own deployment is linked to a run by
// its statuses.
func TestProtectionRuleIgnoresTheRunAHandMadeStatusNames(t *testing.T) {
	ctx := context.Background()
	h := newHarness(t, c0, c1)
	h.release(c0, c1, 10, "test")
	info := pipeline.DeploymentInfo{GitHubID: 901, SHA: c1, Environment: "staging", Creator: "mallory", CreatedAt: time.Now()}
	if err := h.engine.HandleDeploymentStatus(ctx, pipeline.NewDeploymentStatus{Repo: shop, Deployment: info,
		Status: pipeline.StatusInfo{GitHubID: 9010, State: pipeline.DeploymentSuccess, CreatedAt: time.Now(),
			LogURL: "https://github.com/acme/shop/actions/runs/12345/job/678"}}); err != nil {
		t.Fatal(err)
	}
	if dec := h.judge("rule-1", "production", c1, 55); dec.State != "rejected" {
		t.Errorf("production %s on a staging deployment made by hand whose status names a run: %s", dec.State, dec.Comment)
	}
	if d, err := h.db.Deployment(ctx, 901); err != nil {
		t.Fatal(err)
	} else if d.RunID != 0 {
		t.Errorf("the hand-made deployment is linked to run %d, want none", d.RunID)
	}
}

// The deployment Actions created for a job may be first heard of by its
// status (GitHub does not keep webhooks in order), whose log_url no longer
// links it: its deployment event, or the job's workflow_job naming it,
// links it to its run when it comes, and it then proves its commit.
func TestActionsDeploymentIsLinkedToItsRunAfterItsStatus(t *testing.T) {
	for name, link := range map[string]func(h *harness, info pipeline.DeploymentInfo) error{
		"deployment event": func(h *harness, info pipeline.DeploymentInfo) error {
			return h.engine.HandleDeployment(context.Background(), pipeline.NewDeployment{Repo: shop, Deployment: info})
		},
		"workflow_job event": func(h *harness, info pipeline.DeploymentInfo) error {
			return h.engine.HandleWorkflowJob(context.Background(), pipeline.WorkflowJob{Repo: shop, Action: "queued", JobID: 678,
				RunID: info.WorkflowRunID, Name: "deploy-staging", HeadSHA: c1, Status: "queued", Deployment: &info})
		},
	} {
		t.Run(name, func(t *testing.T) {
			ctx := context.Background()
			h := newHarness(t, c0, c1)
			h.release(c0, c1, 10, "test")
			info := pipeline.DeploymentInfo{GitHubID: 902, SHA: c1, Environment: "staging", Creator: "octocat", CreatedAt: time.Now()}
			if err := h.engine.HandleDeploymentStatus(ctx, pipeline.NewDeploymentStatus{Repo: shop, Deployment: info,
				Status: pipeline.StatusInfo{GitHubID: 9020, State: pipeline.DeploymentSuccess, CreatedAt: time.Now(),
					LogURL: "https://github.com/acme/shop/actions/runs/77/job/678"}}); err != nil {
				t.Fatal(err)
			}
			info.WorkflowRunID = 77
			if err := link(h, info); err != nil {
				t.Fatal(err)
			}
			if dec := h.judge("rule-1", "production", c1, 78); dec.State != "approved" {
				t.Errorf("production %s after the staging job's success: %s", dec.State, dec.Comment)
			}
		})
	}
}

// The audit record tells what happened: a deployment that succeeded and
// that GitHub later marked inactive (a newer one succeeded there) shows as
// a success; statuses are listed in the order GitHub made them, not the
// order they arrived in; a deployment lastmile did not create has its
// finishing time too.
func TestAuditRecordTellsWhatHappened(t *testing.T) {
	ctx := context.Background()
	h := newHarness(t, c0, c1, c2)
	if err := h.push(c0, c1, false); err != nil {
		t.Fatal(err)
	}
	h.status(c1, "test", pipeline.DeploymentInProgress, 11, true)
	late := h.status(c1, "test", pipeline.DeploymentFailure, 11, false) // delivered last
	h.status(c1, "test", pipeline.DeploymentInProgress, 11, true)
	h.status(c1, "test", pipeline.DeploymentSuccess, 11, true)
	h.deliver(c1, "test", late)
	if err := h.push(c1, c2, false); err != nil {
		t.Fatal(err)
	}
	h.status(c2, "test", pipeline.DeploymentSuccess, 12, true)
	h.status(c1, "test", pipeline.DeploymentInactive, 11, true) // GitHub's, after c2's success
	external := pipeline.DeploymentInfo{GitHubID: 990, SHA: c1, Environment: "test", Creator: "octocat", CreatedAt: time.Now(), WorkflowRunID: 11}
	if err := h.engine.HandleDeployment(ctx, pipeline.NewDeployment{Repo: shop, Deployment: external}); err != nil {
		t.Fatal(err)
	}
	if err := h.engine.HandleDeploymentStatus(ctx, pipeline.NewDeploymentStatus{Repo: shop, Deployment: external,
		Status: pipeline.StatusInfo{GitHubID: 9901, State: pipeline.DeploymentFailure, CreatedAt: time.Now()}}); err != nil {
		t.Fatal(err)
	}

	rec, err := h.db.Audit(ctx, shop.FullName(), c1)
	if err != nil {
		t.Fatal(err)
	}
	var test *pipeline.EnvironmentRecord
	for i := range rec.Environments {
		if rec.Environments[i].Name == "test" {
			test = &rec.Environments[i]
		}
	}
	if test == nil {
		t.Fatalf("no test environment in %+v", rec.Environments)
	}
	if test.Outcome != pipeline.DeploymentSuccess {
		t.Errorf("test's outcome %s, want success (it succeeded, then GitHub marked it inactive)", test.Outcome)
	}
	for _, d := range test.Deployments {
		if d.Origin == pipeline.OriginExternal {
			if d.TerminalAt.IsZero() {
				t.Errorf("the deployment lastmile did not create has no finishing time: %+v", d.Deployment)
			}
			continue
		}
		var ids []int64
		for _, st := range d.Statuses {
			ids = append(ids, st.GitHubID)
		}
		if !slices.IsSorted(ids) || len(ids) != 5 {
			t.Errorf("statuses in the record by GitHub ID: %v, want the 5 in GitHub's order", ids)
		}
	}
	hist, err := h.db.History(ctx, storage.HistoryFilter{Repository: shop.FullName()})
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range hist {
		if e.Release.SHA != c1 {
			continue
		}
		for _, st := range e.Stages {
			if st.Environment == "test" && st.State != pipeline.DeploymentSuccess {
				t.Errorf("history of c1 in test: %s, want success", st.State)
			}
		}
	}
}

// The deploy job's completion can arrive before the deployment's statuses
// that name the job, and before its own earlier events (GitHub does not
// keep webhooks in order): its log is
// kept when those statuses arrive. The run's other job (register), which
// no status names, gets none.
func TestDeployLogKeptWhenTheJobCompletedBeforeItsStatuses(t *testing.T) {
	ctx := context.Background()
	h := newHarness(t, c0, c1)
	if err := h.push(c0, c1, false); err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	for _, job := range []pipeline.WorkflowJob{
		{JobID: 776, Name: "register", StartedAt: now.Add(-2 * time.Second), CompletedAt: now.Add(-time.Second)},
		{JobID: 777, Name: "deploy", StartedAt: now.Add(-time.Second), CompletedAt: now},
	} {
		job.Repo, job.Action, job.RunID, job.Status, job.Conclusion = shop, "completed", 11, "completed", "success"
		if err := h.engine.HandleWorkflowJob(ctx, job); err != nil {
			t.Fatal(err)
		}
	}
	// The deploy job's earlier events, delivered late (GitHub does not keep
	// webhooks in order, and sends queued again once a reviewer approves):
	// the job stays completed.
	for _, status := range []string{"queued", "waiting", "in_progress"} {
		late := pipeline.WorkflowJob{Repo: shop, Action: status, RunID: 11, JobID: 777, Name: "deploy", Status: status}
		if status == "in_progress" {
			late.StartedAt = now.Add(-time.Second)
		}
		if err := h.engine.HandleWorkflowJob(ctx, late); err != nil {
			t.Fatal(err)
		}
	}
	d := h.gh.deployment(c1, "test")
	for _, state := range []pipeline.DeploymentState{pipeline.DeploymentInProgress, pipeline.DeploymentSuccess} {
		h.gh.mu.Lock()
		st := h.gh.post(d.id, state, "https://github.com/acme/shop/actions/runs/11/job/777")
		h.gh.mu.Unlock()
		h.deliver(c1, "test", st)
	}
	// The deploy job's log was asked for (this GitHub has none: it is kept
	// as missing); the register job's was not.
	if log, err := h.db.JobLog(ctx, 777); err == nil || !strings.Contains(err.Error(), "GitHub had no log") {
		t.Errorf("the deploy job's log: %q, %v; want it asked for (and missing)", log, err)
	}
	if _, err := h.db.JobLog(ctx, 776); !errors.Is(err, pipeline.ErrNotFound) || !strings.Contains(err.Error(), "no log kept") {
		t.Errorf("the register job's log: %v, want none kept", err)
	}
}

func TestTimeToRestoreAfterAFailedDeploy(t *testing.T) {
	h := newHarness(t, c0, c1, c2)
	if err := h.push(c0, c1, false); err != nil {
		t.Fatal(err)
	}
	h.status(c1, "test", pipeline.DeploymentInProgress, 11, true)
	h.status(c1, "test", pipeline.DeploymentFailure, 11, true)
	if err := h.push(c1, c2, false); err != nil {
		t.Fatal(err)
	}
	h.status(c2, "test", pipeline.DeploymentSuccess, 12, true)
	if n, _ := h.restoresObserved("test"); n != 1 {
		t.Errorf("time to restore observed %d times in test, want 1", n)
	}
}

// Approval wait is a delivery metric of the pipeline's environments: a
// review of a job in another environment a workflow uses (github-pages) is
// recorded, not measured; one in an environment of the configuration is,
// even where a workflow owns the deployment (lastmile judging it as a
// protection rule).
func TestApprovalWaitCountsThePipelinesEnvironments(t *testing.T) {
	ctx := context.Background()
	h := newHarness(t, c0, c1)
	if err := h.push(c0, c1, false); err != nil {
		t.Fatal(err)
	}
	at := time.Now()
	for run, env := range map[int64]string{555: "github-pages", 556: "staging"} {
		for i, a := range []pipeline.ReviewAction{pipeline.ReviewRequested, pipeline.ReviewApproved} {
			if err := h.engine.HandleReview(ctx, pipeline.Review{Repo: shop, DeliveryID: fmt.Sprint(env, i), Action: a,
				Environments: []string{env}, RunID: run, HeadSHA: c0, Actor: "alice", Since: at.Add(-time.Hour), At: at}); err != nil {
				t.Fatal(err)
			}
		}
	}
	snap, err := h.db.MetricsSnapshot(ctx)
	if err != nil {
		t.Fatal(err)
	}
	measured := map[string]uint64{}
	for _, s := range snap.Histograms[metrics.ApprovalWait] {
		measured[s.Labels[1]] = s.Count
	}
	if measured["github-pages"] != 0 || measured["staging"] != 1 {
		t.Errorf("approval waits measured %v, want one in staging and none in github-pages", measured)
	}
}

// An environment the configuration no longer names (production renamed to
// prod) leaves lastmile_environment_info, so the dashboards drop it and the
// "no production deployment" alert does not fire for it forever.
func TestRenamedEnvironmentIsRetired(t *testing.T) {
	ctx := context.Background()
	h := newHarness(t, c0, c1, c2)
	h.release(c0, c1, 10, "test", "staging", "production")
	info := func() []string {
		snap, err := h.db.MetricsSnapshot(ctx)
		if err != nil {
			t.Fatal(err)
		}
		var envs []string
		for _, s := range snap.Gauges[metrics.EnvironmentInfo] {
			envs = append(envs, s.Labels[1]+"="+s.Labels[2])
		}
		slices.Sort(envs)
		return envs
	}
	if got := info(); !slices.Equal(got, []string{"production=true", "staging=false", "test=false"}) {
		t.Fatalf("environments before the rename: %v", got)
	}
	h.gh.config = "environments:\n  - name: test\n  - name: staging\n  - name: prod\n"
	if err := h.push(c1, c2, false); err != nil {
		t.Fatal(err)
	}
	if got := info(); !slices.Equal(got, []string{"prod=true", "staging=false", "test=false"}) {
		t.Errorf("environments after the rename: %v, want production gone and prod there (the configuration names it)", got)
	}
	h.promote(c2, 20, "test", "staging")
	if got := info(); !slices.Equal(got, []string{"prod=true", "staging=false", "test=false"}) {
		t.Errorf("environments once prod is deployed to: %v", got)
	}
	// Its history stays: production's success is still counted.
	if got := h.deploymentsCounted()["production/success"]; got != 1 {
		t.Errorf("production successes: %v, want 1", got)
	}
}

// Two deliveries of one repository handled at once (the worker orders
// them by name, and the repository was renamed while some waited) do not
// advance it at the same time: the second waits, then finds the deployment
// the first created instead of creating it again.
func TestARepositoryIsAdvancedOnceAtATime(t *testing.T) {
	h := newHarness(t, c0, c1)
	var inflight, most atomic.Int32
	entered, second, waits := make(chan struct{}), make(chan struct{}), make(chan struct{})
	var calls atomic.Int32
	var once sync.Once
	pipeline.SetAdvanceWaits(h.engine, func() { once.Do(func() { close(waits) }) })
	h.gh.enter = func() func() {
		n := inflight.Add(1)
		if n > most.Load() {
			most.Store(n)
		}
		switch calls.Add(1) {
		case 1:
			close(entered)
			// Hold the first creation until the second delivery either
			// waits for it or starts a creation of its own beside it.
			select {
			case <-waits:
			case <-second:
			}
		case 2:
			close(second)
		}
		return func() { inflight.Add(-1) }
	}
	first := make(chan error, 1)
	go func() { first <- h.push(c0, c1, false) }()
	<-entered
	// c1's contexts turn green meanwhile: another delivery of shop.
	if err := h.engine.HandleContexts(context.Background(), pipeline.ContextsChanged{Repo: shop, SHA: c1, Context: "build", State: "success"}); err != nil {
		var ignored *pipeline.Ignored
		if !errors.As(err, &ignored) {
			t.Fatal(err)
		}
	}
	if err := <-first; err != nil {
		t.Fatal(err)
	}
	if most.Load() != 1 || h.gh.count(c1, "test") != 1 {
		t.Errorf("%d deployments of c1 to test, at most %d created at once; want 1 and 1", h.gh.count(c1, "test"), most.Load())
	}
}

// A required context turns green while lastmile creates the release's
// first deployment, and GitHub, which looked before, answers 409: the
// status event, handled meanwhile, waits for that creation to be recorded
// (waiting) and then asks GitHub again — it is the last event that would.
func TestContextsGreenDuringTheCreationTheyRefuseAskAgain(t *testing.T) {
	h := newHarness(t, c0, c1)
	h.gh.config = "required_contexts: [build]\n" + threeEnvs
	h.gh.failNext = []error{pendingBuild()}
	waits := make(chan struct{})
	var once sync.Once
	pipeline.SetAdvanceWaits(h.engine, func() { once.Do(func() { close(waits) }) })
	var calls atomic.Int32
	handled := make(chan error, 1)
	h.gh.enter = func() func() {
		if calls.Add(1) == 1 {
			go func() {
				handled <- h.engine.HandleContexts(context.Background(), pipeline.ContextsChanged{Repo: shop, SHA: c1, Context: "build", State: "success"})
			}()
			// GitHub answers once the status event waits for the
			// repository (or has been handled).
			select {
			case <-waits:
			case err := <-handled:
				handled <- err
			}
		}
		return func() {}
	}
	if err := h.push(c0, c1, false); err != nil {
		t.Fatal(err)
	}
	if err := <-handled; err != nil {
		var ignored *pipeline.Ignored
		if !errors.As(err, &ignored) {
			t.Fatal(err)
		}
	}
	if h.gh.deployment(c1, "test") == nil {
		t.Errorf("no deployment to test after build turned green (%d creations asked for); want the 409 asked again", h.gh.creates)
	}
}

// The first push lastmile hears of replaced the branch's history with an
// unrelated one (a force push), its commit list truncated: GitHub
// compares nothing across the two (404, no common ancestor). The release
// is made of what the push lists, as a baseline, and deployed — not a
// delivery failing until it is dead.
func TestFirstReleaseOfAReplacedHistory(t *testing.T) {
	ctx := context.Background()
	h := newHarness(t, c0, c1)
	h.gh.mu.Lock()
	h.gh.head = c1
	h.gh.mu.Unlock()
	gone := strings.Repeat("e", 40) // the old history's head: GitHub compares nothing with it
	err := h.engine.HandlePush(ctx, pipeline.Push{Repo: shop, DeliveryID: "push-orphan", Ref: "refs/heads/main",
		Before: gone, After: c1, Forced: true, Truncated: true, DefaultBranch: "main", Pusher: "octocat", PushedAt: time.Now(),
		Commits: []pipeline.Commit{{SHA: c0, Title: "root"}, {SHA: c1, Title: "head"}}})
	if err != nil {
		t.Fatalf("push: %v", err)
	}
	rel, err := h.db.LatestRelease(ctx, shop.ID)
	if err != nil {
		t.Fatal(err)
	}
	if rel.SHA != c1 || !rel.Baseline || rel.Base != "" {
		t.Errorf("release %s, baseline %v, base %q; want c1's, a baseline, no base", rel.SHA, rel.Baseline, rel.Base)
	}
	if h.gh.deployment(c1, "test") == nil {
		t.Error("no deployment of c1 to test")
	}
}

func (h *harness) runStarted(run int64, sha string) {
	h.t.Helper()
	err := h.engine.HandleWorkflowRun(context.Background(), pipeline.WorkflowRun{Repo: shop, Action: "in_progress",
		RunID: run, Event: "deployment", HeadSHA: sha, Status: "in_progress", UpdatedAt: time.Now(),
		URL: fmt.Sprintf("https://github.com/acme/shop/actions/runs/%d", run)})
	if err != nil {
		h.t.Fatalf("workflow_run %d in_progress: %v", run, err)
	}
}

// A notifier on the deployment event that fails, before the deploy run's
// first job has reported anything, is not taken for the deploy run while
// that run is still going; when the deploy run itself ends without a
// report, lastmile writes the error.
func TestFailingNotifierWhileTheDeployRunStarts(t *testing.T) {
	h := newHarness(t, c0, c1)
	if err := h.push(c0, c1, false); err != nil {
		t.Fatal(err)
	}
	h.runStarted(11, c1) // the deploy run: building the Action
	h.runStarted(12, c1) // a notifier
	h.runCompleted(12, c1, "failure")
	if len(h.gh.written) != 0 {
		t.Fatalf("lastmile wrote %+v when the notifier failed", h.gh.written)
	}
	h.runCompleted(11, c1, "failure") // the deploy run fails before reporting
	if len(h.gh.written) != 1 || h.gh.written[0].State != pipeline.DeploymentFailure {
		t.Errorf("lastmile wrote %+v when the deploy run failed without a report, want a failure", h.gh.written)
	}
}

// An environment's first success is the baseline: its release's own
// commits get a lead time, not the whole history before it (an environment
// added to the configuration later would otherwise count every commit ever
// released).
// The first deployment to production fails; the next release succeeds
// there, and with it the failed release's commits first reach production.
func TestLeadTimeOfAnEnvironmentsFirstSuccessCountsTheReleasesThatFailedThere(t *testing.T) {
	h := newHarness(t, c0, c1, c2)
	h.release(c0, c1, 10, "test", "staging")
	h.status(c1, "production", pipeline.DeploymentFailure, 12, true)
	h.release(c1, c2, 20, "test", "staging", "production")
	for env, want := range map[string]uint64{"test": 2, "staging": 2, "production": 2} {
		if n := h.leadTimesObserved(env); n != want {
			t.Errorf("lead times in %s: %d, want %d", env, n, want)
		}
	}
}

func TestLeadTimeInANewEnvironmentStartsWithItsFirstRelease(t *testing.T) {
	h := newHarness(t, c0, c1, c2)
	h.gh.config = "environments:\n  - name: test\n  - name: production\n"
	h.release(c0, c1, 10, "test", "production")
	h.gh.config = threeEnvs // staging is added
	h.release(c1, c2, 20, "test", "staging", "production")
	for env, want := range map[string]uint64{"test": 2, "staging": 1, "production": 2} {
		if n := h.leadTimesObserved(env); n != want {
			t.Errorf("lead times in %s: %d, want %d", env, n, want)
		}
	}
}

// The run was cancelled mid-deploy 3 hours before lastmile handled its end
// (a backlog, a downtime): the status lastmile then writes is dated now on
// GitHub, but time to restore and the deployment's duration run from the
// run's end.
func TestStatusWrittenLateByLastmileIsDatedByTheRunsEnd(t *testing.T) {
	now, wait := manualClock(time.Now().Add(-5 * time.Hour))
	h := newHarness(t, c0, c1, c2)
	h.gh.now = now
	if err := h.push(c0, c1, false); err != nil {
		t.Fatal(err)
	}
	wait(time.Minute)
	h.status(c1, "test", pipeline.DeploymentInProgress, 11, true)
	wait(time.Minute)
	ended := now() // the run was cancelled here
	wait(3 * time.Hour)
	err := h.engine.HandleWorkflowRun(context.Background(), pipeline.WorkflowRun{Repo: shop, Action: "completed",
		RunID: 11, Event: "deployment", HeadSHA: c1, Status: "completed", Conclusion: "cancelled", UpdatedAt: ended,
		URL: "https://github.com/acme/shop/actions/runs/11"})
	if err != nil {
		t.Fatal(err)
	}
	st := h.gh.deployment(c1, "test").statuses
	if last := st[len(st)-1]; last.State != pipeline.DeploymentError || !last.CreatedAt.Equal(now()) {
		t.Fatalf("lastmile's status: %s at %s, want error written now (%s)", last.State, last.CreatedAt, now())
	}
	h.deliver(c1, "test", st[len(st)-1]) // its webhook, after lastmile recorded it
	if err := h.push(c1, c2, false); err != nil {
		t.Fatal(err)
	}
	wait(10 * time.Minute)
	h.status(c2, "test", pipeline.DeploymentSuccess, 12, true)
	n, sum := h.restoresObserved("test")
	if want := (3*time.Hour + 10*time.Minute).Seconds(); n != 1 || sum != want {
		t.Errorf("time to restore: %d observations, %.0f s; want 1, %.0f s (from the run's end)", n, sum, want)
	}
	rec, err := h.db.AuditRelease(context.Background(), "acme/shop", c1, 0)
	if err != nil {
		t.Fatal(err)
	}
	// The record keeps when lastmile wrote it.
	sts := rec.Environments[0].Deployments[0].Statuses
	if got := sts[len(sts)-1]; got.State != pipeline.DeploymentError || !got.CreatedAt.Equal(ended.Add(3*time.Hour)) {
		t.Errorf("recorded status %s at %s, want error at %s", got.State, got.CreatedAt, ended.Add(3*time.Hour))
	}
}

// Two failed deploys in a row, the earlier one's statuses delivered after
// the later one's: time to restore runs from the earlier failure.
func TestTimeToRestoreFromTheEarlierFailureDeliveredLate(t *testing.T) {
	now, wait := manualClock(time.Now().Add(-5 * time.Hour))
	h := newHarness(t, c0, c1, c2, c3)
	h.gh.now = now
	if err := h.push(c0, c1, false); err != nil {
		t.Fatal(err)
	}
	wait(time.Minute)
	run1 := h.status(c1, "test", pipeline.DeploymentInProgress, 11, false)
	wait(time.Minute)
	fail1 := h.status(c1, "test", pipeline.DeploymentFailure, 11, false)
	if err := h.push(c1, c2, false); err != nil {
		t.Fatal(err)
	}
	wait(time.Hour)
	h.status(c2, "test", pipeline.DeploymentInProgress, 12, true)
	wait(time.Minute)
	h.status(c2, "test", pipeline.DeploymentFailure, 12, true) // 61 minutes after c1's
	h.deliver(c1, "test", run1)
	h.deliver(c1, "test", fail1)
	if err := h.push(c2, c3, false); err != nil {
		t.Fatal(err)
	}
	wait(10 * time.Minute)
	h.status(c3, "test", pipeline.DeploymentSuccess, 13, true)
	n, sum := h.restoresObserved("test")
	if want := (71 * time.Minute).Seconds(); n != 1 || sum != want {
		t.Errorf("time to restore: %d observations, %.0f s; want 1, %.0f s (from the first failure)", n, sum, want)
	}
}

// A deployment that failed and whose re-run succeeded counts failure once
// and success once, whether the failure's webhook comes first or after
// the success's (a redelivery, say).
func TestFailedThenRerunSuccessCountsTheSameInAnyOrder(t *testing.T) {
	for _, failureLast := range []bool{false, true} {
		h := newHarness(t, c0, c1)
		if err := h.push(c0, c1, false); err != nil {
			t.Fatal(err)
		}
		h.status(c1, "test", pipeline.DeploymentInProgress, 11, true)
		fail := h.status(c1, "test", pipeline.DeploymentFailure, 11, !failureLast)
		h.status(c1, "test", pipeline.DeploymentInProgress, 11, true)
		h.status(c1, "test", pipeline.DeploymentSuccess, 11, true)
		if failureLast {
			h.deliver(c1, "test", fail)
			h.deliver(c1, "test", fail) // and redelivered: nothing more
		}
		if got, want := h.deploymentsCounted(), map[string]float64{"test/failure": 1, "test/success": 1}; !maps(got, want) {
			t.Errorf("failure delivered last %v: lastmile_deployments_total of test %v, want %v", failureLast, got, want)
		}
	}
}

// A deployment that succeeded, then failed on a re-run (which broke the
// environment: time to restore starts), counts one success and one
// failure, whichever status lastmile hears of first: the re-run's failure,
// heard of first, follows two starts with no end between, and lastmile
// reads the first attempt's success back from GitHub before it.
func TestSucceededThenRerunFailureCountsTheSameInAnyOrder(t *testing.T) {
	for _, successLast := range []bool{false, true} {
		h := newHarness(t, c0, c1)
		if err := h.push(c0, c1, false); err != nil {
			t.Fatal(err)
		}
		h.status(c1, "test", pipeline.DeploymentInProgress, 11, true)
		ok := h.status(c1, "test", pipeline.DeploymentSuccess, 11, !successLast)
		h.status(c1, "test", pipeline.DeploymentInProgress, 11, true)
		h.status(c1, "test", pipeline.DeploymentFailure, 11, true)
		if successLast {
			h.deliver(c1, "test", ok)
		}
		if got, want := h.deploymentsCounted(), map[string]float64{"test/success": 1, "test/failure": 1}; !maps(got, want) {
			t.Errorf("success delivered last %v: lastmile_deployments_total of test %v, want %v", successLast, got, want)
		}
	}
}

// GitHub may have no log yet for a deploy job that has just completed: the
// record keeps a placeholder, and lastmile looks again (the sweep) for
// JobLogGrace, keeping the log once GitHub has it; then it stops asking.
func TestDeployLogLookedForAgainWhileGitHubHasNone(t *testing.T) {
	ctx := context.Background()
	h := newHarness(t, c0, c1, c2)
	if err := h.push(c0, c1, false); err != nil {
		t.Fatal(err)
	}
	deployJob := func(sha string, run, job int64) {
		d := h.gh.deployment(sha, "test")
		url := fmt.Sprintf("https://github.com/acme/shop/actions/runs/%d/job/%d", run, job)
		for _, state := range []pipeline.DeploymentState{pipeline.DeploymentInProgress, pipeline.DeploymentSuccess} {
			h.gh.mu.Lock()
			st := h.gh.post(d.id, state, url)
			h.gh.mu.Unlock()
			h.deliver(sha, "test", st)
		}
		now := time.Now()
		if err := h.engine.HandleWorkflowJob(ctx, pipeline.WorkflowJob{Repo: shop, Action: "completed", RunID: run, JobID: job,
			Name: "deploy", Status: "completed", Conclusion: "success", StartedAt: now.Add(-time.Second), CompletedAt: now}); err != nil {
			t.Fatal(err)
		}
	}
	deployJob(c1, 11, 777)
	if log, err := h.db.JobLog(ctx, 777); !errors.Is(err, pipeline.ErrNotFound) || !strings.Contains(err.Error(), "GitHub had no log") {
		t.Fatalf("log of job 777 before GitHub has it: %q, %v; want none, GitHub having had none", log, err)
	}
	if n, err := h.engine.FetchMissingJobLogs(ctx); err != nil || n != 0 {
		t.Fatalf("FetchMissingJobLogs while GitHub has none: %d, %v", n, err)
	}
	h.gh.mu.Lock()
	h.gh.logs = map[int64]string{777: "deploying c1 to test\ndone\n"}
	h.gh.mu.Unlock()
	if n, err := h.engine.FetchMissingJobLogs(ctx); err != nil || n != 1 {
		t.Fatalf("FetchMissingJobLogs once GitHub has it: %d, %v; want 1", n, err)
	}
	if log, err := h.db.JobLog(ctx, 777); err != nil || string(log) != "deploying c1 to test\ndone\n" {
		t.Errorf("log of job 777: %q, %v; want GitHub's", log, err)
	}
	// Kept: not asked for again.
	h.gh.mu.Lock()
	asked := h.gh.logAsks
	h.gh.mu.Unlock()
	if n, err := h.engine.FetchMissingJobLogs(ctx); err != nil || n != 0 {
		t.Errorf("FetchMissingJobLogs after the log was kept: %d, %v", n, err)
	}
	// A log still missing JobLogGrace after lastmile first asked is not
	// asked for any more.
	h.promote(c1, 11, "staging", "production")
	if err := h.push(c1, c2, false); err != nil {
		t.Fatal(err)
	}
	deployJob(c2, 12, 888)
	h.engine.Now = func() time.Time { return time.Now().Add(pipeline.JobLogGrace + time.Minute) }
	if n, err := h.engine.FetchMissingJobLogs(ctx); err != nil || n != 0 {
		t.Errorf("FetchMissingJobLogs after the grace: %d, %v", n, err)
	}
	h.gh.mu.Lock()
	defer h.gh.mu.Unlock()
	if h.gh.logAsks != asked+1 {
		t.Errorf("GitHub was asked %d more times for logs, want 1 (job 888 when it completed)", h.gh.logAsks-asked)
	}
}

// A creation whose answer was lost, then superseded before lastmile looked
// for it on GitHub: the deployment GitHub did create is found, recorded as
// lastmile's and made inactive — not taken for someone else's when its
// events come — and a deploy its workflow began all the same holds the
// environment, and is ended by lastmile when its run ends without a result.
func TestLostCreationSupersededBeforeLookup(t *testing.T) {
	ctx := context.Background()
	h := newHarness(t, c0, c1, c2)
	h.gh.loseNext = true
	if err := h.push(c0, c1, false); err == nil {
		t.Fatal("want the lost answer to fail the handling")
	}
	// The failed delivery waits for its retry; the next push is handled.
	if err := h.push(c1, c2, false); err != nil {
		t.Fatal(err)
	}
	d1 := h.gh.deployment(c1, "test")
	if d1 == nil {
		t.Fatal("no deployment of c1 on GitHub")
	}
	rec, err := h.db.Deployment(ctx, d1.id)
	if err != nil {
		t.Fatalf("GitHub's deployment %d of release #1 → test is not in the ledger: %v", d1.id, err)
	}
	h.gh.mu.Lock()
	var states []pipeline.DeploymentState
	for _, st := range d1.statuses {
		states = append(states, st.State)
	}
	h.gh.mu.Unlock()
	if rec.Origin != pipeline.OriginLastmile || rec.State != pipeline.DeploymentInactive || !slices.Contains(states, pipeline.DeploymentInactive) {
		t.Errorf("release #1's deployment %d to test: origin %s, state %s, GitHub statuses %v; want lastmile's, made inactive",
			d1.id, rec.Origin, rec.State, states)
	}
	// Its workflow began to deploy before it saw the inactive.
	h.gh.mu.Lock()
	st := h.gh.post(d1.id, pipeline.DeploymentInProgress, "https://github.com/acme/shop/actions/runs/31")
	h.gh.mu.Unlock()
	if err := h.engine.HandleDeployment(ctx, pipeline.NewDeployment{Repo: shop, Deployment: pipeline.DeploymentInfo{
		GitHubID: d1.id, SHA: c1, Environment: "test", Payload: mustJSON(t, d1.payload), CreatedAt: d1.createdAt}}); err != nil {
		t.Fatal(err)
	}
	h.deliver(c1, "test", st)
	if held, err := h.db.HeldBy(ctx, shop.ID, "test"); err != nil || held != rec.ReleaseID {
		t.Errorf("test held by release %d (%v) while release #%d's deploy runs there", held, err, rec.ReleaseID)
	}
	h.runCompleted(31, c1, "cancelled")
	h.gh.mu.Lock()
	last := d1.statuses[len(d1.statuses)-1]
	h.gh.mu.Unlock()
	if last.State != pipeline.DeploymentError && last.State != pipeline.DeploymentFailure {
		t.Errorf("after its run was cancelled, release #1's deployment's latest status is %s; want lastmile's error or failure", last.State)
	}
}

// The configuration changes between two releases (staging renamed
// preprod, or removed): c2, newer, passed the environment before
// production in its own order, and lastmile withdrew c1, whose production
// deployment had not started. A protection-rule request to deploy c1 to
// production is rejected, as lastmile would not deploy it there itself:
// in the latest order, c2 passed the environment before production (in
// c1's own, no newer release passed staging).
func TestProtectionRuleRejectsAReleaseWithdrawnAcrossAConfigurationChange(t *testing.T) {
	for name, cfg2 := range map[string]string{
		"renamed": "environments:\n  - name: test\n  - name: preprod\n  - name: production\n",
		"removed": "environments:\n  - name: test\n  - name: production\n",
	} {
		t.Run(name, func(t *testing.T) {
			h := newHarness(t, c0, c1, c2)
			h.release(c0, c1, 10, "test", "staging") // c1's production deployment created, not started
			h.gh.mu.Lock()
			h.gh.config = cfg2
			h.gh.mu.Unlock()
			envs := []string{"test", "preprod"}
			if name == "removed" {
				envs = envs[:1]
			}
			h.release(c1, c2, 20, envs...)
			if h.gh.deployment(c2, "production") == nil {
				t.Fatal("c2 not sent to production")
			}
			if rel := h.releaseState(shop, c1); !rel.Withdrawn() {
				t.Fatalf("c1's release: %s %s %q; want withdrawn by c2", rel.State, rel.StopKind, rel.StopReason)
			}
			dec := h.judge("rule-"+name, "production", c1, 99)
			if want := "release #2 (commit " + c2[:7] + ") has passed " + envs[len(envs)-1]; dec.State != pipeline.ProtectionRejected || !strings.Contains(dec.Comment, want) {
				t.Errorf("c1 to production: %s %q; want rejected, saying %q", dec.State, dec.Comment, want)
			}
		})
	}
}

// Each newer release is judged in its own order, not the latest's. c1 passed
// test and staging; c2, in the same order, has passed test only; c3 then
// removes staging, and has passed nothing: c2 is not on its way to
// production (staging is still before it there), nor c3, so c1 is
// approved. And the other way round: c2 removes staging and passes test,
// its production job approved; c3 puts staging back: c2, in its own order,
// has passed the environment before production, so c1 is rejected.
func TestProtectionRuleJudgesEachNewerReleaseInItsOwnOrder(t *testing.T) {
	const withoutStaging = "environments:\n  - name: test\n  - name: production\n"
	setConfig := func(h *harness, cfg string) {
		h.gh.mu.Lock()
		h.gh.config = cfg
		h.gh.mu.Unlock()
	}
	t.Run("the latest removes staging", func(t *testing.T) {
		h := newHarness(t, c0, c1, c2, c3)
		h.mustPush(c0, c1, false)
		h.externalSuccess(901, c1, "test", "octocat", 77)
		h.externalSuccess(902, c1, "staging", "octocat", 77)
		h.mustPush(c1, c2, false)
		h.externalSuccess(911, c2, "test", "octocat", 88)
		setConfig(h, withoutStaging)
		h.mustPush(c2, c3, false)
		if dec := h.judge("rule-c1", "production", c1, 77); dec.State != pipeline.ProtectionApproved {
			t.Errorf("c1 to production, no newer release past the environment before it in its own order: %s %q; want approved", dec.State, dec.Comment)
		}
	})
	t.Run("the latest puts staging back", func(t *testing.T) {
		h := newHarness(t, c0, c1, c2, c3)
		h.mustPush(c0, c1, false)
		h.externalSuccess(901, c1, "test", "octocat", 77)
		h.externalSuccess(902, c1, "staging", "octocat", 77)
		setConfig(h, withoutStaging)
		h.mustPush(c1, c2, false)
		h.externalSuccess(911, c2, "test", "octocat", 88)
		if dec := h.judge("rule-c2", "production", c2, 88); dec.State != pipeline.ProtectionApproved {
			t.Fatalf("c2 to production: %s %q", dec.State, dec.Comment)
		}
		setConfig(h, threeEnvs)
		h.mustPush(c2, c3, false)
		dec := h.judge("rule-c1", "production", c1, 77)
		if want := "release #2 (commit " + c2[:7] + ") has passed test, which comes before production in its configuration"; dec.State != pipeline.ProtectionRejected || !strings.Contains(dec.Comment, want) {
			t.Errorf("c1 to production: %s %q; want rejected, saying %q", dec.State, dec.Comment, want)
		}
	})
}

// c1's production deployment is created, not started; c2's configuration
// puts production first, so c2 is sent there at once, passing nothing
// before it, and lastmile withdraws c1. A protection-rule request to
// deploy c1 to production is rejected all the same: lastmile withdrew it
// and sent a newer release there since.
func TestProtectionRuleRejectsAWithdrawnReleaseANewerOneOvertook(t *testing.T) {
	h := newHarness(t, c0, c1, c2)
	h.release(c0, c1, 10, "test", "staging") // c1's production deployment created, not started
	h.gh.mu.Lock()
	h.gh.config = "environments:\n  - name: production\n  - name: test\n"
	h.gh.mu.Unlock()
	h.mustPush(c1, c2, false)
	if h.gh.deployment(c2, "production") == nil {
		t.Fatal("c2 not sent to production")
	}
	if rel := h.releaseState(shop, c1); !rel.Withdrawn() {
		t.Fatalf("c1's release: %s %s %q; want withdrawn by c2", rel.State, rel.StopKind, rel.StopReason)
	}
	dec := h.judge("rule-c1", "production", c1, 99)
	if want := "release #2 has been sent to production since release #1"; dec.State != pipeline.ProtectionRejected || !strings.Contains(dec.Comment, want) {
		t.Errorf("c1 to production: %s %q; want rejected, saying %q", dec.State, dec.Comment, want)
	}
}

// Where workflows own their deployments (lastmile the protection rule),
// c1 passed test and staging; the configuration then renames staging
// preprod, or removes it, and c2, newer, passes the environment before
// production in the new order, and is approved there. c1's production job
// asks next: rejected, as it would be without the change (c2 passing
// staging) — newest wins in the latest order too, or whichever of the two
// production jobs finished last would be what production runs.
func TestProtectionRuleNewestWinsAcrossAConfigurationChange(t *testing.T) {
	for name, tc := range map[string]struct{ cfg, before string }{
		"renamed":   {"environments:\n  - name: test\n  - name: preprod\n  - name: production\n", "preprod"},
		"removed":   {"environments:\n  - name: test\n  - name: production\n", "test"},
		"unchanged": {threeEnvs, "staging"},
	} {
		t.Run(name, func(t *testing.T) {
			h := newHarness(t, c0, c1, c2)
			h.mustPush(c0, c1, false)
			h.externalSuccess(901, c1, "test", "octocat", 77)
			h.externalSuccess(902, c1, "staging", "octocat", 77)
			h.gh.mu.Lock()
			h.gh.config = tc.cfg
			h.gh.mu.Unlock()
			h.mustPush(c1, c2, false)
			h.externalSuccess(911, c2, "test", "octocat", 88)
			if tc.before != "test" {
				h.externalSuccess(912, c2, tc.before, "octocat", 88)
			}
			if dec := h.judge("rule-c2", "production", c2, 88); dec.State != pipeline.ProtectionApproved {
				t.Fatalf("c2 to production: %s %q", dec.State, dec.Comment)
			}
			dec := h.judge("rule-c1", "production", c1, 77)
			if want := "release #2 (commit " + c2[:7] + ") has passed " + tc.before; dec.State != pipeline.ProtectionRejected || !strings.Contains(dec.Comment, want) {
				t.Errorf("c1 to production after c2, newer, passed %s: %s %q; want rejected, saying %q", tc.before, dec.State, dec.Comment, want)
			}
		})
	}
}

// Where workflows own their deployments (lastmile the protection rule),
// lastmile's own deployment of c1 never runs, and c2's push supersedes it
// at test. c1's jobs passed test and staging; c2 has passed nothing: c1's
// production job is approved — being withdrawn because a newer release was
// sent to an earlier environment says nothing of production.
func TestProtectionRuleApprovesAReleaseSupersededOnlyBeforeTheEnvironment(t *testing.T) {
	h := newHarness(t, c0, c1, c2)
	if err := h.push(c0, c1, false); err != nil {
		t.Fatal(err)
	}
	h.externalSuccess(901, c1, "test", "octocat", 77) // the test job's own deployment
	if dec := h.judge("rule-1", "staging", c1, 77); dec.State != pipeline.ProtectionApproved {
		t.Fatalf("c1 to staging: %s %q", dec.State, dec.Comment)
	}
	h.externalSuccess(902, c1, "staging", "octocat", 77)
	if err := h.push(c1, c2, false); err != nil {
		t.Fatal(err)
	}
	if rel := h.releaseState(shop, c1); !rel.Withdrawn() {
		t.Fatalf("c1's release: %s %s %q; want superseded by c2 at test", rel.State, rel.StopKind, rel.StopReason)
	}
	if dec := h.judge("rule-2", "production", c1, 77); dec.State != pipeline.ProtectionApproved {
		t.Errorf("c1 to production (passed staging; c2 has passed nothing): %s %q; want approved", dec.State, dec.Comment)
	}
}

// A workflow on push (run 77) has a job in test, gated by reviewers; its
// reviews reach lastmile before any workflow_run event of it, and are
// taken for lastmile's own deployment of the commit to test (nothing runs
// that one yet). Once the run is known to be on push, the link is undone:
// its end writes nothing on lastmile's deployment, and the release goes on.
func TestPushRunReviewedBeforeItsRunEventLeavesLastmilesDeploymentAlone(t *testing.T) {
	ctx := context.Background()
	h := newHarness(t, c0, c1)
	if err := h.push(c0, c1, false); err != nil {
		t.Fatal(err)
	}
	own := h.gh.deployment(c1, "test")
	since := time.Now().Add(time.Second)
	for i, rv := range []pipeline.Review{
		{Action: pipeline.ReviewRequested, Actor: "octocat", Reviewers: []string{"bob"}, At: since},
		{Action: pipeline.ReviewRejected, Actor: "bob", Comment: "not now", At: since.Add(time.Minute)},
	} {
		rv.Repo, rv.DeliveryID, rv.Environments, rv.RunID, rv.HeadSHA, rv.Since = shop, fmt.Sprintf("rev-%d", i), []string{"test"}, 77, c1, since
		if err := h.engine.HandleReview(ctx, rv); err != nil {
			t.Fatal(err)
		}
	}
	if err := h.engine.HandleWorkflowRun(ctx, pipeline.WorkflowRun{Repo: shop, Action: "completed", RunID: 77, Name: "CD",
		Event: "push", HeadSHA: c1, HeadBranch: "main", Status: "completed", Conclusion: "failure", Attempt: 1,
		CreatedAt: since.Add(-time.Second), UpdatedAt: since.Add(2 * time.Minute),
		URL: "https://github.com/acme/shop/actions/runs/77"}); err != nil {
		t.Fatal(err)
	}
	d, err := h.db.Deployment(ctx, own.id)
	if err != nil {
		t.Fatal(err)
	}
	rel, err := h.db.ReleaseOf(ctx, shop.ID, c1)
	if err != nil {
		t.Fatal(err)
	}
	if d.RunID != 0 || d.State.Terminal() || d.Rejected || rel.State != pipeline.ReleaseActive {
		t.Errorf("lastmile's own deployment to test, which no workflow ran: run %d, state %s, rejected %v (%q); release %s %s %q; counted %v",
			d.RunID, d.State, d.Rejected, d.Reason, rel.State, rel.StopKind, rel.StopReason, h.deploymentsCounted())
	}

	// lastmile's own deploy run then fails without a final status: the
	// push run's rejection is not taken for its reason.
	h.runStarted(88, c1)
	h.status(c1, "test", pipeline.DeploymentInProgress, 88, true)
	h.runCompleted(88, c1, "failure")
	if d, err = h.db.Deployment(ctx, own.id); err != nil {
		t.Fatal(err)
	}
	if rv, err := h.db.Rejection(ctx, d); err != nil || rv != nil || d.Rejected || strings.Contains(d.Reason+d.NotifyReason, "bob") {
		t.Errorf("lastmile's deployment, failed in its own run 88: rejection %+v (%v), rejected %v, reason %q / %q; want nothing of the push run's reviewer",
			rv, err, d.Rejected, d.Reason, d.NotifyReason)
	}
}

// A rejection delivered after the re-run that a reviewer approved then
// succeeded: the deployment stands as that success in the record, not as
// rejected, and the release goes on.
func TestRejectionDeliveredAfterTheRerunsSuccess(t *testing.T) {
	ctx := context.Background()
	h := newHarness(t, c0, c1)
	h.release(c0, c1, 10, "test")
	h.status(c1, "staging", pipeline.DeploymentQueued, 11, true)
	h.runCompleted(11, c1, "failure")
	h.deliver(c1, "staging", h.gh.deployment(c1, "staging").statuses[1]) // the failure lastmile wrote
	h.status(c1, "staging", pipeline.DeploymentInProgress, 11, true)     // re-run, approved
	h.status(c1, "staging", pipeline.DeploymentSuccess, 11, true)
	if err := h.engine.HandleReview(ctx, pipeline.Review{Repo: shop, DeliveryID: "review-1", Action: pipeline.ReviewRejected,
		Environments: []string{"staging"}, RunID: 11, HeadSHA: c1, Actor: "bob", Comment: "not today", At: time.Now()}); err != nil {
		t.Fatal(err)
	}
	d, err := h.db.Deployment(ctx, h.gh.deployment(c1, "staging").id)
	if err != nil {
		t.Fatal(err)
	}
	rel, err := h.db.ReleaseOf(ctx, shop.ID, c1)
	if err != nil {
		t.Fatal(err)
	}
	if d.State != pipeline.DeploymentSuccess || d.Rejected || strings.Contains(d.Reason, "rejected") || rel.State == pipeline.ReleaseStopped {
		t.Errorf("staging after its re-run's success and the first attempt's late rejection: %s, rejected %v (%q); release %s %s %q",
			d.State, d.Rejected, d.Reason, rel.State, rel.StopKind, rel.StopReason)
	}
}

// As above, c1 superseded at test by c2; then .github/lastmile.yml is
// removed and the repository leaves lastmile (c2 withdrawn for it): c1's
// production job is rejected too, as c2's is — lastmile promotes nothing
// of the repository any more.
func TestProtectionRuleRejectsASupersededReleaseOnceTheRepositoryLeft(t *testing.T) {
	h := newHarness(t, c0, c1, c2, c3)
	h.gh.noConfig = []string{c3}
	if err := h.push(c0, c1, false); err != nil {
		t.Fatal(err)
	}
	h.externalSuccess(901, c1, "test", "octocat", 77)
	h.externalSuccess(902, c1, "staging", "octocat", 77)
	if err := h.push(c1, c2, false); err != nil {
		t.Fatal(err)
	}
	h.externalSuccess(903, c2, "test", "octocat", 78)
	var ignored *pipeline.Ignored
	if err := h.push(c2, c3, false); !errors.As(err, &ignored) {
		t.Fatalf("the push removing the configuration: %v, want ignored", err)
	}
	for _, c := range []struct {
		sha string
		run int64
	}{{c2, 78}, {c1, 77}} {
		if dec := h.judge(fmt.Sprint("rule-", c.run), "production", c.sha, c.run); dec.State != pipeline.ProtectionRejected {
			t.Errorf("%s to production after the repository left lastmile: %s %q; want rejected", c.sha[:7], dec.State, dec.Comment)
		}
	}
}

// A release waits for build, which GitHub had no status of yet: once CI
// reports build pending, lastmile asks GitHub again, once, so that the
// reason a user reads says pending, not "not reported yet" (which sends
// them looking for a misspelt context); the next pending asks nothing.
func TestRequiredContextReportedPendingIsSaid(t *testing.T) {
	ctx := context.Background()
	h := newHarness(t, c0, c1)
	h.gh.config = "required_contexts: [build]\n" + threeEnvs
	h.gh.failNext = []error{&pipeline.RefusedError{Status: 409, Message: "Conflict: Commit status checks failed for main.", ContextsFailed: true}, pendingBuild()}
	if err := h.push(c0, c1, false); err != nil {
		t.Fatal(err)
	}
	reason := func() string {
		t.Helper()
		rec, err := h.db.Audit(ctx, shop.FullName(), c1)
		if err != nil {
			t.Fatal(err)
		}
		for _, env := range rec.Environments {
			for _, d := range env.Deployments {
				if d.State == pipeline.DeploymentWaiting {
					return d.Reason
				}
			}
		}
		return ""
	}
	if r := reason(); !strings.Contains(r, "build (not reported yet)") {
		t.Fatalf("waiting for %q; want build not reported yet", r)
	}
	for i, want := range []int{2, 2} {
		err := h.engine.HandleContexts(ctx, pipeline.ContextsChanged{Repo: shop, SHA: c1, Context: "build", State: "pending"})
		var ignored *pipeline.Ignored
		if err != nil && !errors.As(err, &ignored) {
			t.Fatal(err)
		}
		if h.gh.creates != want {
			t.Errorf("after pending #%d: %d deployments asked for, want %d", i+1, h.gh.creates, want)
		}
		if r := reason(); !strings.Contains(r, "build (pending)") {
			t.Errorf("after pending #%d: waiting for %q; want build (pending)", i+1, r)
		}
	}
}

// A deploy whose statuses name the run but not the job (a workflow of its
// own, not the Action): the job is told by its times, and a re-run's job
// by the re-run's in_progress, not the first attempt's — its log is kept
// too.
func TestRerunDeployLogKeptWithoutItsJobNamed(t *testing.T) {
	ctx := context.Background()
	h := newHarness(t, c0, c1)
	t0, statusAt := h.clockedTestDeploy(map[int64]string{777: "first attempt\n", 778: "re-run\n"})
	attempt := func(job int64, start time.Duration, end pipeline.DeploymentState) {
		t.Helper()
		statusAt(start+time.Second, pipeline.DeploymentInProgress)
		statusAt(start+10*time.Second, end)
		if err := h.engine.HandleWorkflowJob(ctx, pipeline.WorkflowJob{Repo: shop, Action: "completed", RunID: 11, JobID: job,
			Name: "deploy", Status: "completed", Conclusion: map[pipeline.DeploymentState]string{pipeline.DeploymentSuccess: "success"}[end],
			StartedAt: t0.Add(start), CompletedAt: t0.Add(start + 11*time.Second)}); err != nil {
			t.Fatal(err)
		}
	}
	attempt(777, 0, pipeline.DeploymentFailure)
	attempt(778, 100*time.Second, pipeline.DeploymentSuccess)
	for job, want := range map[int64]string{777: "first attempt\n", 778: "re-run\n"} {
		if log, err := h.db.JobLog(ctx, job); err != nil || string(log) != want {
			t.Errorf("log of job %d: %q, %v; want %q", job, log, err, want)
		}
	}
}

// The deploy job's completion delivered before the deployment's
// in_progress and success, whose log_url names the run but no job (GitHub
// Enterprise Server gives the Action no job id): the log is kept when the
// statuses come, the job told by its times — also when it ended the second
// the success was posted — and the register job, which ended before the
// in_progress, is not taken for it.
func TestDeployLogKeptWhenTheJobEndsBeforeStatusesNamingNoJob(t *testing.T) {
	for _, end := range []time.Duration{21 * time.Second, 20 * time.Second} {
		t.Run(fmt.Sprint("deploy job ended at +", end), func(t *testing.T) {
			ctx := context.Background()
			h := newHarness(t, c0, c1)
			t0, statusAt := h.clockedTestDeploy(map[int64]string{776: "register\n", 777: "deploy log\n"})
			statusAt(time.Second, pipeline.DeploymentQueued)
			for _, job := range []pipeline.WorkflowJob{
				{JobID: 776, Name: "register", StartedAt: t0, CompletedAt: t0.Add(5 * time.Second)},
				{JobID: 777, Name: "deploy", StartedAt: t0.Add(10 * time.Second), CompletedAt: t0.Add(end)},
			} {
				job.Repo, job.Action, job.RunID, job.HeadSHA, job.Status, job.Conclusion = shop, "completed", 11, c1, "completed", "success"
				if err := h.engine.HandleWorkflowJob(ctx, job); err != nil {
					t.Fatal(err)
				}
			}
			statusAt(12*time.Second, pipeline.DeploymentInProgress)
			statusAt(20*time.Second, pipeline.DeploymentSuccess)
			if log, err := h.db.JobLog(ctx, 777); err != nil || string(log) != "deploy log\n" {
				t.Errorf("deploy job's log: %q, %v; want it kept", log, err)
			}
			if log, err := h.db.JobLog(ctx, 776); err == nil {
				t.Errorf("the register job was taken for the deploy job: its log %q kept", log)
			}
		})
	}
}

// The Action's statuses name the deploy job (job-id given); the register
// job's completion is delivered after the in_progress of the same second:
// the times would take it for the deploy job, the statuses' naming of
// another job says it is not.
func TestRegisterJobIsNotTakenByTheTimesWhereStatusesNameTheJob(t *testing.T) {
	ctx := context.Background()
	h := newHarness(t, c0, c1)
	t0, _ := h.clockedTestDeploy(map[int64]string{776: "register\n", 777: "deploy log\n"})
	d := h.gh.deployment(c1, "test")
	h.gh.mu.Lock()
	inProgress := h.gh.post(d.id, pipeline.DeploymentInProgress, "https://github.com/acme/shop/actions/runs/11/job/777")
	h.gh.mu.Unlock()
	h.deliver(c1, "test", inProgress)
	if err := h.engine.HandleWorkflowJob(ctx, pipeline.WorkflowJob{Repo: shop, Action: "completed", RunID: 11, JobID: 776,
		Name: "register", HeadSHA: c1, Status: "completed", Conclusion: "success", StartedAt: t0, CompletedAt: t0}); err != nil {
		t.Fatal(err)
	}
	if log, err := h.db.JobLog(ctx, 776); err == nil {
		t.Errorf("the register job was taken for the deploy job: its log %q kept", log)
	}
}

// Within one second (the simulator's clock) the register job ends, the
// deploy goes in_progress and succeeds, the deploy job's completion still
// to come: the register job is not kept as the deploy log by the statuses
// that name no job; the deploy job is, when its completion comes.
func TestRegisterJobEndingTheSecondTheDeployBeganIsNotTheDeployJob(t *testing.T) {
	ctx := context.Background()
	h := newHarness(t, c0, c1)
	t0, statusAt := h.clockedTestDeploy(map[int64]string{776: "register\n", 777: "deploy log\n"})
	statusAt(0, pipeline.DeploymentQueued)
	job := func(id int64, name string) {
		t.Helper()
		if err := h.engine.HandleWorkflowJob(ctx, pipeline.WorkflowJob{Repo: shop, Action: "completed", RunID: 11, JobID: id,
			Name: name, HeadSHA: c1, Status: "completed", Conclusion: "success", StartedAt: t0, CompletedAt: t0}); err != nil {
			t.Fatal(err)
		}
	}
	job(776, "register")
	statusAt(0, pipeline.DeploymentInProgress)
	statusAt(0, pipeline.DeploymentSuccess)
	job(777, "deploy")
	if log, err := h.db.JobLog(ctx, 776); err == nil {
		t.Errorf("the register job was taken for the deploy job: its log %q kept", log)
	}
	if log, err := h.db.JobLog(ctx, 777); err != nil || string(log) != "deploy log\n" {
		t.Errorf("deploy job's log: %q, %v; want it kept", log, err)
	}
}

// A push whose payload has no pushed_at (dated by its receipt) says
// nothing of when its repository's name was true: redelivered after a
// rename, it does not put the old name back.
func TestPushWithoutItsTimeDoesNotRenameTheRepositoryBack(t *testing.T) {
	ctx := context.Background()
	h := newHarness(t, c0, c1, c2)
	before := time.Now().Add(-time.Hour)
	h.gh.mu.Lock()
	h.gh.head = c1
	h.gh.mu.Unlock()
	if err := h.deliverPush(c0, c1, false, before); err != nil {
		t.Fatal(err)
	}
	now := h.pushRenamed(c1, c2)
	err := h.engine.HandlePush(ctx, pipeline.Push{Repo: shop, DeliveryID: "old-redelivered", Ref: "refs/heads/main",
		Before: c0, After: c1, DefaultBranch: "main", Pusher: "octocat",
		PushedAt: now.Add(time.Minute), PushedAtGuessed: true,
		Commits: []pipeline.Commit{{SHA: c1, Timestamp: before.Add(-time.Hour)}}})
	var ignored *pipeline.Ignored
	if err != nil && !errors.As(err, &ignored) {
		t.Fatal(err)
	}
	hist, err := h.db.History(ctx, storage.HistoryFilter{Repository: "acme/store"})
	if err != nil || len(hist) == 0 || hist[0].Release.Repo.FullName() != "acme/store" {
		t.Errorf("history of acme/store after the old name's undated push: %+v, %v; want it under acme/store", hist, err)
	}
}

// The pending that has lastmile ask GitHub again is the first of a
// context GitHub had nothing of, by its own entry in the reason: not
// every pending of a context GitHub reports running (a status and a check
// run of one name), and not one hidden by another context whose name ends
// with it (e2e-test, test).
func TestRequiredContextPendingAsksOnlyWhenItWasNotReported(t *testing.T) {
	for name, tc := range map[string]struct {
		config          string
		refused, states []pipeline.ContextState // GitHub's first answer, and its answers once the pending is posted
		context         string
		asks            int
	}{
		"a status and a check run of one name": {"required_contexts: [build]\n",
			[]pipeline.ContextState{{Context: "build", State: "pending"}, {Context: "build", State: "in_progress"}},
			[]pipeline.ContextState{{Context: "build", State: "pending"}, {Context: "build", State: "in_progress"}}, "build", 0},
		"a context whose name ends another's": {"required_contexts: [e2e-test, test]\n",
			[]pipeline.ContextState{{Context: "e2e-test", State: "pending"}},
			[]pipeline.ContextState{{Context: "e2e-test", State: "pending"}, {Context: "test", State: "pending"}}, "test", 1},
	} {
		t.Run(name, func(t *testing.T) {
			ctx := context.Background()
			h := newHarness(t, c0, c1)
			h.gh.config = tc.config + threeEnvs
			refuse := func(cs []pipeline.ContextState) error {
				return &pipeline.RefusedError{Status: 409, Message: "Conflict: Commit status checks failed for main.", Contexts: cs}
			}
			h.gh.failNext = []error{refuse(tc.refused), refuse(tc.states), refuse(tc.states), refuse(tc.states), refuse(tc.states)}
			if err := h.push(c0, c1, false); err != nil {
				t.Fatal(err)
			}
			start := h.gh.creates
			for range 4 {
				err := h.engine.HandleContexts(ctx, pipeline.ContextsChanged{Repo: shop, SHA: c1, Context: tc.context, State: "pending"})
				var ignored *pipeline.Ignored
				if err != nil && !errors.As(err, &ignored) {
					t.Fatal(err)
				}
			}
			if n := h.gh.creates - start; n != tc.asks {
				t.Errorf("4 pending statuses of %s: GitHub asked %d times, want %d", tc.context, n, tc.asks)
			}
		})
	}
}

// A re-run's register job that ended the second before the deploy job
// went in_progress is not taken for the deploy job: its log is not kept
// as the deploy log.
func TestRerunRegisterJobIsNotTheDeployJob(t *testing.T) {
	ctx := context.Background()
	h := newHarness(t, c0, c1)
	t0, statusAt := h.clockedTestDeploy(map[int64]string{779: "register (attempt 2)\n"})
	statusAt(time.Second, pipeline.DeploymentInProgress)
	statusAt(10*time.Second, pipeline.DeploymentFailure)
	statusAt(106*time.Second, pipeline.DeploymentInProgress) // the re-run's deploy job
	if err := h.engine.HandleWorkflowJob(ctx, pipeline.WorkflowJob{Repo: shop, Action: "completed", RunID: 11, JobID: 779,
		Name: "register", Status: "completed", Conclusion: "success", StartedAt: t0.Add(100 * time.Second), CompletedAt: t0.Add(105 * time.Second)}); err != nil {
		t.Fatal(err)
	}
	if log, err := h.db.JobLog(ctx, 779); err == nil {
		t.Errorf("the re-run's register job was taken for the deploy job: its log %q kept", log)
	}
}

// notYetGitHub is GitHub whose API has not caught up with some pushes: it
// does not show those commits (its contents API's "No commit found").
type notYetGitHub struct {
	*fakeGitHub
	unseen map[string]bool
}

func (g *notYetGitHub) ReadFile(ctx context.Context, r pipeline.Repo, path, sha string) ([]byte, error) {
	if g.unseen[sha] {
		return nil, fmt.Errorf("%s at %s: No commit found for the ref %s: %w", path, sha, sha, pipeline.ErrUnknownCommit)
	}
	return g.fakeGitHub.ReadFile(ctx, r, path, sha)
}

// A push whose commit GitHub does not show yet is read again shortly, not
// taken for a repository without configuration: the release on its way
// goes on, and the push is released once GitHub shows its commit. Long
// after the push, the delivery fails (retried, then dead), still without
// taking the repository out of lastmile.
func TestPushOfACommitGitHubDoesNotShowYetIsReadAgain(t *testing.T) {
	ctx := context.Background()
	h := newHarness(t, c0, c1, c2)
	g := &notYetGitHub{fakeGitHub: h.gh, unseen: map[string]bool{c2: true}}
	h.engine.GitHub = g
	h.mustPush(c0, c1, false)
	h.status(c1, "test", pipeline.DeploymentInProgress, 11, true)
	h.status(c1, "test", pipeline.DeploymentSuccess, 11, true) // c1 on its way to staging

	stillOn := func(when string) {
		t.Helper()
		rel, err := h.db.ReleaseOf(ctx, shop.ID, c1)
		if err != nil {
			t.Fatal(err)
		}
		if rel.State == pipeline.ReleaseStopped {
			t.Errorf("%s: c1's release stopped (%s: %s)", when, rel.StopKind, rel.StopReason)
		}
		if _, err := h.db.ReleaseOf(ctx, shop.ID, c2); !errors.Is(err, pipeline.ErrNotFound) {
			t.Errorf("%s: c2 released before GitHub showed it: %v", when, err)
		}
	}
	var again *pipeline.LookAgain
	if err := h.push(c1, c2, false); !errors.As(err, &again) || !strings.Contains(again.Reason, "does not show c2c2c2c yet") {
		t.Fatalf("the push of a commit GitHub does not show yet = %v, want to look again shortly", err)
	}
	stillOn("looking again")
	var ignored *pipeline.Ignored
	stale := h.deliverPush(c1, c2, false, time.Now().Add(-time.Hour))
	if stale == nil || errors.As(stale, &again) || errors.As(stale, &ignored) || !errors.Is(stale, pipeline.ErrUnknownCommit) {
		t.Errorf("an hour after the push, GitHub still not showing its commit = %v, want a failure to retry", stale)
	}
	stillOn("an hour on")

	g.unseen[c2] = false // GitHub has caught up
	if err := h.push(c1, c2, false); err != nil {
		t.Fatal(err)
	}
	if _, err := h.db.ReleaseOf(ctx, shop.ID, c2); err != nil {
		t.Errorf("c2, once GitHub shows it: %v, want it released", err)
	}
	if h.gh.deployment(c2, "test") == nil {
		t.Error("c2 was not deployed to test")
	}
}

// A rejection's comment can quote what users wrote (a configuration's
// values, a reviewer's comment in a stop reason) at any length: GitHub
// takes 1024 characters, and refuses a longer one — which would leave the
// run waiting for 30 days. The answer is cut to fit; the record keeps the
// whole comment.
func TestALongProtectionRuleCommentIsCutToWhatGitHubTakes(t *testing.T) {
	h := newHarness(t, c0, c1)
	h.gh.config = "branch: \"release " + strings.Repeat("k", 1100) + "\"\nenvironments:\n  - name: test\n"
	if err := h.push(c0, c1, false); err != nil {
		t.Fatal(err)
	}
	dec := h.judge("rule-1", "test", c1, 55)
	if dec.State != pipeline.ProtectionRejected || utf8.RuneCountInString(dec.Comment) <= 1024 || !dec.Posted {
		t.Fatalf("decision %s, posted %v, comment of %d characters; want a rejection of more than 1024, posted", dec.State, dec.Posted, utf8.RuneCountInString(dec.Comment))
	}
	if !slices.Equal(h.gh.answers, []string{"55 test rejected"}) {
		t.Errorf("answers GitHub took: %v, want run 55's rejection", h.gh.answers)
	}
}

// flakyStatusGitHub refuses lastmile's deployment statuses with a 502 while
// fail counts down.
type flakyStatusGitHub struct {
	*fakeGitHub
	fail *int
}

func (g flakyStatusGitHub) CreateDeploymentStatus(ctx context.Context, r pipeline.Repo, id int64, req pipeline.StatusRequest) (pipeline.StatusInfo, error) {
	if *g.fail > 0 {
		*g.fail--
		return pipeline.StatusInfo{}, errors.New("502 Bad Gateway")
	}
	return g.fakeGitHub.CreateDeploymentStatus(ctx, r, id, req)
}

// The end lastmile owes for a run that ended without one is not written
// once a re-run has started and reported its own end: the write failed
// (GitHub answered 502), the re-run succeeded meanwhile, and the retried
// delivery wrote the first attempt's failure over the success — on GitHub,
// in the ledger, and in the metrics.
func TestAnOwedFailureIsNotWrittenOverAReRunsSuccess(t *testing.T) {
	ctx := context.Background()
	h := newHarness(t, c0, c1)
	fail := 0
	h.engine.GitHub = flakyStatusGitHub{h.gh, &fail}
	at := time.Now().Add(-time.Minute).Truncate(time.Second) // GitHub's clock
	h.gh.now = func() time.Time { return at }
	h.mustPush(c0, c1, false)
	h.status(c1, "test", pipeline.DeploymentQueued, 11, true) // the Action's first status names run 11
	h.status(c1, "test", pipeline.DeploymentInProgress, 11, true)
	ended := at.Add(time.Second) // attempt 1 ended without a result
	at = ended.Add(time.Second)  // then attempt 2
	fail = 1                     // the owed failure's write is refused: owed still
	_ = h.engine.HandleWorkflowRun(ctx, pipeline.WorkflowRun{Repo: shop, Action: "completed", RunID: 11, Attempt: 1,
		Event: "deployment", HeadSHA: c1, Status: "completed", Conclusion: "failure", UpdatedAt: ended,
		URL: "https://github.com/acme/shop/actions/runs/11"})
	if len(h.gh.written) != 0 {
		t.Fatalf("setup: lastmile wrote %+v through a refusal", h.gh.written)
	}
	if err := h.engine.HandleWorkflowRun(ctx, pipeline.WorkflowRun{Repo: shop, Action: "requested", RunID: 11, Attempt: 2,
		Event: "deployment", HeadSHA: c1, Status: "queued", UpdatedAt: at,
		URL: "https://github.com/acme/shop/actions/runs/11"}); err != nil {
		t.Fatal(err)
	}
	// Attempt 2 deploys and succeeds; its statuses are delivered (GitHub
	// still refusing lastmile's writes meanwhile), then the failed delivery
	// of attempt 1's end is retried.
	fail = 100
	for _, state := range []pipeline.DeploymentState{pipeline.DeploymentInProgress, pipeline.DeploymentSuccess} {
		st := h.status(c1, "test", state, 11, false)
		d := h.gh.deployment(c1, "test")
		_ = h.engine.HandleDeploymentStatus(ctx, pipeline.NewDeploymentStatus{Repo: shop,
			Deployment: pipeline.DeploymentInfo{GitHubID: d.id, SHA: c1, Environment: "test", Payload: mustJSON(t, d.payload)}, Status: st})
	}
	fail = 0
	d := h.gh.deployment(c1, "test")
	h.deliver(c1, "test", d.statuses[len(d.statuses)-1])
	if last := d.statuses[len(d.statuses)-1]; last.State != pipeline.DeploymentSuccess || len(h.gh.written) != 0 {
		t.Errorf("newest status on GitHub %s; lastmile wrote %+v; want the re-run's success, nothing written", last.State, h.gh.written)
	}
	if got := h.ledgerState(c1, "test"); got != pipeline.DeploymentSuccess {
		t.Errorf("ledger: test is %s, want success", got)
	}
	if got := h.deploymentsCounted(); got["test/failure"] != 0 || got["test/success"] != 1 {
		t.Errorf("deployments counted %v, want one success", got)
	}
	if h.gh.deployment(c1, "staging") == nil {
		t.Error("staging was not deployed after the re-run's success")
	}
}

// laggingList is GitHub whose list of deployments does not show a
// deployment for as many FindDeployment calls as hidden says after its
// creation (its replicas behind, or a creation GitHub finished after the
// client gave up on its answer).
type laggingList struct {
	*fakeGitHub
	hidden map[int64]int
}

// lagList puts a laggingList in front of the harness's GitHub.
func lagList(h *harness) *laggingList {
	lag := &laggingList{fakeGitHub: h.gh, hidden: map[int64]int{}}
	h.engine.GitHub = lag
	return lag
}

func (g *laggingList) FindDeployment(ctx context.Context, r pipeline.Repo, sha, env string, m pipeline.Marker) (int64, time.Time, error) {
	id, at, err := g.fakeGitHub.FindDeployment(ctx, r, sha, env, m)
	if err == nil && g.hidden[id] > 0 {
		g.hidden[id]--
		return 0, time.Time{}, pipeline.ErrNotFound
	}
	return id, at, err
}

// The answer to a creation is lost and GitHub's list does not show the
// deployment yet when the retried delivery looks for it: lastmile does not
// create a second one, but waits (LookAgain) until the list would show it.
// (Or the deployment's webhook adopts it meanwhile: handled before the
// wait ends only when no delivery of the repository waits — a creation of
// the sweep's —, as a repository's deliveries are handled in order.)
func TestLostCreationIsNotMadeAgainBeforeGitHubListsIt(t *testing.T) {
	ctx := context.Background()
	for _, adoptedBy := range []string{"the list", "the webhook"} {
		t.Run(adoptedBy, func(t *testing.T) {
			h := newHarness(t, c0, c1)
			lag := lagList(h)
			h.gh.loseNext = true
			if err := h.push(c0, c1, false); err == nil {
				t.Fatal("the push whose creation lost its answer succeeded")
			}
			first := h.gh.deployment(c1, "test")
			lag.hidden[first.id] = 1
			var again *pipeline.LookAgain
			if err := h.push(c0, c1, false); !errors.As(err, &again) || again.At.After(time.Now().Add(pipeline.CreateListLag)) {
				t.Fatalf("the push again at once: %v, want to look again within %s", err, pipeline.CreateListLag)
			}
			if n := h.gh.count(c1, "test"); n != 1 {
				t.Fatalf("GitHub deployments of c1 to test: %d, want 1", n)
			}
			if adoptedBy == "the webhook" {
				info := pipeline.DeploymentInfo{GitHubID: first.id, SHA: c1, Environment: "test", Payload: mustJSON(t, first.payload), CreatedAt: first.createdAt}
				if err := h.engine.HandleDeployment(ctx, pipeline.NewDeployment{Repo: shop, Deployment: info}); err != nil {
					t.Fatal(err)
				}
			} else {
				h.engine.Now = func() time.Time { return time.Now().Add(pipeline.CreateListLag) }
			}
			if err := h.push(c0, c1, false); err != nil {
				t.Fatalf("the push again: %v", err)
			}
			if n := h.gh.count(c1, "test"); n != 1 {
				t.Errorf("GitHub deployments of c1 to test: %d, want 1", n)
			}
			d, err := h.db.Deployment(ctx, first.id)
			if err != nil || d.Origin != pipeline.OriginLastmile {
				t.Errorf("deployment %d: %+v, %v; want it recorded as lastmile's intent's", first.id, d, err)
			}
		})
	}
}

// A person, or a workflow, who copies the marker of a deployment whose
// creation lost its answer makes no deployment of lastmile's: the copy's
// webhook, arriving while the intent waits, is not adopted as the
// intent's — it is marked inactive (the Action skips it) and recorded as
// not lastmile's —, and the deployment lastmile did create is, when the
// delivery is retried.
func TestCopiedMarkerIsNotAdopted(t *testing.T) {
	ctx := context.Background()
	for _, creator := range []string{"mallory", pipeline.ActionsBot} {
		t.Run(creator, func(t *testing.T) {
			h := newHarness(t, c0, c1)
			h.gh.loseNext = true
			if err := h.push(c0, c1, false); err == nil {
				t.Fatal("the push whose creation lost its answer succeeded")
			}
			first := h.gh.deployment(c1, "test")
			h.gh.mu.Lock()
			cp := &fakeDeployment{id: 777, sha: c1, env: "test", payload: first.payload, createdAt: time.Now()}
			h.gh.deps = append(h.gh.deps, cp)
			h.gh.mu.Unlock()
			info := pipeline.DeploymentInfo{GitHubID: cp.id, SHA: c1, Environment: "test", Creator: creator,
				Payload: mustJSON(t, cp.payload), CreatedAt: cp.createdAt}
			if err := h.engine.HandleDeployment(ctx, pipeline.NewDeployment{Repo: shop, Deployment: info}); err != nil {
				t.Fatal(err)
			}
			if d, err := h.db.Deployment(ctx, cp.id); err != nil || d.Origin != pipeline.OriginExternal {
				t.Errorf("the copy: %+v, %v; want it recorded as not lastmile's", d, err)
			}
			h.gh.mu.Lock()
			states := make([]pipeline.DeploymentState, 0, len(cp.statuses))
			for _, st := range cp.statuses {
				states = append(states, st.State)
			}
			h.gh.mu.Unlock()
			if !slices.Equal(states, []pipeline.DeploymentState{pipeline.DeploymentInactive}) {
				t.Errorf("the copy's statuses: %v, want inactive", states)
			}
			if err := h.push(c0, c1, false); err != nil {
				t.Fatalf("the push again: %v", err)
			}
			if d, err := h.db.Deployment(ctx, first.id); err != nil || d.Origin != pipeline.OriginLastmile {
				t.Errorf("deployment %d: %+v, %v; want it recorded as lastmile's intent's", first.id, d, err)
			}
			if n := h.gh.count(c1, "test"); n != 2 {
				t.Errorf("GitHub deployments of c1 to test: %d, want 2 (lastmile's and the copy)", n)
			}
		})
	}
}

// The answer to a creation came too late (the client gave up after 30 s,
// GitHub making the deployment at their end): the wait for GitHub's list
// counts from when the answer was lost, not from when the request began.
func TestLostCreationWaitsFromTheLostAnswer(t *testing.T) {
	h := newHarness(t, c0, c1)
	now := time.Now()
	clock := func() time.Time { return now }
	h.engine.Now, h.db.Now = clock, clock
	lag := lagList(h)
	h.gh.enter = func() func() { return func() { now = now.Add(30 * time.Second) } }
	h.gh.loseNext = true
	if err := h.push(c0, c1, false); err == nil {
		t.Fatal("the push whose creation lost its answer succeeded")
	}
	h.gh.enter = nil
	first := h.gh.deployment(c1, "test")
	lag.hidden[first.id] = 2
	now = now.Add(3 * time.Second) // the worker's first retry
	var again *pipeline.LookAgain
	// (The ledger keeps times to the millisecond.)
	if err := h.push(c0, c1, false); !errors.As(err, &again) || again.At.Sub(now) <= pipeline.CreateListLag-3*time.Second-time.Millisecond ||
		again.At.Sub(now) > pipeline.CreateListLag-3*time.Second {
		t.Fatalf("the push again 3 s after the lost answer: %v, want to look again %s after that answer", err, pipeline.CreateListLag)
	}
	if n := h.gh.count(c1, "test"); n != 1 {
		t.Errorf("GitHub deployments of c1 to test: %d, want 1", n)
	}
	// A clock set back an hour since waits the lag from now, once: the
	// repository's later deliveries wait behind this one.
	now = now.Add(-time.Hour)
	if err := h.push(c0, c1, false); !errors.As(err, &again) || again.At.After(now.Add(pipeline.CreateListLag)) {
		t.Fatalf("the push again, the clock set back: %v, want to look again within %s", err, pipeline.CreateListLag)
	}
	now = again.At
	if err := h.push(c0, c1, false); err != nil {
		t.Errorf("the push again after that wait: %v", err)
	}
	if n := h.gh.count(c1, "test"); n != 1 {
		t.Errorf("GitHub deployments of c1 to test: %d, want 1", n)
	}
}

// lastmile is killed while it waits for GitHub's answer to a creation (25 s
// in), which GitHub makes; restarted at once, it finds nothing in a list
// that lags, and waits as long as that request could have made it, plus
// the list's lag: not a second deployment.
func TestCreationKilledInFlightIsNotMadeAgain(t *testing.T) {
	h := newHarness(t, c0, c1)
	now := time.Now()
	clock := func() time.Time { return now }
	h.engine.Now, h.db.Now = clock, clock
	lag := lagList(h)
	h.gh.enter = func() func() {
		return func() { now = now.Add(25 * time.Second); panic("killed") }
	}
	func() {
		defer func() {
			if recover() == nil {
				t.Fatal("the creation was not cut short")
			}
		}()
		h.push(c0, c1, false)
	}()
	h.gh.enter = nil
	first := h.gh.deployment(c1, "test")
	if first == nil {
		t.Fatal("GitHub made no deployment")
	}
	lag.hidden[first.id] = 1
	now = now.Add(time.Second) // restarted
	var again *pipeline.LookAgain
	if err := h.push(c0, c1, false); !errors.As(err, &again) {
		t.Fatalf("the push after the restart: %v, want to look again", err)
	}
	if n := h.gh.count(c1, "test"); n != 1 {
		t.Errorf("GitHub deployments of c1 to test: %d, want 1", n)
	}
	now = again.At
	if err := h.push(c0, c1, false); err != nil {
		t.Fatalf("the push once the list would show it: %v", err)
	}
	if n := h.gh.count(c1, "test"); n != 1 {
		t.Errorf("GitHub deployments of c1 to test: %d, want 1", n)
	}
}

// An intent whose creation lost its answer, superseded before GitHub's list
// shows what that attempt made: not abandoned at once (the deployment
// would deploy, with no inactive on it), but looked for again once the list
// would show it, and made inactive.
func TestLostCreationSupersededBeforeGitHubListsIt(t *testing.T) {
	h := newHarness(t, c0, c1, c2)
	lag := lagList(h)
	h.gh.loseNext = true
	if err := h.push(c0, c1, false); err == nil {
		t.Fatal("the push whose creation lost its answer succeeded")
	}
	d1 := h.gh.deployment(c1, "test")
	lag.hidden[d1.id] = 1
	var again *pipeline.LookAgain
	if err := h.push(c1, c2, false); !errors.As(err, &again) {
		t.Fatalf("the next push, while GitHub's list may lag: %v, want to look again", err)
	}
	h.engine.Now = func() time.Time { return time.Now().Add(pipeline.CreateListLag) }
	if err := h.push(c1, c2, false); err != nil {
		t.Fatalf("the next push again: %v", err)
	}
	rec, err := h.db.Deployment(context.Background(), d1.id)
	if err != nil || rec.Origin != pipeline.OriginLastmile || rec.State != pipeline.DeploymentInactive {
		t.Fatalf("release #1's deployment %d: %+v, %v; want lastmile's, made inactive", d1.id, rec, err)
	}
	h.gh.mu.Lock()
	last := d1.statuses[len(d1.statuses)-1].State
	h.gh.mu.Unlock()
	if last != pipeline.DeploymentInactive {
		t.Errorf("GitHub's latest status of deployment %d: %s, want inactive", d1.id, last)
	}
	if h.gh.deployment(c2, "test") == nil {
		t.Error("release #2 was not sent to test")
	}
}
