//go:build unix

package action_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-github/v62/github"
	"github.com/lastmile-app/lastmile/action"
	"github.com/lastmile-app/lastmile/githubapp"
	"github.com/lastmile-app/lastmile/githubapp/simulator"
	"github.com/lastmile-app/lastmile/pipeline"
)

// The deploy command of most tests: it shows its parameters, and whether the
// Action's token leaked into its environment. It ends with a newline, as a
// YAML block scalar (command: |) does.
const showCommand = `echo "env=$LASTMILE_ENVIRONMENT sha=$LASTMILE_SHA id=$LASTMILE_DEPLOYMENT_ID token=${INPUT_TOKEN:-none}"
echo "pwd=$PWD"
printf 'arg=[%s]\n'
`

func TestDeploySucceeds(t *testing.T) {
	for _, tc := range []struct {
		passArg string // INPUT_PASS-ENVIRONMENT-ARG
		wantArg string
	}{
		{"", "arg=[]"},
		{"false", "arg=[]"},
		{"true", "arg=[production]"},
	} {
		t.Run("pass-environment-arg="+tc.passArg, func(t *testing.T) {
			w := newWorld(t)
			inputs := map[string]string{
				"INPUT_COMMAND":         showCommand,
				"INPUT_ENVIRONMENT-URL": "https://shop.example.com",
			}
			if tc.passArg != "" {
				inputs["INPUT_PASS-ENVIRONMENT-ARG"] = tc.passArg
			}
			results := w.playWithRun(inputs)
			id := w.createDeployment()
			r := w.result(results)
			run := w.waitRunCompleted()

			if r.err != nil {
				t.Fatalf("Run: %v", r.err)
			}
			if want := (action.Result{State: pipeline.DeploymentSuccess, LogURL: r.step.jobURL}); r.res != want {
				t.Errorf("Result %+v, want %+v", r.res, want)
			}
			if run.Conclusion != "success" {
				t.Errorf("run conclusion %q", run.Conclusion)
			}
			d := w.deployment(id)
			// queued is the simulated register job's; the rest the Action's.
			wantStates(t, d, "queued", "in_progress", "success")
			if !strings.Contains(r.step.jobURL, "/job/") || !strings.HasPrefix(r.step.jobURL, run.HTMLURL+"/job/") {
				t.Fatalf("job URL %q is not a job of run %s", r.step.jobURL, run.HTMLURL)
			}
			for _, st := range d.Statuses[1:] {
				if st.LogURL != r.step.jobURL {
					t.Errorf("%s log_url %q, want the job's %q", st.State, st.LogURL, r.step.jobURL)
				}
				if st.EnvironmentURL != "https://shop.example.com" {
					t.Errorf("%s environment_url %q", st.State, st.EnvironmentURL)
				}
				if st.Creator != "github-actions[bot]" {
					t.Errorf("%s posted by %q, want the workflow token's github-actions[bot]", st.State, st.Creator)
				}
			}
			short := w.sha[:7]
			if got, want := d.Statuses[1].Description, "Deploying "+short+" to production"; got != want {
				t.Errorf("in_progress description %q, want %q", got, want)
			}
			if got, want := d.Statuses[2].Description, "Deployed "+short+" to production"; got != want {
				t.Errorf("success description %q, want %q", got, want)
			}
			log := jobLog(w.sim)
			for _, want := range []string{
				fmt.Sprintf("env=production sha=%s id=%d token=none", w.sha, id),
				"pwd=" + r.step.vars["GITHUB_WORKSPACE"] + "\n",
				tc.wantArg + "\n",
			} {
				if !strings.Contains(log, want) {
					t.Errorf("job log lacks %q:\n%s", want, log)
				}
			}
			if strings.Contains(log, "::error::") {
				t.Errorf("job log has an error:\n%s", log)
			}
			wantOutputs(t, r.step.readOutputs(t), "success", "false", r.step.jobURL)
		})
	}
}

func TestDeployFails(t *testing.T) {
	for name, tc := range map[string]struct {
		command  string
		desc     string
		logLines []string
	}{
		"exit 3": {
			command:  "echo 'migrating the database' >&2\nexit 3\n",
			desc:     "Deploy command failed: exit status 3",
			logLines: []string{"migrating the database", "::error::deploy command failed: exit status 3"},
		},
		"pipeline": {
			// -o pipefail: a failure inside a pipe fails the deploy.
			command:  "false | cat\necho 'not reached'\n",
			desc:     "Deploy command failed: exit status 1",
			logLines: []string{"::error::deploy command failed: exit status 1"},
		},
		"command not found": {
			command: "lastmile-no-such-deployer --to production",
			desc:    "Deploy command failed: command not found (exit status 127)",
			logLines: []string{
				"lastmile-no-such-deployer: command not found", // bash's own message
				"::error::deploy command failed: exit status 127: command not found.",
			},
		},
	} {
		t.Run(name, func(t *testing.T) {
			w := newWorld(t)
			results := w.playWithRun(map[string]string{
				"INPUT_COMMAND":         tc.command,
				"INPUT_ENVIRONMENT-URL": "https://shop.example.com",
			})
			id := w.createDeployment()
			r := w.result(results)
			run := w.waitRunCompleted()

			if r.err == nil {
				t.Fatal("Run succeeded")
			}
			if want := (action.Result{State: pipeline.DeploymentFailure, LogURL: r.step.jobURL}); r.res != want {
				t.Errorf("Result %+v, want %+v", r.res, want)
			}
			if run.Conclusion != "failure" {
				t.Errorf("run conclusion %q, want failure", run.Conclusion)
			}
			d := w.deployment(id)
			wantStates(t, d, "queued", "in_progress", "failure")
			last := d.Statuses[2]
			if last.Description != tc.desc || last.LogURL != r.step.jobURL || last.EnvironmentURL != "https://shop.example.com" {
				t.Errorf("failure status %+v, want description %q, log_url %q", last, tc.desc, r.step.jobURL)
			}
			log := jobLog(w.sim)
			for _, want := range tc.logLines {
				if !strings.Contains(log, want) {
					t.Errorf("job log lacks %q:\n%s", want, log)
				}
			}
			if strings.Contains(log, "not reached") {
				t.Errorf("the command went on after a failure:\n%s", log)
			}
			wantOutputs(t, r.step.readOutputs(t), "failure", "false", r.step.jobURL)
		})
	}
}

// A cancelled job: the runner's signal ends Run's context mid-command. The
// command's whole process group stops, and the deployment is left in error.
func TestDeployCancelled(t *testing.T) {
	w := newWorld(t)
	dir := t.TempDir()
	results := w.playWithRun(map[string]string{
		"INPUT_COMMAND": cancelCommand,
		"PID_FILE":      filepath.Join(dir, "child.pid"),
		"TERM_FILE":     filepath.Join(dir, "child.term"),
	})
	id := w.createDeployment()
	w.waitFor("the command has started", func(s *simulator.Simulator) bool {
		return strings.Contains(jobLog(s), "command: sleeping")
	})
	wantStates(t, w.deployment(id), "queued", "in_progress")
	if err := w.sim.CancelRun(repo, w.onlyRun().ID); err != nil {
		t.Fatal(err)
	}
	r := w.result(results)
	run := w.waitRunCompleted()

	if r.err == nil || !strings.Contains(r.err.Error(), "cancelled") {
		t.Errorf("Run error %v, want one that says the job was cancelled", r.err)
	}
	if want := (action.Result{State: pipeline.DeploymentError, LogURL: r.step.jobURL}); r.res != want {
		t.Errorf("Result %+v, want %+v", r.res, want)
	}
	if run.Conclusion != "cancelled" {
		t.Errorf("run conclusion %q, want cancelled", run.Conclusion)
	}
	d := w.deployment(id)
	wantStates(t, d, "queued", "in_progress", "error")
	if last := d.Statuses[2]; !strings.Contains(last.Description, "cancelled") || last.LogURL != r.step.jobURL {
		t.Errorf("error status %+v, want a description that says cancelled and log_url %s", last, r.step.jobURL)
	}
	if log := jobLog(w.sim); strings.Contains(log, "not reached") {
		t.Errorf("the command went on:\n%s", log)
	}
	wantOutputs(t, r.step.readOutputs(t), "error", "false", r.step.jobURL)
	wantGroupTerminated(t, dir)
}

