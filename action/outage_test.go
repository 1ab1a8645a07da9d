//go:build unix

package action_test

import (
	"context"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/lastmile-app/lastmile/action"
	"github.com/lastmile-app/lastmile/githubapp/simulator"
	"github.com/lastmile-app/lastmile/pipeline"
)

// runOnFakeClock runs the Action's step for deployment id of w, as a
// directly triggered job with inputs, on a fake clock; it returns the run's
// result, the clock, the job log and the run's error.
func runOnFakeClock(t *testing.T, w *world, id int64, inputs map[string]string) (action.Result, *fakeClock, *lockedBuilder, error) {
	t.Helper()
	s := newStep(t, w.directJob(id), inputs)
	log := &lockedBuilder{}
	env := s.env(log)
	clock := newFakeClock()
	action.SetClock(&env, clock.Now, clock.Sleep)
	res, err := action.Run(w.ctx, env)
	return res, clock, log, err
}

// totalWait is the time the Action's clock was made to wait.
func (c *fakeClock) totalWait() time.Duration {
	c.mu.Lock()
	defer c.mu.Unlock()
	var s time.Duration
	for _, d := range c.waits {
		s += d
	}
	return s
}

// GitHub failing status posts for half a minute as the job starts (more
// than the transport's own tries): the register job still posts queued,
// and the deploy job still posts in_progress and deploys — a short outage
// neither skips the deploy job nor ends the deployment undeployed.
func TestShortOutageAsTheJobStarts(t *testing.T) {
	outage := simulator.Fault{Kind: simulator.FaultServerError, Method: "POST", Path: statusesPath, Times: 20}

	t.Run("register", func(t *testing.T) {
		w := newWorld(t)
		id := w.createDeployment()
		w.sim.InjectFault(outage)
		res, clock, log, err := runOnFakeClock(t, w, id, map[string]string{"INPUT_MODE": "register"})
		if err != nil || res.State != pipeline.DeploymentQueued {
			t.Fatalf("register after a %s outage: %+v, %v\n%s", clock.totalWait(), res, err, log.String())
		}
		if got := states(w.deployment(id)); !slices.Equal(got, []string{"queued"}) {
			t.Errorf("statuses %v, want queued", got)
		}
		if wait := clock.totalWait(); wait < 20*time.Second || wait > 2*time.Minute {
			t.Errorf("waited %s in all, want the outage's length, within 2 minutes", wait)
		}
	})

	t.Run("deploy", func(t *testing.T) {
		w := newWorld(t)
		clock := newFakeClock()
		g := startGated(t, w, w.ctx, clock, []simulator.Fault{outage})
		g.commandRuns()
		r := g.open()
		if r.err != nil || r.res.State != pipeline.DeploymentSuccess {
			t.Fatalf("deploy after a %s outage: %+v, %v\n%s", clock.totalWait(), r.res, r.err, g.log.String())
		}
		if got := states(w.deployment(g.id)); !slices.Equal(got, []string{"in_progress", "success"}) {
			t.Errorf("statuses %v, want in_progress then success", got)
		}
	})
}

