package pipeline

import (
	"fmt"
	"sort"
	"strings"
	"testing"
	"time"
)

var threeStages = &Config{Environments: []Environment{{Name: "test"}, {Name: "staging"}, {Name: "production", Production: true}}}

// rel builds an active release whose stages are in the given states, in
// order ("" ends the list: the stage has no deployment yet).
func rel(id int64, states ...DeploymentState) *ReleaseProgress {
	p := &ReleaseProgress{Release: &Release{ID: id, SHA: fmt.Sprintf("sha%d", id), State: ReleaseActive, Config: threeStages},
		ByStage: map[int]*Deployment{}}
	for i, st := range states {
		d := &Deployment{ID: id*10 + int64(i), ReleaseID: id, Stage: i, Environment: threeStages.Environments[i].Name, State: st}
		if st == DeploymentSuccess {
			d.SucceededAt = time.Unix(1, 0)
		}
		p.ByStage[i] = d
	}
	return p
}

// describe renders actions compactly, sorted, for comparison.
func describe(actions []Action) string {
	var out []string
	for _, a := range actions {
		switch a := a.(type) {
		case CreateDeployment:
			out = append(out, fmt.Sprintf("create #%d %s", a.Release.ID, a.Release.Config.Environments[a.Stage].Name))
		case CompleteRelease:
			out = append(out, fmt.Sprintf("complete #%d", a.Release.ID))
		case StopRelease:
			s := fmt.Sprintf("stop #%d %s", a.Release.ID, a.Kind)
			if a.Deactivate != nil {
				s += fmt.Sprintf(" deactivate %s", a.Deactivate.Environment)
			}
			out = append(out, s)
		}
	}
	sort.Strings(out)
	return strings.Join(out, "; ")
}

