package action

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode"
)

// notStarted is a deploy command the runner could not start (bash
// missing, RUNNER_TEMP not writable): nothing was deployed, which is an
// error of the deployment rather than a failed deploy.
type notStarted struct{ err error }

func (e *notStarted) Error() string { return e.err.Error() }
func (e *notStarted) Unwrap() error { return e.err }

// runCommand runs the deploy command through `bash -eo pipefail -c`, in the
// workspace (GITHUB_WORKSPACE, when set), in its own process group, with its
// output copied to the job log as it comes, and ended with a line break if
// the command left its last line unfinished. When ctx ends (the job is
// cancelled) the whole group gets SIGTERM, and SIGKILL KillGrace later if it
// is still there. stopped tells that ctx ended before the command did: the
// command was stopped, whatever its exit status (a script that traps TERM to
// clean up may well exit 0).
//
// The command's GITHUB_OUTPUT is a file of its own, removed when it ends:
// what it writes there cannot reach the Action's step outputs (a
// name<<DELIMITER block it starts and does not end would otherwise swallow
// the state, skipped and log-url lines the Action appends after it).
func runCommand(ctx context.Context, env Env, c *config) (stopped bool, err error) {
	script := c.command
	if c.passEnvArg {
		// The environment becomes the last argument of the command's last
		// line, quoted for the shell.
		script = strings.TrimRightFunc(script, unicode.IsSpace) + " " + shellQuote(c.deployment.Environment)
	}
	cmd := exec.Command("bash", "-eo", "pipefail", "-c", script)
	if cmd.Err != nil {
		return false, &notStarted{fmt.Errorf("bash is needed to run the deploy command: %w", cmd.Err)}
	}
	scratch, err := os.MkdirTemp(c.tempDir, "lastmile-command-")
	if err != nil {
		return false, &notStarted{fmt.Errorf("start the deploy command: its GITHUB_OUTPUT file: %w", err)}
	}
	// Removed with its directory: a process the command leaves running
	// cannot make the file again.
	defer os.RemoveAll(scratch)
	outputs := filepath.Join(scratch, "github_output")
	if err := os.WriteFile(outputs, nil, 0o600); err != nil {
		return false, &notStarted{fmt.Errorf("start the deploy command: its GITHUB_OUTPUT file: %w", err)}
	}
	cmd.Env = commandEnv(env.Environ(), c, outputs)
	cmd.Dir = c.workspace // where the runner checks the code out
	out, err := startOutput(env.Stdout, env.Stderr)
	if err != nil {
		return false, &notStarted{fmt.Errorf("start the deploy command: %w", err)}
	}
	cmd.Stdout, cmd.Stderr = out.stdoutW, out.stderrW
	setProcessGroup(cmd)
	err = cmd.Start()
	out.started()
	if err != nil {
		out.finish(env.KillGrace) // nothing holds the pipes: at once
		// The command's own set-up (its workspace gone), as a command not
		// found is: a failed deploy.
		return false, fmt.Errorf("start the deploy command: %w", err)
	}
	// The command's ends of the pipes are files: Wait returns when the
	// command exits, whatever it left running with its output open.
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err = <-done:
		// The deploy ended on its own; its output is still awaited a
		// while (less once the job is cancelled) from what it left running.
		out.finishWithin(ctx, env.KillGrace)
		return false, err
	case <-ctx.Done():
		// Cancelled as the command ended: its exit (the process reaped,
		// not yet handed over) is its result, not the cancellation's.
		select {
		case err = <-done:
			tree := newProcessTree(cmd)
			tree.reaped = true
			tree.terminate() // what it left running in its group stops with the job
			out.finish(cancelledDrain)
			return false, err
		default:
		}
	}
	defer out.finish(cancelledDrain)
	tree := newProcessTree(cmd)
	tree.terminate()
	grace := time.NewTimer(env.KillGrace)
	defer grace.Stop()
	select {
	case err = <-done:
		tree.reaped = true
	case <-grace.C:
		tree.kill()
		return true, killed(done, cancelledDrain)
	}
	// The command has ended. What it started — in its group, or found
	// outside it — has the rest of the grace to end too.
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for tree.alive() {
		select {
		case <-tick.C:
		case <-grace.C:
			tree.kill()
			return true, err
		}
	}
	return true, err
}