// A cancellation before the deploy command starts, while the Action still
// waits for GitHub. Once the in_progress status may be on GitHub (its call
// was on its way), the deployment is left in error, not in_progress;
// before that, nothing is posted (lastmile settles the deployment when the
// cancelled run ends). Either way nothing is deployed and the step fails.
func TestDeployCancelledBeforeTheCommand(t *testing.T) {
	for name, tc := range map[string]struct {
		method    string // the call GitHub does not answer (it takes effect)
		wantErr   string
		wantState pipeline.DeploymentState
		states    []string
	}{
		"reading the statuses": {
			method:  "GET",
			wantErr: "the workflow job was cancelled before the deploy started; nothing was deployed",
			states:  []string{"queued"},
		},
		"posting in_progress": {
			method:    "POST",
			wantErr:   "the workflow job was cancelled before the deploy command started; nothing was deployed",
			wantState: pipeline.DeploymentError,
			states:    []string{"queued", "in_progress", "error"},
		},
	} {
		t.Run(name, func(t *testing.T) {
			w := newWorld(t)
			const statuses = "/repos/{owner}/{repo}/deployments/*/statuses"
			w.sim.InjectFault(simulator.Fault{Kind: simulator.FaultAppliedLost, Method: tc.method, Path: statuses, Delay: deadline})
			marker := filepath.Join(t.TempDir(), "deployed")
			results := w.playWithRun(map[string]string{"INPUT_COMMAND": "touch " + marker})
			id := w.createDeployment()
			w.waitFor("GitHub has the call it does not answer", func(s *simulator.Simulator) bool {
				return s.CountRequests(tc.method, statuses) == 1
			})
			if err := w.sim.CancelRun(repo, w.onlyRun().ID); err != nil {
				t.Fatal(err)
			}
			r := w.result(results)
			if run := w.waitRunCompleted(); run.Conclusion != "cancelled" {
				t.Errorf("run conclusion %q, want cancelled", run.Conclusion)
			}

			if r.err == nil || !strings.Contains(r.err.Error(), tc.wantErr) {
				t.Errorf("Run error %v, want one that says %q", r.err, tc.wantErr)
			}
			logURL := ""
			if tc.wantState != "" {
				logURL = r.step.jobURL
			}
			if want := (action.Result{State: tc.wantState, LogURL: logURL}); r.res != want {
				t.Errorf("Result %+v, want %+v", r.res, want)
			}
			d := w.deployment(id)
			wantStates(t, d, tc.states...)
			if last := d.Statuses[len(d.Statuses)-1]; last.State == "error" && !strings.HasPrefix(last.Description, "Cancelled: the workflow job was cancelled before the deploy command started") {
				t.Errorf("error status %+v", last)
			}
			if _, err := os.Stat(marker); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("the deploy command ran (%v)", err)
			}
			wantOutputs(t, r.step.readOutputs(t), string(tc.wantState), "false", logURL)
		})
	}
}

// The final status when GitHub fails: tried again while the failure may
// pass (502s for longer than one call's retries last), given up at once
// when GitHub refuses it. A status not reported fails the step, which says
// so; the state output is the one the Action meant to report.
func TestDeployFinalStatus(t *testing.T) {
	for name, tc := range map[string]struct {
		fault   simulator.Fault
		wantErr string // "": the status is reported
	}{
		"502 for a while": {
			// Five tries, for 15 s: the sixth, after 23 s, is taken.
			fault: simulator.Fault{Kind: simulator.FaultServerError, Times: 5},
		},
		"refused": {
			fault:   simulator.Fault{Kind: simulator.FaultServerError, Status: http.StatusUnprocessableEntity},
			wantErr: "the deploy succeeded, but the success status could not be reported: GitHub does not show it, and lastmile settles deployment",
		},
	} {
		t.Run(name, func(t *testing.T) {
			w := newWorld(t)
			id := w.createDeployment()
			gate := filepath.Join(t.TempDir(), "gate")
			if err := syscall.Mkfifo(gate, 0o600); err != nil {
				t.Fatal(err)
			}
			s := newStep(t, w.directJob(id), map[string]string{
				"INPUT_COMMAND": `read -r answer < "$GATE"; echo "deployed ($answer)"`,
				"GATE":          gate,
			})
			var log lockedBuilder
			env := s.env(&log)
			clock := newFakeClock() // the pauses between tries pass at once
			action.SetClock(&env, clock.Now, clock.Sleep)
			type result struct {
				res action.Result
				err error
			}
			done := make(chan result, 1)
			go func() {
				res, err := action.Run(w.ctx, env)
				done <- result{res, err}
			}()
			w.waitFor("the deploy command runs", func(s *simulator.Simulator) bool {
				return len(s.Deployments(repo)) == 1 && len(s.Deployments(repo)[0].Statuses) == 1
			})
			f := tc.fault
			f.Method, f.Path = "POST", "/repos/{owner}/{repo}/deployments/*/statuses"
			w.sim.InjectFault(f)
			if err := writeGate(gate, "go"); err != nil {
				t.Fatal(err)
			}
			r := <-done

			d := w.deployment(id)
			if want := (action.Result{State: pipeline.DeploymentSuccess, LogURL: s.jobURL}); r.res != want {
				t.Errorf("Result %+v, want %+v", r.res, want)
			}
			wantOutputs(t, s.readOutputs(t), "success", "false", s.jobURL)
			if tc.wantErr == "" {
				if r.err != nil {
					t.Fatalf("Run: %v\n%s", r.err, log.String())
				}
				wantStates(t, d, "in_progress", "success")
				if !strings.Contains(log.String(), "trying again in") {
					t.Errorf("the job log does not say the status is tried again:\n%s", log.String())
				}
				return
			}
			if r.err == nil || !strings.Contains(r.err.Error(), tc.wantErr) {
				t.Fatalf("Run error %v, want one that says %q", r.err, tc.wantErr)
			}
			wantStates(t, d, "in_progress")
			if !hasLinePrefix(log.String(), "::error::the deploy succeeded, but the success status could not be reported") {
				t.Errorf("job log:\n%s", log.String())
			}
			if n := w.sim.CountRequests("POST", f.Path); n != 2 {
				t.Errorf("%d posts of a status, want 2: a refused one is not tried again", n)
			}
		})
	}
}

// A final status whose answer is lost (GitHub took it, then answered 502
// or dropped the connection) is posted once: before the Action tries it
// again, it reads the deployment's newest status, finds it there, and
// says so. The step's outcome is the deploy's.
func TestFinalStatusPostedOnceWhenItsAnswerIsLost(t *testing.T) {
	for name, tc := range map[string]struct {
		answer  string // at the gate: "fail" fails the command
		drop    bool
		state   pipeline.DeploymentState
		wantErr string // "": the step succeeds
	}{
		"success, 502":                {answer: "go", state: pipeline.DeploymentSuccess},
		"success, connection dropped": {answer: "go", drop: true, state: pipeline.DeploymentSuccess},
		"failure, 502":                {answer: "fail", state: pipeline.DeploymentFailure, wantErr: "deploy command failed: exit status 1"},
	} {
		t.Run(name, func(t *testing.T) {
			w := newWorld(t)
			g := startGated(t, w, w.ctx, newFakeClock(), nil)
			g.commandRuns()
			w.sim.InjectFault(simulator.Fault{Kind: simulator.FaultAppliedLost, Method: "POST", Path: statusesPath, DropConnection: tc.drop})
			r := g.openWith(tc.answer)
			log := g.log.String()

			switch {
			case tc.wantErr == "" && r.err != nil:
				t.Errorf("Run: %v", r.err)
			case tc.wantErr != "" && (r.err == nil || !strings.Contains(r.err.Error(), tc.wantErr) || strings.Contains(r.err.Error(), "could not be reported")):
				t.Errorf("Run error %v, want the command's failure alone", r.err)
			}
			if want := (action.Result{State: tc.state, LogURL: g.s.jobURL}); r.res != want {
				t.Errorf("Result %+v, want %+v", r.res, want)
			}
			wantStates(t, w.deployment(g.id), "in_progress", string(tc.state))
			if n := w.sim.CountRequests("POST", statusesPath); n != 2 {
				t.Errorf("%d posts of a status, want 2: in_progress, and %s once", n, tc.state)
			}
			if !hasLinePrefix(log, fmt.Sprintf("lastmile: the %s status is on GitHub: an earlier try posted it, though its answer was lost", tc.state)) {
				t.Errorf("the job log does not say the status arrived:\n%s", log)
			}
			if w.sim.PendingFaults() != 0 {
				t.Errorf("the fault was not met")
			}
		})
	}
}

// writeGate writes answer to the FIFO gate, once the deploy command reads it.
func writeGate(gate, answer string) error {
	f, err := os.OpenFile(gate, os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	_, err = f.WriteString(answer + "\n")
	return errors.Join(err, f.Close())
}

// A call GitHub does not answer is abandoned after RequestTimeout and tried
// again, rather than holding the step until the job's timeout.
func TestStalledCallTriedAgain(t *testing.T) {
	w := newWorld(t)
	id := w.createDeployment()
	w.sim.InjectFault(simulator.Fault{Kind: simulator.FaultDelay, Method: "GET",
		Path: "/repos/{owner}/{repo}/deployments/*/statuses", Delay: deadline})
	s := newStep(t, w.directJob(id), map[string]string{"INPUT_COMMAND": "true"})
	var log strings.Builder
	env := s.env(&log)
	env.RequestTimeout = 500 * time.Millisecond
	res, err := action.Run(w.ctx, env)
	if err != nil || res.State != pipeline.DeploymentSuccess {
		t.Fatalf("Run: %+v, %v\n%s", res, err, log.String())
	}
	if n := w.sim.CountRequests("GET", "/repos/{owner}/{repo}/deployments/*/statuses"); n < 2 {
		t.Errorf("%d reads of the statuses, want the stalled one and its retry", n)
	}
	wantStates(t, w.deployment(id), "in_progress", "success")
}

// cancelCommand starts a process in the background that records the SIGTERM
// it gets, and waits for it. Only a signal to the command's process group
// reaches that process.
const cancelCommand = `bash -c 'trap "echo TERM > \"$TERM_FILE\"; exit 0" TERM; echo $$ > "$PID_FILE"; echo "command: sleeping"; sleep 300 & wait' &
wait
echo 'not reached'
`

// wantGroupTerminated checks that cancelCommand's background process got
// SIGTERM (not only the final SIGKILL) and has ended.
func wantGroupTerminated(t *testing.T, dir string) {
	t.Helper()
	waitProcessGone(t, filepath.Join(dir, "child.pid"))
	if b, err := os.ReadFile(filepath.Join(dir, "child.term")); err != nil || string(b) != "TERM\n" {
		t.Errorf("the command's background process got no SIGTERM: %q, %v", b, err)
	}
}

// waitProcessGone waits until the process whose pid is in file has ended
// (a zombie has ended: only its parent's wait is missing).
func waitProcessGone(t *testing.T, file string) {
	t.Helper()
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		t.Fatal(err)
	}
	gone := func() bool {
		stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			return errors.Is(syscall.Kill(pid, 0), syscall.ESRCH)
		}
		// pid (comm) state ...
		_, rest, _ := strings.Cut(string(stat), ") ")
		return strings.HasPrefix(rest, "Z") || strings.HasPrefix(rest, "X")
	}
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	timeout := time.After(10 * time.Second)
	for !gone() {
		select {
		case <-tick.C:
		case <-timeout:
			syscall.Kill(pid, syscall.SIGKILL)
			t.Fatalf("process %d, started by the deploy command, still runs after the cancellation", pid)
		}
	}
}

