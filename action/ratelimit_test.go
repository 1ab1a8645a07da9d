//go:build unix

package action_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/lastmile-app/lastmile/action"
	"github.com/lastmile-app/lastmile/githubapp/simulator"
	"github.com/lastmile-app/lastmile/pipeline"
)

const statusesPath = "/repos/{owner}/{repo}/deployments/*/statuses"

// fakeClock is the Action's clock in these tests: a wait is recorded and
// moves the time on at once.
type fakeClock struct {
	mu    sync.Mutex
	now   time.Time
	waits []time.Duration
	hold  *heldWait // the next wait's, if any
}

type heldWait struct{ held, release chan struct{} }

func newFakeClock() *fakeClock { return &fakeClock{now: time.Now()} }

// holdNextWait makes the clock's next wait pass only once release is
// called; held is closed when that wait has begun (the time has not moved
// on yet).
func (c *fakeClock) holdNextWait() (held <-chan struct{}, release func()) {
	h := &heldWait{held: make(chan struct{}), release: make(chan struct{})}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.hold = h
	return h.held, sync.OnceFunc(func() { close(h.release) })
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) Sleep(ctx context.Context, d time.Duration) error {
	c.mu.Lock()
	h := c.hold
	c.hold = nil
	c.mu.Unlock()
	if h != nil {
		close(h.held)
		<-h.release
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
	c.waits = append(c.waits, d)
	return nil
}

// longest is the longest wait so far.
func (c *fakeClock) longest() time.Duration {
	c.mu.Lock()
	defer c.mu.Unlock()
	var m time.Duration
	for _, d := range c.waits {
		m = max(m, d)
	}
	return m
}

// gatedRun runs the Action in-process, with the default transport and
// clock, on a deploy command that waits for the test to open its gate
// (a FIFO), and fails when the answer there is "fail"; before is
// injected before the run starts, during once the command runs
// (in_progress has been posted).
type gatedRun struct {
	w    *world
	id   int64 // the deployment
	s    *step
	log  *notifyingLog
	gate string
	done chan gatedResult
}

type gatedResult struct {
	res action.Result
	err error
}

func startGated(t *testing.T, w *world, ctx context.Context, clock *fakeClock, before []simulator.Fault) *gatedRun {
	t.Helper()
	id := w.createDeployment()
	gate := filepath.Join(t.TempDir(), "gate")
	if err := syscall.Mkfifo(gate, 0o600); err != nil {
		t.Fatal(err)
	}
	s := newStep(t, w.directJob(id), map[string]string{
		"INPUT_COMMAND": `echo "command: waiting"; read -r answer < "$GATE"; echo "deployed ($answer)"; test "$answer" != fail`,
		"GATE":          gate,
	})
	for _, f := range before {
		w.sim.InjectFault(f)
	}
	g := &gatedRun{w: w, id: id, s: s, log: &notifyingLog{changed: make(chan struct{}, 1)}, gate: gate, done: make(chan gatedResult, 1)}
	env := s.env(g.log)
	if clock != nil {
		action.SetClock(&env, clock.Now, clock.Sleep)
		// GitHub's time passes as the Action waits: a primary rate
		// limit spends the budget until its reset, by GitHub's clock.
		w.shareClock(clock.Now)
	}
	go func() {
		res, err := action.Run(ctx, env)
		g.done <- gatedResult{res, err}
		select {
		case g.log.changed <- struct{}{}:
		default:
		}
	}()
	return g
}

// commandRuns waits until the deploy command runs, or the run has ended.
func (g *gatedRun) commandRuns() {
	g.w.t.Helper()
	for !strings.Contains(g.log.String(), "command: waiting") && len(g.done) == 0 {
		select {
		case <-g.log.changed:
		case <-g.w.ctx.Done():
			g.w.t.Fatalf("the deploy command does not run and the Action does not end:\n%s", g.log.String())
		}
	}
}

// notifyingLog is a job log that tells of each write on changed.
type notifyingLog struct {
	lockedBuilder
	changed chan struct{}
}

func (l *notifyingLog) Write(p []byte) (int, error) {
	n, err := l.lockedBuilder.Write(p)
	select {
	case l.changed <- struct{}{}:
	default:
	}
	return n, err
}

// open opens the gate, if the command waits at it, and returns the run's
// result.
func (g *gatedRun) open() gatedResult {
	g.w.t.Helper()
	return g.openWith("go")
}

// openWith is open with answer at the gate ("fail" fails the command).
func (g *gatedRun) openWith(answer string) gatedResult {
	g.w.t.Helper()
	if strings.Contains(g.log.String(), "command: waiting") {
		if err := writeGate(g.gate, answer); err != nil {
			g.w.t.Fatal(err)
		}
	}
	return g.result()
}

// result waits for the run's result.
func (g *gatedRun) result() gatedResult {
	g.w.t.Helper()
	select {
	case r := <-g.done:
		return r
	case <-g.w.ctx.Done():
		g.w.t.Fatalf("the Action did not finish:\n%s", g.log.String())
	}
	return gatedResult{}
}

// runWithFault runs the Action on a gated deploy command, in-process on a
// fake clock, with fault met before the run starts or, during, once the
// command runs; it returns when the run ends.
func runWithFault(t *testing.T, fault simulator.Fault, during bool) (*world, *gatedRun, *fakeClock, gatedResult) {
	t.Helper()
	w := newWorld(t)
	clock := newFakeClock()
	var before []simulator.Fault
	if !during {
		before = append(before, fault)
	}
	g := startGated(t, w, w.ctx, clock, before)
	g.commandRuns()
	if during {
		w.sim.InjectFault(fault)
	}
	return w, g, clock, g.open()
}

// startCancellable starts the Action on a gated deploy command, in-process
// on clock (nil: the real one), in a job the test cancels with the
// function returned; it returns once the command runs and fault, met
// next, is injected.
func startCancellable(t *testing.T, clock *fakeClock, fault simulator.Fault) (*world, *gatedRun, context.CancelFunc) {
	t.Helper()
	w := newWorld(t)
	ctx, cancel := context.WithCancel(w.ctx)
	t.Cleanup(cancel)
	g := startGated(t, w, ctx, clock, nil)
	g.commandRuns()
	w.sim.InjectFault(fault)
	return w, g, cancel
}

// A rate limit is waited out, however long GitHub asks for (up to 15
// minutes; the final status's, up to an hour), and the job log says so: on the first read of the statuses,
// on posting in_progress, and on posting the final status after a deploy
// that succeeded — where giving up would turn it into a failed step.
// GitHub's 422 saying that the endpoint has been spammed (statuses
// created too fast) is such a limit too: a minute, or its Retry-After.
func TestRateLimitIsWaitedOut(t *testing.T) {
	for name, tc := range map[string]struct {
		fault  simulator.Fault
		during bool          // injected once the command runs
		wait   time.Duration // the least wait
	}{
		"secondary, Retry-After 60s, on reading the statuses": {
			fault: simulator.Fault{Kind: simulator.FaultSecondaryRateLimit, Method: "GET", Path: statusesPath, RetryAfter: 60 * time.Second},
			wait:  60 * time.Second,
		},
		"primary, reset in 2 min, on posting in_progress": {
			fault: simulator.Fault{Kind: simulator.FaultPrimaryRateLimit, Method: "POST", Path: statusesPath, Reset: 2 * time.Minute},
			wait:  119 * time.Second,
		},
		"secondary, Retry-After 60s, on posting success": {
			fault:  simulator.Fault{Kind: simulator.FaultSecondaryRateLimit, Method: "POST", Path: statusesPath, RetryAfter: 60 * time.Second},
			during: true,
			wait:   60 * time.Second,
		},
		"primary, reset in 10 min, on posting success": {
			fault:  simulator.Fault{Kind: simulator.FaultPrimaryRateLimit, Method: "POST", Path: statusesPath, Reset: 10 * time.Minute},
			during: true,
			wait:   599 * time.Second,
		},
		// Past RateLimitMaxWait: the final status waits up to GitHub's
		// hourly reset, lest a deploy that happened be recorded failed.
		"primary, reset in 50 min, on posting success": {
			fault:  simulator.Fault{Kind: simulator.FaultPrimaryRateLimit, Method: "POST", Path: statusesPath, Reset: 50 * time.Minute},
			during: true,
			wait:   2999 * time.Second,
		},
		// Shorter than githubapp.Transport's default MaxWait: said in the
		// job log too, not slept inside the call.
		"secondary, Retry-After 20s, on reading the statuses": {
			fault: simulator.Fault{Kind: simulator.FaultSecondaryRateLimit, Method: "GET", Path: statusesPath, RetryAfter: 20 * time.Second},
			wait:  20 * time.Second,
		},
		"primary with HTTP 429, reset in 2 min, on reading the statuses": {
			fault: simulator.Fault{Kind: simulator.FaultPrimaryRateLimit, Status: 429, Method: "GET", Path: statusesPath, Reset: 2 * time.Minute},
			wait:  119 * time.Second,
		},
		"spammed (422), on posting in_progress": {
			fault: simulator.Fault{Kind: simulator.FaultSpammed, Method: "POST", Path: statusesPath},
			wait:  60 * time.Second,
		},
		"spammed (422), on posting success": {
			fault:  simulator.Fault{Kind: simulator.FaultSpammed, Method: "POST", Path: statusesPath},
			during: true,
			wait:   60 * time.Second,
		},
		"spammed (422), Retry-After 90s, on posting success": {
			fault:  simulator.Fault{Kind: simulator.FaultSpammed, Method: "POST", Path: statusesPath, RetryAfter: 90 * time.Second},
			during: true,
			wait:   90 * time.Second,
		},
	} {
		t.Run(name, func(t *testing.T) {
			w, g, clock, r := runWithFault(t, tc.fault, tc.during)
			log := g.log.String()
			if r.err != nil || r.res.State != pipeline.DeploymentSuccess {
				t.Fatalf("Run: %+v, %v\n%s", r.res, r.err, log)
			}
			wantStates(t, w.deployment(g.id), "in_progress", "success")
			if !strings.Contains(log, "deployed (go)") {
				t.Errorf("the command did not deploy:\n%s", log)
			}
			if !hasLinePrefix(log, "lastmile: GitHub rate limit: waiting until ") {
				t.Errorf("the job log does not say the Action waits for the rate limit:\n%s", log)
			}
			if got := clock.longest(); got < tc.wait || got > tc.wait+3*time.Second {
				t.Errorf("longest wait %s, want about %s (waits %v)", got, tc.wait, clock.waits)
			}
			if w.sim.PendingFaults() != 0 {
				t.Errorf("the fault was not met")
			}
		})
	}
}

// A rate limit further away than RateLimitMaxWait is not waited for before
// the deploy: the step fails at once, saying so, and nothing is deployed.
// (The final status waits up to FinalRateLimitMaxWait, past any one limit
// GitHub sets: see TestRateLimitShortWaitsOnTheFinalStatusEnd.)
func TestRateLimitTooFarAway(t *testing.T) {
	for name, tc := range map[string]struct {
		fault   simulator.Fault
		during  bool
		wantErr string
		states  []string
	}{
		"on reading the statuses": {
			fault:   simulator.Fault{Kind: simulator.FaultPrimaryRateLimit, Method: "GET", Path: statusesPath, Reset: 20 * time.Minute},
			wantErr: "read the statuses of deployment",
		},
	} {
		t.Run(name, func(t *testing.T) {
			w, g, clock, r := runWithFault(t, tc.fault, tc.during)
			if r.err == nil || !strings.Contains(r.err.Error(), tc.wantErr) || !strings.Contains(r.err.Error(), "more than 15m0s away: not waited for") {
				t.Fatalf("Run error %v, want one that says %q and that the limit was not waited for", r.err, tc.wantErr)
			}
			wantStates(t, w.deployment(g.id), tc.states...)
			if got := clock.longest(); got > 10*time.Second {
				t.Errorf("waited %s", got)
			}
		})
	}
}

// The job's cancellation ends the wait for a rate limit: nothing is
// deployed, and the step fails at once.
func TestRateLimitWaitEndsWithTheJob(t *testing.T) {
	w := newWorld(t)
	ctx, cancel := context.WithCancel(w.ctx)
	defer cancel()
	waiting := make(chan time.Duration, 1)
	release := make(chan struct{}) // ends a wait that the cancellation did not
	defer close(release)
	blockUntilCancelled := func(wctx context.Context, d time.Duration) error {
		select {
		case waiting <- d:
		default:
		}
		select {
		case <-wctx.Done():
			return wctx.Err()
		case <-release:
			return errors.New("released")
		}
	}
	w.sim.InjectFault(simulator.Fault{Kind: simulator.FaultSecondaryRateLimit, Method: "GET", Path: statusesPath, RetryAfter: 60 * time.Second})
	id := w.createDeployment()
	marker := filepath.Join(t.TempDir(), "deployed")
	s := newStep(t, w.directJob(id), map[string]string{"INPUT_COMMAND": `touch "$MARKER"`, "MARKER": marker})
	var log lockedBuilder
	env := s.env(&log)
	action.SetClock(&env, time.Now, blockUntilCancelled)
	done := make(chan error, 1)
	go func() {
		_, err := action.Run(ctx, env)
		done <- err
	}()
	select {
	case d := <-waiting:
		if d < 59*time.Second {
			t.Errorf("waits %s, want a minute", d)
		}
	case err := <-done:
		t.Fatalf("Run ended without waiting: %v\n%s", err, log.String())
	}
	cancel()
	var err error
	select {
	case err = <-done:
	case <-w.ctx.Done():
		t.Fatalf("the wait did not end with the job's cancellation:\n%s", log.String())
	}
	if err == nil || !strings.Contains(err.Error(), "the workflow job was cancelled before the deploy started; nothing was deployed") {
		t.Errorf("Run error %v", err)
	}
	if _, err := os.Stat(marker); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the deploy command ran (%v)", err)
	}
	wantStates(t, w.deployment(id))
}

