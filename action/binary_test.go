//go:build unix

package action_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/lastmile-app/lastmile/githubapp/simulator"
)

// These tests run cmd/lastmile-action as a separate process, as the runner
// runs the Action's last step: only the step's environment, output on a
// pipe, signals when the job is cancelled, the exit code deciding the step.

// started is a lastmile-action process running in a simulated deploy job.
type started struct {
	step *step
	proc *process
}

// playWithBinary makes the deploy job of the repository's workflow run the
// lastmile-action binary. Like the runner, the job sends the process SIGINT
// when the run is cancelled, and fails when it exits non-zero.
func (w *world) playWithBinary(inputs map[string]string) <-chan started {
	bin := binary(w.t)
	procs := make(chan started, 1)
	w.sim.SetWorkflow(repo, simulator.WorkflowOptions{
		Deploy: func(ctx context.Context, jc simulator.JobContext) error {
			s, err := makeStep(w.t.TempDir(), jc, inputs)
			if err != nil {
				return err
			}
			p, err := startProcess(bin, s, jc.Log)
			if err != nil {
				return err
			}
			procs <- started{s, p}
			select {
			case <-p.done:
			case <-ctx.Done():
				p.cmd.Process.Signal(os.Interrupt)
				<-p.done
			}
			return p.err
		},
	})
	return procs
}

func (w *world) started(procs <-chan started) started {
	w.t.Helper()
	select {
	case s := <-procs:
		return s
	case <-w.ctx.Done():
		w.t.Fatal("lastmile-action did not start")
	}
	return started{}
}

func (w *world) exitCode(p *process) int {
	w.t.Helper()
	code, err := p.wait(w.ctx)
	if err != nil {
		w.t.Fatal(err)
	}
	return code
}

// The command's output reaches the job log while it runs, and the step
// succeeds with exit code 0.
func TestBinaryStreamsAndSucceeds(t *testing.T) {
	binary(t) // before the world's deadline starts: the first build takes a while
	w := newWorld(t)
	gate := filepath.Join(t.TempDir(), "gate")
	if err := syscall.Mkfifo(gate, 0o600); err != nil {
		t.Fatal(err)
	}
	procs := w.playWithBinary(map[string]string{
		"INPUT_COMMAND":              "echo \"deploying to $LASTMILE_ENVIRONMENT\"\nread -r answer < \"$GATE\"\necho \"gate said $answer\"\nprintf 'arg=[%s]\\n'",
		"INPUT_PASS-ENVIRONMENT-ARG": "true",
		"INPUT_ENVIRONMENT-URL":      "https://shop.example.com",
		"GATE":                       gate,
	})
	id := w.createDeployment()
	s := w.started(procs)
	if err := s.proc.waitLine(w.ctx, "deploying to production"); err != nil {
		t.Fatal(err)
	}
	// The line came while the command still waits at the gate.
	wantStates(t, w.deployment(id), "queued", "in_progress")
	if !strings.Contains(jobLog(w.sim), "deploying to production") {
		t.Errorf("job log lacks the command's output:\n%s", jobLog(w.sim))
	}
	opened := make(chan error, 1)
	go func() {
		f, err := os.OpenFile(gate, os.O_WRONLY, 0)
		if err == nil {
			_, err = f.WriteString("go\n")
			err = errors.Join(err, f.Close())
		}
		opened <- err
	}()
	if code := w.exitCode(s.proc); code != 0 {
		t.Fatalf("exit code %d, want 0:\n%s", code, s.proc.output())
	}
	if err := <-opened; err != nil {
		t.Fatal(err)
	}
	run := w.waitRunCompleted()
	if run.Conclusion != "success" {
		t.Errorf("run conclusion %q", run.Conclusion)
	}
	d := w.deployment(id)
	wantStates(t, d, "queued", "in_progress", "success")
	if st := d.Statuses[2]; st.LogURL != s.step.jobURL || st.EnvironmentURL != "https://shop.example.com" {
		t.Errorf("success status %+v, want log_url %s", st, s.step.jobURL)
	}
	out := s.proc.output()
	for _, want := range []string{"gate said go", "arg=[production]\n"} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "::error::") {
		t.Errorf("output has an error:\n%s", out)
	}
	wantOutputs(t, s.step.readOutputs(t), "success", "false", s.step.jobURL)
}

