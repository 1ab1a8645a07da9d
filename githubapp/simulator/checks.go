package simulator

import (
	"fmt"
	"time"
)

// checkSuite is the simulated CI App's check suite on a commit, with its
// check runs. There is one per commit, made by the first SetCheckRun.
type checkSuite struct {
	id                   int64
	runs                 []*checkRun // oldest first
	createdAt, updatedAt time.Time
}

type checkRun struct {
	id                     int64
	name                   string
	status, conclusion     string
	startedAt, completedAt time.Time
}

// state is how a check run stands among a commit's contexts: its
// conclusion once completed, else its status (queued, in_progress).
func (cr *checkRun) state() string {
	if cr.status == "completed" {
		return cr.conclusion
	}
	return cr.status
}

// latest returns the newest check run of each name, in the order the names
// first appeared. Names are compared exactly.
func (cs *checkSuite) latest() []*checkRun {
	var out []*checkRun
	at := map[string]int{}
	for _, cr := range cs.runs {
		if i, ok := at[cr.name]; ok {
			out[i] = cr
			continue
		}
		at[cr.name] = len(out)
		out = append(out, cr)
	}
	return out
}

// latestCheckRuns returns the newest check run of each name on a commit.
func (r *repo) latestCheckRuns(sha string) []*checkRun {
	if cs := r.checkSuites[sha]; cs != nil {
		return cs.latest()
	}
	return nil
}

// ciApp is the CI App whose check suites the fixtures report.
func (st *state) ciApp() *appInfo {
	return &appInfo{
		id: 67890, slug: "ci", name: "CI", description: "A simulated CI app",
		owner:       st.addAccount("ci-vendor", "Organization", 0),
		permissions: map[string]string{"checks": "write", "contents": "read", "metadata": "read"},
		events:      []string{"check_suite", "push"},
	}
}

// SetCheckRun records a check run of the simulated CI App ("ci") on a
// commit, as the App would through the checks API, and returns its id.
// status is queued, in_progress or completed; conclusion is given with
// completed only: success, failure, neutral, cancelled, skipped, timed_out
// or action_required (stale is GitHub's alone). A run of that name not yet
// completed is updated; after it completed, a new run of the name is added,
// as a re-run is, and the newest of a name is the one that counts. All the
// runs are in one check suite of the commit. When a call completes a run
// and every run of the suite is then completed, the check_suite completed
// webhook is sent with the suite's conclusion: success when every run's
// newest attempt succeeded, else failure (a simplification of GitHub's
// rollup, which this App's single suite does not need).
func (s *Simulator) SetCheckRun(repo, sha, name, status, conclusion string) int64 {
	if name == "" {
		panic("simulator: a check run needs a name")
	}
	switch status {
	case "queued", "in_progress":
		if conclusion != "" {
			panic(fmt.Sprintf("simulator: check run %s is %s: a conclusion (%q) comes with completed only", name, status, conclusion))
		}
	case "completed":
		switch conclusion {
		case "success", "failure", "neutral", "cancelled", "skipped", "timed_out", "action_required":
		default:
			panic(fmt.Sprintf("simulator: check run %s completed with conclusion %q", name, conclusion))
		}
	default:
		panic(fmt.Sprintf("simulator: check run status %q", status))
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	st := s.st
	r := s.mustRepo(repo)
	c := mustCommit(r, repo, sha)
	now := s.clock()
	suite := r.checkSuites[c.sha]
	if suite == nil {
		suite = &checkSuite{id: st.id(), createdAt: now}
		r.checkSuites[c.sha] = suite
	}
	suite.updatedAt = now
	var run *checkRun
	for _, cr := range suite.latest() {
		if cr.name == name && cr.status != "completed" {
			run = cr
		}
	}
	if run == nil {
		run = &checkRun{id: st.id(), name: name, startedAt: now}
		suite.runs = append(suite.runs, run)
	}
	run.status, run.conclusion = status, conclusion
	if status == "completed" {
		run.completedAt = now
		latest := suite.latest()
		done, green := true, true
		for _, cr := range latest {
			done = done && cr.status == "completed"
			green = green && cr.conclusion == "success"
		}
		if done {
			suiteConclusion := "failure"
			if green {
				suiteConclusion = "success"
			}
			st.enqueueCheckSuiteCompleted(r, c, suite, suiteConclusion, len(latest))
		}
	}
	s.notifyLocked()
	return run.id
}
