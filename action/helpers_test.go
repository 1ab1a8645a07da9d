//go:build unix

package action_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/bradleyfalzon/ghinstallation/v2"
	"github.com/google/go-github/v62/github"

	"github.com/lastmile-app/lastmile/action"
	"github.com/lastmile-app/lastmile/githubapp/simulator"
	"github.com/lastmile-app/lastmile/githubapp/simulator/oasvalidate"
	"github.com/lastmile-app/lastmile/pipeline"
)

const (
	owner    = "acme"
	repoName = "shop"
	repo     = owner + "/" + repoName
	// serverURL is GITHUB_SERVER_URL: the simulator's pages live on
	// github.com, like GitHub's.
	serverURL = "https://github.com"
	// environment is the one in the example payload (testdata/deployment.json).
	environment = "production"
	// deadline bounds every wait on a condition.
	deadline = 60 * time.Second
)

// lastmilePayload is the payload lastmile puts on the deployments it
// creates: its marker. The Action deploys only deployments that carry it.
var lastmilePayload = pipeline.DeploymentPayload{Lastmile: pipeline.Marker{
	Instance: "lastmile-test", Release: 1, Stage: environment, Index: 0,
}}

// world is a simulated GitHub with one repository where lastmile's App is
// installed.
type world struct {
	t    *testing.T
	sim  *simulator.Simulator
	api  string // REST root, with a trailing slash
	sha  string // the commit to deploy
	itr  *ghinstallation.Transport
	app  *github.Client // lastmile's installation client
	ctx  context.Context
	stop context.CancelFunc
	// clock is the simulated GitHub's clock once shareClock gave it one.
	clock atomic.Pointer[func() time.Time]
}

