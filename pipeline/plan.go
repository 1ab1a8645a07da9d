package pipeline

import (
	"fmt"
	"strings"
)

// Action is one decision of Plan.
type Action interface{ isAction() }

// CreateDeployment records the intent to deploy a release to a stage.
type CreateDeployment struct {
	Release *Release
	Stage   int
}

// StopRelease stops a release for good.
type StopRelease struct {
	Release *Release
	Kind    StopKind
	Reason  string
	// Deactivate is the release's deployment that has not started and must
	// not (a superseded release's pending deployment), or nil.
	Deactivate *Deployment
	// DeactivateEnded, when not "", is the reason to make inactive the
	// deployment at which a stopped release ended in failure or error —
	// one a re-run of its job would deploy again — when the release is
	// withdrawn: the Action deploys nothing for an inactive deployment.
	DeactivateEnded string
}

// CompleteRelease marks a release that succeeded in its last environment.
type CompleteRelease struct{ Release *Release }

func (CreateDeployment) isAction() {}
func (StopRelease) isAction()      {}
func (CompleteRelease) isAction()  {}

// Plan decides what happens next in a repository. It is a pure function of
// the ledger, so it can be run again after any interruption and decides the
// same; once its actions are applied it decides nothing more.
//
// The rules:
//   - a release starts with its first environment; after a success in stage
//     N it goes on to stage N+1 with the same commit, and completes after
//     its last stage;
//   - a failure (or rejection) stops it;
//   - newest wins: in every environment deployments are created in release
//     order. A release whose next environment already has a deployment of a
//     newer release is superseded, and so is a release whose deployment in an
//     environment has not started when a newer release deploys there. A
//     deployment that has started is left to finish. A first deployment
//     that GitHub may refuse for a required context pending supersedes
//     nothing until GitHub has created it (see RepoState.Reached): the
//     older release, whose build passed, is not given up for one whose
//     build may fail;
//   - one deployment at a time per environment: while a release's
//     deployment runs in an environment (RepoState.Running), no other
//     release's deployment is created there. The next one waits for it to
//     end, so an environment never ends on an older commit because two
//     deploys ran at once and the older finished last.
//
// Releases are considered newest first, so a newer release's next step is
// known when an older one is judged.
func Plan(s *RepoState) []Action {
	var actions []Action
	// Environments are keyed without regard to case, as GitHub names them:
	// "Staging" in one release's configuration is "staging" in another's.
	key := strings.ToLower
	reached := make(map[string]int64, len(s.Reached))
	reach := func(env string, id int64) {
		if id > reached[key(env)] {
			reached[key(env)] = id
		}
	}
	for env, id := range s.Reached {
		reach(env, id)
	}
	// A newer release whose workflow deploys it (the configuration
	// changed since) has reached where it succeeded.
	for env, id := range s.Succeeded {
		reach(env, id)
	}
	newer := func(env string, r *Release) (int64, bool) {
		id := reached[key(env)]
		return id, id > r.ID
	}
	running := make(map[string]int64, len(s.Running))
	for env, id := range s.Running {
		running[key(env)] = id
	}
	busy := func(env string, r *Release) bool {
		id, ok := running[key(env)]
		return ok && id != r.ID
	}
	for i := len(s.Active) - 1; i >= 0; i-- {
		p := s.Active[i]
		r := p.Release
		envs := r.Config.Environments
		if r.Config.WorkflowDeploys() {
			if a := planWorkflow(s, p); a != nil {
				actions = append(actions, a)
			}
			// Where its workflow deploys it, it has reached: an older
			// release whose deployments lastmile creates (the
			// configuration changed) goes there no more.
			for stage := range p.ByStage {
				reach(envs[stage].Name, r.ID)
			}
			continue
		}
		k := -1
		for stage := range p.ByStage {
			k = max(k, stage)
		}
		if k < 0 {
			if id, ok := newer(envs[0].Name, r); ok {
				actions = append(actions, superseded(r, id, envs[0].Name, nil))
				continue
			}
			if busy(envs[0].Name, r) {
				continue
			}
			actions = append(actions, CreateDeployment{Release: r, Stage: 0})
			if len(r.Config.RequiredContexts) == 0 { // else see RepoState.Reached
				reach(envs[0].Name, r.ID)
			}
			continue
		}
		d := p.ByStage[k]
		env := envs[k].Name
		switch {
		case d.Succeeded() && k == len(envs)-1:
			actions = append(actions, CompleteRelease{Release: r})
		case d.Succeeded():
			next := envs[k+1].Name
			if id, ok := newer(next, r); ok {
				actions = append(actions, superseded(r, id, next, nil))
				continue
			}
			if busy(next, r) {
				continue
			}
			actions = append(actions, CreateDeployment{Release: r, Stage: k + 1})
			reach(next, r.ID)
		case d.State == DeploymentFailure || d.State == DeploymentError:
			actions = append(actions, failed(r, d, env))
		case d.State == DeploymentAbandoned:
			actions = append(actions, StopRelease{Release: r, Kind: StopRefused,
				Reason: fmt.Sprintf("no deployment to %s: %s", env, d.Reason)})
		case d.State == DeploymentInactive:
			actions = append(actions, StopRelease{Release: r, Kind: StopSuperseded,
				Reason: fmt.Sprintf("its deployment to %s was made inactive", env)})
		case !d.State.Started():
			if id, ok := newer(env, r); ok {
				actions = append(actions, superseded(r, id, env, d))
			}
		}
	}
	return actions
}