// When the job is cancelled, the error status gets the short deadline
// still: a rate limit a minute away is not waited for (the runner kills
// the Action 10 s after its SIGINT).
func TestRateLimitNotWaitedForWhenCancelled(t *testing.T) {
	clock := newFakeClock()
	w, g, cancel := startCancellable(t, clock, simulator.Fault{Kind: simulator.FaultSecondaryRateLimit, Method: "POST", Path: statusesPath, RetryAfter: 60 * time.Second})
	cancel()
	r := g.result()
	if r.err == nil || !strings.Contains(r.err.Error(), "the error status could not be reported") {
		t.Fatalf("Run error %v, want one that says the error status was not reported", r.err)
	}
	if got := clock.longest(); got >= 5*time.Second {
		t.Errorf("waited %s for the rate limit of a cancelled job (waits %v)", got, clock.waits)
	}
	wantStates(t, w.deployment(g.id), "in_progress")
}

// Short rate limits on the final status, one after the other (GitHub
// answering Retry-After: 20 for ever), are waited out for no longer than
// FinalRateLimitMaxWait in all: then the step fails, saying so.
func TestRateLimitShortWaitsOnTheFinalStatusEnd(t *testing.T) {
	w := newWorld(t)
	clock := newFakeClock()
	g := startGated(t, w, w.ctx, clock, nil)
	// Secondary limits go by Retry-After alone: GitHub's clock need not
	// follow the Action's, and the test's token (an installation token,
	// an hour's; the job's GITHUB_TOKEN lasts the job) outlives the wait.
	w.shareClock(time.Now)
	g.commandRuns()
	w.sim.InjectFault(simulator.Fault{Kind: simulator.FaultSecondaryRateLimit, Method: "POST", Path: statusesPath,
		RetryAfter: 20 * time.Second, Times: 200}) // 66 minutes of refusals
	r := g.open()
	clock.mu.Lock()
	var total time.Duration
	for _, d := range clock.waits {
		total += d
	}
	clock.mu.Unlock()
	if total > action.FinalRateLimitMaxWait || total < action.RateLimitMaxWait || r.err == nil || !strings.Contains(r.err.Error(), "more than 1h1m0s away: not waited for") {
		t.Errorf("waited %s in all for the final status, then: %v; want more than %s and at most %s, then the step fails saying the limit was not waited for",
			total, r.err, action.RateLimitMaxWait, action.FinalRateLimitMaxWait)
	}
}