// A deployment lastmile superseded (inactive) or that has already finished
// while the deploy job waited for its reviewer: nothing is deployed, the step
// succeeds and says why.
func TestDeploySkips(t *testing.T) {
	for _, tc := range []struct {
		state  string // posted by lastmile while the job waits
		notice string
	}{
		{"inactive", "is inactive: lastmile superseded it (a newer release, or its commit left the branch), so nothing is deployed."},
		{"success", "has already finished (success), so nothing is deployed."},
		{"error", "has already finished (error), so nothing is deployed."},
	} {
		t.Run(tc.state, func(t *testing.T) {
			w := newWorld(t)
			w.sim.SetEnvironment(repo, environment, simulator.EnvironmentOptions{
				Reviewers: []string{"alice"}, Review: simulator.Manual(),
			})
			marker := filepath.Join(t.TempDir(), "deployed")
			results := w.playWithRun(map[string]string{"INPUT_COMMAND": "touch " + marker})
			id := w.createDeployment()
			w.waitFor("the deploy job waits for its reviewer", func(s *simulator.Simulator) bool {
				return len(s.PendingReviews(repo)) == 1
			})
			w.postStatus(id, tc.state)
			if err := w.sim.Approve(repo, w.onlyRun().ID, environment, "alice", "go"); err != nil {
				t.Fatal(err)
			}
			r := w.result(results)
			run := w.waitRunCompleted()

			if r.err != nil {
				t.Fatalf("Run: %v", r.err)
			}
			if want := (action.Result{State: pipeline.DeploymentState(tc.state), Skipped: true}); r.res != want {
				t.Errorf("Result %+v, want %+v", r.res, want)
			}
			if run.Conclusion != "success" {
				t.Errorf("run conclusion %q, want success", run.Conclusion)
			}
			wantStates(t, w.deployment(id), "queued", tc.state)
			if _, err := os.Stat(marker); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("the deploy command ran (%v)", err)
			}
			if want := fmt.Sprintf("::notice::Deployment %d %s", id, tc.notice); !strings.Contains(jobLog(w.sim), want) {
				t.Errorf("job log lacks %q:\n%s", want, jobLog(w.sim))
			}
			wantOutputs(t, r.step.readOutputs(t), tc.state, "true", "")
		})
	}
}

// "Re-run failed jobs" on a failed deploy: the second attempt finds the
// deployment failed, deploys again and reports the new outcome on the same
// deployment.
func TestDeployAgainOnARerun(t *testing.T) {
	w := newWorld(t)
	marker := filepath.Join(t.TempDir(), "attempted")
	// Fails the first time, succeeds the second.
	results := w.playWithRun(map[string]string{"INPUT_COMMAND": fmt.Sprintf(
		`if [ -e %[1]q ]; then echo "second attempt"; else touch %[1]q; echo "flaky" >&2; exit 1; fi`, marker)})
	id := w.createDeployment()
	first := w.result(results)
	if first.err == nil || first.res.State != pipeline.DeploymentFailure {
		t.Fatalf("first attempt: %+v, %v; want a failure", first.res, first.err)
	}
	run := w.waitRunCompleted()
	if run.Conclusion != "failure" {
		t.Fatalf("run conclusion %q, want failure", run.Conclusion)
	}

	if err := w.sim.RerunFailedJobs(repo, run.ID); err != nil {
		t.Fatal(err)
	}
	second := w.result(results)
	if second.err != nil || second.res.State != pipeline.DeploymentSuccess || second.res.Skipped {
		t.Fatalf("re-run: %+v, %v; want a success", second.res, second.err)
	}
	w.waitFor("the re-run completes", func(s *simulator.Simulator) bool {
		r, _ := s.Run(repo, run.ID)
		return r.Attempt == 2 && r.Status == "completed"
	})
	if r, _ := w.sim.Run(repo, run.ID); r.Conclusion != "success" {
		t.Errorf("re-run conclusion %q, want success", r.Conclusion)
	}
	wantStates(t, w.deployment(id), "queued", "in_progress", "failure", "in_progress", "success")
	if want := fmt.Sprintf("::notice::Deployment %d ended in failure; this is attempt 2 of the run, so it is deployed again.", id); !strings.Contains(jobLog(w.sim), want) {
		t.Errorf("job log lacks %q:\n%s", want, jobLog(w.sim))
	}
}

// A re-run of a failed deploy after a newer deployment to the environment
// succeeded would go backwards: the Action deploys nothing.
func TestRerunAfterANewerSuccessDeploysNothing(t *testing.T) {
	w := newWorld(t)
	marker := filepath.Join(t.TempDir(), "attempted")
	results := w.playWithRun(map[string]string{"INPUT_COMMAND": fmt.Sprintf(
		`if [ -e %[1]q ]; then echo "deployed"; else touch %[1]q; exit 1; fi`, marker)})
	old := w.createDeployment()
	if r := w.result(results); r.err == nil {
		t.Fatalf("the first deployment's run: %+v, want a failure", r.res)
	}
	newer := w.createDeployment() // its run succeeds
	if r := w.result(results); r.err != nil || r.res.State != pipeline.DeploymentSuccess {
		t.Fatalf("the newer deployment's run: %+v, %v", r.res, r.err)
	}
	w.waitFor("both runs complete", func(s *simulator.Simulator) bool {
		runs := s.Runs(repo)
		return len(runs) == 2 && runs[0].Status == "completed" && runs[1].Status == "completed"
	})
	var oldRun simulator.Run
	for _, r := range w.sim.Runs(repo) {
		if r.DeploymentID == old {
			oldRun = r
		}
	}
	if err := w.sim.RerunFailedJobs(repo, oldRun.ID); err != nil {
		t.Fatal(err)
	}
	r := w.result(results)
	if r.err != nil || !r.res.Skipped || r.res.State != pipeline.DeploymentFailure {
		t.Fatalf("re-run: %+v, %v; want skipped", r.res, r.err)
	}
	wantStates(t, w.deployment(old), "queued", "in_progress", "failure")
	if want := fmt.Sprintf("deployment %d there, of a newer release, has succeeded, and this one would go backwards", newer); !strings.Contains(jobLog(w.sim), want) {
		t.Errorf("job log lacks %q:\n%s", want, jobLog(w.sim))
	}
}

// A first attempt whose deployment lastmile has not made inactive (yet),
// while a newer deployment of lastmile's to the environment has succeeded
// (made inactive since, as GitHub does to earlier successes): nothing is
// deployed, the deployment is made inactive, saying why, and the step
// succeeds — in the register job too, whose skip skips the deploy job.
// Another App's newer success says nothing of it: it deploys.
func TestFirstAttemptAfterANewerSuccessDeploysNothing(t *testing.T) {
	for _, tc := range []struct {
		name    string
		payload any
		mode    string
		skipped bool
	}{
		{"lastmile's", lastmilePayload, "deploy", true},
		{"lastmile's, register", lastmilePayload, "register", true},
		{"another App's", map[string]bool{"vercel": true}, "deploy", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w := newWorld(t)
			old := w.createDeployment()
			w.postStatus(old, "queued")
			newer := w.createDeploymentWith(tc.payload)
			w.postStatus(newer, "success")
			w.postStatus(newer, "inactive")
			s := newStep(t, w.directJob(old), map[string]string{"INPUT_COMMAND": "echo DEPLOYED-OLD", "INPUT_MODE": tc.mode})
			var log strings.Builder
			res, err := action.Run(w.ctx, s.env(&log))
			if err != nil || res.Skipped != tc.skipped {
				t.Fatalf("Run: %+v, %v; want skipped %v\n%s", res, err, tc.skipped, log.String())
			}
			if !tc.skipped {
				wantStates(t, w.deployment(old), "queued", "in_progress", "success")
				return
			}
			if strings.Contains(log.String(), "DEPLOYED-OLD") {
				t.Errorf("the command ran:\n%s", log.String())
			}
			wantStates(t, w.deployment(old), "queued", "inactive")
			if want := fmt.Sprintf("deployment %d there, of a newer release, has succeeded", newer); !strings.Contains(log.String(), want) {
				t.Errorf("log lacks %q:\n%s", want, log.String())
			}
		})
	}
}

