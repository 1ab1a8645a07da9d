package simulator

import (
	"fmt"
	"net/http"
	"strings"
	"time"
)

type reviewKind int

const (
	reviewManual reviewKind = iota
	reviewApprove
	reviewReject
	reviewTimeout
)

// ReviewPolicy says how an environment's required reviewers answer. The
// zero value is Manual.
type ReviewPolicy struct {
	kind           reviewKind
	login, comment string
}

// AutoApprove approves every review request at once, as login.
func AutoApprove(login, comment string) ReviewPolicy {
	return ReviewPolicy{kind: reviewApprove, login: login, comment: comment}
}

// AutoReject rejects every review request at once, as login.
func AutoReject(login, comment string) ReviewPolicy {
	return ReviewPolicy{kind: reviewReject, login: login, comment: comment}
}

// Manual leaves review requests pending until Approve or Reject is called.
func Manual() ReviewPolicy { return ReviewPolicy{kind: reviewManual} }

// Timeout lets review requests expire: the job fails as it does on GitHub
// when nobody approves within 30 days (without the 30 days).
func Timeout() ReviewPolicy { return ReviewPolicy{kind: reviewTimeout} }

// PendingReview is a deploy job waiting for a required reviewer.
type PendingReview struct {
	RunID       int64
	JobID       int64
	Environment string
	Reviewers   []string
	Since       time.Time
}

// PendingReviews lists the jobs of a repository that wait for a reviewer.
func (s *Simulator) PendingReviews(repo string) []PendingReview {
	s.mu.Lock()
	defer s.mu.Unlock()
	rp := s.mustRepo(repo)
	var out []PendingReview
	for _, id := range s.st.runOrder {
		ru := s.st.runs[id]
		if ru.repo != rp || ru.gate == nil || !ru.gate.needReview || ru.gate.review != "" {
			continue
		}
		g := ru.gate
		out = append(out, PendingReview{RunID: ru.id, JobID: g.job.id, Environment: g.environment,
			Reviewers: append([]string(nil), g.reviewers...), Since: g.since})
	}
	return out
}

// Approve approves a waiting deployment as a required reviewer and sends
// deployment_review "approved".
func (s *Simulator) Approve(repo string, runID int64, env, login, comment string) error {
	return s.review(repo, runID, env, login, comment, true)
}

// Reject rejects a waiting deployment as a required reviewer and sends
// deployment_review "rejected"; the job fails.
func (s *Simulator) Reject(repo string, runID int64, env, login, comment string) error {
	return s.review(repo, runID, env, login, comment, false)
}

func (s *Simulator) review(repo string, runID int64, env, login, comment string, approve bool) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	rp := s.mustRepo(repo)
	ru := s.st.runs[runID]
	if ru == nil || ru.repo != rp {
		return fmt.Errorf("simulator: no run %d in %s", runID, repo)
	}
	g := ru.gate
	if g == nil || !g.needReview || g.review != "" || !strings.EqualFold(g.environment, env) {
		return fmt.Errorf("simulator: run %d does not wait for a review of %s", runID, env)
	}
	allowed := false
	for _, r := range g.reviewers {
		if strings.EqualFold(r, login) {
			allowed = true
		}
	}
	if !allowed {
		return fmt.Errorf("simulator: %s is not a required reviewer of %s", login, env)
	}
	g.review = "rejected"
	if approve {
		g.review = "approved"
	}
	s.st.enqueueReviewed(rp, g.job, g, s.st.accountFor(login), approve, comment)
	ru.wakeLocked()
	s.notifyLocked()
	return nil
}

// ProtectionRuleReview is an answer the App posted to a custom deployment
// protection rule.
type ProtectionRuleReview struct {
	RunID       int64
	Environment string
	State       string // approved, rejected, or "" for a status report
	Comment     string
	Time        time.Time
}

// ProtectionRuleReviews returns the App's answers for a repository, oldest
// first.
func (s *Simulator) ProtectionRuleReviews(repo string) []ProtectionRuleReview {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]ProtectionRuleReview(nil), s.mustRepo(repo).ruleReviews...)
}

// handleReviewProtectionRule serves
// POST /repos/{owner}/{repo}/actions/runs/{run_id}/deployment_protection_rule.
func (s *Simulator) handleReviewProtectionRule(w http.ResponseWriter, r *http.Request, a *auth) {
	const doc = docsRoot + "/actions/workflow-runs#review-custom-deployment-protection-rules-for-a-workflow-run"
	body, ok := decodeBody(w, r, doc)
	if !ok {
		return
	}
	env, present, ok := fieldString(body, "environment_name")
	if !ok || !present {
		writeValidation(w, "Invalid request.\n\n\"environment_name\" wasn't supplied.", doc)
		return
	}
	state, hasState, ok := fieldString(body, "state")
	if !ok || (hasState && state != "approved" && state != "rejected") {
		writeValidation(w, "Invalid request.\n\nFor 'properties/state', "+string(body["state"])+" is not one of [\"approved\", \"rejected\"].", doc)
		return
	}
	comment, hasComment, ok := fieldString(body, "comment")
	if !ok {
		writeValidation(w, typeError("comment", body["comment"], "a string"), doc)
		return
	}
	if !hasState && !hasComment {
		writeValidation(w, "Invalid request.\n\n\"comment\" wasn't supplied.", doc)
		return
	}
	if len([]rune(comment)) > 1024 {
		writeValidation(w, "Validation Failed", doc, obj{"resource": "DeploymentProtectionRule", "code": "custom", "field": "comment", "message": "comment is too long (maximum is 1024 characters)"})
		return
	}
	if a.kind != AuthInstallation {
		// Only an App (a bot) may answer its own rule; others get 404.
		writeError(w, http.StatusNotFound, "Not Found", doc)
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	rp := s.st.lookupRepo(r.PathValue("owner") + "/" + r.PathValue("repo"))
	id, _ := pathID(r, "run_id")
	ru := s.st.runs[id]
	if ru == nil || ru.repo != rp {
		writeError(w, http.StatusNotFound, "Not Found", doc)
		return
	}
	g := ru.gate
	if g == nil || !g.needRule || !strings.EqualFold(g.environment, env) || g.rule != "" {
		writeValidation(w, fmt.Sprintf("No pending custom deployment requests in workflow run `%d` to approve or reject", id), doc)
		return
	}
	rp.ruleReviews = append(rp.ruleReviews, ProtectionRuleReview{RunID: id, Environment: env, State: state, Comment: comment, Time: s.clock()})
	if hasState {
		g.rule, g.ruleComment = state, comment
		g.job.logf(s.clock(), "Deployment protection rule %s %s: %s", s.opts.AppSlug, state, comment)
		ru.wakeLocked()
	}
	s.notifyLocked()
	w.WriteHeader(http.StatusNoContent)
}