// An outage that outlasts the two minutes fails the register step, saying
// so, with nothing posted; one of more than half a minute after the deploy
// succeeded still has the success reported (it was lost at 30 s).
func TestLongOutages(t *testing.T) {
	t.Run("register gives up after two minutes", func(t *testing.T) {
		w := newWorld(t)
		id := w.createDeployment()
		w.sim.InjectFault(simulator.Fault{Kind: simulator.FaultServerError, Method: "POST", Path: statusesPath, Times: 1000})
		s := newStep(t, w.directJob(id), map[string]string{"INPUT_MODE": "register"})
		var log lockedBuilder
		env := s.env(&log)
		clock := newFakeClock()
		action.SetClock(&env, clock.Now, clock.Sleep)
		if _, err := action.Run(w.ctx, env); err == nil {
			t.Fatal("register succeeded through an endless outage")
		}
		if wait := clock.totalWait(); wait < 110*time.Second || wait > 3*time.Minute {
			t.Errorf("gave up after %s of waiting, want about 2 minutes", wait)
		}
		if got := states(w.deployment(id)); len(got) != 0 {
			t.Errorf("statuses %v, want none", got)
		}
	})

	t.Run("the success outlives 40 s of outage", func(t *testing.T) {
		w := newWorld(t)
		clock := newFakeClock()
		g := startGated(t, w, w.ctx, clock, nil)
		g.commandRuns()
		before := clock.totalWait()
		w.sim.InjectFault(simulator.Fault{Kind: simulator.FaultServerError, Method: "POST", Path: statusesPath, Times: 8})
		r := g.open()
		if r.err != nil || r.res.State != pipeline.DeploymentSuccess {
			t.Fatalf("the success after a %s outage: %+v, %v\n%s", clock.totalWait()-before, r.res, r.err, g.log.String())
		}
		if wait := clock.totalWait() - before; wait < 30*time.Second {
			t.Errorf("the outage took %s of waiting, want more than 30 s (the old bound)", wait)
		}
		if got := states(w.deployment(g.id)); !slices.Equal(got, []string{"in_progress", "success"}) {
			t.Errorf("statuses %v, want in_progress then success", got)
		}
	})
}

// GitHub taking in_progress and losing its answers, again and again: once
// a try may have arrived the Action reads the newest status before trying
// again, and finds it there — no more copies than the transport's own
// tries of the first (each a status GitHub shows, which has lastmile read
// the statuses back), where every further try added its own.
func TestInProgressTakenWithItsAnswerLost(t *testing.T) {
	w := newWorld(t)
	clock := newFakeClock()
	g := startGated(t, w, w.ctx, clock, []simulator.Fault{{Kind: simulator.FaultAppliedLost, Method: "POST", Path: statusesPath, Times: 15}})
	g.commandRuns()
	r := g.open()
	if r.err != nil || r.res.State != pipeline.DeploymentSuccess {
		t.Fatalf("%+v, %v\n%s", r.res, r.err, g.log.String())
	}
	got := states(w.deployment(g.id))
	n := 0
	for _, s := range got {
		if s == "in_progress" {
			n++
		}
	}
	if n == 0 || n > 5 || got[len(got)-1] != "success" {
		t.Errorf("statuses %v: want at most the transport's 5 tries of in_progress, then success", got)
	}
}

// The same outage, hitting GitHub's reads as a real outage does (the
// deployment's statuses, read before anything is posted), not only the
// posts: the register job still posts queued, the deploy job still deploys.
func TestShortOutageOfReadsAsTheJobStarts(t *testing.T) {
	for _, mode := range []string{"register", "deploy"} {
		t.Run(mode, func(t *testing.T) {
			w := newWorld(t)
			id := w.createDeployment()
			w.sim.InjectFault(simulator.Fault{Kind: simulator.FaultServerError, Method: "GET", Path: statusesPath, Times: 20})
			res, clock, log, err := runOnFakeClock(t, w, id, map[string]string{"INPUT_MODE": mode, "INPUT_COMMAND": "echo deployed"})
			want := []string{"queued"}
			if mode == "deploy" {
				want = []string{"in_progress", "success"}
			}
			if err != nil || string(res.State) != want[len(want)-1] {
				t.Fatalf("%s after a %s outage of reads: %+v, %v\n%s", mode, clock.totalWait(), res, err, log.String())
			}
			wantStates(t, w.deployment(id), want...)
			if wait := clock.totalWait(); wait < 5*time.Second || wait > 2*time.Minute {
				t.Errorf("waited %s in all, want the outage's length, within 2 minutes", wait)
			}
		})
	}
}

// in_progress is posted, then GitHub's reads fail for a while (the check
// that lastmile did not supersede the deployment meanwhile): the deploy
// waits for them rather than ending the deployment in error.
func TestShortOutageOfReadsAfterInProgress(t *testing.T) {
	w := newWorld(t)
	id := w.createDeployment()
	// The first read of the statuses (before in_progress) passes; the 20
	// after it fail.
	w.sim.InjectFault(simulator.Fault{Kind: simulator.FaultDelay, Method: "GET", Path: statusesPath})
	w.sim.InjectFault(simulator.Fault{Kind: simulator.FaultServerError, Method: "GET", Path: statusesPath, Times: 20})
	res, clock, log, err := runOnFakeClock(t, w, id, map[string]string{"INPUT_COMMAND": "echo deployed"})
	if err != nil || res.State != pipeline.DeploymentSuccess {
		t.Fatalf("deploy after a %s outage of reads: %+v, %v\n%s", clock.totalWait(), res, err, log.String())
	}
	wantStates(t, w.deployment(id), "in_progress", "success")
}