// A re-run of a failed deploy while a newer release's deployment to the
// environment is on its way there — waiting for its reviewers (no status,
// or queued by the register job), or deploying (also under an inactive
// that lastmile wrote over its begun deploy) — deploys nothing: the
// older, finishing last, would be what the environment runs. One whose
// newer deployment failed, was withdrawn before it deployed (by lastmile,
// or by the Action itself, deploying nothing), or has stood still longer
// than lastmile holds an environment for, deploys.
func TestRerunBesideANewerDeploymentOnItsWay(t *testing.T) {
	const actionsOwn = "inactive:" + "Not deployed: a newer release superseded it as the deploy job started"
	for _, tc := range []struct {
		name    string
		newer   []string // the newer deployment's statuses, "state" or "state:description"
		idle    bool     // its statuses were posted a day and an hour ago
		refused string   // the notice's end; "" when the re-run deploys
	}{
		{"no status", nil, false, "is waiting to deploy, and this one, deployed now, might finish after it."},
		{"queued", []string{"queued"}, false, "is waiting to deploy, and this one, deployed now, might finish after it."},
		{"in_progress", []string{"queued", "in_progress"}, false, "is deploying, and this one, deployed beside it, might finish last."},
		{"lastmile's inactive over a begun deploy", []string{"queued", "in_progress", "inactive"}, false, "is deploying, and this one, deployed beside it, might finish last."},
		{"the Action's own inactive", []string{"queued", "inactive", "in_progress", actionsOwn}, false, ""},
		{"failed", []string{"queued", "in_progress", "failure"}, false, ""},
		{"withdrawn", []string{"inactive"}, false, ""},
		{"no status for a day", nil, true, ""},
		{"in_progress for a day", []string{"queued", "in_progress"}, true, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w := newWorld(t)
			if tc.idle {
				// GitHub's clock a day and an hour back while the
				// deployments are made, then the real one again (the
				// App's token fetched first, on the real one, which
				// its JWT is dated by).
				w.token()
				w.shareClock(func() time.Time { return time.Now().Add(-pipeline.HoldRunning - time.Hour) })
			}
			old := w.createDeployment()
			for _, st := range []string{"queued", "in_progress", "failure"} {
				w.postStatus(old, st)
			}
			newer := w.createDeployment()
			for _, st := range tc.newer {
				state, desc, _ := strings.Cut(st, ":")
				w.postStatusSaying(newer, state, desc)
			}
			w.shareClock(time.Now)
			jc := w.directJob(old)
			jc.RunAttempt = 2
			s := newStep(t, jc, map[string]string{"INPUT_COMMAND": "echo DEPLOYED-OLD"})
			var log strings.Builder
			res, err := action.Run(w.ctx, s.env(&log))
			if tc.refused == "" {
				if err != nil || res.Skipped || res.State != pipeline.DeploymentSuccess || !strings.Contains(log.String(), "DEPLOYED-OLD") {
					t.Fatalf("Run: %+v, %v; want the command run and success\n%s", res, err, log.String())
				}
				return
			}
			if err != nil || !res.Skipped || res.State != pipeline.DeploymentFailure || strings.Contains(log.String(), "DEPLOYED-OLD") {
				t.Fatalf("Run: %+v, %v; want skipped, the failure left as it was\n%s", res, err, log.String())
			}
			wantStates(t, w.deployment(old), "queued", "in_progress", "failure")
			want := fmt.Sprintf("::notice::Deployment %d to production is not deployed: deployment %d there, of a newer release, %s", old, newer, tc.refused)
			if !strings.Contains(log.String(), want) {
				t.Errorf("log lacks %q:\n%s", want, log.String())
			}
		})
	}
}

// A marked deployment that a workflow created (with its GITHUB_TOKEN) is
// a copy of lastmile's marker, no release: newer and without a status, it
// does not hold back the re-run of a failed deploy, as a newer one of
// lastmile's App would.
func TestRerunBesideANewerCopyOfTheMarker(t *testing.T) {
	w := newWorld(t)
	old := w.createDeployment()
	for _, st := range []string{"queued", "in_progress", "failure"} {
		w.postStatus(old, st)
	}
	// A run of the workflow, started by another deployment of lastmile's
	// (which then fails: it holds nothing back), makes the copy.
	copied := make(chan int64, 1)
	w.sim.SetWorkflow(repo, simulator.WorkflowOptions{Deploy: func(ctx context.Context, jc simulator.JobContext) error {
		gh, err := githubapp.NewTokenClient(jc.APIURL, jc.Token, nil)
		if err != nil {
			return err
		}
		d, _, err := gh.Repositories.CreateDeployment(ctx, owner, repoName, &github.DeploymentRequest{
			Ref: github.String(w.sha), Environment: github.String(environment), AutoMerge: github.Bool(false),
			RequiredContexts: &[]string{}, Payload: lastmilePayload})
		if err != nil {
			return err
		}
		copied <- d.GetID()
		return errors.New("the trigger's deploy fails")
	}})
	trigger := w.createDeployment()
	var copy int64
	select {
	case copy = <-copied:
	case <-w.ctx.Done():
		t.Fatal("the workflow made no copy")
	}
	w.waitFor("the trigger's run ends", func(s *simulator.Simulator) bool {
		runs := s.Runs(repo)
		return len(runs) == 1 && runs[0].Status == "completed"
	})
	if d := w.deployment(copy); d.Creator != "github-actions[bot]" || d.State() != "" {
		t.Fatalf("the copy: created by %q, state %q", d.Creator, d.State())
	}
	w.postStatus(trigger, "failure") // as the Action would have

	w.sim.SetWorkflow(repo, simulator.WorkflowOptions{})
	jc := w.directJob(old)
	jc.RunAttempt = 2
	s := newStep(t, jc, map[string]string{"INPUT_COMMAND": "echo DEPLOYED-OLD"})
	var log strings.Builder
	res, err := action.Run(w.ctx, s.env(&log))
	if err != nil || res.Skipped || res.State != pipeline.DeploymentSuccess || !strings.Contains(log.String(), "DEPLOYED-OLD") {
		t.Fatalf("Run: %+v, %v; want the command run and success\n%s", res, err, log.String())
	}
}

// A success a person posted by hand proves no deploy (lastmile disregards
// it): the deploy job deploys all the same, where the deployment's own
// success or a newer deployment's (an App's) would have it deploy nothing.
func TestAPersonsSuccessIsNoDeploy(t *testing.T) {
	for _, where := range []string{"this deployment", "a newer deployment"} {
		t.Run(where, func(t *testing.T) {
			w := newWorld(t)
			id := w.createDeployment()
			w.postStatus(id, "queued")
			target := id
			if where == "a newer deployment" {
				// One that failed: neither succeeded nor on its way.
				target = w.createDeployment()
				w.postStatus(target, "failure")
			}
			if _, err := w.sim.PostDeploymentStatusAs(repo, target, "success", "mallory"); err != nil {
				t.Fatal(err)
			}
			s := newStep(t, w.directJob(id), map[string]string{"INPUT_COMMAND": "echo DEPLOYED"})
			var log strings.Builder
			res, err := action.Run(w.ctx, s.env(&log))
			if err != nil || res.Skipped || res.State != pipeline.DeploymentSuccess || !strings.Contains(log.String(), "DEPLOYED") {
				t.Fatalf("Run: %+v, %v; want the command run and success\n%s", res, err, log.String())
			}
			if where == "this deployment" {
				wantStates(t, w.deployment(id), "queued", "success", "in_progress", "success")
			} else {
				wantStates(t, w.deployment(id), "queued", "in_progress", "success")
			}
		})
	}
}

// Mode register, as the ungated first job runs it: queued, with the run's
// URL as log_url.
func TestRegister(t *testing.T) {
	w := newWorld(t)
	id := w.createDeployment() // no workflow: the test plays the runner
	jc := w.directJob(id)
	s := newStep(t, jc, map[string]string{"INPUT_MODE": "register"})
	var log strings.Builder
	res, err := action.Run(w.ctx, s.env(&log))
	if err != nil {
		t.Fatalf("Run: %v\n%s", err, log.String())
	}
	runURL := serverURL + "/acme/shop/actions/runs/9001"
	if want := (action.Result{State: pipeline.DeploymentQueued, LogURL: runURL}); res != want {
		t.Errorf("Result %+v, want %+v", res, want)
	}
	d := w.deployment(id)
	wantStates(t, d, "queued")
	if st := d.Statuses[0]; st.LogURL != runURL || st.Description != "Waiting for the deploy job to production" {
		t.Errorf("queued status %+v, want log_url %s", st, runURL)
	}
	wantOutputs(t, s.readOutputs(t), "queued", "false", runURL)

	// A deployment lastmile has superseded gets no queued status.
	id2 := w.createDeployment()
	w.postStatus(id2, "inactive")
	s = newStep(t, w.directJob(id2), map[string]string{"INPUT_MODE": "register"})
	res, err = action.Run(w.ctx, s.env(&log))
	if err != nil || !res.Skipped {
		t.Fatalf("Run on an inactive deployment: %+v, %v", res, err)
	}
	wantStates(t, w.deployment(id2), "inactive")
	wantOutputs(t, s.readOutputs(t), "inactive", "true", "")
}