// A failed command fails the step: exit code 1 and an ::error:: line.
func TestBinaryFails(t *testing.T) {
	for name, tc := range map[string]struct {
		command, errorLine, desc string
	}{
		"exit 3": {
			command:   "echo 'half deployed'\nexit 3",
			errorLine: "::error::deploy command failed: exit status 3",
			desc:      "Deploy command failed: exit status 3",
		},
		"command not found": {
			command:   "./scripts/no-such-deploy.sh",
			errorLine: "::error::deploy command failed: exit status 127: command not found.",
			desc:      "Deploy command failed: command not found (exit status 127)",
		},
	} {
		t.Run(name, func(t *testing.T) {
			binary(t)
			w := newWorld(t)
			procs := w.playWithBinary(map[string]string{"INPUT_COMMAND": tc.command})
			id := w.createDeployment()
			s := w.started(procs)
			if code := w.exitCode(s.proc); code != 1 {
				t.Fatalf("exit code %d, want 1:\n%s", code, s.proc.output())
			}
			if !hasLinePrefix(s.proc.output(), tc.errorLine) {
				t.Errorf("no line starting %q:\n%s", tc.errorLine, s.proc.output())
			}
			run := w.waitRunCompleted()
			if run.Conclusion != "failure" {
				t.Errorf("run conclusion %q, want failure", run.Conclusion)
			}
			d := w.deployment(id)
			wantStates(t, d, "queued", "in_progress", "failure")
			if got := d.Statuses[2].Description; got != tc.desc {
				t.Errorf("failure description %q, want %q", got, tc.desc)
			}
			wantOutputs(t, s.step.readOutputs(t), "failure", "false", s.step.jobURL)
		})
	}
}

// A command whose output does not end with a line break (curl's, printf's):
// the Action's ::error:: still starts a line, where the runner reads it as
// a workflow command. The command's stdout and stderr are the process's
// two streams, which the job log merges; output that ended with a line
// break gets no empty line after it.
func TestBinaryErrorAfterAnUnfinishedLine(t *testing.T) {
	for name, tc := range map[string]struct {
		command string
		want    string // the output's end, up to the ::error::
	}{
		"stdout":        {`printf '{"status":"rejected"}'; exit 22`, "{\"status\":\"rejected\"}\n::error::deploy command failed: exit status 22"},
		"stderr":        {`printf 'curl: (22) The requested URL returned error: 422' >&2; exit 22`, "error: 422\n::error::deploy command failed: exit status 22"},
		"finished line": {`echo 'half deployed'; exit 22`, "half deployed\n::error::deploy command failed: exit status 22"},
	} {
		t.Run(name, func(t *testing.T) {
			binary(t)
			w := newWorld(t)
			id := w.createDeployment()
			s := newStep(t, w.directJob(id), map[string]string{"INPUT_COMMAND": tc.command})
			p := startBinary(t, s, nil)
			code := w.exitCode(p)
			out := p.output()
			if code != 1 || !hasLinePrefix(out, "::error::deploy command failed") {
				t.Fatalf("exit %d; no line starts with ::error::deploy command failed:\n%s", code, out)
			}
			if !strings.Contains(out, tc.want) {
				t.Errorf("output lacks %q:\n%s", tc.want, out)
			}
			wantStates(t, w.deployment(id), "in_progress", "failure")
		})
	}
}