// supersededByNewer begins the reason of a release that Plan stopped
// because a newer one deploys to where it was going next.
const supersededByNewer = "superseded: newer release #"

func superseded(r *Release, by int64, env string, d *Deployment) StopRelease {
	return StopRelease{Release: r, Kind: StopSuperseded, Deactivate: d,
		Reason: fmt.Sprintf(supersededByNewer+"%d deploys to %s", by, env)}
}

// failed stops release r, whose deployment d to env ended in failure or
// error.
func failed(r *Release, d *Deployment, env string) StopRelease {
	kind, reason := StopFailed, fmt.Sprintf("deployment to %s ended in %s", env, d.State)
	if d.Rejected {
		kind = StopRejected
	}
	if d.Reason != "" {
		reason = fmt.Sprintf("deployment to %s ended in %s: %s", env, d.State, d.Reason)
	}
	return StopRelease{Release: r, Kind: kind, Reason: reason}
}

// planWorkflow is Plan for a release whose workflow creates the
// deployments (Config.WorkflowDeploys): lastmile creates none, and follows
// the release through those the workflow's jobs create (p.ByStage). It
// completes after a success in its last environment; a failure stops it
// (a re-run that succeeds carries it on: see Store.RecordStatus); and,
// its deployment there not begun, it is superseded once a newer release
// has succeeded in the environment it would deploy to next (it would go
// backwards) or in the one before it (newest wins), as the protection
// rule would then refuse it (Engine.outrun). A deployment in progress is
// left to finish.
func planWorkflow(s *RepoState, p *ReleaseProgress) Action {
	r := p.Release
	envs := r.Config.Environments
	// A success in the last environment completes it, whatever came
	// after in GitHub's order (all its jobs re-run: a redeploy).
	if d := p.ByStage[len(envs)-1]; d != nil && d.Succeeded() {
		return CompleteRelease{Release: r}
	}
	// Where it stands is its latest deployment, not the furthest: a
	// re-run of all its jobs after a failure in staging deploys to test
	// again, then staging.
	k, d := -1, (*Deployment)(nil)
	for stage, x := range p.ByStage {
		if d == nil || x.GitHubID > d.GitHubID || x.GitHubID == d.GitHubID && x.ID > d.ID {
			k, d = stage, x
		}
	}
	next := 0
	if k >= 0 {
		switch {
		case d.Succeeded() && k == len(envs)-1:
			return CompleteRelease{Release: r}
		case d.Succeeded():
			next = k + 1
		case d.State == DeploymentFailure || d.State == DeploymentError:
			return failed(r, d, envs[k].Name)
		case d.State == DeploymentInactive:
			return StopRelease{Release: r, Kind: StopSuperseded,
				Reason: fmt.Sprintf("its deployment to %s was made inactive", envs[k].Name)}
		case d.State.Started():
			return nil
		default:
			next = k // waiting: for its reviewers, say
		}
	}
	env := envs[next].Name
	if id := s.Succeeded[strings.ToLower(env)]; id > r.ID {
		return StopRelease{Release: r, Kind: StopSuperseded,
			Reason: fmt.Sprintf(supersededByNewer+"%d has succeeded in %s", id, env)}
	}
	if next == 0 {
		return nil
	}
	prev := envs[next-1].Name
	if id := s.Succeeded[strings.ToLower(prev)]; id > r.ID {
		return StopRelease{Release: r, Kind: StopSuperseded,
			Reason: fmt.Sprintf(supersededByNewer+"%d has passed %s, before %s", id, prev, env)}
	}
	return nil
}