// Other Apps' deployments (Vercel's "Preview", Heroku's…) trigger the
// on: deployment workflow too. Without lastmile's marker in its payload a
// deployment is skipped, in both modes, before any call to GitHub: nothing
// deployed, no status posted, a notice, and the step succeeds — unless
// require-lastmile is false.
func TestRunSkipsOtherAppsDeployments(t *testing.T) {
	for name, tc := range map[string]struct {
		inputs  map[string]string
		payload any
		creator string   // "": lastmile's App's bot
		states  []string // nil: skipped
	}{
		"deploy, GitHub's example payload": {
			inputs:  map[string]string{"INPUT_COMMAND": "touch \"$MARKER\""},
			payload: map[string]any{}, // testdata/deployment.json's, as it is
			creator: "Codertocat",
		},
		"register, another App's payload": {
			inputs:  map[string]string{"INPUT_MODE": "register"},
			payload: map[string]any{"vercel": map[string]any{"preview": true}},
			creator: "vercel[bot]",
		},
		// The inputs for deploying do not matter to a deployment that is
		// not deployed (an environment URL built from another App's
		// environment name, such as "Preview – shop").
		"deploy, inputs invalid for deploying": {
			inputs: map[string]string{"INPUT_COMMAND": "./deploy.sh # to the environment", "INPUT_ENVIRONMENT-URL": "https://Preview – shop.example.com",
				"INPUT_PASS-ENVIRONMENT-ARG": "true"},
			payload: map[string]any{"vercel": map[string]any{"preview": true}},
			creator: "vercel[bot]",
		},
		"deploy, require-lastmile false": {
			inputs:  map[string]string{"INPUT_COMMAND": "touch \"$MARKER\"", "INPUT_REQUIRE-LASTMILE": "false"},
			payload: map[string]any{},
			states:  []string{"in_progress", "success"},
		},
		// lastmile's marker from an App's bot is deployed: lastmile's App
		// is one (the slug check in the workflow's if: names which).
		"deploy, lastmile's marker from another App's bot": {
			inputs:  map[string]string{"INPUT_COMMAND": "touch \"$MARKER\""},
			payload: lastmilePayload,
			creator: "deployer[bot]",
			states:  []string{"in_progress", "success"},
		},
		"deploy, lastmile's marker as a JSON string": {
			inputs:  map[string]string{"INPUT_COMMAND": "touch \"$MARKER\""},
			payload: `{"lastmile":{"instance":"lastmile-test","release":1,"stage":"production","index":0}}`,
			states:  []string{"in_progress", "success"},
		},
	} {
		t.Run(name, func(t *testing.T) {
			w := newWorld(t)
			id := w.createDeployment()
			jc := w.directJob(id)
			marker := filepath.Join(t.TempDir(), "deployed")
			tc.inputs["MARKER"] = marker
			s := newStep(t, jc, tc.inputs)
			s.setPayload(t, jc, tc.payload)
			if tc.creator != "" {
				s.setDeploymentField(t, "creator", accountJSON(tc.creator))
			}
			w.sim.ResetRequests()
			var log strings.Builder
			res, err := action.Run(w.ctx, s.env(&log))
			if err != nil {
				t.Fatalf("Run: %v\n%s", err, log.String())
			}
			_, statErr := os.Stat(marker)
			if tc.states != nil {
				if res.Skipped || res.State != pipeline.DeploymentSuccess || statErr != nil {
					t.Fatalf("Run: %+v, command ran: %v; want a deploy\n%s", res, statErr, log.String())
				}
				wantStates(t, w.deployment(id), tc.states...)
				return
			}
			if want := (action.Result{Skipped: true}); res != want {
				t.Errorf("Result %+v, want %+v", res, want)
			}
			if !errors.Is(statErr, os.ErrNotExist) {
				t.Errorf("the deploy command ran (%v)", statErr)
			}
			if n := len(w.sim.Requests()); n != 0 {
				t.Errorf("%d calls to GitHub, want none: %+v", n, w.sim.Requests())
			}
			wantStates(t, w.deployment(id))
			want := fmt.Sprintf("::notice::Deployment %d to production (created by %s) is not lastmile's: its payload has no lastmile marker. Nothing is deployed and no status is reported; to deploy such deployments too, set require-lastmile: false.\n", id, tc.creator)
			if log.String() != want {
				t.Errorf("job log %q, want %q", log.String(), want)
			}
			wantOutputs(t, s.readOutputs(t), "", "true", "")
		})
	}
}

// accountJSON is GitHub's account object for login: a bot's ("…[bot]",
// of type Bot) or a person's (User).
func accountJSON(login string) map[string]any {
	typ := "User"
	if strings.HasSuffix(login, "[bot]") {
		typ = "Bot"
	}
	return map[string]any{"login": login, "id": 7, "type": typ, "site_admin": false}
}

// Lastmile's marker says what a deployment is for, not who made it: anyone
// whose token may write deployments can copy it. A marked deployment that
// a person or a workflow's GITHUB_TOKEN created is no deployment of
// lastmile's App: the Action deploys nothing and posts nothing, in both
// modes, and warns — the workflow's reviewers were shown what looked like
// one of lastmile's.
func TestRunSkipsMarkedDeploymentsNotByAnApp(t *testing.T) {
	for name, tc := range map[string]struct {
		mode, creator, by string
	}{
		"deploy, a person's":         {"deploy", "octocat", "octocat, a person"},
		"register, a person's":       {"register", "octocat", "octocat, a person"},
		"deploy, a workflow's":       {"deploy", "github-actions[bot]", ""},
		"deploy, a bot of type User": {"deploy", "mallory[bot]", "mallory[bot], a person"},
		"deploy, no creator named":   {"deploy", "", "no one GitHub names"},
	} {
		t.Run(name, func(t *testing.T) {
			w := newWorld(t)
			id := w.createDeployment()
			jc := w.directJob(id)
			marker := filepath.Join(t.TempDir(), "deployed")
			s := newStep(t, jc, map[string]string{"INPUT_MODE": tc.mode, "INPUT_COMMAND": "touch \"$MARKER\"", "MARKER": marker})
			creator := accountJSON(tc.creator)
			switch tc.creator {
			case "mallory[bot]":
				creator["type"] = "User"
			case "":
				creator = nil
			}
			s.setDeploymentField(t, "creator", creator)
			w.sim.ResetRequests()
			var log strings.Builder
			res, err := action.Run(w.ctx, s.env(&log))
			if err != nil {
				t.Fatalf("Run: %v\n%s", err, log.String())
			}
			if want := (action.Result{Skipped: true}); res != want {
				t.Errorf("Result %+v, want %+v", res, want)
			}
			if _, err := os.Stat(marker); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("the deploy command ran (%v)", err)
			}
			if n := len(w.sim.Requests()); n != 0 {
				t.Errorf("%d calls to GitHub, want none: %+v", n, w.sim.Requests())
			}
			wantStates(t, w.deployment(id))
			why := "but " + tc.by + " created it, not lastmile's App"
			if tc.by == "" {
				why = "but a workflow created it (with its GITHUB_TOKEN, as github-actions[bot]), not lastmile's App"
			}
			want := fmt.Sprintf("::warning::Deployment %d to production is not lastmile's: its payload carries lastmile's marker, %s. Nothing is deployed and no status is reported; to deploy such deployments too, set require-lastmile: false.\n", id, why)
			if log.String() != want {
				t.Errorf("job log %q, want %q", log.String(), want)
			}
			wantOutputs(t, s.readOutputs(t), "", "true", "")
		})
	}
}

// Input app names lastmile's App: a marked deployment another App's bot
// created is skipped, with a warning that names both; lastmile's App's
// own (its slug in any case) is deployed. A slug that cannot be one is
// the workflow's mistake.
func TestRunWithTheAppInput(t *testing.T) {
	w := newWorld(t)
	id := w.createDeployment()
	creator := w.deployment(id).Creator
	slug := strings.TrimSuffix(creator, "[bot]")
	if slug == creator || slug == "" {
		t.Fatalf("the simulator's App created deployment %d as %q, not as an App's bot", id, creator)
	}
	for _, tc := range []struct {
		name, app, creator string
		deployed           bool
		says               string
	}{
		{"another App's", slug, "other-app[bot]", false,
			fmt.Sprintf("to production is not lastmile's: its payload carries lastmile's marker, but other-app[bot] created it, not %s[bot], the App input app names.", slug)},
		{"lastmile's", slug, creator, true, "DEPLOYED"},
		{"lastmile's, the slug in capitals", strings.ToUpper(slug), creator, true, "DEPLOYED"},
		{"another App's, no app input", "", "other-app[bot]", true, "DEPLOYED"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			id := w.createDeployment()
			s := newStep(t, w.directJob(id), map[string]string{"INPUT_COMMAND": "echo DEPLOYED", "INPUT_APP": tc.app})
			s.setDeploymentField(t, "creator", accountJSON(tc.creator))
			var log strings.Builder
			res, err := action.Run(w.ctx, s.env(&log))
			if err != nil || res.Skipped == tc.deployed || !strings.Contains(log.String(), tc.says) {
				t.Errorf("Run: %+v, %v; want deployed %v, the log saying %q\n%s", res, err, tc.deployed, tc.says, log.String())
			}
		})
	}
	s := newStep(t, w.directJob(id), map[string]string{"INPUT_COMMAND": "echo DEPLOYED", "INPUT_APP": "https://github.com/apps/" + slug})
	var log strings.Builder
	if _, err := action.Run(w.ctx, s.env(&log)); err == nil || !strings.Contains(err.Error(), "input app: \"https://github.com/apps/"+slug+"\" is not a GitHub App's slug") {
		t.Errorf("Run with an App's page for its slug: %v; want the input refused", err)
	}
}