// After a successful command that printed no line break, the Action's
// own line starts a line.
func TestBinarySuccessAfterAnUnfinishedLine(t *testing.T) {
	binary(t)
	w := newWorld(t)
	id := w.createDeployment()
	s := newStep(t, w.directJob(id), map[string]string{"INPUT_COMMAND": `printf 'deployed'`})
	p := startBinary(t, s, nil)
	if code := w.exitCode(p); code != 0 {
		t.Fatalf("exit %d:\n%s", code, p.output())
	}
	if !hasLinePrefix(p.output(), "lastmile: deployment ") || !strings.Contains(p.output(), "deployed\nlastmile: deployment ") {
		t.Errorf("the success line does not start a line:\n%s", p.output())
	}
	wantStates(t, w.deployment(id), "in_progress", "success")
}

func hasLinePrefix(out, prefix string) bool {
	for _, l := range strings.Split(out, "\n") {
		if strings.HasPrefix(l, prefix) {
			return true
		}
	}
	return false
}

// A cancelled job: the runner signals lastmile-action (SIGINT, then
// SIGTERM). The command's process group is stopped, the deployment is left
// in error, and the step fails.
func TestBinaryCancelled(t *testing.T) {
	for name, cancel := range map[string]func(w *world, p *process) error{
		"run cancelled (SIGINT)": func(w *world, p *process) error { return w.sim.CancelRun(repo, w.onlyRun().ID) },
		"SIGTERM":                func(w *world, p *process) error { return p.cmd.Process.Signal(syscall.SIGTERM) },
	} {
		t.Run(name, func(t *testing.T) {
			binary(t)
			w := newWorld(t)
			dir := t.TempDir()
			procs := w.playWithBinary(map[string]string{
				"INPUT_COMMAND": cancelCommand,
				"PID_FILE":      filepath.Join(dir, "child.pid"),
				"TERM_FILE":     filepath.Join(dir, "child.term"),
			})
			id := w.createDeployment()
			s := w.started(procs)
			if err := s.proc.waitLine(w.ctx, "command: sleeping"); err != nil {
				t.Fatal(err)
			}
			if err := cancel(w, s.proc); err != nil {
				t.Fatal(err)
			}
			if code := w.exitCode(s.proc); code != 1 {
				t.Fatalf("exit code %d, want 1:\n%s", code, s.proc.output())
			}
			out := s.proc.output()
			if !hasLinePrefix(out, "::error::the workflow job was cancelled") || strings.Contains(out, "not reached") {
				t.Errorf("output:\n%s", out)
			}
			d := w.deployment(id)
			wantStates(t, d, "queued", "in_progress", "error")
			if st := d.Statuses[2]; !strings.HasPrefix(st.Description, "Cancelled") || st.LogURL != s.step.jobURL {
				t.Errorf("error status %+v", st)
			}
			wantOutputs(t, s.step.readOutputs(t), "error", "false", s.step.jobURL)
			wantGroupTerminated(t, dir)
		})
	}
}

// A deploy script that cleans up on TERM, as the README advises, and ends
// its trap with a plain exit: stopped by the cancellation, it exits 0. The
// deploy did not finish all the same: the deployment is left in error, not
// success (which lastmile would promote), and the step fails.
func TestBinaryCancelledCommandExitsZero(t *testing.T) {
	binary(t)
	w := newWorld(t)
	procs := w.playWithBinary(map[string]string{"INPUT_COMMAND": `tmp=$(mktemp -d)
trap 'echo "cleaning up $tmp"; rm -rf "$tmp"; exit' TERM
echo "command: sleeping"
sleep 300 &
wait
echo 'not reached'
`})
	id := w.createDeployment()
	s := w.started(procs)
	if err := s.proc.waitLine(w.ctx, "command: sleeping"); err != nil {
		t.Fatal(err)
	}
	if err := w.sim.CancelRun(repo, w.onlyRun().ID); err != nil {
		t.Fatal(err)
	}
	if code := w.exitCode(s.proc); code != 1 {
		t.Fatalf("exit code %d, want 1:\n%s", code, s.proc.output())
	}
	out := s.proc.output()
	if !strings.Contains(out, "cleaning up") || strings.Contains(out, "not reached") {
		t.Errorf("the command's trap did not run, or the command went on:\n%s", out)
	}
	if !hasLinePrefix(out, "::error::the workflow job was cancelled; the deploy command was stopped (it then exited with status 0)") {
		t.Errorf("no ::error:: line saying the job was cancelled:\n%s", out)
	}
	if run := w.waitRunCompleted(); run.Conclusion != "cancelled" {
		t.Errorf("run conclusion %q, want cancelled", run.Conclusion)
	}
	d := w.deployment(id)
	wantStates(t, d, "queued", "in_progress", "error")
	if st := d.Statuses[2]; !strings.HasPrefix(st.Description, "Cancelled") {
		t.Errorf("error status %+v", st)
	}
	wantOutputs(t, s.step.readOutputs(t), "error", "false", s.step.jobURL)
}