// A cancellation of the job that comes while the final status is being
// tried again (the deploy command had ended: the status is success) cuts
// the tries left to the cancelled job's few seconds, as if the job had
// been cancelled during the deploy: the runner's SIGKILL comes 10 s after
// its SIGINT.
func TestLateCancellationCutsTheFinalStatusShort(t *testing.T) {
	clock := newFakeClock()
	w, g, cancel := startCancellable(t, clock, simulator.Fault{Kind: simulator.FaultServerError, Method: "POST", Path: statusesPath, Times: 100})
	held, release := clock.holdNextWait() // the pause after the first 502
	defer release()
	if err := writeGate(g.gate, "go"); err != nil {
		t.Fatal(err)
	}
	select {
	case <-held:
	case r := <-g.done:
		t.Fatalf("Run ended without trying the status again: %+v, %v\n%s", r.res, r.err, g.log.String())
	case <-w.ctx.Done():
		t.Fatalf("the final status is not tried again:\n%s", g.log.String())
	}
	cancelled := clock.Now()
	cancel()
	release()
	r := g.result()
	if r.err == nil || !strings.Contains(r.err.Error(), "the deploy succeeded, but the success status could not be reported") {
		t.Errorf("Run error %v, want one that says the success status was not reported", r.err)
	}
	if took := clock.Now().Sub(cancelled); took > 4*time.Second {
		t.Errorf("the success status was tried for %s after the job's cancellation (waits %v), want 4 s at most", took, clock.waits)
	}
	wantStates(t, w.deployment(g.id), "in_progress")
}

// The same for a try on its way when the job is cancelled (GitHub has not
// answered yet): it is given up 4 s later, not when its own 15 s, or the
// final status's 2 minutes, are up — after the runner's SIGKILL.
func TestLateCancellationCutsTheFinalStatusTryShort(t *testing.T) {
	w, g, cancel := startCancellable(t, nil, simulator.Fault{Kind: simulator.FaultAppliedLost, Method: "POST", Path: statusesPath, Delay: deadline})
	if err := writeGate(g.gate, "go"); err != nil {
		t.Fatal(err)
	}
	w.waitFor("the success status is on its way", func(s *simulator.Simulator) bool {
		return s.CountRequests("POST", statusesPath) == 2
	})
	cancel()
	select {
	case r := <-g.done:
		if r.err == nil || !strings.Contains(r.err.Error(), "the deploy succeeded, but the success status could not be reported") {
			t.Errorf("Run error %v, want one that says the success status was not reported", r.err)
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("the Action still posts the success status 10 s after the job's cancellation (the runner's SIGKILL):\n%s", g.log.String())
	}
}