// The workflow's own mistakes are said whatever the deployment, one that
// is not lastmile's too: they would break the next one that is.
func TestRunReportsWorkflowMistakesOnOtherAppsDeployments(t *testing.T) {
	for name, inputs := range map[string]map[string]string{
		"mode misspelt":                      {"INPUT_MODE": "deplyo"},
		"pass-environment-arg not a boolean": {"INPUT_COMMAND": "true", "INPUT_PASS-ENVIRONMENT-ARG": "maybe"},
		"no token":                           {"INPUT_COMMAND": "true", "INPUT_TOKEN": "", "GITHUB_TOKEN": ""},
	} {
		t.Run(name, func(t *testing.T) {
			w := newWorld(t)
			id := w.createDeployment()
			jc := w.directJob(id)
			s := newStep(t, jc, inputs)
			s.setPayload(t, jc, map[string]any{"vercel": map[string]any{"preview": true}})
			var log strings.Builder
			res, err := action.Run(w.ctx, s.env(&log))
			if err == nil || res.Skipped || !strings.HasPrefix(log.String(), "::error::") {
				t.Errorf("Run: %+v, %v; want the mistake said as an error\n%s", res, err, log.String())
			}
		})
	}
}

// Without job-id (GitHub Enterprise Server has no job.check_run_id) the
// page of the run's attempt stands in for the job's: the run's own page
// shows its latest attempt, and a re-run's statuses must not make the
// first attempt's link show the second attempt's logs.
func TestDeployWithoutJobID(t *testing.T) {
	w := newWorld(t)
	for attempt := 1; attempt <= 2; attempt++ {
		id := w.createDeployment()
		jc := w.directJob(id)
		jc.RunAttempt = attempt
		s := newStep(t, jc, map[string]string{"INPUT_COMMAND": "true", "INPUT_JOB-ID": ""})
		var log strings.Builder
		res, err := action.Run(w.ctx, s.env(&log))
		if err != nil {
			t.Fatalf("Run: %v\n%s", err, log.String())
		}
		want := fmt.Sprintf("%s/attempts/%d", jc.RunURL, attempt)
		if res.LogURL != want {
			t.Errorf("attempt %d: log_url %q, want %q", attempt, res.LogURL, want)
		}
		d := w.deployment(id)
		wantStates(t, d, "in_progress", "success")
		for _, st := range d.Statuses {
			if st.LogURL != want || st.EnvironmentURL != "" {
				t.Errorf("attempt %d: %s: log_url %q environment_url %q", attempt, st.State, st.LogURL, st.EnvironmentURL)
			}
		}
		if got := pipeline.RunIDFromURL(want); got != jc.RunID {
			t.Errorf("lastmile reads run %d from %s, want %d", got, want, jc.RunID)
		}
	}
}

// What the runner gives a step that is not a lastmile deploy: every problem
// is reported at once, before GitHub is called, as an ::error:: line.
func TestRunRejectsBadEnvironment(t *testing.T) {
	w := newWorld(t)
	id := w.createDeployment()
	s := newStep(t, w.directJob(id), map[string]string{
		"INPUT_MODE":                 "deploy",
		"INPUT_COMMAND":              "",
		"INPUT_PASS-ENVIRONMENT-ARG": "yes",
		"INPUT_TOKEN":                "",
		"GITHUB_TOKEN":               "",
		"GITHUB_EVENT_NAME":          "push",
	})
	var log strings.Builder
	_, err := action.Run(w.ctx, s.env(&log))
	if err == nil {
		t.Fatal("Run succeeded")
	}
	for _, want := range []string{
		"input command is required",
		`input pass-environment-arg: "yes" is not a boolean`,
		"no GitHub token",
		`triggered by "push"`,
	} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error lacks %q: %v", want, err)
		}
	}
	lines := strings.Split(strings.TrimSpace(log.String()), "\n")
	if len(lines) != 1 || !strings.HasPrefix(lines[0], "::error::") || !strings.Contains(lines[0], "%0A") {
		t.Errorf("job log %q, want one ::error:: line with escaped newlines", log.String())
	}
	if n := len(w.deployment(id).Statuses); n != 0 {
		t.Errorf("%d statuses posted", n)
	}
	wantOutputs(t, s.readOutputs(t), "", "false", "")
}

// A deployment event whose environment or sha holds a line break (no
// payload of GitHub's does) would print, unescaped, lines the runner reads
// as workflow commands. The Action refuses the payload before it prints or
// posts anything of it: the only workflow command in the log is its
// ::error::, whose message is escaped.
func TestRunRefusesControlCharactersInThePayload(t *testing.T) {
	deploy := map[string]string{"INPUT_COMMAND": "touch \"$MARKER\""}
	register := map[string]string{"INPUT_MODE": "register"}
	for name, tc := range map[string]struct {
		inputs       map[string]string
		field, value string // the deployment's field, and its value ("SHA" is the commit's)
		want         string // in the error
	}{
		"environment with a newline, deploy": {inputs: deploy, field: "environment", value: "production\n::warning::injected",
			want: `environment "production\n::warning::injected" holds U+000A`},
		"environment with a newline, register": {inputs: register, field: "environment", value: "production\n::warning::injected",
			want: `environment "production\n::warning::injected" holds U+000A`},
		"environment with a carriage return": {inputs: deploy, field: "environment", value: "production\r::warning::injected",
			want: "holds U+000D"},
		"environment with a bidirectional control": {inputs: deploy, field: "environment", value: "production\u202e",
			want: "holds U+202E"},
		"sha with a newline": {inputs: deploy, field: "sha", value: "SHA\n::warning::injected",
			want: `\n::warning::injected" is not a commit SHA`},
		"sha not hexadecimal": {inputs: register, field: "sha", value: "main",
			want: `sha "main" is not a commit SHA`},
	} {
		t.Run(name, func(t *testing.T) {
			w := newWorld(t)
			id := w.createDeployment()
			jc := w.directJob(id)
			marker := filepath.Join(t.TempDir(), "deployed")
			inputs := map[string]string{"MARKER": marker}
			for k, v := range tc.inputs {
				inputs[k] = v
			}
			s := newStep(t, jc, inputs)
			s.setDeploymentField(t, tc.field, strings.ReplaceAll(tc.value, "SHA", w.sha))
			var log strings.Builder
			_, err := action.Run(w.ctx, s.env(&log))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("Run: %v; want an error with %q", err, tc.want)
			}
			// The runner ends a line at \r as well as at \n.
			for _, line := range strings.FieldsFunc(log.String(), func(r rune) bool { return r == '\n' || r == '\r' }) {
				if strings.HasPrefix(line, "::") && !strings.HasPrefix(line, "::error::") {
					t.Errorf("the job log has a workflow command from the payload: %q\n%s", line, log.String())
				}
			}
			if n := strings.Count(log.String(), "\n"); n != 1 || !strings.HasPrefix(log.String(), "::error::") {
				t.Errorf("job log %q, want one ::error:: line", log.String())
			}
			if _, err := os.Stat(marker); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("the deploy command ran (%v)", err)
			}
			if n := len(w.deployment(id).Statuses); n != 0 {
				t.Errorf("%d statuses posted", n)
			}
			wantOutputs(t, s.readOutputs(t), "", "false", "")
		})
	}
}

// A deployment that names no commit, outside a runner (no GITHUB_SHA):
// nothing to deploy, refused before any status is posted.
func TestRunRefusesADeploymentWithoutACommit(t *testing.T) {
	w := newWorld(t)
	id := w.createDeployment()
	jc := w.directJob(id)
	marker := filepath.Join(t.TempDir(), "deployed")
	s := newStep(t, jc, map[string]string{"INPUT_COMMAND": "touch \"$MARKER\"", "MARKER": marker})
	s.setDeploymentField(t, "sha", "")
	s.vars["GITHUB_SHA"] = ""
	var log strings.Builder
	_, err := action.Run(w.ctx, s.env(&log))
	want := fmt.Sprintf("deployment %d names no commit", id)
	if err == nil || !strings.Contains(err.Error(), want) {
		t.Errorf("Run: %v; want an error with %q", err, want)
	}
	if _, err := os.Stat(marker); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the deploy command ran (%v)", err)
	}
	if n := len(w.deployment(id).Statuses); n != 0 {
		t.Errorf("%d statuses posted", n)
	}
}

// pass-environment-arg with a command whose last line ends in a comment:
// the environment would be swallowed by it, and the deploy run without it.
// The step fails before anything is posted, saying what to do instead.
func TestRunRefusesAnEnvironmentArgItCannotAppend(t *testing.T) {
	w := newWorld(t)
	id := w.createDeployment()
	s := newStep(t, w.directJob(id), map[string]string{
		"INPUT_COMMAND":              "./deploy.sh   # the environment is appended by lastmile",
		"INPUT_PASS-ENVIRONMENT-ARG": "true",
	})
	var log strings.Builder
	_, err := action.Run(w.ctx, s.env(&log))
	if err == nil || !strings.Contains(err.Error(), "ends with a comment") || !strings.Contains(err.Error(), "$LASTMILE_ENVIRONMENT") {
		t.Fatalf("Run: %v; want a refusal naming the comment and $LASTMILE_ENVIRONMENT", err)
	}
	if n := len(w.deployment(id).Statuses); n != 0 {
		t.Errorf("%d statuses posted", n)
	}
}