func TestPlan(t *testing.T) {
	tests := map[string]struct {
		active  []*ReleaseProgress
		reached map[string]int64
		running map[string]int64
		want    string
	}{
		"a new release deploys to its first environment": {
			active: []*ReleaseProgress{rel(1)},
			want:   "create #1 test",
		},
		"success in a stage promotes the same release to the next": {
			active:  []*ReleaseProgress{rel(1, DeploymentSuccess)},
			reached: map[string]int64{"test": 1},
			want:    "create #1 staging",
		},
		"success in the last stage completes the release": {
			active:  []*ReleaseProgress{rel(1, DeploymentSuccess, DeploymentSuccess, DeploymentSuccess)},
			reached: map[string]int64{"test": 1, "staging": 1, "production": 1},
			want:    "complete #1",
		},
		"a failure stops the release": {
			active:  []*ReleaseProgress{rel(1, DeploymentSuccess, DeploymentFailure)},
			reached: map[string]int64{"test": 1, "staging": 1},
			want:    "stop #1 failed",
		},
		"an error stops the release": {
			active: []*ReleaseProgress{rel(1, DeploymentError)},
			want:   "stop #1 failed",
		},
		"GitHub refusing the deployment stops the release": {
			active: []*ReleaseProgress{rel(1, DeploymentAbandoned)},
			want:   "stop #1 refused",
		},
		"in flight: nothing to do": {
			active:  []*ReleaseProgress{rel(1, DeploymentSuccess, DeploymentInProgress)},
			reached: map[string]int64{"test": 1, "staging": 1},
			want:    "",
		},
		"waiting for its first environment's contexts: nothing to do": {
			active:  []*ReleaseProgress{rel(1, DeploymentWaiting)},
			reached: map[string]int64{"test": 1},
			want:    "",
		},
		"newest wins: an older release waiting for approval in staging is superseded when a newer one deploys there": {
			active:  []*ReleaseProgress{rel(1, DeploymentSuccess, DeploymentQueued), rel(2, DeploymentSuccess)},
			reached: map[string]int64{"test": 2, "staging": 1},
			want:    "create #2 staging; stop #1 superseded deactivate staging",
		},
		"an older release deploying in staging is left to finish, and the newer one waits for it": {
			active:  []*ReleaseProgress{rel(1, DeploymentSuccess, DeploymentInProgress), rel(2, DeploymentSuccess)},
			reached: map[string]int64{"test": 2, "staging": 1},
			running: map[string]int64{"staging": 1},
			want:    "",
		},
		"once the older deploy in staging has ended, the newer release deploys there": {
			active:  []*ReleaseProgress{rel(1, DeploymentSuccess, DeploymentSuccess), rel(2, DeploymentSuccess)},
			reached: map[string]int64{"test": 2, "staging": 1},
			want:    "create #1 production; create #2 staging",
		},
		"a new release waits for the deploy running in its first environment": {
			active:  []*ReleaseProgress{rel(1, DeploymentInProgress), rel(2)},
			reached: map[string]int64{"test": 1},
			running: map[string]int64{"test": 1},
			want:    "",
		},
		"releases queued behind a running deploy: only the newest deploys when it ends": {
			active:  []*ReleaseProgress{rel(1, DeploymentSuccess), rel(2), rel(3)},
			reached: map[string]int64{"test": 1},
			want:    "create #1 staging; create #3 test; stop #2 superseded",
		},
		"a stopped release's deploy still running holds the environment too": {
			active:  []*ReleaseProgress{rel(2, DeploymentSuccess, DeploymentSuccess)},
			reached: map[string]int64{"test": 2, "staging": 2, "production": 1},
			running: map[string]int64{"production": 1},
			want:    "",
		},
		"a deploy running in an environment spelt otherwise holds it too (GitHub ignores case)": {
			active: []*ReleaseProgress{func() *ReleaseProgress {
				p := rel(1, DeploymentSuccess, DeploymentInProgress)
				p.Release.Config = &Config{Environments: []Environment{{Name: "test"}, {Name: "Staging"}, {Name: "production", Production: true}}}
				return p
			}(), rel(2, DeploymentSuccess)},
			reached: map[string]int64{"test": 2, "Staging": 1},
			running: map[string]int64{"Staging": 1},
			want:    "",
		},
		"a waiting release does not hold up an older one elsewhere": {
			active:  []*ReleaseProgress{rel(1, DeploymentSuccess, DeploymentSuccess, DeploymentInProgress), rel(2, DeploymentSuccess, DeploymentSuccess)},
			reached: map[string]int64{"test": 2, "staging": 2, "production": 1},
			running: map[string]int64{"production": 1},
			want:    "",
		},
		"an older release that succeeds where a newer one went further is superseded, not promoted": {
			active:  []*ReleaseProgress{rel(1, DeploymentSuccess, DeploymentSuccess), rel(2, DeploymentSuccess, DeploymentSuccess, DeploymentInProgress)},
			reached: map[string]int64{"test": 2, "staging": 2, "production": 2},
			want:    "stop #1 superseded",
		},
		"a completed newer release still counts: never deploy backwards": {
			active:  []*ReleaseProgress{rel(1, DeploymentSuccess, DeploymentSuccess)},
			reached: map[string]int64{"test": 2, "staging": 2, "production": 2},
			want:    "stop #1 superseded",
		},
		"two new releases at once: only the newest deploys": {
			active:  []*ReleaseProgress{rel(1), rel(2)},
			reached: map[string]int64{},
			want:    "create #2 test; stop #1 superseded",
		},
		"a release not yet deployed whose environment already has a newer deployment is superseded": {
			active:  []*ReleaseProgress{rel(3, DeploymentIntent)},
			reached: map[string]int64{"test": 4},
			want:    "stop #3 superseded deactivate test",
		},
		"success replaced by GitHub's automatic inactive still counts as success": {
			active: []*ReleaseProgress{func() *ReleaseProgress {
				p := rel(1, DeploymentSuccess)
				p.ByStage[0].State = DeploymentInactive
				return p
			}()},
			reached: map[string]int64{"test": 1},
			want:    "create #1 staging",
		},
		"made inactive by lastmile (never succeeded): superseded": {
			active:  []*ReleaseProgress{rel(1, DeploymentSuccess, DeploymentInactive)},
			reached: map[string]int64{"test": 1, "staging": 2},
			want:    "stop #1 superseded",
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			reached := tc.reached
			if reached == nil {
				reached = map[string]int64{}
			}
			got := describe(Plan(&RepoState{Active: tc.active, Reached: reached, Running: tc.running}))
			if got != tc.want {
				t.Errorf("got  %q\nwant %q", got, tc.want)
			}
		})
	}
}

func TestPlanRejectionIsItsOwnKind(t *testing.T) {
	p := rel(1, DeploymentSuccess, DeploymentFailure)
	p.ByStage[1].Rejected, p.ByStage[1].Reason = true, "rejected by bob: not today"
	actions := Plan(&RepoState{Active: []*ReleaseProgress{p}, Reached: map[string]int64{}})
	if len(actions) != 1 {
		t.Fatalf("actions: %v", describe(actions))
	}
	stop, ok := actions[0].(StopRelease)
	if !ok || stop.Kind != StopRejected || !strings.Contains(stop.Reason, "rejected by bob: not today") {
		t.Errorf("got %+v", actions[0])
	}
}