// in_progress reaches GitHub but its answer is lost (a 502), the read that
// would show it there fails too, and the next try is refused by GitHub's
// rate limit: in_progress may be on GitHub, so when the Action gives up —
// the job cancelled during the wait, or a limit too far away to wait for —
// it ends the deployment with error (or says that GitHub refused that too,
// and that lastmile settles the deployment), rather than reporting that
// the deployment is as it was.
func TestInProgressPerhapsPostedThenRateLimited(t *testing.T) {
	faults := func(w *world, retryAfter time.Duration) {
		w.sim.InjectFault(simulator.Fault{Kind: simulator.FaultAppliedLost, Method: "POST", Path: statusesPath})
		// The read before in_progress passes; the read after the lost
		// answer fails, each of the transport's tries.
		w.sim.InjectFault(simulator.Fault{Kind: simulator.FaultDelay, Method: "GET", Path: statusesPath})
		w.sim.InjectFault(simulator.Fault{Kind: simulator.FaultServerError, Method: "GET", Path: statusesPath, Times: 5})
		w.sim.InjectFault(simulator.Fault{Kind: simulator.FaultSecondaryRateLimit, Method: "POST", Path: statusesPath, RetryAfter: retryAfter})
	}

	t.Run("cancelled during the wait", func(t *testing.T) {
		w := newWorld(t)
		faults(w, 2*time.Second)
		ctx, cancel := context.WithCancel(w.ctx)
		defer cancel()
		id := w.createDeployment()
		s := newStep(t, w.directJob(id), map[string]string{"INPUT_COMMAND": "echo deployed"})
		var log lockedBuilder
		env := s.env(&log)
		clock := newFakeClock()
		waiting := make(chan struct{})
		var held atomic.Bool
		sleep := func(wctx context.Context, d time.Duration) error {
			// The first wait for the rate limit lasts until the job is
			// cancelled; the others pass (the clock moves on).
			if strings.Contains(log.String(), "GitHub rate limit: waiting") && held.CompareAndSwap(false, true) {
				close(waiting)
				<-wctx.Done()
				return wctx.Err()
			}
			return clock.Sleep(wctx, d)
		}
		action.SetClock(&env, clock.Now, sleep)
		done := make(chan error, 1)
		go func() {
			_, err := action.Run(ctx, env)
			done <- err
		}()
		select {
		case <-waiting:
		case err := <-done:
			t.Fatalf("Run ended without waiting for the rate limit: %v\n%s", err, log.String())
		}
		cancel() // the runner's SIGINT
		if err := <-done; err == nil || !strings.Contains(err.Error(), "cancelled") {
			t.Errorf("Run: %v, want the cancellation's error\n%s", err, log.String())
		}
		wantStates(t, w.deployment(id), "in_progress", "error")
	})

	t.Run("a limit too far away", func(t *testing.T) {
		w := newWorld(t)
		faults(w, 20*time.Minute)
		id := w.createDeployment()
		res, _, log, err := runOnFakeClock(t, w, id, map[string]string{"INPUT_COMMAND": "echo deployed"})
		// Too far for in_progress, nothing is deployed; the error status,
		// final, waits the limit out (up to FinalRateLimitMaxWait).
		if err == nil || res.State != pipeline.DeploymentError || !strings.Contains(err.Error(), "nothing was deployed") ||
			strings.Contains(err.Error(), "the error status could not be reported") {
			t.Errorf("Run: %+v, %v; want nothing deployed, the error status reported\n%s", res, err, log.String())
		}
		wantStates(t, w.deployment(id), "in_progress", "error")
	})
}