// An environment-url that is not an http(s) URL is refused before
// anything is posted or run, like the other invalid inputs: GitHub would
// show it as the deployment's link. The step fails, and lastmile settles
// the deployment when the run ends. The job log repeats the URL without
// its query or fragment, where a token may be.
func TestRunRefusesABadEnvironmentURL(t *testing.T) {
	w := newWorld(t)
	id := w.createDeployment()
	for url, shown := range map[string]string{
		"staging.example.com":                     "staging.example.com",
		"not a url":                               "not a url",
		"javascript:alert(1)":                     "javascript:alert(1)",
		"https://Staging EU.example.com":          "https://Staging EU.example.com",
		"ftp://files.example.com":                 "ftp://files.example.com",
		"https://":                                "https://",
		"ftp://files.example.com/?token=s3cr3t":   "ftp://files.example.com/?…",
		"staging.example.com#access_token=s3cr3t": "staging.example.com?…",
	} {
		t.Run(url, func(t *testing.T) {
			s, log, err := runEnvironmentURL(t, w, id, url)
			want := fmt.Sprintf("input environment-url: %q is not an http(s) URL", shown)
			if err == nil || !strings.Contains(err.Error(), want) {
				t.Fatalf("Run: %v; want an error with %s", err, want)
			}
			if !strings.HasPrefix(log, "::error::"+want) || strings.Contains(log, "s3cr3t") {
				t.Errorf("job log %q", log)
			}
			wantNothingDone(t, w, id, s)
			wantOutputs(t, s.readOutputs(t), "", "false", "")
		})
	}
}

// runEnvironmentURL runs the deploy step of deployment id with
// environment-url url and a command that leaves a marker file; it returns
// the step, the job log and Run's error.
func runEnvironmentURL(t *testing.T, w *world, id int64, url string) (*step, string, error) {
	t.Helper()
	s := newStep(t, w.directJob(id), map[string]string{
		"INPUT_COMMAND":         `touch "$MARKER"`,
		"INPUT_ENVIRONMENT-URL": url,
		"MARKER":                filepath.Join(t.TempDir(), "deployed"),
	})
	var log strings.Builder
	_, err := action.Run(w.ctx, s.env(&log))
	return s, log.String(), err
}

// wantNothingDone checks that step s (runEnvironmentURL's) ran no command
// and deployment id has no status.
func wantNothingDone(t *testing.T, w *world, id int64, s *step) {
	t.Helper()
	if _, err := os.Stat(s.vars["MARKER"]); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the deploy command ran (%v)", err)
	}
	if n := len(w.deployment(id).Statuses); n != 0 {
		t.Errorf("%d statuses posted", n)
	}
}

// An environment-url holding credentials is refused before anything is
// posted or run: GitHub would show them to every reader of the
// repository. The log does not repeat them.
func TestRunRefusesAnEnvironmentURLWithCredentials(t *testing.T) {
	w := newWorld(t)
	id := w.createDeployment()
	for _, url := range []string{"https://deployer:s3cr3t-pw@staging.example.com/", "https://s3cr3t-pw@staging.example.com",
		// What does not parse as a URL says nothing of it either: a
		// stray % or a space in the password, a mistyped scheme, none.
		"https://deployer:s3cr3t-pw%@staging.example.com", "https://deployer:s3cr3t-pw x@staging.example.com",
		"https:deployer:s3cr3t-pw@staging.example.com", "https//deployer:s3cr3t-pw@staging.example.com",
		"deployer:s3cr3t-pw@staging.example.com"} {
		t.Run(url, func(t *testing.T) {
			s, log, err := runEnvironmentURL(t, w, id, url)
			want := "input environment-url: the URL holds a user name or password"
			if err == nil || !strings.Contains(err.Error(), want) || !strings.HasPrefix(log, "::error::"+want) {
				t.Fatalf("Run: %v, log %q; want an error with %s", err, log, want)
			}
			if strings.Contains(err.Error()+log, "s3cr3t-pw") {
				t.Errorf("the password reached the error or the log: %v / %q", err, log)
			}
			wantNothingDone(t, w, id, s)
		})
	}
}

// A token GitHub refuses: the error says what that means.
func TestRunExplainsRefusedToken(t *testing.T) {
	w := newWorld(t)
	id := w.createDeployment()
	s := newStep(t, w.directJob(id), map[string]string{"INPUT_COMMAND": "true", "INPUT_TOKEN": "ghs_not_a_real_token"})
	var log strings.Builder
	env := s.env(&log)
	env.Transport = &githubapp.Transport{MaxRetries: 1}
	_, err := action.Run(w.ctx, env)
	if err == nil || !strings.Contains(err.Error(), "401") || !strings.Contains(err.Error(), "GitHub did not take the token") ||
		strings.Contains(err.Error(), " []") {
		t.Errorf("error %v, want GitHub's 401 and what it means, without go-github's empty list", err)
	}
	if strings.Contains(log.String(), "ghs_not_a_real_token") {
		t.Errorf("the token is in the job log:\n%s", log.String())
	}
}

func TestInputEnvName(t *testing.T) {
	// The runner: "INPUT_" + name.Replace(' ', '_').ToUpperInvariant().
	for in, want := range map[string]string{
		"mode":                 "INPUT_MODE",
		"pass-environment-arg": "INPUT_PASS-ENVIRONMENT-ARG",
		"job-id":               "INPUT_JOB-ID",
		"some input":           "INPUT_SOME_INPUT",
	} {
		if got := action.InputEnvName(in); got != want {
			t.Errorf("InputEnvName(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestNewTokenClient(t *testing.T) {
	if _, err := githubapp.NewTokenClient("https://api.github.com", "", nil); err == nil {
		t.Error("no error without a token")
	}
	if _, err := githubapp.NewTokenClient("api.github.com", "t", nil); err == nil {
		t.Error("no error for a URL without a scheme")
	}
	gh, err := githubapp.NewTokenClient("https://ghe.example.com/api/v3", "t", nil)
	if err != nil {
		t.Fatal(err)
	}
	if got := gh.BaseURL.String(); got != "https://ghe.example.com/api/v3/" {
		t.Errorf("BaseURL %s", got)
	}
}

// The Action runs inside the simulator's own event payload too (the player's
// JobContext.Event), not only GitHub's example.
func TestSimulatorPayloadAgrees(t *testing.T) {
	w := newWorld(t)
	results := make(chan stepResult, 1)
	w.sim.SetWorkflow(repo, simulator.WorkflowOptions{
		NoRegister: true,
		Deploy: func(ctx context.Context, jc simulator.JobContext) error {
			dir := t.TempDir()
			s, err := makeStep(dir, jc, map[string]string{"INPUT_COMMAND": `test "$LASTMILE_DEPLOYMENT_ID" = ` + strconv.FormatInt(jc.DeploymentID, 10)})
			if err != nil {
				results <- stepResult{err: err}
				return err
			}
			event := filepath.Join(dir, "simulator-event.json")
			if err := os.WriteFile(event, jc.Event, 0o600); err != nil {
				results <- stepResult{err: err}
				return err
			}
			s.vars["GITHUB_EVENT_PATH"] = event
			res, err := action.Run(ctx, s.env(jc.Log))
			results <- stepResult{step: s, res: res, err: err}
			return err
		},
	})
	id := w.createDeployment()
	r := w.result(results)
	if r.err != nil || r.res.State != pipeline.DeploymentSuccess {
		t.Fatalf("Run: %+v, %v\n%s", r.res, r.err, jobLog(w.sim))
	}
	wantStates(t, w.deployment(id), "in_progress", "success")
}

// A deploy command that starts a daemon, which keeps the command's output
// open, still succeeds once the command itself has (the job log is not a
// file here, as in the workflow player, so its output goes through a pipe).
func TestDeployLeavesDaemon(t *testing.T) {
	w := newWorld(t)
	id := w.createDeployment()
	dir := t.TempDir()
	s := newStep(t, w.directJob(id), map[string]string{
		"INPUT_COMMAND": "sleep 300 &\necho $! > \"$PID_FILE\"\necho started the daemon",
		"PID_FILE":      filepath.Join(dir, "daemon.pid"),
	})
	var log lockedBuilder
	env := s.env(&log)
	env.KillGrace = 200 * time.Millisecond
	res, err := action.Run(w.ctx, env)
	t.Cleanup(func() {
		if b, err := os.ReadFile(filepath.Join(dir, "daemon.pid")); err == nil {
			if pid, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil {
				syscall.Kill(pid, syscall.SIGKILL)
			}
		}
	})
	if err != nil || res.State != pipeline.DeploymentSuccess {
		t.Fatalf("Run: %+v, %v\n%s", res, err, log.String())
	}
	wantStates(t, w.deployment(id), "in_progress", "success")
	if !strings.Contains(log.String(), "started the daemon") {
		t.Errorf("job log:\n%s", log.String())
	}
}

// lockedBuilder is a job log written from the command's output goroutine
// and read by the test.
type lockedBuilder struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *lockedBuilder) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuilder) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// roundTripFunc is an http.RoundTripper made of a function.
type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

// lastmile makes the deployment inactive (a newer release superseded it)
// as the deploy starts: just before the step's in_progress reaches GitHub,
// after the step read the latest status, or just after it. Either way the
// step finds it when it reads the statuses after its in_progress, deploys
// nothing and writes inactive itself, so that lastmile knows no deploy
// runs.
func TestDeploySupersededAsItStarts(t *testing.T) {
	for _, after := range []bool{false, true} {
		t.Run(map[bool]string{false: "inactive before in_progress", true: "inactive after in_progress"}[after], func(t *testing.T) {
			w := newWorld(t)
			id := w.createDeployment()
			marker := filepath.Join(t.TempDir(), "deployed")
			s := newStep(t, w.directJob(id), map[string]string{"INPUT_COMMAND": "touch " + marker})
			var log strings.Builder
			env := s.env(&log)
			var once sync.Once
			env.Transport = &githubapp.Transport{Base: roundTripFunc(func(r *http.Request) (*http.Response, error) {
				inProgress := false
				if r.Method == http.MethodPost && strings.HasSuffix(r.URL.Path, "/statuses") && r.GetBody != nil {
					body, err := r.GetBody()
					if err != nil {
						return nil, err
					}
					b, _ := io.ReadAll(body)
					inProgress = strings.Contains(string(b), `"state":"in_progress"`)
				}
				if inProgress && !after {
					once.Do(func() { w.postStatus(id, "inactive") })
				}
				resp, err := http.DefaultTransport.RoundTrip(r)
				if inProgress && after {
					once.Do(func() { w.postStatus(id, "inactive") })
				}
				return resp, err
			})}
			res, err := action.Run(w.ctx, env)
			if err != nil {
				t.Fatalf("Run: %v\n%s", err, log.String())
			}
			if want := (action.Result{State: pipeline.DeploymentInactive, LogURL: s.jobURL, Skipped: true}); res != want {
				t.Errorf("Result %+v, want %+v", res, want)
			}
			want := []string{"inactive", "in_progress", "inactive"}
			if after {
				want = []string{"in_progress", "inactive", "inactive"}
			}
			wantStates(t, w.deployment(id), want...)
			if _, err := os.Stat(marker); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("the deploy command ran (%v)", err)
			}
			if !strings.Contains(log.String(), fmt.Sprintf("::notice::Deployment %d was made inactive as this job started", id)) {
				t.Errorf("job log:\n%s", log.String())
			}
			wantOutputs(t, s.readOutputs(t), "inactive", "true", s.jobURL)
		})
	}
}