// TestPlanSettles checks that applying the plan's decisions leaves nothing
// more to decide (the engine relies on it to stop its loop).
func TestPlanSettles(t *testing.T) {
	states := [][]DeploymentState{{}, {DeploymentSuccess}, {DeploymentSuccess, DeploymentQueued}, {DeploymentSuccess, DeploymentSuccess, DeploymentSuccess}, {DeploymentFailure}}
	for i := range states {
		for j := range states {
			s := &RepoState{Active: []*ReleaseProgress{rel(1, states[i]...), rel(2, states[j]...)}, Reached: map[string]int64{}}
			for _, p := range s.Active {
				for _, d := range p.ByStage {
					s.Reached[d.Environment] = max(s.Reached[d.Environment], p.Release.ID)
				}
			}
			for round := 0; ; round++ {
				actions := Plan(s)
				if len(actions) == 0 {
					break
				}
				if round > 3 {
					t.Fatalf("%v / %v: the plan does not settle: %s", states[i], states[j], describe(actions))
				}
				apply(s, actions)
			}
		}
	}
}

// apply is what a store does with a plan, in memory.
func apply(s *RepoState, actions []Action) {
	keep := s.Active[:0]
	stopped := map[int64]bool{}
	for _, a := range actions {
		switch a := a.(type) {
		case CreateDeployment:
			for _, p := range s.Active {
				if p.Release.ID == a.Release.ID {
					env := a.Release.Config.Environments[a.Stage].Name
					p.ByStage[a.Stage] = &Deployment{ReleaseID: a.Release.ID, Stage: a.Stage, Environment: env, State: DeploymentIntent}
					s.Reached[env] = max(s.Reached[env], a.Release.ID)
				}
			}
		case StopRelease:
			stopped[a.Release.ID] = true
		case CompleteRelease:
			stopped[a.Release.ID] = true
		}
	}
	for _, p := range s.Active {
		if !stopped[p.Release.ID] {
			keep = append(keep, p)
		}
	}
	s.Active = keep
}