// killed waits for the command's end after SIGKILL, up to wait: a process
// that SIGKILL cannot end (another user's, started through a setuid
// program; one in uninterruptible sleep on a hung mount) must not keep the
// error status from being posted before the runner kills the Action.
func killed(done <-chan error, wait time.Duration) error {
	t := time.NewTimer(wait)
	defer t.Stop()
	select {
	case err := <-done:
		return err
	case <-t.C:
		return errUnstoppable
	}
}

// errUnstoppable is the end of a deploy command that SIGKILL did not end.
var errUnstoppable = errors.New("it did not end on SIGKILL (a process of another user, started through sudo, say, or one waiting on a hung mount) and may still run")

// cancelledDrain is how long, once the job is cancelled and the command
// has ended, its output is still awaited from processes that left its
// group: the runner kills the Action 10 s after cancelling, and the final
// status must be posted before.
const cancelledDrain = 500 * time.Millisecond

// output copies the deploy command's stdout and stderr to the job log
// through pipes lastmile owns, so that the command's end is known when it
// exits (not when everything it started closes its output), and so that an
// unfinished last line is ended before the Action's own lines: the runner
// takes a workflow command (::error::) only at the start of a line.
type output struct {
	stdout, stderr   *lineTracker // stderr is stdout when both go to one writer
	stdoutW, stderrW *os.File     // the command's ends
	readers          []*os.File
	copied           sync.WaitGroup
	drained          chan struct{} // closed once both copies have ended
}

func startOutput(stdout, stderr io.Writer) (*output, error) {
	o := &output{stdout: &lineTracker{w: stdout}, drained: make(chan struct{})}
	defer func() {
		go func() {
			o.copied.Wait()
			close(o.drained)
		}()
	}()
	var err error
	if o.stdoutW, err = o.pipe(o.stdout); err != nil {
		return nil, err
	}
	o.stderr, o.stderrW = o.stdout, o.stdoutW // one pipe for both, as exec.Cmd does
	if !sameWriter(stdout, stderr) {
		o.stderr = &lineTracker{w: stderr}
		if o.stderrW, err = o.pipe(o.stderr); err != nil {
			o.started()
			for _, r := range o.readers {
				_ = r.Close()
			}
			return nil, err
		}
	}
	return o, nil
}

// pipe starts copying a new pipe's output to t, and returns its write end.
func (o *output) pipe(t *lineTracker) (*os.File, error) {
	r, w, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	o.readers = append(o.readers, r)
	o.copied.Add(1)
	go func() {
		defer o.copied.Done()
		_, _ = io.Copy(t, r)
	}()
	return w, nil
}

// started closes lastmile's copies of the command's ends, once the command
// has its own: the copies end when the command and all it started have
// closed their output.
func (o *output) started() {
	for _, w := range []*os.File{o.stdoutW, o.stderrW} {
		if w != nil {
			_ = w.Close()
		}
	}
}

// finishWithin is finish with a wait of limit, cut to cancelledDrain when
// ctx ends meanwhile.
func (o *output) finishWithin(ctx context.Context, limit time.Duration) {
	timer := time.NewTimer(limit)
	defer timer.Stop()
	select {
	case <-o.drained:
	case <-timer.C:
	case <-ctx.Done():
		o.finish(cancelledDrain)
		return
	}
	o.finish(0)
}

// finish waits up to limit for the command's output to end, then stops
// copying it (what the command left running then writes to a closed pipe)
// and ends an unfinished last line.
func (o *output) finish(limit time.Duration) {
	cut := false
	select {
	case <-o.drained:
	default:
		timer := time.NewTimer(limit)
		select {
		case <-o.drained:
		case <-timer.C:
			cut = true
		}
		timer.Stop()
	}
	for _, r := range o.readers {
		_ = r.Close()
	}
	<-o.drained
	o.readers = nil
	endLine(o.stdout, o.stderr)
	if cut {
		fmt.Fprintln(o.stdout.w, "lastmile: the deploy command has ended; the processes it left running write no more to this log")
	}
}