// A deploy command that cannot start (the workspace is gone) fails the
// deploy with the reason, at once, and says nothing of processes left
// running.
func TestDeployCommandThatCannotStart(t *testing.T) {
	w := newWorld(t)
	id := w.createDeployment()
	s := newStep(t, w.directJob(id), map[string]string{"INPUT_COMMAND": "echo deployed"})
	s.vars["GITHUB_WORKSPACE"] = filepath.Join(t.TempDir(), "gone")
	var log strings.Builder
	res, err := action.Run(w.ctx, s.env(&log))
	if err == nil || !strings.Contains(err.Error(), "start the deploy command") || res.State != pipeline.DeploymentFailure ||
		strings.Contains(log.String(), "left running") || strings.Contains(log.String(), "deployed\n") {
		t.Errorf("Run: %+v, %v; want a failure that says the command did not start\n%s", res, err, log.String())
	}
	wantStates(t, w.deployment(id), "in_progress", "failure")
}

// The deploy command writes its step outputs (GITHUB_OUTPUT) to a file of
// its own, removed when it ends: a block it starts and does not end (it
// fails before its delimiter) cannot swallow the Action's outputs,
// written after it.
func TestCommandCannotCorruptTheActionsOutputs(t *testing.T) {
	w := newWorld(t)
	seen := filepath.Join(t.TempDir(), "command-output-path")
	results := w.playWithRun(map[string]string{
		"INPUT_COMMAND": "echo \"$GITHUB_OUTPUT\" > \"$SEEN\"\n" +
			"echo 'notes<<EOF_NOTES' >> \"$GITHUB_OUTPUT\"\necho 'line 1' >> \"$GITHUB_OUTPUT\"\nexit 3",
		"SEEN": seen,
	})
	w.createDeployment()
	r := w.result(results)
	if r.err == nil {
		t.Fatal("the failed command did not fail the step")
	}
	wantOutputs(t, r.step.readOutputs(t), "failure", "false", r.step.jobURL)
	b, err := os.ReadFile(seen)
	if err != nil {
		t.Fatal(err)
	}
	path := strings.TrimSuffix(string(b), "\n")
	if path == "" || path == r.step.outputs || !strings.HasPrefix(path, r.step.vars["RUNNER_TEMP"]+"/") {
		t.Errorf("the command's GITHUB_OUTPUT %q, want a file of its own in RUNNER_TEMP (%s)", path, r.step.vars["RUNNER_TEMP"])
	}
	if _, err := os.Stat(filepath.Dir(path)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the command's GITHUB_OUTPUT is still there: %v", err)
	}
}

// A cancellation of the job once in_progress is posted, while the Action
// reads the statuses again to check that lastmile did not supersede the
// deployment, or just after that read: nothing is deployed, and the
// deployment is left in error, said to be cancelled (not "the statuses
// could not be read", which is for a read GitHub refuses).
func TestDeployCancelledWhileCheckingSuperseded(t *testing.T) {
	const cancelledErr, cancelledDesc = "the workflow job was cancelled before the deploy command started; nothing was deployed",
		"Cancelled: the workflow job was cancelled before the deploy command started"
	for name, tc := range map[string]struct {
		read              string // what becomes of the read: "cancelled", "answered" (then cancelled), "refused"
		wantErr, wantDesc string
	}{
		"cancelled during the read": {"cancelled", cancelledErr, cancelledDesc},
		"cancelled after the read":  {"answered", cancelledErr, cancelledDesc},
		"the read refused": {"refused", "nothing was deployed: read the statuses of deployment",
			"Not deployed: the deployment's statuses could not be read to check that it was not superseded"},
	} {
		t.Run(name, func(t *testing.T) {
			w := newWorld(t)
			id := w.createDeployment()
			marker := filepath.Join(t.TempDir(), "deployed")
			s := newStep(t, w.directJob(id), map[string]string{"INPUT_COMMAND": "touch " + marker})
			var log strings.Builder
			env := s.env(&log)
			ctx, cancel := context.WithCancel(w.ctx)
			defer cancel()
			var (
				mu         sync.Mutex
				inProgress bool // posted
				checked    bool // the read after it has come
			)
			env.Transport = &githubapp.Transport{Base: roundTripFunc(func(r *http.Request) (*http.Response, error) {
				mu.Lock()
				check := inProgress && !checked && r.Method == http.MethodGet && strings.HasSuffix(r.URL.Path, "/statuses")
				checked = checked || check
				mu.Unlock()
				switch {
				case check && tc.read == "cancelled":
					// The runner's SIGINT, with the read on its way.
					cancel()
					<-r.Context().Done()
					return nil, r.Context().Err()
				case check && tc.read == "refused":
					return &http.Response{
						StatusCode: http.StatusNotFound, Status: "404 Not Found", Request: r,
						Header: http.Header{"Content-Type": {"application/json"}},
						Body:   io.NopCloser(strings.NewReader(`{"message":"Not Found"}`)),
					}, nil
				}
				resp, err := http.DefaultTransport.RoundTrip(r)
				if check {
					cancel() // the read is answered
				}
				if err == nil && r.Method == http.MethodPost && resp.StatusCode == http.StatusCreated {
					mu.Lock()
					inProgress = true
					mu.Unlock()
				}
				return resp, err
			})}
			res, err := action.Run(ctx, env)
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("Run error %v, want one that says %q\n%s", err, tc.wantErr, log.String())
			}
			if want := (action.Result{State: pipeline.DeploymentError, LogURL: s.jobURL}); res != want {
				t.Errorf("Result %+v, want %+v", res, want)
			}
			d := w.deployment(id)
			wantStates(t, d, "in_progress", "error")
			if last := d.Statuses[1]; last.Description != tc.wantDesc {
				t.Errorf("error status %+v, want description %q", last, tc.wantDesc)
			}
			if _, err := os.Stat(marker); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("the deploy command ran (%v)", err)
			}
			wantOutputs(t, s.readOutputs(t), "error", "false", s.jobURL)
		})
	}
}

// The deploy command gets the job's own INPUT_ variables (a job's env: may
// name one so), not the Action's: none of its inputs' variables, the
// token's least of all.
func TestTheCommandGetsTheJobsInputVariablesNotTheActions(t *testing.T) {
	w := newWorld(t)
	id := w.createDeployment()
	s := newStep(t, w.directJob(id), map[string]string{
		"INPUT_COMMAND": `echo "chart=${INPUT_CHART-unset} command=${INPUT_COMMAND-unset} token=${INPUT_TOKEN-unset}"`,
		"INPUT_CHART":   "charts/shop",
	})
	var log strings.Builder
	if _, err := action.Run(context.Background(), s.env(&log)); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(log.String(), "chart=charts/shop command=unset token=unset") {
		t.Errorf("the command's INPUT_ variables:\n%s", log.String())
	}
}

// A deploy command that cannot be started (here RUNNER_TEMP, where its
// GITHUB_OUTPUT file goes, is missing) deployed nothing: the deployment is
// left in error, not failure (a failed deploy, which time to restore and
// the success rate count as one), and the step fails saying so.
func TestDeployCommandNotStartedIsAnError(t *testing.T) {
	w := newWorld(t)
	id := w.createDeployment()
	s := newStep(t, w.directJob(id), map[string]string{"INPUT_COMMAND": "echo deployed > \"$HOME/deployed\""})
	s.vars["RUNNER_TEMP"] = filepath.Join(t.TempDir(), "missing")
	var log strings.Builder
	res, err := action.Run(w.ctx, s.env(&log))
	if err == nil || !strings.Contains(err.Error(), "nothing was deployed") || res.State != pipeline.DeploymentError {
		t.Errorf("Run: %+v, %v; want the deployment in error, nothing deployed\n%s", res, err, log.String())
	}
	d := w.deployment(id)
	wantStates(t, d, "in_progress", "error")
	if last := d.Statuses[len(d.Statuses)-1]; !strings.Contains(last.Description, "could not be started") {
		t.Errorf("error status %q, want it to say the command could not be started", last.Description)
	}
	if _, err := os.Stat(filepath.Join(s.vars["HOME"], "deployed")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the command ran: %v", err)
	}
}