// Mode register as its own step in the ungated first job.
func TestBinaryRegister(t *testing.T) {
	binary(t)
	w := newWorld(t)
	id := w.createDeployment()
	jc := w.directJob(id)
	s := newStep(t, jc, map[string]string{"INPUT_MODE": "register", "INPUT_COMMAND": ""})
	p := startBinary(t, s, nil)
	if code := w.exitCode(p); code != 0 {
		t.Fatalf("exit code %d:\n%s", code, p.output())
	}
	d := w.deployment(id)
	wantStates(t, d, "queued")
	if d.Statuses[0].LogURL != jc.RunURL {
		t.Errorf("queued log_url %q, want the run's %q", d.Statuses[0].LogURL, jc.RunURL)
	}
	wantOutputs(t, s.readOutputs(t), "queued", "false", jc.RunURL)
}

// A workflow that is not triggered on: deployment: exit 1, and the reason.
func TestBinaryWrongEvent(t *testing.T) {
	binary(t)
	w := newWorld(t)
	id := w.createDeployment()
	s := newStep(t, w.directJob(id), map[string]string{"INPUT_COMMAND": "true", "GITHUB_EVENT_NAME": "push"})
	p := startBinary(t, s, nil)
	if code := w.exitCode(p); code != 1 {
		t.Fatalf("exit code %d:\n%s", code, p.output())
	}
	if !hasLinePrefix(p.output(), "::error::") || !strings.Contains(p.output(), "on: deployment") {
		t.Errorf("output:\n%s", p.output())
	}
	if n := len(w.deployment(id).Statuses); n != 0 {
		t.Errorf("%d statuses posted", n)
	}
}

// The binary waits out a rate limit GitHub sets on its first call (here a
// secondary limit with Retry-After 1, a real second), says so, and
// deploys.
func TestBinaryWaitsForARateLimit(t *testing.T) {
	binary(t)
	w := newWorld(t)
	id := w.createDeployment()
	w.sim.InjectFault(simulator.Fault{Kind: simulator.FaultSecondaryRateLimit, Method: "GET",
		Path: "/repos/{owner}/{repo}/deployments/*/statuses", RetryAfter: time.Second})
	s := newStep(t, w.directJob(id), map[string]string{"INPUT_COMMAND": "echo deployed"})
	p := startBinary(t, s, nil)
	if code := w.exitCode(p); code != 0 {
		t.Fatalf("exit %d:\n%s", code, p.output())
	}
	if !hasLinePrefix(p.output(), "lastmile: GitHub rate limit: waiting until ") || !strings.Contains(p.output(), " (1 s) to try again: ") {
		t.Errorf("the output does not say the Action waits for the rate limit:\n%s", p.output())
	}
	wantStates(t, w.deployment(id), "in_progress", "success")
}

