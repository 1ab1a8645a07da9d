package pipeline_test

// Delivery metrics that follow GitHub's history, not the order lastmile
// hears of it.

import (
	"testing"
	"time"

	"github.com/lastmile-app/lastmile/metrics"
	"github.com/lastmile-app/lastmile/pipeline"
)

// c1, the repository's first release, fails in staging; c2 carries it to
// production. c1's first successful deployment in production is c2's,
// though lastmile never deployed c1's release there.
func TestLeadTimeOfAFirstReleaseThatStoppedBeforeProduction(t *testing.T) {
	h := newHarness(t, c0, c1, c2)
	if err := h.push(c0, c1, false); err != nil {
		t.Fatal(err)
	}
	h.status(c1, "test", pipeline.DeploymentSuccess, 10, true)
	h.status(c1, "staging", pipeline.DeploymentFailure, 11, true)
	h.release(c1, c2, 20, "test", "staging", "production")
	for env, want := range map[string]uint64{"test": 2, "staging": 2, "production": 2} {
		if n := h.leadTimesObserved(env); n != want {
			t.Errorf("lead times in %s: %d, want %d (c1 and c2)", env, n, want)
		}
	}
}

// An environment's first success brings the commits of the releases since
// the first whose configuration names it, whatever the case of the name
// (GitHub's environment names ignore case): c1's configuration names
// Staging, where it fails; c2's names staging.
func TestLeadTimeOfAnEnvironmentsFirstSuccessIgnoresTheCaseOfItsName(t *testing.T) {
	h := newHarness(t, c0, c1, c2)
	h.gh.config = "environments:\n  - name: test\n  - name: Staging\n"
	h.release(c0, c1, 10, "test")
	h.status(c1, "Staging", pipeline.DeploymentFailure, 11, true)
	h.gh.config = "environments:\n  - name: test\n  - name: staging\n"
	h.release(c1, c2, 20, "test", "staging")
	if n := h.leadTimesObserved("staging"); n != 2 {
		t.Errorf("lead times in staging: %d, want 2 (c1 and c2)", n)
	}
}

// The same history on GitHub — c1's deploy to test starts (after c2's push
// superseded it: its workflow deploys all the same) and fails, and c2's
// succeeds there 11 minutes later — heard in GitHub's order and with c1's
// statuses delivered after c2's success: one restore of 660 s either way.
func TestTimeToRestoreDoesNotDependOnDeliveryOrder(t *testing.T) {
	for _, late := range []bool{false, true} {
		now, wait := manualClock(time.Now().Add(-5 * time.Hour))
		h := newHarness(t, c0, c1, c2)
		h.gh.now = now
		if err := h.push(c0, c1, false); err != nil {
			t.Fatal(err)
		}
		if err := h.push(c1, c2, false); err != nil {
			t.Fatal(err)
		}
		wait(time.Minute)
		started := h.status(c1, "test", pipeline.DeploymentInProgress, 11, !late)
		wait(time.Minute)
		failed := h.status(c1, "test", pipeline.DeploymentFailure, 11, !late)
		wait(11 * time.Minute)
		h.status(c2, "test", pipeline.DeploymentSuccess, 12, true)
		if late {
			h.deliver(c1, "test", started)
			h.deliver(c1, "test", failed)
		}
		if n, sum := h.restoresObserved("test"); n != 1 || sum != 660 {
			t.Errorf("c1's statuses delivered late %v: time to restore observed %d times, sum %.0f s; want once, 660 s", late, n, sum)
		}
	}
}

// A late failure whose attempt never started (rejected, cancelled while it
// waited) restores nothing; one that had started restores once, however
// many in_progress statuses it had. (c1's statuses are posted after c2's
// push superseded it: its workflow deploys all the same.)
func TestLateFailureRestoresOnlyIfItsAttemptStarted(t *testing.T) {
	h := newHarness(t, c0, c1, c2)
	if err := h.push(c0, c1, false); err != nil {
		t.Fatal(err)
	}
	if err := h.push(c1, c2, false); err != nil {
		t.Fatal(err)
	}
	queued := h.status(c1, "test", pipeline.DeploymentQueued, 11, false)
	failed := h.status(c1, "test", pipeline.DeploymentFailure, 11, false)
	h.status(c2, "test", pipeline.DeploymentSuccess, 12, true)
	h.deliver(c1, "test", failed)
	h.deliver(c1, "test", queued)
	if n, _ := h.restoresObserved("test"); n != 0 {
		t.Errorf("time to restore observed %d times after an attempt that never started", n)
	}

	h2 := newHarness(t, c0, c1, c2)
	if err := h2.push(c0, c1, false); err != nil {
		t.Fatal(err)
	}
	if err := h2.push(c1, c2, false); err != nil {
		t.Fatal(err)
	}
	first := h2.status(c1, "test", pipeline.DeploymentInProgress, 11, false)
	again := h2.status(c1, "test", pipeline.DeploymentInProgress, 11, false)
	failed = h2.status(c1, "test", pipeline.DeploymentFailure, 11, false)
	h2.status(c2, "test", pipeline.DeploymentSuccess, 12, true)
	h2.deliver(c1, "test", failed) // no start known yet: nothing
	h2.deliver(c1, "test", first)  // it had started
	h2.deliver(c1, "test", again)  // nothing more
	if n, _ := h2.restoresObserved("test"); n != 1 {
		t.Errorf("time to restore observed %d times, want 1", n)
	}
}