func newWorld(t *testing.T) *world {
	t.Helper()
	w := &world{t: t}
	// Every request that reaches the simulator (the Action's, in process or
	// as a binary, and the test's own) and every answer is checked against
	// GitHub's REST description.
	sim := simulator.New(simulator.Options{AppID: 42, Clock: w.now, Wrap: oasvalidate.Wrap(t)})
	api, err := sim.Start("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sim.Close() })
	inst := sim.CreateInstallation(owner, "Organization")
	sim.CreateRepo(inst, repo, simulator.RepoOptions{})
	push := sim.PushSilently(repo, "main", simulator.CommitSpec{
		Message: "Add the deploy script",
		Files:   map[string]string{"scripts/deploy.sh": "#!/bin/sh\necho deploy \"$1\"\n"},
	})
	atr, err := ghinstallation.NewAppsTransport(http.DefaultTransport, sim.AppID(), sim.AppPrivateKeyPEM())
	if err != nil {
		t.Fatal(err)
	}
	atr.BaseURL = strings.TrimSuffix(api, "/")
	itr := ghinstallation.NewFromAppsTransport(atr, inst)
	app := github.NewClient(&http.Client{Transport: itr})
	app.BaseURL, _ = app.BaseURL.Parse(api)
	ctx, stop := context.WithTimeout(context.Background(), deadline)
	t.Cleanup(stop)
	w.sim, w.api, w.sha, w.itr, w.app, w.ctx, w.stop = sim, api, push.After, itr, app, ctx, stop
	return w
}

// now is the simulated GitHub's time: the real clock's, until shareClock.
func (w *world) now() time.Time {
	if c := w.clock.Load(); c != nil {
		return (*c)()
	}
	return time.Now()
}

// shareClock makes now the simulated GitHub's clock: time passes for
// GitHub as it does for an Action on that clock (its waits for a rate
// limit's reset among them).
func (w *world) shareClock(now func() time.Time) { w.clock.Store(&now) }

// createDeployment creates a deployment the way lastmile does, with the
// App's installation token. With a workflow set, it starts a run.
func (w *world) createDeployment() int64 {
	w.t.Helper()
	return w.createDeploymentWith(lastmilePayload)
}

// createDeploymentWith creates a deployment with payload: lastmile's, or
// another App's.
func (w *world) createDeploymentWith(payload any) int64 {
	w.t.Helper()
	d, _, err := w.app.Repositories.CreateDeployment(w.ctx, owner, repoName, &github.DeploymentRequest{
		Ref: github.String(w.sha), Environment: github.String(environment),
		AutoMerge: github.Bool(false), RequiredContexts: &[]string{},
		Payload: payload,
	})
	if err != nil {
		w.t.Fatal(err)
	}
	return d.GetID()
}

// postStatus posts a deployment status as lastmile's App.
func (w *world) postStatus(id int64, state string) {
	w.t.Helper()
	w.postStatusSaying(id, state, "")
}

// postStatusSaying posts a deployment status as lastmile's App, with
// description desc ("set by lastmile" when "").
func (w *world) postStatusSaying(id int64, state, desc string) {
	w.t.Helper()
	if desc == "" {
		desc = "set by lastmile"
	}
	if _, _, err := w.app.Repositories.CreateDeploymentStatus(w.ctx, owner, repoName, id, &github.DeploymentStatusRequest{
		State: github.String(state), Description: github.String(desc),
	}); err != nil {
		w.t.Fatal(err)
	}
}

// token is an installation token of lastmile's App, for steps that run
// outside a simulated workflow run.
func (w *world) token() string {
	w.t.Helper()
	tok, err := w.itr.Token(w.ctx)
	if err != nil {
		w.t.Fatal(err)
	}
	return tok
}

// directJob is what a step sees when the test, not the workflow player,
// plays the runner: the App's token and an invented run.
func (w *world) directJob(deploymentID int64) simulator.JobContext {
	w.t.Helper()
	// The event's deployment as GitHub's REST API gives it (its creator:
	// who created it, as the Action reads it).
	d, _, err := w.app.Repositories.GetDeployment(w.ctx, owner, repoName, deploymentID)
	if err != nil {
		w.t.Fatal(err)
	}
	event, err := json.Marshal(map[string]any{"deployment": d})
	if err != nil {
		w.t.Fatal(err)
	}
	return simulator.JobContext{
		APIURL: strings.TrimSuffix(w.api, "/"), Token: w.token(), Repository: repo,
		RunID: 9001, RunURL: serverURL + "/" + repo + "/actions/runs/9001",
		EventName: "deployment", Environment: environment, SHA: w.sha, DeploymentID: deploymentID,
		Event: event,
	}
}

func (w *world) deployment(id int64) simulator.Deployment {
	w.t.Helper()
	for _, d := range w.sim.Deployments(repo) {
		if d.ID == id {
			return d
		}
	}
	w.t.Fatalf("no deployment %d", id)
	return simulator.Deployment{}
}

// waitFor waits until cond holds, failing the test at the deadline.
func (w *world) waitFor(what string, cond func(*simulator.Simulator) bool) {
	w.t.Helper()
	if err := w.sim.WaitFor(w.ctx, cond); err != nil {
		w.t.Fatalf("waiting until %s: %v", what, err)
	}
}

// onlyRun returns the repository's only workflow run.
func (w *world) onlyRun() simulator.Run {
	w.t.Helper()
	runs := w.sim.Runs(repo)
	if len(runs) != 1 {
		w.t.Fatalf("%d runs, want 1", len(runs))
	}
	return runs[0]
}

func (w *world) waitRunCompleted() simulator.Run {
	w.t.Helper()
	w.waitFor("the run completes", func(s *simulator.Simulator) bool {
		runs := s.Runs(repo)
		return len(runs) == 1 && runs[0].Status == "completed"
	})
	return w.onlyRun()
}

// jobLog is the log so far of the deploy job started last (of any run, or
// of a re-run).
func jobLog(s *simulator.Simulator) string {
	log, last := "", int64(0)
	for _, r := range s.Runs(repo) {
		for _, j := range r.Jobs {
			if j.Name == "deploy" && j.ID > last {
				log, last = j.Log, j.ID
			}
		}
	}
	return log
}

// step is one step of the Action as the runner would start it.
type step struct {
	vars    map[string]string // its environment
	outputs string            // the GITHUB_OUTPUT file
	jobURL  string            // the log_url the Action should post
}

// newStep builds the environment the runner gives the Action's step in the
// job jc: the GITHUB_ variables, GITHUB_EVENT_PATH pointing at GitHub's
// example deployment payload (changed only to point at jc's deployment, and
// with lastmile's marker as its deployment's payload), and the inputs (keys are the INPUT_ variable names, as action.yml sets
// them). token and job-id get the values action.yml's defaults give them.
func newStep(t *testing.T, jc simulator.JobContext, inputs map[string]string) *step {
	t.Helper()
	s, err := makeStep(t.TempDir(), jc, inputs)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// makeStep is newStep for goroutines other than the test's (a Deploy func).
func makeStep(dir string, jc simulator.JobContext, inputs map[string]string) (*step, error) {
	payload, err := examplePayload(jc, lastmilePayload)
	if err != nil {
		return nil, err
	}
	event := filepath.Join(dir, "event.json")
	if err := os.WriteFile(event, payload, 0o600); err != nil {
		return nil, err
	}
	outputs := filepath.Join(dir, "github_output")
	if err := os.WriteFile(outputs, nil, 0o600); err != nil {
		return nil, err
	}
	vars := map[string]string{
		"PATH":               os.Getenv("PATH"),
		"HOME":               dir,
		"CI":                 "true",
		"GITHUB_ACTIONS":     "true",
		"GITHUB_API_URL":     jc.APIURL,
		"GITHUB_SERVER_URL":  serverURL,
		"GITHUB_REPOSITORY":  jc.Repository,
		"GITHUB_RUN_ID":      strconv.FormatInt(jc.RunID, 10),
		"GITHUB_RUN_ATTEMPT": strconv.Itoa(max(jc.RunAttempt, 1)),
		"GITHUB_SHA":         jc.SHA,
		"GITHUB_REF":         jc.Ref,
		"GITHUB_EVENT_NAME":  "deployment",
		"GITHUB_EVENT_PATH":  event,
		"GITHUB_OUTPUT":      outputs,
		"GITHUB_TOKEN":       jc.Token,
		"GITHUB_WORKSPACE":   dir,
		"RUNNER_TEMP":        dir,
		"INPUT_MODE":         "deploy",
		"INPUT_TOKEN":        jc.Token,
	}
	jobURL := fmt.Sprintf("%s/attempts/%d", jc.RunURL, max(jc.RunAttempt, 1))
	if jc.JobID != 0 {
		vars["INPUT_JOB-ID"] = strconv.FormatInt(jc.JobID, 10)
		jobURL = fmt.Sprintf("%s/job/%d", jc.RunURL, jc.JobID)
	}
	for k, v := range inputs {
		vars[k] = v
	}
	return &step{vars: vars, outputs: outputs, jobURL: jobURL}, nil
}

// examplePayload is testdata/deployment.json with the ids, owner, name,
// sha and creator of jc's deployment, and payload as the deployment's payload: GitHub's
// example is of a deployment created with "payload": {}, and lastmile's
// carry its marker (lastmilePayload).
func examplePayload(jc simulator.JobContext, payload any) ([]byte, error) {
	raw, err := os.ReadFile(filepath.Join("testdata", "deployment.json"))
	if err != nil {
		return nil, err
	}
	var ev map[string]any
	if err := json.Unmarshal(raw, &ev); err != nil {
		return nil, err
	}
	o, n, _ := strings.Cut(jc.Repository, "/")
	d := ev["deployment"].(map[string]any)
	d["id"], d["sha"], d["ref"] = jc.DeploymentID, jc.SHA, jc.SHA
	d["payload"] = payload
	// Its creator too: lastmile's App's bot, as GitHub would name it.
	var real struct {
		Deployment struct {
			Creator map[string]any `json:"creator"`
		} `json:"deployment"`
	}
	if err := json.Unmarshal(jc.Event, &real); err != nil || real.Deployment.Creator == nil {
		return nil, fmt.Errorf("the job's event names no deployment creator (%v)", err)
	}
	d["creator"] = real.Deployment.Creator
	if d["environment"] != jc.Environment {
		return nil, fmt.Errorf("example payload's environment is %v, the job's %s", d["environment"], jc.Environment)
	}
	r := ev["repository"].(map[string]any)
	r["id"], r["name"], r["full_name"] = 1000, n, jc.Repository
	r["owner"].(map[string]any)["login"] = o
	ev["installation"].(map[string]any)["id"] = 1
	return json.MarshalIndent(ev, "", "  ")
}

// setPayload makes the step's event GitHub's example with payload as the
// deployment's payload.
func (s *step) setPayload(t *testing.T, jc simulator.JobContext, payload any) {
	t.Helper()
	b, err := examplePayload(jc, payload)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(s.vars["GITHUB_EVENT_PATH"], b, 0o600); err != nil {
		t.Fatal(err)
	}
}

// setDeploymentField sets one field of the deployment in the step's event
// payload (a value GitHub's own example could not have).
func (s *step) setDeploymentField(t *testing.T, field string, value any) {
	t.Helper()
	path := s.vars["GITHUB_EVENT_PATH"]
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var ev map[string]any
	if err := json.Unmarshal(b, &ev); err != nil {
		t.Fatal(err)
	}
	ev["deployment"].(map[string]any)[field] = value
	if b, err = json.Marshal(ev); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

// env is the step's environment as an action.Env writing the job log to log.
func (s *step) env(log io.Writer) action.Env {
	return action.Env{
		Getenv:    func(k string) string { return s.vars[k] },
		Environ:   s.environ,
		Stdout:    log,
		KillGrace: 5 * time.Second,
	}
}

func (s *step) environ() []string {
	var out []string
	for k, v := range s.vars {
		out = append(out, k+"="+v)
	}
	return out
}

// readOutputs parses the GITHUB_OUTPUT file (name=value lines, and
// name<<DELIMITER blocks).
func (s *step) readOutputs(t *testing.T) map[string]string {
	t.Helper()
	b, err := os.ReadFile(s.outputs)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	lines := strings.Split(string(b), "\n")
	for i := 0; i < len(lines); i++ {
		l := lines[i]
		if l == "" {
			continue
		}
		if name, delim, ok := strings.Cut(l, "<<"); ok {
			var val []string
			for i++; i < len(lines) && lines[i] != delim; i++ {
				val = append(val, lines[i])
			}
			out[name] = strings.Join(val, "\n")
			continue
		}
		name, val, ok := strings.Cut(l, "=")
		if !ok {
			t.Fatalf("GITHUB_OUTPUT line %q", l)
		}
		if _, dup := out[name]; dup {
			t.Fatalf("output %s written twice:\n%s", name, b)
		}
		out[name] = val
	}
	return out
}

func wantOutputs(t *testing.T, got map[string]string, state, skipped, logURL string) {
	t.Helper()
	want := map[string]string{"state": state, "skipped": skipped, "log-url": logURL}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("output %s = %q, want %q (all: %v)", k, got[k], v, got)
		}
	}
	if len(got) != len(want) {
		t.Errorf("outputs %v, want exactly %v", got, want)
	}
}

// states lists the states of a deployment's statuses, oldest first.
func states(d simulator.Deployment) []string {
	var out []string
	for _, s := range d.Statuses {
		out = append(out, s.State)
	}
	return out
}

func wantStates(t *testing.T, d simulator.Deployment, want ...string) {
	t.Helper()
	if got := states(d); strings.Join(got, ",") != strings.Join(want, ",") {
		t.Fatalf("deployment %d statuses %v, want %v", d.ID, got, want)
	}
}

// stepResult is what a step of the Action returned inside a run.
type stepResult struct {
	step *step
	res  action.Result
	err  error
}

// playWithRun makes the deploy job of the repository's workflow run the
// Action in-process, as Go code, with the step's inputs; the results come on
// the returned channel.
func (w *world) playWithRun(inputs map[string]string) <-chan stepResult {
	results := make(chan stepResult, 1)
	w.sim.SetWorkflow(repo, simulator.WorkflowOptions{
		Deploy: func(ctx context.Context, jc simulator.JobContext) error {
			s, err := makeStep(w.t.TempDir(), jc, inputs)
			if err != nil {
				results <- stepResult{err: err}
				return err
			}
			res, err := action.Run(ctx, s.env(jc.Log))
			results <- stepResult{step: s, res: res, err: err}
			return err
		},
	})
	return results
}

func (w *world) result(results <-chan stepResult) stepResult {
	w.t.Helper()
	select {
	case r := <-results:
		return r
	case <-w.ctx.Done():
		w.t.Fatal("the deploy step did not run")
	}
	return stepResult{}
}

// The lastmile-action binary, built once.
var (
	binOnce sync.Once
	binPath string
	binErr  error
)

// binary builds cmd/lastmile-action as the Action's build step does.
func binary(t *testing.T) string {
	t.Helper()
	binOnce.Do(func() {
		dir, err := os.MkdirTemp("", "lastmile-action-test")
		if err != nil {
			binErr = err
			return
		}
		binPath = filepath.Join(dir, "lastmile-action")
		goTool, err := exec.LookPath("go")
		if err != nil {
			binErr = fmt.Errorf("the go command is needed to build cmd/lastmile-action: %w", err)
			return
		}
		out, err := exec.Command(goTool, "build", "-trimpath", "-o", binPath, "../cmd/lastmile-action").CombinedOutput()
		if err != nil {
			binErr = fmt.Errorf("go build ./cmd/lastmile-action: %v\n%s", err, out)
		}
	})
	if binErr != nil {
		t.Fatal(binErr)
	}
	return binPath
}

func TestMain(m *testing.M) {
	code := m.Run()
	if binPath != "" {
		os.RemoveAll(filepath.Dir(binPath))
	}
	os.Exit(code)
}

// process is the lastmile-action binary started as a runner starts a step:
// with the step's environment only, its output read line by line as it
// comes.
type process struct {
	cmd   *exec.Cmd
	log   io.Writer   // gets the output too, when not nil
	lines chan string // complete lines, as they come
	done  chan struct{}
	err   error // Wait's, once done is closed

	mu      sync.Mutex
	out     strings.Builder
	partial []byte
}

func startBinary(t *testing.T, s *step, log io.Writer) *process {
	t.Helper()
	p, err := startProcess(binary(t), s, log)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// startProcess starts bin in the step's environment.
func startProcess(bin string, s *step, log io.Writer) (*process, error) {
	p := &process{log: log, lines: make(chan string, 1024), done: make(chan struct{})}
	cmd := exec.Command(bin)
	cmd.Env = s.environ()
	cmd.Dir = s.vars["GITHUB_WORKSPACE"]
	cmd.Stdout, cmd.Stderr = p, p // one stream, as in the job log
	// Should something the deploy command started outlive it with the pipe
	// open, Wait still returns.
	cmd.WaitDelay = 3 * time.Second
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	p.cmd = cmd
	go func() {
		p.err = cmd.Wait()
		close(p.done)
	}()
	return p, nil
}

// Write receives the process's output.
func (p *process) Write(b []byte) (int, error) {
	p.mu.Lock()
	p.out.Write(b)
	p.partial = append(p.partial, b...)
	var lines []string
	for {
		i := strings.IndexByte(string(p.partial), '\n')
		if i < 0 {
			break
		}
		lines = append(lines, string(p.partial[:i]))
		p.partial = p.partial[i+1:]
	}
	p.mu.Unlock()
	if p.log != nil {
		p.log.Write(b)
	}
	for _, l := range lines {
		select {
		case p.lines <- l:
		default:
		}
	}
	return len(b), nil
}

// waitLine waits for a line of output that contains s.
func (p *process) waitLine(ctx context.Context, s string) error {
	for {
		select {
		case l := <-p.lines:
			if strings.Contains(l, s) {
				return nil
			}
		case <-p.done:
			for {
				select {
				case l := <-p.lines:
					if strings.Contains(l, s) {
						return nil
					}
				default:
					return fmt.Errorf("lastmile-action exited without a line containing %q:\n%s", s, p.output())
				}
			}
		case <-ctx.Done():
			return fmt.Errorf("no line containing %q yet: %w\n%s", s, ctx.Err(), p.output())
		}
	}
}

// wait waits for the process to exit and returns its exit code.
func (p *process) wait(ctx context.Context) (int, error) {
	select {
	case <-p.done:
	case <-ctx.Done():
		p.cmd.Process.Kill()
		<-p.done
		return -1, fmt.Errorf("lastmile-action still running: %w\n%s", ctx.Err(), p.output())
	}
	var ee *exec.ExitError
	if errors.As(p.err, &ee) {
		return ee.ExitCode(), nil
	}
	if p.err != nil {
		return -1, fmt.Errorf("%w\n%s", p.err, p.output())
	}
	return 0, nil
}

func (p *process) output() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.out.String()
}