// The job cancelled while the binary waits for a rate limit (ten minutes
// away): the wait ends with the runner's SIGINT, nothing is deployed, and
// the step fails.
func TestBinaryCancelledDuringARateLimit(t *testing.T) {
	binary(t)
	w := newWorld(t)
	id := w.createDeployment()
	w.sim.InjectFault(simulator.Fault{Kind: simulator.FaultSecondaryRateLimit, Method: "GET",
		Path: "/repos/{owner}/{repo}/deployments/*/statuses", RetryAfter: 10 * time.Minute})
	marker := filepath.Join(t.TempDir(), "deployed")
	s := newStep(t, w.directJob(id), map[string]string{"INPUT_COMMAND": `touch "$MARKER"`, "MARKER": marker})
	p := startBinary(t, s, nil)
	if err := p.waitLine(w.ctx, "lastmile: GitHub rate limit: waiting until "); err != nil {
		t.Fatal(err)
	}
	if err := p.cmd.Process.Signal(os.Interrupt); err != nil {
		t.Fatal(err)
	}
	if code := w.exitCode(p); code != 1 {
		t.Fatalf("exit %d:\n%s", code, p.output())
	}
	if !hasLinePrefix(p.output(), "::error::the workflow job was cancelled before the deploy started; nothing was deployed") {
		t.Errorf("output:\n%s", p.output())
	}
	if _, err := os.Stat(marker); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the deploy command ran (%v)", err)
	}
	wantStates(t, w.deployment(id))
}

// The deploy command runs with the job's PATH and GOTOOLCHAIN as the
// Action's first step recorded them (LASTMILE_JOB_*), not with those
// setup-go left for the Action's own steps (its Go first on PATH,
// GOTOOLCHAIN=local); without a record, with the step's own.
func TestBinaryCommandGetsTheJobsPathAndGoToolchain(t *testing.T) {
	const show = `printf 'PATH=%s\n' "$PATH"; printf 'GOTOOLCHAIN=%s\n' "${GOTOOLCHAIN-(unset)}"; env | grep '^LASTMILE_JOB_' || echo 'no LASTMILE_JOB_'`
	jobPath := "/opt/job-go/bin:" + os.Getenv("PATH")
	stepPath := "/opt/hostedtoolcache/go/1.26.8/x64/bin:/home/runner/go/bin:" + jobPath
	for name, tc := range map[string]struct {
		vars                    map[string]string
		wantPath, wantToolchain string
	}{
		"GOTOOLCHAIN was set": {
			vars:     map[string]string{"LASTMILE_JOB_PATH": jobPath, "LASTMILE_JOB_GOTOOLCHAIN_SET": "true", "LASTMILE_JOB_GOTOOLCHAIN": "go1.27.1+auto"},
			wantPath: jobPath, wantToolchain: "go1.27.1+auto",
		},
		"GOTOOLCHAIN was unset": {
			vars:     map[string]string{"LASTMILE_JOB_PATH": jobPath, "LASTMILE_JOB_GOTOOLCHAIN_SET": "false", "LASTMILE_JOB_GOTOOLCHAIN": ""},
			wantPath: jobPath, wantToolchain: "(unset)",
		},
		"GOTOOLCHAIN was empty": {
			vars:     map[string]string{"LASTMILE_JOB_PATH": jobPath, "LASTMILE_JOB_GOTOOLCHAIN_SET": "true", "LASTMILE_JOB_GOTOOLCHAIN": ""},
			wantPath: jobPath, wantToolchain: "",
		},
		"no record": {
			vars:     map[string]string{},
			wantPath: stepPath, wantToolchain: "local",
		},
	} {
		t.Run(name, func(t *testing.T) {
			binary(t)
			w := newWorld(t)
			id := w.createDeployment()
			inputs := map[string]string{"INPUT_COMMAND": show, "PATH": stepPath, "GOTOOLCHAIN": "local"}
			for k, v := range tc.vars {
				inputs[k] = v
			}
			s := newStep(t, w.directJob(id), inputs)
			p := startBinary(t, s, nil)
			if code := w.exitCode(p); code != 0 {
				t.Fatalf("exit %d:\n%s", code, p.output())
			}
			out := p.output()
			for _, want := range []string{"PATH=" + tc.wantPath + "\n", "GOTOOLCHAIN=" + tc.wantToolchain + "\n", "no LASTMILE_JOB_\n"} {
				if !strings.Contains("\n"+out, "\n"+want) {
					t.Errorf("the command's environment lacks the line %q:\n%s", strings.TrimSuffix(want, "\n"), out)
				}
			}
			wantStates(t, w.deployment(id), "in_progress", "success")
		})
	}
}

