package simulator

import (
	"fmt"
	"maps"
	"strings"
	"time"
)

// Fixture methods set up the simulated world. They panic when they are
// misused (an unknown repository, a bad name), like a failed test setup
// would; everything they do is visible through the REST API at once.

// RepoOptions configures CreateRepo.
type RepoOptions struct {
	// DefaultBranch defaults to "main".
	DefaultBranch string
	Private       bool
	// Files are the contents of the initial commit on the default branch.
	// Default: a README.md.
	Files map[string]string
	// CustomProperties are the organisation's custom properties set on
	// the repository, in its webhooks' and workflow runs' repository
	// objects (custom_properties): each a string, a []string (a
	// multi_select property) or nil. Default: none ({}).
	CustomProperties map[string]any
}

// CreateInstallation installs the App on an account ("Organization" or
// "User") and returns the installation id.
func (s *Simulator) CreateInstallation(account, accountType string) int64 {
	if accountType != "Organization" && accountType != "User" {
		panic(fmt.Sprintf("simulator: account type %q: want Organization or User", accountType))
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	st := s.st
	a := st.addAccount(account, accountType, 0)
	now := s.clock().Truncate(time.Second)
	inst := &installation{id: st.id(), account: a, selection: "all", createdAt: now, updatedAt: now}
	st.installations[inst.id] = inst
	s.notifyLocked()
	return inst.id
}

// CreateRepo creates repository "owner/name" under an installation (the
// owner must be the installation's account) with one initial commit on its
// default branch, and returns the repository id. No webhook is sent.
func (s *Simulator) CreateRepo(installationID int64, fullName string, opts RepoOptions) int64 {
	owner, name, ok := strings.Cut(fullName, "/")
	if !ok || owner == "" || name == "" || strings.Contains(name, "/") {
		panic(fmt.Sprintf("simulator: repository name %q: want owner/name", fullName))
	}
	if opts.DefaultBranch == "" {
		opts.DefaultBranch = "main"
	}
	if opts.Files == nil {
		opts.Files = map[string]string{"README.md": "# " + name + "\n"}
	}
	props := obj{}
	for k, v := range opts.CustomProperties {
		switch v := v.(type) {
		case string, nil:
			props[k] = v
		case []string:
			props[k] = append([]string{}, v...)
		default:
			panic(fmt.Sprintf("simulator: custom property %q: %T, want a string, a []string or nil", k, v))
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	st := s.st
	inst := st.installations[installationID]
	if inst == nil {
		panic(fmt.Sprintf("simulator: no installation %d", installationID))
	}
	if !strings.EqualFold(inst.account.login, owner) {
		panic(fmt.Sprintf("simulator: installation %d belongs to %s, not %s", installationID, inst.account.login, owner))
	}
	if st.lookupRepo(fullName) != nil {
		panic(fmt.Sprintf("simulator: repository %s exists", fullName))
	}
	r := &repo{
		id:            st.id(),
		owner:         inst.account,
		name:          name,
		private:       opts.Private,
		defaultBranch: opts.DefaultBranch,
		installation:  inst,
		createdAt:     s.clock().Truncate(time.Second),
		branches:      map[string]string{},
		commits:       map[string]*commit{},
		statuses:      map[string][]*commitStatus{},
		checkSuites:   map[string]*checkSuite{},
		environments:  map[string]*environment{},
		properties:    props,
	}
	c := st.newCommit(r, nil, CommitSpec{Message: "Initial commit", Files: opts.Files})
	r.branches[r.defaultBranch] = c.sha
	r.pushedAt = r.createdAt
	st.repos[strings.ToLower(fullName)] = r
	inst.repos = append(inst.repos, r)
	s.notifyLocked()
	return r.id
}

// mustRepo returns the repository or panics. Call with s.mu held.
func (s *Simulator) mustRepo(fullName string) *repo {
	r := s.st.lookupRepo(fullName)
	if r == nil {
		panic(fmt.Sprintf("simulator: no repository %s", fullName))
	}
	return r
}

// mustBranch returns the commit a branch of r points at, or panics.
func mustBranch(r *repo, fullName, branch string) string {
	sha, ok := r.branches[branch]
	if !ok {
		panic(fmt.Sprintf("simulator: %s has no branch %s", fullName, branch))
	}
	return sha
}

// Push creates commits on branch (a new branch starts at the default
// branch's head) and sends the push webhook.
func (s *Simulator) Push(repo, branch string, commits ...CommitSpec) PushResult {
	return s.push(repo, branch, commits, true)
}

// PushSilently is Push without the webhook: a push lastmile missed.
func (s *Simulator) PushSilently(repo, branch string, commits ...CommitSpec) PushResult {
	return s.push(repo, branch, commits, false)
}

func (s *Simulator) push(fullName, branch string, specs []CommitSpec, notify bool) PushResult {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := s.st
	r := s.mustRepo(fullName)
	branch = strings.TrimPrefix(branch, "refs/heads/")
	before, exists := r.branches[branch]
	parent := before
	if !exists {
		before = zeroSHA
		parent = r.branches[r.defaultBranch]
	}
	res := PushResult{Before: before}
	var created []*commit
	for _, spec := range specs {
		var parents []string
		if parent != "" {
			parents = []string{parent}
		}
		c := st.newCommit(r, parents, spec)
		created = append(created, c)
		res.Commits = append(res.Commits, c.sha)
		parent = c.sha
	}
	r.branches[branch] = parent
	res.After = parent
	r.pushedAt = s.clock().Truncate(time.Second)
	if notify {
		st.enqueuePushBy(r, branch, before, parent, created)
	}
	s.notifyLocked()
	return res
}

// enqueuePushBy sends the push (not forced) of created, the commits it
// brings, oldest first, by the newest one's author (octocat when it has
// none, or when no commit is brought).
func (st *state) enqueuePushBy(r *repo, branch, before, after string, created []*commit) {
	var pusher *account
	var pusherName, pusherEmail string
	if len(created) > 0 {
		a := created[len(created)-1].author
		pusherName, pusherEmail = a.name, a.email
		if a.login != "" {
			pusher = st.accountFor(a.login)
			pusherName = a.login
		}
	}
	if pusher == nil {
		pusher = st.accountFor("octocat")
		if pusherName == "" {
			pusherName, pusherEmail = "octocat", "octocat@example.com"
		}
	}
	st.enqueuePush(r, branch, before, after, false, created, pusher, pusherName, pusherEmail)
}

// Merge merges branch from into branch into with a merge commit (git merge
// --no-ff, as a pull request's "Create a merge commit" does) made from
// spec — its tree into's, with from's changes since their merge base, then
// spec's Files; its message "Merge branch 'FROM'" unless spec gives one —
// and sends into's push. GitHub lists the commits the push brings to the
// branch, oldest first: from's (not distinct when a push listed them
// before, as the push of from did) and the merge commit.
func (s *Simulator) Merge(repo, into, from string, spec CommitSpec) PushResult {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := s.st
	r := s.mustRepo(repo)
	before := mustBranch(r, repo, into)
	head := mustBranch(r, repo, from)
	files := map[string]string{}
	if base := r.mergeBase(before, head); base != nil {
		for _, ch := range diffTrees(base.files, r.commits[head].files) {
			files[ch.path] = ch.newContent // "" for a file from removed: removed by the merge
		}
	}
	maps.Copy(files, spec.Files)
	spec.Files = files
	if spec.Message == "" {
		spec.Message = "Merge branch '" + from + "'"
	}
	merge := st.newCommit(r, []string{before, head}, spec)
	return s.moveForward(r, into, before, merge.sha)
}

// FastForward moves branch forward to sha, a descendant of its head (git
// push of a branch that builds on it, or a pull request merged by
// fast-forward), and sends the push: not forced, listing the commits it
// brings, oldest first, not distinct when a push listed them before.
func (s *Simulator) FastForward(repo, branch, sha string) PushResult {
	s.mu.Lock()
	defer s.mu.Unlock()
	r := s.mustRepo(repo)
	before := mustBranch(r, repo, branch)
	c := mustCommit(r, repo, sha)
	if !r.ancestors(c.sha)[before] {
		panic(fmt.Sprintf("simulator: %s is not a descendant of %s's head %s: no fast-forward", sha, branch, before))
	}
	return s.moveForward(r, branch, before, c.sha)
}

// moveForward points branch, at before, at after, a descendant of it, and
// sends the push of the commits it brings (enqueuePushBy). Call with s.mu
// held.
func (s *Simulator) moveForward(r *repo, branch, before, after string) PushResult {
	r.branches[branch] = after
	r.pushedAt = s.clock().Truncate(time.Second)
	brought := r.between(before, after)
	s.st.enqueuePushBy(r, branch, before, after, brought)
	s.notifyLocked()
	res := PushResult{Before: before, After: after}
	for _, c := range brought {
		res.Commits = append(res.Commits, c.sha)
	}
	return res
}

// mustCommit is the commit of repo (r) that sha names, or a panic.
func mustCommit(r *repo, repo, sha string) *commit {
	c, ok := r.resolve(sha)
	if !ok {
		panic(fmt.Sprintf("simulator: %s has no commit %s", repo, sha))
	}
	return c
}

// ForcePush points an existing branch at a commit of the repository (git
// push --force: a rollback when the commit is an earlier one of the branch)
// and sends the push webhook, with forced: true and, as GitHub does for a
// commit that brings nothing new, no commits.
func (s *Simulator) ForcePush(repo, branch, sha string) PushResult {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := s.st
	r := s.mustRepo(repo)
	before := mustBranch(r, repo, branch)
	c := mustCommit(r, repo, sha)
	r.branches[branch] = c.sha
	r.pushedAt = s.clock().Truncate(time.Second)
	pusher := st.accountFor("octocat")
	st.enqueuePush(r, branch, before, c.sha, true, nil, pusher, "octocat", "octocat@example.com")
	s.notifyLocked()
	return PushResult{Before: before, After: c.sha}
}

// ReplaceHistory force-pushes to an existing branch a new history, unrelated
// to the branch's (an orphan branch pushed over it, or its history
// rewritten, say with git filter-repo): commits chained from a new root
// commit, whose tree holds only the files the specs give. The push webhook
// says forced: true and lists the new commits. GitHub then compares
// nothing across the two histories (404, no common ancestor).
func (s *Simulator) ReplaceHistory(repo, branch string, commits ...CommitSpec) PushResult {
	if len(commits) == 0 {
		panic("simulator: ReplaceHistory needs a commit")
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	st := s.st
	r := s.mustRepo(repo)
	before := mustBranch(r, repo, branch)
	res := PushResult{Before: before}
	var created []*commit
	var parents []string
	for _, spec := range commits {
		c := st.newCommit(r, parents, spec)
		created = append(created, c)
		res.Commits = append(res.Commits, c.sha)
		parents = []string{c.sha}
	}
	res.After = parents[0]
	r.branches[branch] = res.After
	r.pushedAt = s.clock().Truncate(time.Second)
	pusher := st.accountFor("octocat")
	st.enqueuePush(r, branch, before, res.After, true, created, pusher, "octocat", "octocat@example.com")
	s.notifyLocked()
	return res
}

// DeleteBranch deletes a branch and sends the push webhook GitHub sends for
// it (deleted: true, after = 40 zeros).
func (s *Simulator) DeleteBranch(repo, branch string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := s.st
	r := s.mustRepo(repo)
	before := mustBranch(r, repo, branch)
	if branch == r.defaultBranch {
		panic("simulator: cannot delete the default branch")
	}
	delete(r.branches, branch)
	pusher := st.accountFor("octocat")
	st.enqueuePush(r, branch, before, zeroSHA, false, nil, pusher, "octocat", "octocat@example.com")
	s.notifyLocked()
}

// Branch returns the SHA a branch points at ("" if it does not exist).
func (s *Simulator) Branch(repo, branch string) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.mustRepo(repo).branches[branch]
}

// SetCommitStatus records a commit status as a CI system would (creator
// "ci-bot") and sends the status webhook. It returns the status id. Like
// GitHub it keeps at most 1000 statuses per commit and context: it panics
// past them.
func (s *Simulator) SetCommitStatus(repo, sha, context, state string) int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	r := s.mustRepo(repo)
	c := mustCommit(r, repo, sha)
	switch state {
	case "error", "failure", "pending", "success":
	default:
		panic(fmt.Sprintf("simulator: commit status state %q", state))
	}
	if context == "" {
		context = "default"
	}
	if r.statusesFull(c.sha, context) {
		panic(fmt.Sprintf("simulator: %s@%s has %d statuses of context %q already", repo, c.sha, maxStatusesPerContext, context))
	}
	cs := s.st.addCommitStatus(r, c, state, context, nil, nil, s.st.accountFor("ci-bot"))
	s.notifyLocked()
	return cs.id
}

// PostDeploymentStatusAs records a deployment status that a person posts
// by hand — the REST API with their own token, or the gh CLI — created by
// login, a User, through no App (performed_via_github_app null), with
// auto_inactive as GitHub defaults it, and sends the deployment_status
// webhook. It returns the status id.
func (s *Simulator) PostDeploymentStatusAs(repo string, deploymentID int64, state, login string) (int64, error) {
	switch state {
	case "error", "failure", "inactive", "in_progress", "queued", "pending", "success":
	default:
		return 0, fmt.Errorf("simulator: deployment status state %q", state)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	r := s.mustRepo(repo)
	for _, d := range r.deployments {
		if d.id == deploymentID {
			ds := s.st.addDeploymentStatus(r, d, statusInput{state: state, autoInactive: true}, s.st.accountFor(login), nil)
			s.notifyLocked()
			return ds.id, nil
		}
	}
	return 0, fmt.Errorf("simulator: no deployment %d in %s", deploymentID, repo)
}

// CompleteCheckSuite sends a check_suite "completed" webhook for a commit,
// as a CI App finishing its checks would cause, with the given conclusion.
// It records no check run: the suite is a fresh one of the CI App, with one
// run that the required_contexts check does not see (SetCheckRun records
// check runs, and sends this webhook when they are all completed).
func (s *Simulator) CompleteCheckSuite(repo, sha, conclusion string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	r := s.mustRepo(repo)
	c := mustCommit(r, repo, sha)
	now := s.clock()
	suite := &checkSuite{id: s.st.id(), createdAt: now, updatedAt: now}
	s.st.enqueueCheckSuiteCompleted(r, c, suite, conclusion, 1)
	s.notifyLocked()
}

// EnvironmentOptions configures an environment's protection rules.
type EnvironmentOptions struct {
	// Reviewers are the logins of required reviewers (one approval
	// suffices, as on GitHub).
	Reviewers []string
	// Review says how the simulated reviewers answer. Default Manual().
	Review ReviewPolicy
	// WaitTimer delays jobs from when they are triggered, as GitHub's wait
	// timer does ("delay a job after the job is initially triggered"): a
	// job runs once it has passed and its reviewers and rules approved
	// (real time; keep it short).
	WaitTimer time.Duration
	// CustomProtectionRule enables this App as a custom deployment
	// protection rule.
	CustomProtectionRule bool
}

// SetEnvironment creates or replaces an environment of a repository.
func (s *Simulator) SetEnvironment(repo, name string, opts EnvironmentOptions) {
	s.mu.Lock()
	defer s.mu.Unlock()
	r := s.mustRepo(repo)
	env := r.environments[strings.ToLower(name)]
	if env == nil {
		env = &environment{id: s.st.id(), name: name}
		r.environments[strings.ToLower(name)] = env
	}
	env.opts = opts
	s.notifyLocked()
}
