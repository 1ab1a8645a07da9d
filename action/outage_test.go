//go:build unix

package action_test

import (
	"slices"
	"testing"
	"time"

	"github.com/lastmile-app/lastmile/action"
	"github.com/lastmile-app/lastmile/githubapp/simulator"
	"github.com/lastmile-app/lastmile/pipeline"
)

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
		s := newStep(t, w.directJob(id), map[string]string{"INPUT_MODE": "register"})
		var log lockedBuilder
		env := s.env(&log)
		clock := newFakeClock()
		action.SetClock(&env, clock.Now, clock.Sleep)
		res, err := action.Run(w.ctx, env)
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