// Two failed deploys before the success that restored test, the later one
// heard of first (its clock ended at that success): the earlier one,
// delivered after the success, cannot replace that observation, and adds
// none.
func TestLateFailureKeepsTheRestoreAlreadyObserved(t *testing.T) {
	now, wait := manualClock(time.Now().Add(-5 * time.Hour))
	h := newHarness(t, c0, c1, c2, c3)
	h.gh.now = now
	if err := h.push(c0, c1, false); err != nil {
		t.Fatal(err)
	}
	if err := h.push(c1, c2, false); err != nil {
		t.Fatal(err)
	}
	wait(time.Minute)
	run1 := h.status(c1, "test", pipeline.DeploymentInProgress, 11, false)
	fail1 := h.status(c1, "test", pipeline.DeploymentFailure, 11, false)
	wait(time.Minute)
	h.status(c2, "test", pipeline.DeploymentInProgress, 12, true)
	h.status(c2, "test", pipeline.DeploymentFailure, 12, true)
	if err := h.push(c2, c3, false); err != nil {
		t.Fatal(err)
	}
	wait(10 * time.Minute)
	h.status(c3, "test", pipeline.DeploymentSuccess, 13, true)
	h.deliver(c1, "test", fail1)
	h.deliver(c1, "test", run1)
	if n, sum := h.restoresObserved("test"); n != 1 || sum != 600 {
		t.Errorf("time to restore: %d observations, %.0f s; want 1, 600 s (c2's, observed first)", n, sum)
	}
}

// c1 fails in test, c2 succeeds there, c3 fails: c2's success, heard of
// after c3's failure, restores c1's and leaves test failing since c3's,
// which c4's success restores. (c2 is superseded by c3's push before it
// starts: its workflow deploys all the same.)
func TestLateSuccessBetweenTwoFailures(t *testing.T) {
	now, wait := manualClock(time.Now().Add(-5 * time.Hour))
	h := newHarness(t, c0, c1, c2, c3, c4)
	h.gh.now = now
	if err := h.push(c0, c1, false); err != nil {
		t.Fatal(err)
	}
	wait(time.Minute)
	h.status(c1, "test", pipeline.DeploymentInProgress, 11, true)
	h.status(c1, "test", pipeline.DeploymentFailure, 11, true)
	if err := h.push(c1, c2, false); err != nil {
		t.Fatal(err)
	}
	if err := h.push(c2, c3, false); err != nil {
		t.Fatal(err)
	}
	wait(5 * time.Minute)
	ok := h.status(c2, "test", pipeline.DeploymentSuccess, 12, false)
	wait(time.Minute)
	h.status(c3, "test", pipeline.DeploymentInProgress, 13, true)
	h.status(c3, "test", pipeline.DeploymentFailure, 13, true)
	h.deliver(c2, "test", ok)
	if err := h.push(c3, c4, false); err != nil {
		t.Fatal(err)
	}
	wait(20 * time.Minute)
	h.status(c4, "test", pipeline.DeploymentSuccess, 14, true)
	if n, sum := h.restoresObserved("test"); n != 2 || sum != (5+20)*60 {
		t.Errorf("time to restore: %d observations, %.0f s; want 2, %d s (c1 to c2, c3 to c4)", n, sum, (5+20)*60)
	}
}

func (h *harness) durations(env string) (uint64, float64) {
	h.t.Helper()
	return h.histogram(metrics.DeploymentDuration, env)
}

// A deploy fails 2 minutes after its deployment was created, its re-run
// succeeds an hour later: its duration is 120 s, whether the failure's
// webhook comes first or after the re-run's success (lastmile then reads
// the failure back from GitHub, and only then).
func TestDurationDoesNotDependOnDeliveryOrder(t *testing.T) {
	for _, failureLast := range []bool{false, true} {
		now, wait := manualClock(time.Now().Add(-5 * time.Hour))
		h := newHarness(t, c0, c1)
		h.gh.now = now
		if err := h.push(c0, c1, false); err != nil {
			t.Fatal(err)
		}
		listed := h.gh.listed
		wait(time.Minute)
		h.status(c1, "test", pipeline.DeploymentInProgress, 11, true)
		wait(time.Minute)
		fail := h.status(c1, "test", pipeline.DeploymentFailure, 11, !failureLast)
		wait(time.Hour)
		h.status(c1, "test", pipeline.DeploymentInProgress, 11, true)
		h.status(c1, "test", pipeline.DeploymentSuccess, 11, true)
		if failureLast {
			h.deliver(c1, "test", fail) // a duplicate now
		}
		if n, sum := h.durations("test"); n != 1 || sum != 120 {
			t.Errorf("failure delivered last %v: duration observed %d times, sum %.0f s; want once, 120 s", failureLast, n, sum)
		}
		if got, want := h.deploymentsCounted(), map[string]float64{"test/failure": 1, "test/success": 1}; !maps(got, want) {
			t.Errorf("failure delivered last %v: lastmile_deployments_total of test %v, want %v", failureLast, got, want)
		}
		if n, sum := h.restoresObserved("test"); n != 1 || sum != 3600 {
			t.Errorf("failure delivered last %v: time to restore observed %d times, sum %.0f s; want once, 3600 s", failureLast, n, sum)
		}
		if reads, want := h.gh.listed-listed, map[bool]int{false: 0, true: 1}[failureLast]; reads != want {
			t.Errorf("failure delivered last %v: statuses read back %d times, want %d", failureLast, reads, want)
		}
	}
}