// Where the workflow creates the deployments (deployments: workflow),
// Plan creates none: it completes, stops and supersedes releases by the
// deployments the workflow's jobs made (ByStage), and by the newest
// success in each environment (Succeeded).
func TestPlanWorkflowDeploys(t *testing.T) {
	workflow := &Config{Deployments: DeploymentsWorkflow, Environments: threeStages.Environments}
	wrel := func(id int64, states ...DeploymentState) *ReleaseProgress {
		p := rel(id, states...)
		p.Release.Config = workflow
		return p
	}
	rejected := wrel(1, DeploymentSuccess, DeploymentFailure)
	rejected.ByStage[1].Rejected = true
	// Re-run all jobs after a failure in staging: test's new deployment,
	// GitHub's newest (lastmile's row for it may be older: heard of
	// first), is where it stands — not the failure further on.
	rerunAll := wrel(1, DeploymentSuccess, DeploymentFailure)
	rerunAll.ByStage[1].GitHubID = 200
	rerunAll.ByStage[0] = &Deployment{ID: 5, GitHubID: 300, ReleaseID: 1, Environment: "test", State: DeploymentSuccess, SucceededAt: time.Unix(3, 0)}
	rerunAllRunning := wrel(1, DeploymentSuccess, DeploymentFailure)
	rerunAllRunning.ByStage[0] = &Deployment{ID: 99, ReleaseID: 1, Environment: "test", State: DeploymentInProgress}
	// A redeploy: all its jobs re-run after it completed, heard of before
	// production's success (late).
	redeploy := wrel(1, DeploymentSuccess, DeploymentSuccess, DeploymentSuccess)
	redeploy.ByStage[0] = &Deployment{ID: 99, ReleaseID: 1, Environment: "test", State: DeploymentInProgress}
	spelt := wrel(1, DeploymentSuccess)
	spelt.Release.Config = &Config{Deployments: DeploymentsWorkflow, Environments: []Environment{{Name: "test"}, {Name: "Staging"}, {Name: "production", Production: true}}}
	succeededThenInactive := wrel(1, DeploymentSuccess, DeploymentSuccess, DeploymentInactive)
	succeededThenInactive.ByStage[2].SucceededAt = time.Unix(2, 0)
	tests := map[string]struct {
		active    []*ReleaseProgress
		succeeded map[string]int64
		reached   map[string]int64
		want      string
		reason    string
	}{
		"a new release waits for the workflow": {active: []*ReleaseProgress{wrel(1)}},
		"a success waits for the next job":     {active: []*ReleaseProgress{wrel(1, DeploymentSuccess)}},
		"a job waiting for its reviewers":      {active: []*ReleaseProgress{wrel(1, DeploymentSuccess, DeploymentQueued)}},
		"a success in the last environment completes": {
			active: []*ReleaseProgress{wrel(1, DeploymentSuccess, DeploymentSuccess, DeploymentSuccess)},
			want:   "complete #1",
		},
		"made inactive after its success, GitHub's doing, it completes all the same": {
			active: []*ReleaseProgress{succeededThenInactive}, want: "complete #1",
		},
		"a failure stops it": {
			active: []*ReleaseProgress{wrel(1, DeploymentSuccess, DeploymentFailure)},
			want:   "stop #1 failed", reason: "deployment to staging ended in failure",
		},
		"a rejection stops it as rejected": {active: []*ReleaseProgress{rejected}, want: "stop #1 rejected"},
		"made inactive before it ran": {
			active: []*ReleaseProgress{wrel(1, DeploymentSuccess, DeploymentInactive)},
			want:   "stop #1 superseded", reason: "its deployment to staging was made inactive",
		},
		"a newer release succeeded where it goes next: superseded": {
			active:    []*ReleaseProgress{wrel(1, DeploymentSuccess), wrel(2, DeploymentSuccess, DeploymentSuccess)},
			succeeded: map[string]int64{"test": 2, "staging": 2},
			want:      "stop #1 superseded", reason: "superseded: newer release #2 has succeeded in staging",
		},
		"a newer release passed the environment before the one it waits for: superseded": {
			active:    []*ReleaseProgress{wrel(1, DeploymentSuccess, DeploymentPending), wrel(2, DeploymentSuccess)},
			succeeded: map[string]int64{"test": 2},
			want:      "stop #1 superseded", reason: "superseded: newer release #2 has passed test, before staging",
		},
		"nothing deployed yet, a newer release succeeded in the first environment": {
			active: []*ReleaseProgress{wrel(1), wrel(2, DeploymentSuccess)}, succeeded: map[string]int64{"test": 2},
			want: "stop #1 superseded", reason: "superseded: newer release #2 has succeeded in test",
		},
		"a deploy in progress is left to finish, whatever a newer release did": {
			active:    []*ReleaseProgress{wrel(1, DeploymentSuccess, DeploymentInProgress), wrel(2, DeploymentSuccess, DeploymentSuccess)},
			succeeded: map[string]int64{"test": 2, "staging": 2},
		},
		"an older success supersedes nothing": {
			active: []*ReleaseProgress{wrel(2, DeploymentSuccess)}, succeeded: map[string]int64{"test": 2, "staging": 1},
		},
		"environments compared without case": {
			active: []*ReleaseProgress{spelt}, succeeded: map[string]int64{"staging": 2},
			want: "stop #1 superseded", reason: "superseded: newer release #2 has succeeded in Staging",
		},
		"an older release whose deployments lastmile creates never goes where a newer one's workflow has succeeded": {
			active:    []*ReleaseProgress{rel(1, DeploymentSuccess, DeploymentSuccess), wrel(2, DeploymentSuccess, DeploymentSuccess, DeploymentInProgress)},
			succeeded: map[string]int64{"test": 2, "staging": 2},
			want:      "stop #1 superseded", reason: "superseded: newer release #2 deploys to production",
		},
		"nor to where a newer one's workflow deployed before it completed": {
			active:    []*ReleaseProgress{rel(1, DeploymentSuccess, DeploymentSuccess)},
			succeeded: map[string]int64{"production": 2},
			want:      "stop #1 superseded", reason: "superseded: newer release #2 deploys to production",
		},
		"lastmile's own deployments elsewhere do not make it create any": {
			active:  []*ReleaseProgress{wrel(1)},
			reached: map[string]int64{"test": 1},
		},
		"all its jobs re-run: test's success again, staging's to come":             {active: []*ReleaseProgress{rerunAll}},
		"all its jobs re-run: test's deploy in progress, staging's failure before": {active: []*ReleaseProgress{rerunAllRunning}},
		"a success in the last environment completes it, a later re-run of all its jobs aside": {
			active: []*ReleaseProgress{redeploy}, want: "complete #1",
		},
		"an error stops it": {
			active: []*ReleaseProgress{wrel(1, DeploymentError)},
			want:   "stop #1 failed", reason: "deployment to test ended in error",
		},
		"its first deployment in progress": {active: []*ReleaseProgress{wrel(1, DeploymentInProgress)}, succeeded: map[string]int64{"test": 2}},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			actions := Plan(&RepoState{Active: tc.active, Succeeded: tc.succeeded, Reached: tc.reached})
			if got := describe(actions); got != tc.want {
				t.Fatalf("got %q, want %q", got, tc.want)
			}
			if tc.reason != "" {
				if stop := actions[0].(StopRelease); stop.Reason != tc.reason || stop.Deactivate != nil {
					t.Errorf("reason %q, deactivate %v; want %q, nothing deactivated", stop.Reason, stop.Deactivate, tc.reason)
				}
			}
		})
	}
}