// killPIDFileOnCleanup kills the process whose PID the command wrote to
// file, once the test ends: one that left the deploy command's group.
func killPIDFileOnCleanup(t *testing.T, file string) {
	t.Cleanup(func() {
		if b, err := os.ReadFile(file); err == nil {
			if pid, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil {
				syscall.Kill(pid, syscall.SIGKILL)
			}
		}
	})
}

// The runner's cancellation, to the letter: SIGINT, SIGTERM 7.5 s later,
// SIGKILL 2.5 s after that. The deploy command ignores SIGTERM (it is
// killed KillGrace, 5 s, after it) and something it started left its
// process group (setsid) with its output open: the Action posts error
// before the runner's kill all the same.
func TestBinaryCancelledWithinTheRunnersBudget(t *testing.T) {
	binary(t)
	w := newWorld(t)
	id := w.createDeployment()
	pidFile := filepath.Join(t.TempDir(), "escaped.pid")
	killPIDFileOnCleanup(t, pidFile)
	s := newStep(t, w.directJob(id), map[string]string{
		// The escaped process writes its PID once in its own session.
		"INPUT_COMMAND": "setsid sh -c 'echo $$ > \"$PID_FILE\"; exec sleep 60' &\nuntil [ -s \"$PID_FILE\" ]; do sleep 0.05; done\n" +
			"trap '' TERM\necho 'command: sleeping'\nsleep 300",
		"PID_FILE": pidFile,
	})
	p := startBinary(t, s, nil)
	if err := p.waitLine(w.ctx, "command: sleeping"); err != nil {
		t.Fatal(err)
	}
	p.cmd.Process.Signal(os.Interrupt)
	select {
	case <-p.done:
	case <-time.After(7500 * time.Millisecond):
		// The Action's own budget is KillGrace and half a second.
		t.Errorf("lastmile-action still running when the runner sent SIGTERM, 7.5 s after cancelling")
		p.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-p.done:
		case <-time.After(2500 * time.Millisecond):
			t.Errorf("the runner had to kill lastmile-action, 10 s after cancelling:\n%s", p.output())
			p.cmd.Process.Kill()
			<-p.done
		}
	}
	wantStates(t, w.deployment(id), "in_progress", "error")
}

// The deploy command exits 0, leaving a process running with its output
// open, and the job is cancelled a moment after, while the Action still
// copies that output: the deploy finished, and is reported as a success.
func TestBinaryCancelledAfterTheCommandSucceeded(t *testing.T) {
	binary(t)
	w := newWorld(t)
	id := w.createDeployment()
	dir := t.TempDir()
	pidFile, shellFile := filepath.Join(dir, "daemon.pid"), filepath.Join(dir, "shell.pid")
	killPIDFileOnCleanup(t, pidFile)
	s := newStep(t, w.directJob(id), map[string]string{
		"INPUT_COMMAND": "sleep 300 &\necho $! > \"$PID_FILE\"\necho $$ > \"$SHELL_FILE\"\necho 'command: deployed'",
		"PID_FILE":      pidFile,
		"SHELL_FILE":    shellFile,
	})
	p := startBinary(t, s, nil)
	if err := p.waitLine(w.ctx, "command: deployed"); err != nil {
		t.Fatal(err)
	}
	// The command's shell has exited (and lastmile-action reaped it).
	b, err := os.ReadFile(shellFile)
	if err != nil {
		t.Fatal(err)
	}
	proc := "/proc/" + strings.TrimSpace(string(b))
	for _, err := os.Stat(proc); err == nil; _, err = os.Stat(proc) {
		select {
		case <-w.ctx.Done():
			t.Fatalf("the deploy command's shell is still there: %v", w.ctx.Err())
		case <-time.After(10 * time.Millisecond):
		}
	}
	p.cmd.Process.Signal(os.Interrupt)
	if code := w.exitCode(p); code != 0 {
		t.Errorf("exit code %d, want 0:\n%s", code, p.output())
	}
	wantStates(t, w.deployment(id), "in_progress", "success")
}