// commandEnv is the deploy command's environment: base without the Action's
// own INPUT_ variables (the token is one; the job's own INPUT_ variables
// stay) and LASTMILE_JOB_ ones, with the
// job's PATH and GOTOOLCHAIN from before setup-go when action.yml recorded
// them, GITHUB_OUTPUT the command's own file, outputs, instead of the
// Action's, plus the deployment's parameters.
func commandEnv(base []string, c *config, outputs string) []string {
	own := map[string]bool{}
	for _, in := range Inputs {
		own[InputEnvName(in)] = true
	}
	out := make([]string, 0, len(base)+6)
	for _, kv := range base {
		name, _, _ := strings.Cut(kv, "=")
		switch {
		case own[name], strings.HasPrefix(name, "LASTMILE_JOB_"),
			name == "LASTMILE_ENVIRONMENT", name == "LASTMILE_SHA", name == "LASTMILE_DEPLOYMENT_ID",
			name == "GITHUB_OUTPUT",
			name == "PATH" && c.jobPath != "",
			name == "GOTOOLCHAIN" && c.restoreGoToolchain:
			continue
		}
		out = append(out, kv)
	}
	if c.jobPath != "" {
		out = append(out, "PATH="+c.jobPath)
	}
	if c.jobGoToolchain != nil {
		out = append(out, "GOTOOLCHAIN="+*c.jobGoToolchain)
	}
	return append(out,
		"GITHUB_OUTPUT="+outputs,
		"LASTMILE_ENVIRONMENT="+c.deployment.Environment,
		"LASTMILE_SHA="+c.deployment.SHA,
		"LASTMILE_DEPLOYMENT_ID="+strconv.FormatInt(c.deployment.ID, 10),
	)
}

// shellQuote quotes s as one word for bash.
func shellQuote(s string) string {
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// failureSummary is a short reason for a deployment status description.
func failureSummary(err error) string {
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		switch code := ee.ExitCode(); code {
		case 127:
			return "command not found (exit status 127)"
		case 126:
			return "command not executable (exit status 126)"
		case -1:
			return ee.String()
		default:
			return "exit status " + strconv.Itoa(code)
		}
	}
	return err.Error()
}

// failureDetail explains a failure in the job log.
func failureDetail(err error) string {
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		switch ee.ExitCode() {
		case 127:
			return "exit status 127: command not found. Check the command input, and that the program is on PATH or in the workspace (actions/checkout); bash's message is above"
		case 126:
			return "exit status 126: the command is not executable (chmod +x?)"
		}
	}
	return err.Error()
}

// lineTracker passes the command's output on to w, and remembers whether
// the last byte written was a line break.
type lineTracker struct {
	w io.Writer

	mu      sync.Mutex
	partial bool // the last byte written was not '\n'
}

func (t *lineTracker) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	n, err := t.w.Write(p)
	if n > 0 {
		t.partial = p[n-1] != '\n'
	}
	return n, err
}

// endLine writes a line break to the job log (stdout's writer) when the
// command's output, on either stream, ended in the middle of a line, so
// that the Action's next line starts a line of its own. Where stdout and
// stderr are separate streams, an unfinished line on stderr costs an empty
// line in the log.
func endLine(stdout, stderr *lineTracker) {
	stdout.mu.Lock()
	partial := stdout.partial
	stdout.mu.Unlock()
	if stderr != stdout {
		stderr.mu.Lock()
		partial = partial || stderr.partial
		stderr.partial = false
		stderr.mu.Unlock()
	}
	if partial {
		_, _ = stdout.Write([]byte{'\n'})
	}
}

// sameWriter tells whether a and b are the same writer (as exec.Cmd checks
// to give stdout and stderr one pipe); writers whose type cannot be
// compared are not.
func sameWriter(a, b io.Writer) (same bool) {
	defer func() {
		if recover() != nil {
			same = false
		}
	}()
	return a == b
}
